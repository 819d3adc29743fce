"""Save and load a trained network (architecture + weights) as a ``.npz`` read without pickle."""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from common.files import atomic_open
from common.nn.errors import UserError
from common.nn.network import Architecture, Network

FORMAT = "mnist-from-scratch-network/1"


def save_network(path: str | os.PathLike, network: Network, metadata: dict | None = None) -> Path:
    """Write ``network`` to ``path`` atomically. ``metadata`` (JSON-able, e.g. the pixel scale
    the network was trained on) is stored beside the weights and returned by :func:`load_network`."""
    if network.architecture is None:
        raise ValueError("only networks built from an Architecture can be saved")
    path = Path(path)
    header = {"format": FORMAT, "architecture": asdict(network.architecture), "metadata": metadata or {}}
    arrays = {"header": np.array(json.dumps(header))}
    for index, layer in enumerate(network.dense_layers()):
        arrays[f"W{index}"] = layer.params["W"]
        arrays[f"b{index}"] = layer.params["b"]
    with atomic_open(path) as file:
        np.savez(file, **arrays)
    return path


def load_network(path: str | os.PathLike) -> tuple[Network, dict]:
    """Read a network saved by :func:`save_network`; returns ``(network, metadata)``.

    Anything else (missing, truncated, not a model of this suite, shapes that do not match the
    architecture) raises :class:`UserError` with one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; train a stage first (it writes model.npz)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(str(archive["header"]))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise ValueError("its header does not name this suite's model format")
            architecture = Architecture(**{**header["architecture"],
                                           "sizes": tuple(header["architecture"]["sizes"])})
            dtype = np.dtype(architecture.dtype)
            pairs = list(zip(architecture.sizes[:-1], architecture.sizes[1:]))
            weights = [(archive[f"W{i}"], archive[f"b{i}"]) for i in range(len(pairs))]
    except UserError as error:  # a header whose architecture is invalid
        raise UserError(f"{path}: {error}") from None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not a readable model saved by this suite ({error})") from None
    for (fan_in, fan_out), (w, b) in zip(pairs, weights):
        if w.shape != (fan_in, fan_out) or b.shape != (fan_out,):
            raise UserError(f"{path}: weights {w.shape}/{b.shape} do not match the architecture {list(architecture.sizes)}")
        if not (np.issubdtype(w.dtype, np.floating) and np.issubdtype(b.dtype, np.floating)):
            raise UserError(f"{path}: weights are {w.dtype}/{b.dtype}, not floating-point numbers")
    network = Network.from_architecture(architecture, np.random.default_rng(0), init="normal", init_scale=0.0)
    for layer, (w, b) in zip(network.dense_layers(), weights):
        layer.params["W"][...] = w.astype(dtype, copy=False)
        layer.params["b"][...] = b.astype(dtype, copy=False)
    return network, header.get("metadata", {})
