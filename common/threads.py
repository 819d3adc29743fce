"""How many threads the suite's arithmetic runs on: fitted to the cores other programs leave free.

Two kinds of threads do the work: OpenBLAS's (the matrix products) and ``common.nn.parallel``'s
(the element-wise work). Each step waits for the slowest of them. When another program keeps a
core busy, the thread of ours that shares that core gets half of it, and the whole step runs at
that pace: measured on 2 cores with one competing busy process, an epoch of the ``[784, 128, 64, 10]``
perceptron took about 3x as long on 2 threads as on 1 (benchmarks/under_load.py). Every
multithreaded numeric library collapses this way; none adjusts for the user.

``--threads auto`` (every script's default) starts a watcher thread that, every
:data:`PERIOD` seconds, reads how much of this process's CPUs other programs used over the last
:data:`WINDOW` seconds (Linux: the busy time of those CPUs in ``/proc/stat``, steal included, less
this process's own CPU time) and sets both thread counts to the cores left free: the CPUs this
process may use, less the cores the others keep busy (rounded), at least 1. The change applies to
the next product and the next element-wise operation; a step in flight finishes as it started. It
reacts within about a second when a busy program starts or stops. ``--threads N`` fixes both counts
at ``N``.

A thread count changes how OpenBLAS splits and orders its sums, so the last bits of a run (and,
thousands of steps later, a few test digits) can differ between thread counts. A run on an idle
machine under ``auto`` uses every core all along, as the committed results did; for bit-for-bit
repeats on a busy machine, fix the count with ``--threads``.

Where the counts cannot be read or set, ``auto`` keeps the threads as they start (the CPUs this
process may use, or ``OPENBLAS_NUM_THREADS``): no ``/proc/stat`` (macOS, Windows), or a BLAS other than
OpenBLAS (then only the element-wise threads follow). A thread count already set in the shell
(``OPENBLAS_NUM_THREADS`` or ``OMP_NUM_THREADS``) is the user's choice and is kept, unless
``--threads`` says otherwise.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import blas
from common.nn import parallel

AUTO = "auto"
PERIOD = 0.25
"""Seconds between two readings of the load."""
WINDOW = 1.0
"""The load is averaged over this many seconds (the last readings): a short burst moves nothing."""
MAX_CHANGES_SHOWN = 8
STAT_FILE = Path("/proc/stat")
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
_SETTERS = tuple(f"{prefix}_set_num_threads{suffix}" for prefix in ("scipy_openblas", "openblas")
                 for suffix in ("64_", "_64", ""))
_GETTERS = tuple(name.replace("_set_", "_get_") for name in _SETTERS)


def threads_option(text: str) -> str | int:
    """``--threads``: ``auto`` or a positive whole number (argparse's ``type``)."""
    text = text.strip().lower()
    if text == AUTO:
        return AUTO
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 'auto' or a whole number >= 1, got {text!r}")


def add_threads_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--threads auto|N`` to a script's options."""
    parser.add_argument("--threads", type=threads_option, default=None, metavar="auto|N",
                        help="threads for the arithmetic: 'auto' follows the cores other programs leave free "
                             "(the default, unless OPENBLAS_NUM_THREADS is set), N fixes them")


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (all of them where the system cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def shell_threads() -> int | None:
    """A thread count set in the shell (``OPENBLAS_NUM_THREADS``, then ``OMP_NUM_THREADS``), if any."""
    for variable in THREAD_VARIABLES:
        value = os.environ.get(variable, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


@functools.cache
def _openblas_functions(names: tuple[str, ...]) -> tuple:
    """The first function of ``names`` found in each OpenBLAS NumPy has loaded (looked up once: the
    loaded libraries do not change while the process runs)."""
    np.ones(1)  # NumPy, and with it the BLAS, is loaded by now
    found = []
    for path in blas.loaded_openblas():
        try:
            library = ctypes.CDLL(str(path))
        except OSError:
            continue
        function = next((getattr(library, name) for name in names if hasattr(library, name)), None)
        if function is not None:
            found.append(function)
    return tuple(found)


def blas_threads() -> int | None:
    """The thread count NumPy's OpenBLAS now uses (None without an OpenBLAS whose count can be read)."""
    getters = _openblas_functions(_GETTERS)
    return int(getters[0]()) if getters else None


def set_threads(count: int) -> bool:
    """Run the matrix products and the element-wise work on ``count`` threads from the next operation
    on; True if the BLAS's count was set too (False: another BLAS, whose count stays as it started)."""
    count = max(1, int(count))
    parallel.THREADS = count
    setters = _openblas_functions(_SETTERS)
    for setter in setters:
        setter(ctypes.c_int(count))
    return bool(setters)


def _read_busy(cpus: list[int]) -> float | None:
    """Seconds the ``cpus`` have been busy since boot (everything but idle and iowait), from /proc/stat."""
    wanted = {f"cpu{cpu}" for cpu in cpus}
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        lines = STAT_FILE.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    busy, seen = 0, 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted:
            # user nice system idle iowait irq softirq steal (guest time is inside user already)
            values = [int(value) for value in parts[1:9]]
            busy += sum(values) - values[3] - values[4]
            seen += 1
    return busy / ticks if seen == len(wanted) else None


def _own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used."""
    times = os.times()
    return times.user + times.system


@dataclass
class LoadReading:
    """A reading of the clock, the CPUs' busy time and this process's own CPU time."""

    wall: float
    busy: float
    own: float


def others_busy_cores(first: LoadReading, last: LoadReading) -> float:
    """How many cores other programs kept busy on average between two readings."""
    elapsed = last.wall - first.wall
    if elapsed <= 0:
        return 0.0
    return max(0.0, (last.busy - first.busy) - (last.own - first.own)) / elapsed


def fitted_threads(cores: int, others: float) -> int:
    """Threads for ``cores`` CPUs of which others keep ``others`` busy: the free ones, at least one."""
    return max(1, min(cores, cores - int(others + 0.5)))


@dataclass
class Governor:
    """The watcher thread of ``--threads auto``; :attr:`history` holds ``(seconds, threads)`` at every change."""

    cores: int
    cpus: list[int]
    history: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def reading(self) -> LoadReading | None:
        busy = _read_busy(self.cpus)
        return None if busy is None else LoadReading(time.monotonic(), busy, _own_cpu_seconds())

    def start(self) -> bool:
        """Start watching; False (and nothing started) where the load cannot be read."""
        if self.reading() is None:
            return False
        set_threads(self.cores)  # what the watcher assumes until its first change
        self._started = time.monotonic()
        self.history.append((0.0, self.cores))
        self._thread = threading.Thread(target=self._watch, name="threads-governor", daemon=True)
        self._thread.start()
        return True

    def _watch(self) -> None:
        readings: deque[LoadReading] = deque(maxlen=int(round(WINDOW / PERIOD)) + 1)
        current = self.cores
        while not self._stop.wait(PERIOD):
            reading = self.reading()
            if reading is None:
                return
            readings.append(reading)
            if len(readings) < 2:
                continue
            wanted = fitted_threads(self.cores, others_busy_cores(readings[0], readings[-1]))
            if wanted != current:
                set_threads(wanted)
                current = wanted
                self.history.append((round(time.monotonic() - self._started, 2), wanted))

    def stop(self) -> None:
        """Stop watching (the thread counts stay as they are)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


_governor: Governor | None = None
_held: str | None = None
_before: int | None = None  # the element-wise thread count before the first configure(), restored by stop()


def configure(setting: str | int | None) -> str:
    """Apply ``--threads`` (``None``: ``auto`` unless the shell fixed a count); returns what now holds, for
    the record: ``"auto (2 cores)"``, ``"2"``, ``"1 (from the shell)"``.

    Call once, after :func:`common.blas.configure`; a second call replaces the first.
    """
    global _held, _before
    if _before is None:
        _before = parallel.THREADS
    _held = _configure(setting)
    return _held


def _configure(setting: str | int | None) -> str:
    global _governor
    if _governor is not None:
        _governor.stop()
        _governor = None
    if setting is None:
        fixed = shell_threads()
        if fixed is not None:
            set_threads(fixed)
            return f"{fixed} (from the shell)"
        setting = AUTO
    if setting != AUTO:
        set_threads(int(setting))
        return str(setting)
    cpus = usable_cpus()
    set_threads(len(cpus))
    governor = Governor(cores=len(cpus), cpus=cpus)
    if not governor.start():
        return f"{len(cpus)} (auto: the load cannot be read here)"
    _governor = governor
    return f"auto ({len(cpus)} cores)"


def stop() -> None:
    """Stop the watcher of ``auto``, if one runs, and give back the thread counts the process started with
    (:func:`configure` not called: nothing to do)."""
    global _governor, _before, _held
    if _governor is not None:
        _governor.stop()
        _governor = None
    if _before is not None:
        set_threads(_before)
        _before, _held = None, None


def describe() -> str | None:
    """What :func:`configure` set (``"auto (2 cores)"``, ``"1"``, ...) and, for ``auto``, every change it made
    (``"auto (2 cores); 1 from 12.5 s, 2 from 40.2 s"``), for a run's record; None before it ran."""
    made = [f"{count} from {seconds:g} s" for seconds, count in changes()[1:]]
    if _held is None or not made:
        return _held
    return f"{_held}; " + ", ".join(made[:MAX_CHANGES_SHOWN]) + (", ..." if len(made) > MAX_CHANGES_SHOWN else "")


def changes() -> list[tuple[float, int]]:
    """``(seconds since start, threads)`` at each change ``auto`` made so far (empty if it is off)."""
    return list(_governor.history) if _governor is not None else []
