"""The errors the core raises for problems a user can fix (as opposed to bugs).

A :class:`UserError` carries one line that says what is wrong and, where possible, what to do.
Whoever calls the core decides how to show it; the suite's command-line scripts print it as
``error: ...`` and exit with a non-zero code instead of showing a traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with the input (settings, data, a saved network) that the user can fix.

    The message must be one line that says what is wrong and, where possible, what to do.
    """


class DivergenceError(UserError):
    """Training blew up: an overflow, or a loss that became NaN or infinite."""
