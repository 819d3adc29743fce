"""Element-wise work on every core: one big array operation cut into slices, one per thread.

Why: NumPy runs each element-wise operation (a ufunc such as ``np.maximum``, a comparison, a copy)
on one core, while its matrix products use all of them. On a 2-core machine the element-wise half
of a convolutional step, or Adam's dozen passes over a million-parameter vector, therefore runs at
half speed. NumPy releases the GIL inside its element-wise loops, so plain Python threads given
disjoint slices of the same arrays do run at the same time.

Two ways in, one mechanism (:func:`for_slices`):

* :func:`elementwise` ``(np.maximum, x, 0)``: one NumPy function with an ``out=`` argument,
  applied slice by slice of the first axis. The line reads as the textbook line,
  ``np.maximum(x, 0)``, with the threads behind one name;
* :func:`by_rows` ``(step, a, b, out=c)``: a named element-wise step, called on matching slices of
  the first axis of every array it is given (the patch copy and the input-gradient sums of a
  convolution, the pooling tournament, an optimizer's update).

Either way the numbers are exactly those of one call over the whole array, whatever the thread
count: element-wise results do not depend on how the array is cut. Small operations run in one
piece in the calling thread: a hand-off costs tens of microseconds, more than it saves below
``MIN_ELEMENTS`` elements.

Threads: as many as the BLAS is told to use (``OPENBLAS_NUM_THREADS``, then ``OMP_NUM_THREADS``),
else the CPUs this process may run on; ``1`` turns the threads off.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Callable

import numpy as np

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


def pieces_for(length: int, elements: int) -> int:
    """How many threads an operation on ``elements`` numbers, cut along an axis of ``length``, is split over."""
    return min(THREADS, length) if elements >= MIN_ELEMENTS else 1


def for_slices(work: Callable[[slice], Any], length: int, elements: int) -> None:
    """Call ``work(rows)`` for consecutive slices ``rows`` covering ``range(length)``, in parallel.

    ``elements``: how many array elements the whole operation touches, to decide whether
    threads pay off (``< MIN_ELEMENTS``: one call, ``work(slice(0, length))``). Exceptions raised
    by ``work`` in any thread reach the caller.
    """
    global _pool
    pieces = pieces_for(length, elements)
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


class _Sliced:
    """``function(*args, **kwargs)`` on rows ``rows`` of the array arguments that ``cut`` picks (the rest whole)."""

    def __init__(self, function: Callable, args: tuple, kwargs: dict, cut: Callable[[Any], bool]) -> None:
        self.function, self.args, self.kwargs, self.cut = function, args, kwargs, cut

    def __call__(self, rows: slice) -> None:
        args = [arg[rows] if self.cut(arg) else arg for arg in self.args]
        kwargs = {name: arg[rows] if self.cut(arg) else arg for name, arg in self.kwargs.items()}
        self.function(*args, **kwargs)


def elementwise(function: Callable, *args: Any, out: np.ndarray | None = None) -> np.ndarray:
    """``function(*args, out=out)``, computed slice by slice of the first axis on every core.

    ``function``: an element-wise NumPy function with an ``out=`` argument (``np.maximum``,
    ``np.multiply``, ...). Array arguments with the output's number of axes and first length are cut
    like it; anything else (a scalar, a row to broadcast) is passed whole. ``out`` defaults to
    ``np.empty_like`` of the first argument. Returns ``out``: exactly ``function(*args)``.
    """
    if out is None:
        out = np.empty_like(args[0])
    shape = out.shape
    if pieces_for(shape[0], out.size) <= 1:
        return function(*args, out=out)  # small: one call, here

    def cut(arg: Any) -> bool:
        return isinstance(arg, np.ndarray) and arg.ndim == len(shape) and len(arg) == shape[0]

    for_slices(_Sliced(function, args, {"out": out}, cut), shape[0], out.size)
    return out


def by_rows(function: Callable, *args: Any, **kwargs: Any) -> None:
    """``function(*args, **kwargs)`` on consecutive slices of the first axis of every array argument, on
    every core.

    Every NumPy array among the arguments is cut along its first axis (they must all have the same
    first length); anything else is passed whole. ``function`` must write only into its arguments'
    rows, as an element-wise step does; then the result is exactly that of one call on everything.
    """
    arrays = [arg for arg in (*args, *kwargs.values()) if isinstance(arg, np.ndarray)]
    length = len(arrays[0])
    if any(len(array) != length for array in arrays):
        raise ValueError(f"by_rows: the arrays' first lengths differ: {[len(a) for a in arrays]}")
    elements = max(array.size for array in arrays)
    if pieces_for(length, elements) <= 1:
        function(*args, **kwargs)  # small: one call, here
        return
    for_slices(_Sliced(function, args, kwargs, lambda arg: isinstance(arg, np.ndarray)), length, elements)
