"""Save and load a trained network (architecture + weights) as a ``.npz`` read without pickle."""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from common.files import atomic_open
from common.nn.architecture import Architecture
from common.nn.errors import UserError
from common.nn.network import Network

FORMAT = "mnist-from-scratch-network/2"
"""Version 2 adds ``layers`` to the architecture (a network given as a list of layers, such as
stage 06's convolutional one); version 1 files (perceptrons only, the same arrays) still load."""
READABLE_FORMATS = ("mnist-from-scratch-network/1", FORMAT)


def save_network(path: str | os.PathLike, network: Network, metadata: dict | None = None) -> Path:
    """Write ``network`` to ``path`` atomically. ``metadata`` (JSON-able, e.g. the pixel scale
    the network was trained on) is stored beside the weights and returned by :func:`load_network`."""
    if network.architecture is None:
        raise ValueError("only networks built from an Architecture can be saved")
    path = Path(path)
    header = {"format": FORMAT, "architecture": asdict(network.architecture), "metadata": metadata or {}}
    arrays = {"header": np.array(json.dumps(header))}
    for index, layer in enumerate(network.weighted_layers()):
        arrays[f"W{index}"] = layer.params["W"]
        arrays[f"b{index}"] = layer.params["b"]
    with atomic_open(path) as file:
        np.savez(file, **arrays)
    return path


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
MAX_HEADER_CHARS = 1_000_000
"""A model's JSON header is a few hundred characters; refuse to read one claiming more."""


class _NotAModel(Exception):
    """Why a file is not a readable model; :func:`load_network` adds the file name."""


def _read_member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...] | None,
                 kinds: str) -> np.ndarray:
    """Read the array ``name`` of an ``.npz`` after checking its ``.npy`` header: dtype kind in
    ``kinds`` (e.g. ``"f"``) and, when given, exactly ``shape``. The check comes before NumPy
    allocates anything, and the member must hold exactly the bytes its header declares, so a
    forged shape cannot exhaust memory; pickled objects are refused (``allow_pickle=False``)."""
    try:
        member = archive.open(f"{name}.npy")
    except KeyError:
        raise _NotAModel(f"it has no array {name!r}") from None
    with member:
        version = np.lib.format.read_magic(member)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        found_shape, _, dtype = read_header(member)
        if dtype.kind not in kinds or dtype.hasobject:
            raise _NotAModel(f"its array {name!r} holds {dtype} values, not "
                             f"{'numbers' if 'f' in kinds else 'text'}")
        if shape is not None and found_shape != shape:
            raise _NotAModel(f"its array {name!r} has shape {found_shape}, the architecture needs {shape}")
        if shape is None and (found_shape != () or dtype.itemsize > 4 * MAX_HEADER_CHARS):
            raise _NotAModel(f"its {name!r} is not one short text")
        declared = int(np.prod(found_shape, dtype=np.float64)) * dtype.itemsize
        if archive.getinfo(f"{name}.npy").file_size - member.tell() != declared:
            raise _NotAModel(f"its array {name!r} does not hold the {found_shape} values its header declares")
        member.seek(0)
        return np.lib.format.read_array(member, allow_pickle=False)


def _read_model(path: Path) -> tuple[Architecture, list[tuple[np.ndarray, np.ndarray]], dict]:
    """The architecture, ``(W, b)`` pairs and metadata in the archive at ``path``, all checked."""
    with zipfile.ZipFile(path) as archive:
        try:
            header = json.loads(str(_read_member(archive, "header", None, "U")))
        except json.JSONDecodeError:
            raise _NotAModel("its header is not JSON") from None
        if not isinstance(header, dict) or header.get("format") not in READABLE_FORMATS:
            raise _NotAModel("its header does not name this suite's model format")
        described = header.get("architecture")
        metadata = header.get("metadata", {})
        if not isinstance(described, dict) or not isinstance(described.get("sizes"), list):
            raise _NotAModel("its header has no architecture with a list of sizes")
        if not isinstance(metadata, dict):
            raise _NotAModel("its metadata is not a JSON object")
        layers = described.get("layers", [])
        if not (isinstance(layers, list) and all(isinstance(layer, str) for layer in layers)):
            raise _NotAModel("its architecture's layers are not a list of layer strings")
        try:
            if header["format"] != FORMAT and "layers" in described:
                raise TypeError
            architecture = Architecture(**{**described, "sizes": tuple(described["sizes"]),
                                           "layers": tuple(layers)})
        except TypeError:
            raise _NotAModel(f"its architecture has fields this suite does not know: {sorted(described)}") from None
        weights = []
        for index, shapes in enumerate(architecture.param_shapes()):
            w_shape, b_shape = shapes["W"], shapes["b"]
            w = _read_member(archive, f"W{index}", w_shape, "f")
            b = _read_member(archive, f"b{index}", b_shape, "f")
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise _NotAModel(f"layer {index + 1} holds NaN or infinite weights (saved from a diverged run?)")
            weights.append((w, b))
    return architecture, weights, metadata


def _kind_of_file(path: Path) -> str:
    """A short description of a file that is not a ``.npz`` archive, from its first bytes."""
    with open(path, "rb") as handle:
        start = handle.read(len(NPY_MAGIC))
    if start.startswith(NPY_MAGIC):
        return "a single NumPy array (.npy), not a model; a model is the model.npz a stage writes"
    if not start:
        return "empty"
    return "not a .npz archive"


def load_network(path: str | os.PathLike) -> tuple[Network, dict]:
    """Read a network saved by :func:`save_network`; returns ``(network, metadata)``.

    Anything else raises :class:`UserError` with one line naming the file: a missing file or a
    folder, a plain or pickled ``.npy``, a truncated or foreign archive, a header that is not
    this suite's, weights whose shape or type does not match the architecture (checked before
    they are read, so a forged shape cannot exhaust memory) and NaN or infinite weights.
    """
    path = Path(path)
    if path.is_dir():
        hint = f"; did you mean {path / 'model.npz'}?" if (path / "model.npz").is_file() else ""
        raise UserError(f"model {path} is a folder, not a model file{hint}")
    if not path.is_file():
        raise UserError(f"model file {path} does not exist; train a stage first (it writes model.npz)")
    try:
        architecture, weights, metadata = _read_model(path)
    except UserError as error:  # a header whose architecture is invalid
        raise UserError(f"{path}: {error}") from None
    except _NotAModel as error:
        raise UserError(f"{path} is not a model saved by this suite: {error}") from None
    except zipfile.BadZipFile:
        raise UserError(f"{path} is not a model saved by this suite: it is {_kind_of_file(path)}") from None
    except (OSError, ValueError, TypeError, EOFError, zipfile.LargeZipFile, MemoryError) as error:
        reason = str(error).split(";")[0].split(". ")[0] or type(error).__name__
        raise UserError(f"{path} is not a readable model (damaged or truncated: {reason})") from None
    network = Network.from_architecture(architecture, np.random.default_rng(0), init="normal", init_scale=0.0)
    dtype = np.dtype(architecture.dtype)
    for layer, (w, b) in zip(network.weighted_layers(), weights):
        layer.params["W"][...] = w.astype(dtype, copy=False)
        layer.params["b"][...] = b.astype(dtype, copy=False)
    return network, metadata
