"""Atomic file writes: write a hidden temporary file beside the target, then rename it into place.

An interrupted run therefore never leaves a half-written result that a later run would trust.
Every module that writes a file the suite reads back (data, models, results) goes through here.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import IO, Any, Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """Open a hidden ``.NAME.part-XXXXXXXX`` file beside ``path`` for writing; on success rename it
    to ``path``, on any error (or Ctrl-C) delete it. Parent folders are created as needed.

    ``mode`` is ``"wb"`` or ``"w"``; the file gets the usual permissions (0666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.part-{secrets.token_hex(4)}")
    try:
        with open(temp, mode.replace("w", "x"), **kwargs) as handle:
            yield handle
        os.replace(temp, path)
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
