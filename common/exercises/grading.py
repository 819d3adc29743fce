"""What every check shares: call a learner's function safely, and say in words what differs.

A check is a function ``check(f)`` that returns when ``f`` is right and raises :class:`Wrong` with
the first thing that is wrong, in a learner's words, otherwise. :func:`call` runs the learner's
code: ``NotImplementedError`` becomes :class:`NotWritten`, any other exception a one-line
:class:`Wrong` naming the line of the learner's file, and an input changed in place is a mistake
(optimizer steps name the arrays they may change). NumPy's overflow, division by zero and invalid
operations raise inside the call, as they do in training, where they stop the run.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import traceback
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

EXERCISES_DIR = Path(__file__).resolve().parent
NUMPY_DIR = Path(np.__file__).resolve().parent
TIME_LIMIT = 10.0
"""Seconds one call of a learner's function may take on the checks' small inputs."""


class NotWritten(Exception):
    """The function still raises ``NotImplementedError``: the blank body."""


class Wrong(Exception):
    """The first thing wrong with an answer; the message is what the learner reads."""


class TooSlow(BaseException):
    """Raised into the learner's code when a call outlasts :data:`TIME_LIMIT` (not an ``Exception``,
    so that an ``except Exception`` in that code cannot swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`TooSlow` inside the block after ``seconds`` (where a timer signal is available:
    the main thread of a Unix process; elsewhere no limit)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise TooSlow()

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def describe_exception(error: BaseException) -> str:
    """``ValueError: shapes (5,3) and (4,3) not aligned (worksheet.py, line 42)``: one line, with the
    last line of the learner's own code in the traceback."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    if len(text) > 160:
        text = text[:157] + "..."
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not Path(frame.filename).resolve().is_relative_to(EXERCISES_DIR)
              and not Path(frame.filename).resolve().is_relative_to(NUMPY_DIR)]
    if frames:
        text += f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})"
    return text


FloatMessage = Callable[[FloatingPointError], str]


def call(function: Callable, args: Mapping[str, object], may_change: Iterable[str] = (),
         float_error: FloatMessage | None = None) -> object:
    """``function(*args.values())`` as a check runs it: see the module docstring.

    ``args`` maps each argument's name to its value, in order; ``may_change`` names the arrays the
    function is meant to update in place. ``float_error`` turns a floating-point error (overflow,
    division by zero, an invalid operation) into the learner's message.
    """
    before = {name: value.copy() for name, value in args.items()
              if isinstance(value, np.ndarray) and name not in set(may_change)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            try:
                with time_limit(TIME_LIMIT):
                    result = function(*args.values())
            except TooSlow:
                raise Wrong(f"it ran for more than {TIME_LIMIT:g} s on a small input: an endless loop?") from None
            except NotImplementedError:
                raise NotWritten() from None
            except (NotWritten, Wrong):
                raise
            except FloatingPointError as error:
                if float_error is not None:
                    raise Wrong(float_error(error)) from None
                raise Wrong(f"NumPy reports {describe_exception(error)}; in training that stops the run") from None
            except Exception as error:  # the learner's code may raise anything: one line says what
                raise Wrong(f"raised {describe_exception(error)}") from None
    for name, value in before.items():
        if not np.array_equal(value, args[name], equal_nan=True):
            raise Wrong(f"it changes its argument {name} in place; leave the inputs as they are and return "
                        f"new arrays (the network may still need {name})")
    return result


def expect_updated(after: np.ndarray, before: np.ndarray, want: np.ndarray, what: str, how: str) -> None:
    """An optimizer step changed ``what`` in place (unless the right answer leaves it as it was)."""
    if np.array_equal(after, before) and not np.array_equal(want, before):
        raise Wrong(f"{what} did not change: update it in place ({how}); `{what} = ...` makes a new array "
                    f"that is lost when the function returns")


# -- words for numbers ---------------------------------------------------------------------------

def show(value: object) -> str:
    """A number or a small array, rounded for reading: ``[0.5, -0.3333, 0]``."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return f"{float(array):.4g}"
    return "[" + ", ".join(show(item) for item in array) + "]"


def unpack(result: object, names: tuple[str, ...]) -> tuple:
    """The ``len(names)`` values a function should return, or :class:`Wrong` saying what came back."""
    wanted = f"{len(names)} values ({', '.join(names)})"
    if result is None:
        raise Wrong(f"it returns None, expected {wanted}; is a return statement missing?")
    if not isinstance(result, tuple) or len(result) != len(names):
        got = f"{len(result)} values" if isinstance(result, (tuple, list)) else f"a {type(result).__name__}"
        raise Wrong(f"it returns {got}, expected {wanted}")
    return result


def number(value: object, what: str) -> float:
    """``value`` as a float if it is one number (a Python or NumPy scalar, or a 0-d array), else :class:`Wrong`."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        return float(value)
    if isinstance(value, np.ndarray):
        raise Wrong(f"{what} has shape {value.shape}: return one number, the mean over the batch")
    raise Wrong(f"{what} is a {type(value).__name__}, expected one number")


def expect_array(value: object, what: str, shape: tuple[int, ...], dtype: type | None = None) -> np.ndarray:
    """``value`` is an array of ``shape`` (and ``dtype``), or :class:`Wrong` says how it is not."""
    shape = tuple(shape)
    if value is None:
        raise Wrong(f"{what} is None, expected an array of shape {shape}; is a return statement missing?")
    if not isinstance(value, np.ndarray):
        kind = "one number" if np.ndim(value) == 0 else f"a {type(value).__name__}"
        raise Wrong(f"{what} is {kind}, expected a NumPy array of shape {shape}")
    if value.shape != shape:
        hint = ": transposed?" if value.ndim == 2 and value.shape == shape[::-1] else ""
        raise Wrong(f"{what} has shape {value.shape}, expected {shape}{hint}")
    if dtype is not None and value.dtype != np.dtype(dtype):
        raise Wrong(f"{what} is {value.dtype} for {np.dtype(dtype)} inputs; keep the inputs' dtype "
                    f"(np.zeros_like(x), not np.zeros(shape), which is float64)")
    return value


def close(got: np.ndarray, want: np.ndarray, rtol: float) -> bool:
    """Equal to ``rtol`` relative, with an absolute floor of ``rtol`` times the largest ``|want|``."""
    if got.shape != want.shape:
        return False
    floor = rtol * float(np.max(np.abs(want), initial=0.0)) + 1e-30
    with np.errstate(all="ignore"):
        return bool(np.allclose(got, want, rtol=rtol, atol=floor))


def expect_close(got: object, want: np.ndarray, what: str, against: str, *, rtol: float = 1e-6,
                 batch: int | None = None, case: str = "",
                 mistakes: Mapping[str, np.ndarray | None] | None = None) -> None:
    """``got`` equals ``want`` (the right answer) to ``rtol``; else :class:`Wrong` with the first
    explanation that fits: a known mistake (its message, when ``got`` equals that wrong answer),
    a constant factor (the batch size, a sign), a transpose, else the largest relative error.

    ``against`` names where ``want`` came from ("the numerical gradient"); ``case`` describes
    small hand-made inputs, and then the values are shown whole.
    """
    got = expect_array(got, what, want.shape)
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    if not np.all(np.isfinite(got64)) and np.all(np.isfinite(want64)):
        raise Wrong(f"{what} has nan or inf values{' for ' + case if case else ''}")
    if close(got64, want64, rtol):
        return
    for message, wrong in (mistakes or {}).items():
        if wrong is not None and close(got64, np.asarray(wrong, dtype=np.float64), max(rtol, 1e-6)):
            raise Wrong(message)
    factor = scale_factor(got64, want64)
    if factor is not None:
        raise Wrong(f"{what} {describe_factor(factor, batch)}")
    if got.ndim == 2 and got.shape[0] == got.shape[1] and close(got64.T, want64, rtol):
        raise Wrong(f"{what} is transposed")
    if case and want.size <= 8:
        raise Wrong(f"for {case}, {what} is {show(np.squeeze(got64))}, expected {show(np.squeeze(want64))}")
    raise Wrong(largest_error(got64, want64, what, against))


def scale_factor(got: np.ndarray, want: np.ndarray) -> float | None:
    """``c`` if ``got`` is ``c * want`` for one number ``c`` (not 1), else None."""
    norm = float(np.vdot(want, want))
    if norm == 0.0:
        return None
    factor = float(np.vdot(got, want)) / norm
    if abs(factor - 1.0) < 1e-6 or not close(got, factor * want, 1e-5):
        return None
    return factor


def describe_factor(factor: float, batch: int | None) -> str:
    """How ``factor`` times the right answer reads: the batch size, a sign, or the number."""
    if batch and batch > 1 and abs(factor * batch - 1.0) < 1e-3:
        return (f"is off by a factor of the batch size ({batch}): {batch} times too small; the 1/B of the "
                f"mean loss is already in the incoming gradient, so divide by B once, in the loss")
    if batch and batch > 1 and abs(factor / batch - 1.0) < 1e-3:
        return (f"is off by a factor of the batch size ({batch}): {batch} times too large; the loss is the "
                f"mean over the batch, so its gradient has a 1/B")
    if abs(factor + 1.0) < 1e-6:
        return "has the wrong sign (it is minus the right answer)"
    return f"is {factor:.4g} times the right answer"


def largest_error(got: np.ndarray, want: np.ndarray, what: str, against: str) -> str:
    """``max relative error 0.5 against the numerical gradient (dW[2, 1] is 0.1, expected 0.2)``."""
    with np.errstate(all="ignore"):
        errors = np.abs(got - want) / np.maximum(np.abs(got) + np.abs(want), 1e-8)
    index = np.unravel_index(int(np.argmax(errors)), errors.shape)
    where = f"{what}[{', '.join(str(int(i)) for i in index)}]" if errors.ndim else what
    return (f"max relative error {float(errors[index]):.2g} against {against} "
            f"({where} is {got[index]:.6g}, expected {want[index]:.6g})")


def random_arrays(seed: int, dtype: type, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Standard-normal arrays of ``shapes`` in ``dtype``, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]
