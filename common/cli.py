"""Command-line helpers shared by every script: one-line errors, a parser to match, option types.

Every command-line entry point runs through :func:`run_cli`, so bad options, missing or corrupt
data and divergence end with a single ``error: ...`` line on stderr and a non-zero exit, never a
traceback wall.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from common.nn.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` and map a :class:`UserError` or Ctrl-C to one line and an exit code."""
    try:
        code = main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return int(code or 0)


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
    """``"0,1,2"`` -> ``[0, 1, 2]`` (``kind`` converts each item); None stays None.

    Empty items are skipped; an item ``kind`` cannot read is a :class:`UserError` naming ``option``.
    """
    if text is None:
        return None
    try:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{option}: cannot read the list {text!r}") from None
