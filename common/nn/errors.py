"""The errors the core raises for problems a user can fix (as opposed to bugs).

A :class:`UserError` carries one line that says what is wrong and, where possible, what to do;
the command-line wrapper (``common.cli.run_cli``) prints it as ``error: ...`` and exits with
code 2 instead of showing a traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with the input (options, data files, settings) that the user can fix.

    The message must be one line that says what is wrong and, where possible, what to do.
    """


class DivergenceError(UserError):
    """Training blew up: an overflow, or a loss that became NaN or infinite."""
