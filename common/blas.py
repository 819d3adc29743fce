"""NumPy's matrix-product library (the BLAS, OpenBLAS here): the one setting the suite changes, by an
explicit call.

Why: after every matrix product OpenBLAS keeps its worker threads spinning for 2**28 CPU cycles
(about 0.1 s), holding the other cores just when the element-wise work that follows wants them
(``common.nn.parallel``); with them spinning, splitting that work over threads gained nothing.
:func:`configure` tells OpenBLAS to let them rest after 2**20 cycles (about 0.4 ms) instead. Shorter
made the small perceptron slower (its threads then fall asleep between steps and must be woken),
longer gave the convolutional network's element-wise work less of the cores (both measured).

Every script calls :func:`configure` once, at the start of its ``main``; importing the suite changes
nothing. OpenBLAS reads the setting from its environment only when it is loaded, so the call finds
the loaded library, has it read the setting anew and restarts its threads with it; the process's
environment is left as it was. Speed is all it changes: the numbers are the same either way. A value
already in ``OPENBLAS_THREAD_TIMEOUT`` is kept. Where NumPy uses another BLAS (Accelerate, MKL), or
an OpenBLAS that does not export the functions the call needs (the one NumPy 2.5 ships keeps them
private), the call does nothing and returns False; ``OPENBLAS_THREAD_TIMEOUT=20`` set in the shell
before a script starts has the same effect there.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

THREAD_TIMEOUT = 20
"""OpenBLAS's ``OPENBLAS_THREAD_TIMEOUT``: its idle threads sleep after ``2**THREAD_TIMEOUT`` cycles."""

_VARIABLE = "OPENBLAS_THREAD_TIMEOUT"


def loaded_openblas() -> list[Path]:
    """The OpenBLAS libraries mapped into this process (Linux; an empty list elsewhere)."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split(maxsplit=5)[-1].strip() for line in maps if "openblas" in line.lower()}
    except OSError:
        return []
    return sorted(Path(path) for path in paths if path.startswith("/") and ".so" in Path(path).name)


def _library(path: Path) -> ctypes.CDLL | None:
    """The already loaded library at ``path`` if it exports what :func:`configure` needs."""
    try:
        library = ctypes.CDLL(str(path))
    except OSError:
        return None
    wanted = ("openblas_read_env", "blas_thread_shutdown_", "openblas_thread_timeout")
    return library if all(hasattr(library, name) for name in wanted) else None


def thread_timeout() -> int | None:
    """The thread timeout OpenBLAS now uses (0: its default of 28), or None when there is no OpenBLAS."""
    libraries = [library for library in map(_library, loaded_openblas()) if library is not None]
    return int(libraries[0].openblas_thread_timeout()) if libraries else None


def configure() -> bool:
    """Make NumPy's OpenBLAS rest its threads soon after each product; True if it now does.

    Nothing to do (True) when ``OPENBLAS_THREAD_TIMEOUT`` was set before NumPy loaded the library.
    """
    np.ones(1)  # NumPy, and with it the BLAS, is loaded by now
    libraries = [library for library in map(_library, loaded_openblas()) if library is not None]
    if not libraries:
        return False
    before = os.environ.get(_VARIABLE)
    os.environ[_VARIABLE] = before or str(THREAD_TIMEOUT)
    try:
        for library in libraries:
            library.openblas_read_env()
            library.blas_thread_shutdown_()  # the next product starts its threads with the new setting
    finally:
        if before is None:
            del os.environ[_VARIABLE]
    return all(library.openblas_thread_timeout() > 0 for library in libraries)
