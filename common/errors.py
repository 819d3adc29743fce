"""One exception type for problems the user can fix, and the wrapper that turns it into one line.

Every command-line entry point runs through :func:`run_cli`, so bad options, missing or corrupt
data and divergence end with a single ``error: ...`` line on stderr and a non-zero exit, never a
traceback wall.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence


class UserError(Exception):
    """A problem with the input (options, data files, settings) that the user can fix.

    The message must be one line that says what is wrong and, where possible, what to do.
    """


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
