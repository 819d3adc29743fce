"""Command-line helpers shared by every script: one-line errors, a parser to match, option types.

Every command-line entry point runs through :func:`run_cli`, so bad options, missing or corrupt
data and divergence end with a single ``error: ...`` line on stderr and a non-zero exit, never a
traceback wall.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from common import threads
from common.nn.errors import UserError
from common.paths import check_checkout

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a Unix tool reports when its reader goes away


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` and map every problem a user can meet to one line and an exit code.

    First, a script of one checkout must not run on another checkout's ``common`` package
    (:func:`common.paths.check_checkout`). A :class:`UserError` prints its message; a file that cannot be
    read or written (``OSError`` with a file name) names the file; running out of memory says so; Ctrl-C prints
    ``interrupted``; a closed output pipe (``... | head -1``) ends quietly. The threads ``--threads`` set
    (:mod:`common.threads`) are given back as they were when ``main`` returns, however it ends.
    """
    try:
        check_checkout()
        code = main(argv)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_BROKEN_PIPE
    except OSError as error:
        if error.filename:
            print(f"error: cannot use {error.filename}: {error.strerror or error}", file=sys.stderr)
        elif error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            print(f"error: cannot write: {error.strerror}", file=sys.stderr)
        else:
            raise
        return EXIT_USER_ERROR
    except MemoryError:
        print("error: out of memory; use a smaller network (--hidden) or batch (--batch-size)", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        threads.stop()
    return int(code or 0)


def writable_folder(path: Path, option: str = "--out") -> Path:
    """Check, before any work is done, that files can be written in ``path`` (created later if missing).

    Its nearest existing ancestor must be a folder in which a file can be created; nothing is left
    behind by the check. Raises a one-line :class:`UserError` naming the option otherwise.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option} {path}: {existing} is a file, not a folder; choose another folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UserError(f"{option} {path}: cannot write in {existing} ({error.strerror or error}); "
                        "choose another folder") from None
    return path


def _int_at_least(minimum: int):
    """An argparse type: a whole number no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def hidden_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer widths such as 128,64, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"hidden layer widths must be positive, got {text!r}")
    return sizes


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option ends with one ``error:`` line (and exit code 2), not the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see --help)\n")


def parse_list(text: str | None, kind: Callable[[str], object] = str, option: str = "list") -> list | None:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (``kind`` converts each item); None (option not given) stays None.

    Empty items are skipped. A list with nothing in it (``""``, ``","``), an item listed twice, or an
    item ``kind`` cannot read is a :class:`UserError` naming ``option``.
    """
    if text is None:
        return None
    try:
        items = [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{option}: cannot read the list {text!r}") from None
    if not items:
        raise UserError(f"{option} {text!r} lists nothing; give one or more comma-separated values")
    repeated = sorted({str(item) for item in items if items.count(item) > 1})
    if repeated:
        raise UserError(f"{option} lists {', '.join(repeated)} more than once")
    return items
