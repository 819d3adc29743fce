"""Save and load a trained network (architecture + weights) as a ``.npz`` read without pickle."""
from __future__ import annotations

import json
import math
import os
import re
import stat
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import IO

import numpy as np

from common.files import atomic_open
from common.nn.architecture import Architecture, LayerShape
from common.nn.errors import UserError
from common.nn.network import Network

FORMAT = "mnist-from-scratch-network/3"
"""Version 3 adds batch normalization: a ``batchnorm`` layer's scale and shift as ``gamma{i}`` and
``beta{i}`` and its running averages as ``running_mean{i}`` and ``running_var{i}``, ``i`` counting the
layers with parameters as ``W{i}`` and ``b{i}`` do. Version 2 added ``layers`` to the architecture (a
network given as a list of layers, such as stage 06's convolutional one); version 1 files
(perceptrons only). Files of every version load."""
READABLE_FORMATS = ("mnist-from-scratch-network/1", "mnist-from-scratch-network/2", FORMAT)
RUNNING_STATS = ("running_mean", "running_var")
"""What a batch-normalization layer keeps besides its parameters, saved beside them."""


def save_network(path: str | os.PathLike, network: Network, metadata: dict | None = None) -> Path:
    """Write ``network`` to ``path`` atomically. ``metadata`` (JSON-able, e.g. the pixel scale
    the network was trained on) is stored beside the weights and returned by :func:`load_network`."""
    if network.architecture is None:
        raise ValueError("only networks built from an Architecture can be saved")
    path = Path(path)
    header = {"format": FORMAT, "architecture": asdict(network.architecture), "metadata": metadata or {}}
    arrays = {"header": np.array(json.dumps(header))}
    for index, layer in enumerate(network.weighted_layers()):
        for key, value in layer_arrays(layer).items():
            arrays[f"{key}{index}"] = value
    with atomic_open(path) as file:
        np.savez(file, **arrays)
    return path


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
MAX_HEADER_CHARS = 1_000_000
"""A model's JSON header is a few hundred characters; refuse to read one claiming more."""
MAX_PARAMETERS = 50_000_000
"""The most parameters a model may declare: 39 times stage 05's 1.3 million, 200 MB as float32.
Checked from the architecture before any weight is read, so a zip bomb whose weights agree
with a huge architecture (784 x 400,000 zeros deflate to a megabyte) is refused unread."""
MAX_LAYER_VALUES = 4_000_000
"""The most values one layer may compute per image (a convolution's patch matrix included):
stage 06's largest is 51,200. More would cost gigabytes per batch for a handful of parameters."""
MAX_MEMBER_BYTES = 8 * MAX_PARAMETERS + 65_536
MAX_HEADER_DEPTH = 32
"""How deeply a header's JSON may nest (a model's needs 3); checked before parsing, since how deep
``json.loads`` goes before a RecursionError differs between Python versions."""
"""The largest ``.npy`` member a model may hold, by the zip directory (float64 at the cap)."""
COMPRESSION_NAMES = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", 9: "deflate64",
                     zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma", 93: "zstandard"}
"""Zip compression methods by number, to name them; NumPy writes the first two, the only ones read."""


class _NotAModel(Exception):
    """Why a file is not a readable model; :func:`load_network` adds the file name."""


def _read_member(archive: zipfile.ZipFile, name: str, shape: tuple[int, ...] | None,
                 kinds: str) -> np.ndarray:
    """Read the array ``name`` of an ``.npz`` after checking its ``.npy`` header: dtype kind in
    ``kinds`` (e.g. ``"f"``) and, when given, exactly ``shape``. The check comes before NumPy
    allocates anything, and the member must hold exactly the bytes its header declares, so a
    forged shape cannot exhaust memory; pickled objects are refused (``allow_pickle=False``)."""
    info = _member_info(archive, name)
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        found_shape, _, dtype = read_header(member)
        if dtype.kind not in kinds or dtype.hasobject or ("f" in kinds and dtype.itemsize > 8):
            raise _NotAModel(f"its array {name!r} holds {dtype} values, not "
                             f"{'16-, 32- or 64-bit numbers' if 'f' in kinds else 'text'}")
        if shape is not None and found_shape != shape:
            raise _NotAModel(f"its array {name!r} has shape {found_shape}, the architecture needs {shape}")
        if shape is None and (found_shape != () or dtype.itemsize > 4 * MAX_HEADER_CHARS):
            raise _NotAModel(f"its {name!r} is not one short text")
        declared = int(np.prod(found_shape, dtype=np.float64)) * dtype.itemsize
        if info.file_size - member.tell() != declared:
            raise _NotAModel(f"its array {name!r} does not hold the {found_shape} values its header declares")
        member.seek(0)
        return np.lib.format.read_array(member, allow_pickle=False)


def _member_info(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo:
    """The zip directory entry of array ``name``, refused if encrypted, compressed by a method
    NumPy does not write, or larger than :data:`MAX_MEMBER_BYTES` once decompressed."""
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        raise _NotAModel(f"it has no array {name!r}") from None
    if info.flag_bits & 0x41:  # bit 0: encrypted; bit 6: strong encryption
        raise _NotAModel(f"its array {name!r} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        method = COMPRESSION_NAMES.get(info.compress_type, f"method {info.compress_type}")
        raise _NotAModel(f"its array {name!r} is compressed with {method}; a model is stored or deflated "
                         "(np.savez, np.savez_compressed)")
    if info.file_size > MAX_MEMBER_BYTES:
        raise _NotAModel(f"its array {name!r} unpacks to {info.file_size:,} bytes, more than a model may hold "
                         f"({MAX_MEMBER_BYTES:,})")
    return info


def _no_constant(name: str) -> None:
    """``json.loads``'s ``parse_constant``: Infinity and NaN are not JSON numbers."""
    raise _NotAModel(f"its header holds {name}, which is not a JSON number")


def _nesting_depth(text: str) -> int:
    """How many JSON objects and arrays ``text`` opens inside each other at most (brackets in strings
    do not count)."""
    skeleton = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text).encode("utf-8", "replace")
    codes = np.frombuffer(skeleton, np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def _read_header(archive: zipfile.ZipFile) -> tuple[dict, dict]:
    """The JSON header's architecture description and metadata, checked for shape and types."""
    text = str(_read_member(archive, "header", None, "U"))
    if _nesting_depth(text) > MAX_HEADER_DEPTH:
        raise _NotAModel(f"its header is JSON nested too deeply (more than {MAX_HEADER_DEPTH} levels)")
    try:
        header = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise _NotAModel("its header is JSON nested too deeply") from None
    except ValueError:  # JSONDecodeError, or an integer of thousands of digits
        raise _NotAModel("its header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") not in READABLE_FORMATS:
        raise _NotAModel("its header does not name this suite's model format")
    described = header.get("architecture")
    metadata = header.get("metadata", {})
    if not isinstance(described, dict) or not isinstance(described.get("sizes"), list):
        raise _NotAModel("its header has no architecture with a list of sizes")
    if not all(type(size) is int for size in described["sizes"]):  # not bool, float or text
        shown = json.dumps(described["sizes"])
        raise _NotAModel(f"its architecture's sizes {shown[:60]} are not all whole numbers")
    if not isinstance(metadata, dict):
        raise _NotAModel("its metadata is not a JSON object")
    layers = described.get("layers", [])
    if not (isinstance(layers, list) and all(isinstance(layer, str) for layer in layers)):
        raise _NotAModel("its architecture's layers are not a list of layer strings")
    if header["format"] == READABLE_FORMATS[0] and "layers" in described:
        raise _NotAModel(f"its architecture has fields this suite does not know: {sorted(described)}")
    if header["format"] != FORMAT and any(layer.split()[:1] == ["batchnorm"] for layer in layers):
        raise _NotAModel(f"its format, {header['format']}, has no batch normalization, yet it names a 'batchnorm' layer")
    return {**described, "sizes": tuple(described["sizes"]), "layers": tuple(layers)}, metadata


def _layer_values(layer: LayerShape) -> int:
    """The values one layer computes per image: its output, and a convolution's patch matrix."""
    if layer.kind == "conv":
        _, k, _ = layer.args
        return max(math.prod(layer.out_shape), math.prod(layer.out_shape[:2]) * k * k * layer.in_shape[2])
    return math.prod(layer.out_shape)


def _check_size(architecture: Architecture) -> None:
    """Refuse an architecture over :data:`MAX_PARAMETERS` or :data:`MAX_LAYER_VALUES`."""
    count = architecture.num_parameters
    if count > MAX_PARAMETERS:
        shown = f"{count:,}" if count < 10**18 else "more than 10^18"
        raise _NotAModel(f"its architecture declares {shown} parameters, more than the {MAX_PARAMETERS:,} "
                         "a model may have")
    widest = max(_layer_values(layer) for layer in architecture.walk)
    if widest > MAX_LAYER_VALUES:
        raise _NotAModel(f"one of its layers computes {widest:,} values per image, more than the "
                         f"{MAX_LAYER_VALUES:,} a model may")


def layer_arrays(layer) -> dict[str, np.ndarray]:
    """What a model file keeps of a layer with parameters: ``W`` and ``b``, or a batch-normalization
    layer's ``gamma`` and ``beta`` and its running averages."""
    return {**layer.params, **{key: getattr(layer, key) for key in RUNNING_STATS if hasattr(layer, key)}}


def _read_model(source: IO[bytes]) -> tuple[Architecture, list[dict[str, np.ndarray]], dict]:
    """The architecture, each layer's arrays (``{"W": ..., "b": ...}``, see :func:`layer_arrays`) and
    the metadata in the archive ``source``, all checked."""
    with zipfile.ZipFile(source) as archive:
        described, metadata = _read_header(archive)
        try:
            architecture = Architecture(**described)
        except TypeError as error:
            if "keyword argument" in str(error):
                raise _NotAModel(f"its architecture has fields this suite does not know: {sorted(described)}") from None
            raise _NotAModel("its architecture has a field of the wrong type") from None
        _check_size(architecture)
        weights = []
        for index, shapes in enumerate(architecture.param_shapes()):
            if "gamma" in shapes:
                shapes = {**shapes, **{key: shapes["gamma"] for key in RUNNING_STATS}}
            arrays = {key: _read_member(archive, f"{key}{index}", shape, "f") for key, shape in shapes.items()}
            if not all(np.isfinite(value).all() for value in arrays.values()):
                raise _NotAModel(f"layer {index + 1} holds NaN or infinite weights (saved from a diverged run?)")
            if "running_var" in arrays and (arrays["running_var"] < 0).any():
                raise _NotAModel(f"layer {index + 1} holds a negative running variance")
            weights.append(arrays)
    return architecture, weights, metadata


def _kind_of_file(handle: IO[bytes]) -> str:
    """A short description of a file that is not a ``.npz`` archive, from its first bytes."""
    handle.seek(0)
    start = handle.read(len(NPY_MAGIC))
    if start.startswith(NPY_MAGIC):
        return "a single NumPy array (.npy), not a model; a model is the model.npz a stage writes"
    if not start:
        return "empty"
    return "not a .npz archive"


FILE_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
              (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str | None:
    """What a file of ``st_mode`` ``mode`` is when it is not a regular file ("a FIFO ..."), else None."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in FILE_KINDS if test(mode)), "not a regular file")


def open_regular(path: Path, what: str = "model") -> IO[bytes]:
    """Open ``path`` for reading if it is a regular file; a one-line :class:`UserError` saying what
    it is otherwise (missing, a folder, a FIFO, a device). Opened without blocking, and checked
    again once open, so a FIFO put in its place meanwhile cannot hang the reader."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        target = f" (a link to {os.readlink(path)}, which does not exist)" if path.is_symlink() else ""
        raise UserError(f"{what} file {path} does not exist{target}; train a stage first (it writes model.npz)") from None
    except OSError as error:
        raise UserError(f"cannot read {what} {path}: {error.strerror or error}") from None
    if stat.S_ISDIR(mode):
        hint = f"; did you mean {path / 'model.npz'}?" if (path / "model.npz").is_file() else ""
        raise UserError(f"{what} {path} is a folder, not a {what} file{hint}")
    descriptor = -1
    try:
        if _not_regular(mode) is None:
            descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            mode = os.fstat(descriptor).st_mode
    except OSError as error:
        raise UserError(f"cannot read {what} {path}: {error.strerror or error}") from None
    kind = _not_regular(mode)
    if kind is not None:
        if descriptor >= 0:
            os.close(descriptor)
        raise UserError(f"{what} {path} is not a regular file: it is {kind}; give the {what}.npz a stage writes")
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


def load_network(path: str | os.PathLike) -> tuple[Network, dict]:
    """Read a network saved by :func:`save_network`; returns ``(network, metadata)``.

    Anything else raises :class:`UserError` with one line naming the file: a missing file, a
    folder, a FIFO or a device, a plain or pickled ``.npy``, a truncated, encrypted or foreign
    archive, a header that is not this suite's, an architecture over :data:`MAX_PARAMETERS` or
    :data:`MAX_LAYER_VALUES` (checked before any weight is read, so a zip bomb costs nothing),
    weights whose shape or type does not match the architecture (checked before they are read,
    so a forged shape cannot exhaust memory) and NaN or infinite weights.
    """
    path = Path(path)
    with open_regular(path) as handle:
        try:
            architecture, weights, metadata = _read_model(handle)
        except UserError as error:  # a header whose architecture is invalid
            raise UserError(f"{path}: {error}") from None
        except _NotAModel as error:
            raise UserError(f"{path} is not a model saved by this suite: {error}") from None
        except zipfile.BadZipFile:
            raise UserError(f"{path} is not a model saved by this suite: it is {_kind_of_file(handle)}") from None
        except (OSError, ValueError, TypeError, EOFError, RuntimeError, ArithmeticError, LookupError,
                zipfile.LargeZipFile, MemoryError) as error:
            reason = (str(error).splitlines() or [""])[0].split(";")[0].split(". ")[0] or type(error).__name__
            raise UserError(f"{path} is not a readable model (damaged or truncated: {reason})") from None
    network = Network.from_architecture(architecture, np.random.default_rng(0), init="normal", init_scale=0.0)
    dtype = np.dtype(architecture.dtype)
    for layer, arrays in zip(network.weighted_layers(), weights):
        for key, value in arrays.items():
            target = layer.params[key] if key in layer.params else getattr(layer, key)
            target[...] = value.astype(dtype, copy=False)
    return network, metadata
