"""Atomic file writes: write a hidden temporary file beside the target, then rename it into place.

An interrupted run therefore never leaves a half-written result that a later run would trust.
Every module that writes a file the suite reads back (data, models, results) goes through here.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import time
from pathlib import Path
from typing import IO, Any, Iterator

STALE_SECONDS = 600
"""A temporary ``.part`` file untouched for this long was left by a killed run and is removed."""


def _remove_stale_parts(path: Path) -> None:
    """Delete ``.NAME.part-*`` files beside ``path`` older than :data:`STALE_SECONDS`: what a
    run killed mid-write (``kill -9``, power loss) leaves behind. A write in progress is newer."""
    now = time.time()
    for part in path.parent.glob(f".{glob.escape(path.name)}.part-*"):
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > STALE_SECONDS:
                part.unlink()


def _sync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a hidden ``.NAME.part-XXXXXXXX`` file beside ``path`` for writing; on success flush
    it to disk and rename it to ``path``, on any error (or Ctrl-C) delete it. Parent folders are
    created as needed; stale temporary files of earlier killed runs are removed.

    ``mode`` is ``"wb"`` or ``"w"``; the file gets the usual permissions (0666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(path)
    temp = path.with_name(f".{path.name}.part-{secrets.token_hex(4)}")
    try:
        with open(temp, mode.replace("w", "x"), **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the name points at it
        os.replace(temp, path)
        _sync_folder(path.parent)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")
