"""The MNIST file format (IDX): its names, dimensions and official counts; read and write it.

MNIST is four IDX files (big-endian header, then raw uint8 bytes)::

    train-images-idx3-ubyte   magic 2051, count, rows=28, cols=28, then count*784 pixel bytes
    train-labels-idx1-ubyte   magic 2049, count, then count label bytes (0..9)
    t10k-images-idx3-ubyte    the same for the 10,000 test images
    t10k-labels-idx1-ubyte

each either gzip-compressed (``.gz``) or not. Every problem with a file raises
:class:`DataError` with one line that names the file and says how to re-fetch it.
"""
from __future__ import annotations

import gzip
import os
import shlex
import struct
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from common.files import atomic_open
from common.nn.errors import UserError

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
SPLITS = {"train": (TRAIN_IMAGES, TRAIN_LABELS), "test": (TEST_IMAGES, TEST_LABELS)}

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
IMAGE_SIDE = 28                          # every MNIST image is IMAGE_SIDE x IMAGE_SIDE pixels
NUM_PIXELS = IMAGE_SIDE * IMAGE_SIDE     # 784
NUM_CLASSES = 10

# Official per-digit label counts (digits 0..9), checked after every fetch.
OFFICIAL_LABEL_COUNTS = {
    "train": (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
    "test": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
}

GZIP_LEVEL = 6
MAX_ITEMS = 1_000_000
"""The most images (or labels) a file may declare: MNIST has 70,000 in all, EMNIST's largest
split 697,932. A header claiming more is refused before anything is decompressed."""
CHUNK_BYTES = 1 << 20
"""The buffer a file is checked through when its data is not kept (:func:`scan_images`)."""


class DataError(UserError):
    """The MNIST files are missing, damaged or cannot be fetched (message says how to fix it)."""


def fetch_hint(data_dir: Path) -> str:
    return f"python -m common.data fetch --data-dir {shlex.quote(str(data_dir))}"

def refetch_advice(path: Path) -> str:
    return f"re-fetch with `{fetch_hint(path.parent)}` (or delete the file and fetch again)"


class CountMismatch(DataError):
    """An image file's header declares another count than its label file has (``found``)."""

    def __init__(self, path: Path, found: int, expected: int) -> None:
        super().__init__(f"{path}: header says {found} images, the labels {expected}; {refetch_advice(path)}")
        self.found = found


def _read_header(stream: IO[bytes], path: Path, magic: int, num_dims: int) -> tuple[int, ...]:
    """The dimensions in an IDX header, checked: magic number, 28 x 28 images, at most :data:`MAX_ITEMS`."""
    header_len = 4 + 4 * num_dims
    kind = "image" if magic == IMAGE_MAGIC else "label"
    header = stream.read(header_len)
    if len(header) < header_len:
        raise DataError(f"{path}: too short for an IDX {kind} header "
                        f"({len(header)} of {header_len} bytes); {refetch_advice(path)}")
    found_magic, *dims = struct.unpack(f">{1 + num_dims}I", header)
    if found_magic != magic:
        raise DataError(f"{path}: wrong magic number {found_magic} (an IDX {kind} file "
                        f"has {magic}); {refetch_advice(path)}")
    if num_dims == 3 and (dims[1], dims[2]) != (IMAGE_SIDE, IMAGE_SIDE):
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected {IMAGE_SIDE}x{IMAGE_SIDE}; "
                        f"{refetch_advice(path)}")
    if dims[0] > MAX_ITEMS:
        raise DataError(f"{path}: header claims {dims[0]:,} {kind}s, more than the {MAX_ITEMS:,} an MNIST-like "
                        f"data set may hold; {refetch_advice(path)}")
    return tuple(dims)


def _read_payload(stream: IO[bytes], path: Path, expected: int, keep: bool) -> np.ndarray | None:
    """The ``expected`` data bytes after the header, uint8 ``(expected,)``; with ``keep`` false they
    are read through one small buffer and dropped (a check in constant memory), and None returned.
    Fewer bytes, or more, is a :class:`DataError`."""
    try:
        payload = np.empty(expected if keep else min(expected, CHUNK_BYTES), dtype=np.uint8)
    except MemoryError:
        raise DataError(f"{path}: its {expected:,} data bytes do not fit in memory; {refetch_advice(path)}") from None
    view = memoryview(payload)
    got = 0
    while got < expected:
        n = stream.readinto(view[got:] if keep else view[:min(len(view), expected - got)])
        if not n:
            break
        got += n
    if got < expected:
        raise DataError(f"{path}: truncated: header says {expected} data bytes, file holds "
                        f"{got}; {refetch_advice(path)}")
    if stream.read(1):
        raise DataError(f"{path}: too long: more than the {expected} data bytes its header "
                        f"announces; {refetch_advice(path)}")
    return payload if keep else None


def _read_idx(path: Path, magic: int, num_dims: int, count: int | None = None,
              keep: bool = True) -> tuple[tuple[int, ...], np.ndarray | None]:
    """Read one IDX file; return its header dims and the flat uint8 payload (writable; None
    unless ``keep``). A header whose count differs from ``count`` raises :class:`CountMismatch`
    before any data is decompressed."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as stream:
            dims = _read_header(stream, path, magic, num_dims)
            if count is not None and dims[0] != count:
                raise CountMismatch(path, dims[0], count)
            expected = int(np.prod(dims, dtype=np.int64))
            if path.suffix != ".gz":
                actual = path.stat().st_size - (4 + 4 * num_dims)
                if actual != expected:
                    what = "truncated" if actual < expected else "too long"
                    raise DataError(f"{path}: {what}: header says {expected} data bytes, file holds "
                                    f"{actual}; {refetch_advice(path)}")
            payload = _read_payload(stream, path, expected, keep)
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DataError(f"{path}: corrupt or truncated gzip ({error}); {refetch_advice(path)}") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read ({error.strerror or error}); {refetch_advice(path)}") from None
    return dims, payload

def read_images(path: str | os.PathLike, count: int | None = None) -> np.ndarray:
    """Read an IDX image file (``.gz`` or raw); return uint8 ``(N, 784)``, row-major 28x28 per row.

    ``count`` (the number of labels, when known) is checked against the header before the
    images are decompressed: :class:`CountMismatch` if they differ.
    """
    path = Path(path)
    dims, payload = _read_idx(path, IMAGE_MAGIC, 3, count)
    return payload.reshape(dims[0], NUM_PIXELS)

def scan_images(path: str | os.PathLike) -> int:
    """Check an IDX image file as :func:`read_images` does, in constant memory; return its count."""
    path = Path(path)
    dims, _ = _read_idx(path, IMAGE_MAGIC, 3, keep=False)
    return dims[0]

def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX label file (``.gz`` or raw); return int64 ``(N,)`` with values in 0..9."""
    path = Path(path)
    _, payload = _read_idx(path, LABEL_MAGIC, 1)
    if payload.size and payload.max() >= NUM_CLASSES:
        index = int(np.argmax(payload >= NUM_CLASSES))
        raise DataError(f"{path}: label {payload[index]} at index {index} is outside 0..9; "
                        f"{refetch_advice(path)}")
    return payload.astype(np.int64)

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
    header = struct.pack(">4I", IMAGE_MAGIC, len(images), IMAGE_SIDE, IMAGE_SIDE)
    _write_idx_gz(Path(dest), header, images)

def write_idx_labels(dest: str | os.PathLike, labels: np.ndarray) -> None:
    """Write labels ``(N,)`` in 0..9 as a gzip IDX label file (atomic)."""
    labels = np.asarray(labels)
    header = struct.pack(">2I", LABEL_MAGIC, len(labels))
    _write_idx_gz(Path(dest), header, labels.astype(np.uint8))

def check_label_counts(split: str, labels: np.ndarray, where: str) -> None:
    counts = tuple(int(c) for c in np.bincount(labels, minlength=NUM_CLASSES))
    expected = tuple(OFFICIAL_LABEL_COUNTS[split])
    if counts != expected:
        raise DataError(f"{where}: {split} label counts {list(counts)} differ from the official "
                        f"MNIST counts {list(expected)}; this is not MNIST")
