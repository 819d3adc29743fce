"""The learner's side: copy the blank worksheet, load a filled one, grade it, train on it.

The worksheet is one Python file, ``worksheet.py``, in a folder of the learner's own
(``my_exercises/`` by default). It is read and run from its source each time (no cached
bytecode, nothing added to the import path or the table of loaded modules), so an edit counts at once.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator, NamedTuple, Sequence

from common.exercises.catalogue import BY_NAME, EXERCISES, STAGES, Exercise
from common.exercises.grading import NotWritten, Wrong, describe_exception
from common.files import atomic_write_text
from common.nn.errors import UserError
from common.nn.textbook import Textbook

WORKSHEET = "worksheet.py"
DEFAULT_DIR = Path("my_exercises")
BLANK = Path(__file__).resolve().parent / WORKSHEET
PASS, BLANK_STATUS, FAILED = "pass", "not yet written", "failed"


def start_worksheet(directory: str | Path = DEFAULT_DIR, force: bool = False) -> str:
    """Copy the blank worksheet into ``directory`` and say what was done. A copy the learner has
    edited is never overwritten, unless ``force`` (a :class:`UserError` otherwise)."""
    directory = Path(directory)
    target, blank = directory / WORKSHEET, BLANK.read_text(encoding="utf-8")
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} is a file, not a folder; choose another folder")
    if target.exists() and not force:
        if target.read_bytes() == blank.encode("utf-8"):
            return f"{target} is already there, untouched; fill in an exercise and run python -m common.exercises check"
        raise UserError(f"{target} has your edits; start never overwrites them (add --force to replace it with a "
                        "blank copy, losing them)")
    atomic_write_text(target, blank)
    return (f"wrote {target}: {len(EXERCISES)} exercises, stage 01 to 06 and batch normalization (stage 07). Fill in "
            f"{EXERCISES[0].name} first, then: python -m common.exercises check {EXERCISES[0].name}"
            + ("" if directory == DEFAULT_DIR else f" --dir {directory}"))


def load_worksheet(directory: str | Path = DEFAULT_DIR) -> ModuleType:
    """Run the learner's ``directory/worksheet.py`` and return it as a module; one-line
    :class:`UserError` if it is missing or does not import."""
    path = Path(directory) / WORKSHEET
    if not path.is_file():
        raise UserError(f"{path} not found; python -m common.exercises start {directory} copies the blank worksheet there")
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    module = ModuleType("worksheet")
    module.__file__ = str(path)
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)  # the learner's own file, as python would run it
    except SyntaxError as error:
        raise UserError(f"{path} does not import: SyntaxError: {error.msg} (line {error.lineno})") from None
    except (Exception, SystemExit) as error:  # whatever the file raises, one line says what
        raise UserError(f"{path} does not import: {describe_exception(error)}") from None
    return module


@dataclass(frozen=True)
class Result:
    """How one exercise fared: ``status`` is ``pass``, ``not yet written`` or ``failed`` (``message`` says why)."""

    exercise: Exercise
    status: str
    message: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        """``01  dense_backward         failed: dW has shape ... -- see docs/math.md#...``"""
        text = f"{self.exercise.stage}  {self.exercise.name:<22} {self.status}"
        return text + (f": {self.message} -- see {self.exercise.hint}" if self.status == FAILED else "")


def grade(exercise: Exercise, function: object) -> Result:
    """Run ``exercise``'s check on ``function`` (a learner's answer, or None when the file lacks it)."""
    started = time.perf_counter()
    if function is None:
        return Result(exercise, FAILED, f"there is no function {exercise.name} in the worksheet; keep its name")
    if not callable(function):
        return Result(exercise, FAILED, f"{exercise.name} is a {type(function).__name__}, not a function")
    try:
        exercise.check(function)
    except NotWritten:
        return Result(exercise, BLANK_STATUS, seconds=time.perf_counter() - started)
    except Wrong as error:
        return Result(exercise, FAILED, str(error), time.perf_counter() - started)
    except Exception as error:  # a return value odd enough to trip the checker: still one line
        return Result(exercise, FAILED, f"the checker could not read its answer ({describe_exception(error)})",
                      time.perf_counter() - started)
    return Result(exercise, PASS, seconds=time.perf_counter() - started)


def select(names: Sequence[str] | None = None) -> list[Exercise]:
    """The exercises named (a name, or a stage such as ``04`` or the rung ``bn`` for all of its), in ladder
    order; all if none."""
    if not names:
        return list(EXERCISES)
    chosen = set()
    for name in names:
        stage = name.zfill(2) if name.isdigit() else name
        if stage in STAGES:
            chosen.update(exercise.name for exercise in EXERCISES if exercise.stage == stage)
        elif name in BY_NAME:
            chosen.add(name)
        else:
            raise UserError(f"no exercise {name!r}; name one of {', '.join(BY_NAME)}, or a stage 01 .. 06, or bn "
                            "(batch normalization, stage 07's)")
    return [exercise for exercise in EXERCISES if exercise.name in chosen]


def check_worksheet(directory: str | Path = DEFAULT_DIR, names: Sequence[str] | None = None) -> Iterator[Result]:
    """Grade the learner's worksheet in ``directory``, one :class:`Result` per exercise asked for
    (names or stages, see :func:`select`; all by default), as each check ends."""
    exercises = select(names)
    module = load_worksheet(directory)
    for exercise in exercises:
        yield grade(exercise, getattr(module, exercise.name, None))


def summary(results: Sequence[Result]) -> str:
    """``3 of 22 pass, 1 failed, 18 not yet written; next: dense_backward (docs/math.md#...)``."""
    counts = {status: sum(result.status == status for result in results) for status in (PASS, FAILED, BLANK_STATUS)}
    text = f"{counts[PASS]} of {len(results)} pass, {counts[FAILED]} failed, {counts[BLANK_STATUS]} not yet written"
    todo = [result.exercise for result in results if result.status != PASS]
    return text + (f"; next: {todo[0].name} ({todo[0].hint})" if todo else "")


class LearnerBook(NamedTuple):
    """What :func:`load_learner_book` returns: the textbook, and which of its functions are the learner's."""

    book: Textbook          # the reference, with every function the learner has written standing in
    replaced: list[str]     # the Textbook functions now the learner's, in ladder order
    blank: list[str]        # the Textbook functions still blank (or missing): the reference computes them


def load_learner_book(directory: str | Path = DEFAULT_DIR, results: Sequence[Result] | None = None) -> LearnerBook:
    """A :class:`Textbook` in which every function of the learner's worksheet that is written (its
    check does not end in ``NotImplementedError``) replaces the reference one, right or wrong: a
    stage then trains on the learner's code (``common.protocol.train_stage(spec, seed, data, book=...)``).

    ``results`` from :func:`check_worksheet`, if the caller has them, saves grading again. Exercises
    that are no ``Textbook`` function (``minibatches``, ``dropout_layer_forward``: the training loop
    and the dropout layer do that part) are graded but not used. ``batchnorm_forward`` and
    ``batchnorm_backward`` are used by stage 07's batch-normalization layers while training (the running
    averages are updated from the mean and variance in the learner's cache); its predictions normalise
    with the textbook's ``batchnorm_inference``, which is no exercise. ``random_shift`` is used by stages
    05 and 06: stage 07 distorts its digits with ``common.nn.affine.random_affine`` instead, which is no
    exercise either. During training, an exception from the learner's function ends the run with one
    line naming it (a :class:`UserError`).
    """
    module = load_worksheet(directory)
    fields = [field.name for field in dataclasses.fields(Textbook)]
    exercises = [exercise for exercise in EXERCISES if exercise.name in fields]
    status = {result.exercise.name: result.status for result in results or ()}
    replacements, blank = {}, []
    for exercise in exercises:
        function = getattr(module, exercise.name, None)
        written = callable(function) and status.get(exercise.name, None) != BLANK_STATUS
        if written and exercise.name not in status:
            written = grade(exercise, function).status != BLANK_STATUS
        if written:
            replacements[exercise.name] = guarded(function, exercise.name)
        else:
            blank.append(exercise.name)
    return LearnerBook(dataclasses.replace(Textbook(), **replacements), list(replacements), blank)


def guarded(function: Callable, name: str) -> Callable:
    """``function``, except that an exception it raises in training becomes one line naming it.

    Floating-point errors pass through: the training loop turns them into its divergence message.
    """

    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (FloatingPointError, MemoryError, UserError):
            raise
        except Exception as error:  # the learner's code: one line, not a traceback
            raise UserError(f"your {name} raised {describe_exception(error)} during training; "
                            f"python -m common.exercises check {name} says more") from None

    return call
