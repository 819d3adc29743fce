"""Element-wise work on every core: split a big array operation into slices, one per thread.

Why: NumPy runs each element-wise operation (a ufunc such as ``np.maximum``, a comparison, a
copy) on one core, while its matrix products (the BLAS) use all of them. On a 2-core machine
the element-wise half of a convolutional step, or Adam's dozen passes over a million-parameter
vector, therefore runs at half speed. NumPy releases the GIL inside its element-wise loops, so
plain Python threads given disjoint slices of the same arrays do run at the same time.

:func:`for_slices` is the whole mechanism: it cuts ``range(length)`` into one consecutive piece
per thread and calls ``work(piece)`` for each, the last piece in the calling thread. The caller's
``work`` must write only its own piece of every output; then the numbers are exactly those of
``work(slice(0, length))``, whatever the thread count (element-wise results do not depend on
how the array is cut). Small operations run in one piece: a thread hand-off costs tens of
microseconds, more than it saves below ``MIN_ELEMENTS`` elements.

Threads: as many as the BLAS is told to use (``OPENBLAS_NUM_THREADS``, then ``OMP_NUM_THREADS``),
else the CPUs this process may run on; ``1`` turns the threads off.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable

# Below this many elements (1 MB of float32) an operation runs in the calling thread: measured
# with Adam on 2 cores, handing work to a thread and waiting for it costs more than it saves
# for vectors much shorter than this.
MIN_ELEMENTS = 2**18


def num_threads() -> int:
    """Threads for element-wise work: the BLAS's setting if given, else the usable CPUs."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


THREADS = num_threads()
_pool: ThreadPoolExecutor | None = None


def for_slices(work: Callable[[slice], None], length: int, elements: int) -> None:
    """Call ``work(s)`` for consecutive slices ``s`` covering ``range(length)``, in parallel.

    ``elements``: how many array elements the whole operation touches, to decide whether
    threads pay off (``< MIN_ELEMENTS``: one call, ``work(slice(0, length))``). Exceptions raised
    by ``work`` in any thread reach the caller.
    """
    global _pool
    pieces = min(THREADS, length) if elements >= MIN_ELEMENTS else 1
    if pieces <= 1:
        work(slice(0, length))
        return
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=THREADS - 1, thread_name_prefix="elementwise")
    bounds = [length * i // pieces for i in range(pieces + 1)]
    futures = [_pool.submit(work, slice(bounds[i], bounds[i + 1])) for i in range(pieces - 1)]
    try:
        work(slice(bounds[-2], bounds[-1]))
    finally:
        wait(futures)  # never return while another thread still writes into the outputs
    for future in futures:
        future.result()
