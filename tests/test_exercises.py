"""The graded exercises (common.exercises): the reference answers pass, the blank worksheet is "not
yet written" everywhere, every typical wrong answer (tests/exercise_mutants.py) fails with words
naming its symptom, the command line speaks in one-line errors, and a worksheet filled with the
answers trains exactly like the reference textbook.
"""
from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from exercise_mutants import MUTANTS
from mnist_available import needs_mnist

from common.exercises import EXERCISES, WORKSHEET, check_worksheet, grade, load_learner_book, main, start_worksheet
from common.exercises.catalogue import BY_NAME
from common.exercises.learner import BLANK
from common.nn import reference
from common.nn.errors import UserError
from common.nn.layers import Dropout
from common.nn.network import Architecture, Network
from common.nn.textbook import Textbook, TextbookDropout, textbook_parts
from common.nn.train import iterate_minibatches, train

REPO = Path(__file__).resolve().parent.parent
BOOK_FIELDS = [field.name for field in dataclasses.fields(Textbook)]


def filled_source(extra: str = "") -> str:
    """A worksheet whose functions are the reference answers, written out as source (helpers included),
    then ``extra`` (e.g. a mutant that takes a name's place)."""
    parts = ["from __future__ import annotations", "import math", "from collections.abc import Iterator",
             "import numpy as np", "from common.nn import reference"]
    for name in ["softmax", "_pool_windows"] + [exercise.name for exercise in EXERCISES]:
        parts.append(inspect.getsource(getattr(reference, name)))
    return "\n\n".join(parts) + "\n" + extra


def write_worksheet(folder: Path, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / WORKSHEET).write_text(source, encoding="utf-8")
    return folder


def with_mutant(mutant_id: str) -> str:
    """The filled worksheet with one exercise replaced by a mutant, defined in the file itself."""
    name, function, _ = MUTANTS[mutant_id]
    return filled_source(f"{inspect.getsource(function)}\n{name} = {function.__name__}\n")


# -- what is graded ---------------------------------------------------------------------------------

def test_every_exercise_is_a_reference_function_with_the_worksheets_signature():
    from common.exercises import worksheet

    assert [exercise.stage for exercise in EXERCISES] == sorted(exercise.stage for exercise in EXERCISES)
    for exercise in EXERCISES:
        answer, blank = getattr(reference, exercise.name), getattr(worksheet, exercise.name)
        assert inspect.signature(answer).parameters.keys() == inspect.signature(blank).parameters.keys(), exercise.name
        assert [p.default for p in inspect.signature(answer).parameters.values()] == \
               [p.default for p in inspect.signature(blank).parameters.values()], exercise.name
        assert f"docs/math.md#{exercise.section}" in inspect.getdoc(blank), exercise.name
    headings = [line for line in (REPO / "docs" / "math.md").read_text(encoding="utf-8").splitlines()
                if line.startswith("#")]
    anchors = {line.lstrip("#").strip().lower().replace(" ", "-") for line in headings}
    assert {exercise.section for exercise in EXERCISES} <= anchors


def test_the_reference_answers_pass_every_check_in_a_few_seconds(tmp_path):
    write_worksheet(tmp_path, filled_source())
    started = time.perf_counter()
    results = list(check_worksheet(tmp_path))
    assert time.perf_counter() - started < 10
    assert [result.exercise.name for result in results] == [exercise.name for exercise in EXERCISES]
    assert [result.line() for result in results if result.status != "pass"] == []


def test_the_blank_worksheet_is_not_yet_written_everywhere(tmp_path, capsys):
    start_worksheet(tmp_path / "mine")
    assert main(["check", "--dir", str(tmp_path / "mine")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(EXERCISES) + 1
    assert all(line.endswith("not yet written") for line in lines[:-1]), lines
    assert lines[-1].startswith(f"0 of {len(EXERCISES)} pass, 0 failed, {len(EXERCISES)} not yet written; next: "
                                "dense_forward (docs/math.md#forward-pass)")


# -- typical mistakes -------------------------------------------------------------------------------

@pytest.mark.parametrize("mutant_id", list(MUTANTS))
def test_each_typical_mistake_fails_with_words_that_name_it(mutant_id):
    name, function, words = MUTANTS[mutant_id]
    result = grade(BY_NAME[name], function)
    assert result.status == "failed", f"{mutant_id} passed its check"
    assert "\n" not in result.message
    for word in words:
        assert word in result.message, f"{mutant_id}: {word!r} not in {result.message!r}"


def test_the_required_mistakes_are_all_there():
    required = ["loss gradient not divided by the batch size", "transposed weight gradient",
                "bias gradient over the wrong axis", "relu backward at zero (>= 0)", "adam without bias correction",
                "adam correction with power t + 1", "adam correction with power t - 1", "dropout without rescaling",
                "max-pool backward spreads over ties", "a true convolution (kernel flipped)"]
    assert set(required) <= set(MUTANTS) and len(MUTANTS) >= len(required) + 5


def test_a_mistake_in_the_file_gets_one_line_with_the_maths_section(tmp_path, capsys):
    write_worksheet(tmp_path, with_mutant("transposed weight gradient"))
    assert main(["check", "01", "--dir", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == ("01  dense_backward         failed: dW has shape (3, 5), expected (5, 3): transposed? "
                        "-- see docs/math.md#backpropagation-through-a-dense-layer")
    assert [line.split()[2].rstrip(":") for line in lines[:-1]] == ["pass", "failed", "pass", "pass", "pass", "pass"]
    assert lines[-1] == ("5 of 6 pass, 1 failed, 0 not yet written; "
                         "next: dense_backward (docs/math.md#backpropagation-through-a-dense-layer)")


def test_a_crash_and_a_missing_function_are_one_line_each(tmp_path, capsys):
    source = filled_source("\ndef relu_backward(da, z):\n    raise RuntimeError('oops')\n\ndel sgd_step\n")
    write_worksheet(tmp_path, source)
    assert main(["check", "relu_backward", "sgd_step", "--dir", str(tmp_path)]) == 1
    relu, sgd, _ = capsys.readouterr().out.splitlines()
    line = source.splitlines().index("    raise RuntimeError('oops')") + 1
    assert f"failed: raised RuntimeError: oops ({WORKSHEET}, line {line})" in relu
    assert "there is no function sgd_step in the worksheet" in sgd


def test_an_endless_loop_is_stopped(monkeypatch):
    monkeypatch.setattr("common.exercises.grading.TIME_LIMIT", 0.2)

    def relu_forward(z):
        while True:
            pass

    result = grade(BY_NAME["relu_forward"], relu_forward)
    assert result.status == "failed" and "endless loop" in result.message


# -- the command line -------------------------------------------------------------------------------

def test_start_copies_the_blank_and_never_overwrites_edits(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["start"]) == 0
    copy = tmp_path / "my_exercises" / WORKSHEET
    assert copy.read_text(encoding="utf-8") == BLANK.read_text(encoding="utf-8")
    assert main(["start"]) == 0  # an untouched copy: nothing to lose
    assert "untouched" in capsys.readouterr().out
    copy.write_text(filled_source(), encoding="utf-8")
    with pytest.raises(UserError, match="has your edits.*--force"):
        start_worksheet("my_exercises")
    assert copy.read_text(encoding="utf-8") == filled_source()
    assert main(["start", "--force"]) == 0
    assert copy.read_text(encoding="utf-8") == BLANK.read_text(encoding="utf-8")


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common.exercises", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_the_command_line_speaks_in_one_line_errors(tmp_path):
    assert run_module("start", cwd=tmp_path).returncode == 0
    (tmp_path / "my_exercises" / WORKSHEET).write_text("def dense_forward(x, W, b):\n    return x @ W + b\n")
    refused = run_module("start", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
    passed = run_module("check", "dense_forward", cwd=tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.splitlines()[0].split() == ["01", "dense_forward", "pass"]
    (tmp_path / "my_exercises" / WORKSHEET).write_text("def dense_forward(x, W, b)\n    return x\n")
    for args, words in ((("check",), "does not import: SyntaxError"), (("check", "adam"), "no exercise 'adam'"),
                        (("check", "--dir", "nowhere"), "not found; python -m common.exercises start nowhere"),
                        (("stop",), "invalid choice")):
        done = run_module(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and words in done.stderr, done.stderr
    assert {path.name for path in (tmp_path / "my_exercises").iterdir()} == {WORKSHEET}  # no __pycache__


def test_a_worksheet_that_raises_on_import_is_one_line(tmp_path):
    write_worksheet(tmp_path, "import numpy as np\nnp.zeros(3)[5]\n")
    with pytest.raises(UserError, match=rf"does not import: IndexError: .*\({WORKSHEET}, line 2\)"):
        list(check_worksheet(tmp_path))


# -- training on the learner's functions ------------------------------------------------------------

def test_the_learner_book_holds_what_is_written(tmp_path):
    start_worksheet(tmp_path)
    blank = (tmp_path / WORKSHEET).read_text(encoding="utf-8")
    written = ("\n\ndef dense_backward(dz, x, W):\n    return dz @ W.T, x.T @ dz, dz.sum(axis=0)\n"
               "\n\ndef adam_step(param, grad, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):\n"
               "    param -= lr * grad  # wrong, but written: it trains, and check says what is wrong\n"
               "\n\ndef minibatches(num_examples, batch_size, rng):\n    yield np.arange(num_examples)\n")
    (tmp_path / WORKSHEET).write_text(blank + written, encoding="utf-8")
    book, replaced, blank_names = load_learner_book(tmp_path)
    assert replaced == ["dense_backward", "adam_step"]
    assert sorted(replaced + blank_names) == sorted(name for name in BOOK_FIELDS if name in BY_NAME)
    assert book.replaced() == ["dense_backward", "adam_step"]
    assert book.dense_backward.__name__ == "dense_backward" and book.relu_backward is reference.relu_backward


def test_a_learners_function_that_raises_in_training_ends_the_run_in_one_line(tmp_path):
    write_worksheet(tmp_path, filled_source("\ndef relu_backward(da, z):\n    return da * z[:, :1, :1]\n"))
    book = load_learner_book(tmp_path).book
    with pytest.raises(UserError, match=r"your relu_backward raised IndexError: .* during training; "
                                        r"python -m common.exercises check relu_backward says more"):
        book.relu_backward(np.ones((2, 3)), np.ones((2, 3)))


SMALL = Architecture((36, 12, 8, 4), "relu", 0.2, 0.3, "float32")
SMALL_CONV = Architecture((36, 4), dtype="float32", layers=(
    "reshape 6x6x1", "conv 3 3x3 same", "maxpool", "relu", "conv 4 3x3 valid", "sigmoid", "flatten", "dense 5",
    "tanh", "dense 4"))


@pytest.mark.parametrize("architecture, rule", [(SMALL, "adam"), (SMALL, "momentum"), (SMALL_CONV, "rmsprop")],
                         ids=["perceptron, adam", "perceptron, momentum", "conv, rmsprop"])
def test_a_worksheet_of_the_answers_trains_exactly_like_the_reference(tmp_path, architecture, rule):
    write_worksheet(tmp_path, filled_source())
    learner = load_learner_book(tmp_path)
    assert learner.blank == [] and set(learner.replaced) == {name for name in BOOK_FIELDS if name in BY_NAME}
    rng = np.random.default_rng(0)
    x, y = rng.random((60, 36), dtype=np.float32), rng.integers(0, 4, 60)
    trained = []
    for book in (Textbook(), learner.book):
        layers, loss, make_optimizer = textbook_parts(book)
        network = Network.from_architecture(architecture, np.random.default_rng(1), kit=layers)
        history = train(network, make_optimizer(rule, 0.01, 0.1), x, y, epochs=2, batch_size=16,
                        rng=np.random.default_rng(2), loss=loss, progress=False,
                        augment=lambda batch, generator, book=book: book.random_shift(batch, generator, 1))
        trained.append((network.flat_params.copy(), [record["loss"] for record in history]))
    np.testing.assert_array_equal(trained[0][0], trained[1][0])
    assert trained[0][1] == trained[1][1]


@needs_mnist
def test_a_stage_trains_on_the_learners_book_like_on_the_reference(tmp_path):
    """Stage 05's kind of network (dropout, shifts, AdamW) on 3,000 real MNIST images, through the protocol."""
    from common.data import MNIST, load_mnist
    from common.protocol import StageSpec, train_stage

    data = load_mnist(fetch=False, progress=False)
    data = MNIST(data.train_images[:3000], data.train_labels[:3000], data.test_images[:1000], data.test_labels[:1000])
    spec = StageSpec(name="exercises", title="exercises", adds="", sizes=(784, 32, 10), optimizer="adam", lr=0.003,
                     epochs=2, batch_size=128, weight_decay=0.01, input_dropout=0.1, hidden_dropout=0.2, shift=2,
                     train_size=2000)
    write_worksheet(tmp_path, filled_source())
    runs = [train_stage(spec, 0, data, progress=False, book=book)
            for book in (Textbook(), load_learner_book(tmp_path).book)]
    assert runs[1].implementation.startswith("the textbook with your dense_forward, dense_backward")
    np.testing.assert_array_equal(runs[0].network.flat_params, runs[1].network.flat_params)
    np.testing.assert_array_equal(runs[0].probabilities, runs[1].probabilities)
    assert [(r["loss"], r["test_accuracy"]) for r in runs[0].history] == \
           [(r["loss"], r["test_accuracy"]) for r in runs[1].history]
    assert runs[0].history[-1]["test_accuracy"] > 0.6  # 32 steps: it learns (chance is 0.1)


# -- the answers the exercises added to the reference -----------------------------------------------

@pytest.mark.parametrize("num_examples, batch_size", [(10, 4), (1000, 128), (256, 128), (5, 8), (5, 5)])
def test_reference_minibatches_are_the_training_loops(num_examples, batch_size):
    ours = list(reference.minibatches(num_examples, batch_size, np.random.default_rng(3)))
    loops = list(iterate_minibatches(num_examples, batch_size, np.random.default_rng(3)))
    everything = np.arange(num_examples)
    assert [everything[batch].tolist() for batch in ours] == [everything[batch].tolist() for batch in loops]


def test_reference_dropout_layer_is_what_the_layers_do():
    x = np.random.default_rng(4).standard_normal((20, 30)).astype(np.float32)
    for training in (True, False):
        for rate in (0.0, 0.3):
            out, mask = reference.dropout_layer_forward(x, rate, np.random.default_rng(5), training)
            fast = Dropout(rate, np.random.default_rng(5)).forward(x, training=training)
            slow = TextbookDropout(rate, np.random.default_rng(5), Textbook()).forward(x, training=training)
            np.testing.assert_array_equal(out, fast)
            np.testing.assert_array_equal(out, slow)
            assert (mask is None) == (not training or rate == 0.0)


@needs_mnist
def test_stage_04_on_a_worksheet_of_the_answers_scores_as_the_fast_core(tmp_path):
    """The issue's promise, on the real MNIST: one epoch of stage 04 on a worksheet holding the reference
    answers reaches the fast core's test accuracy for the same seed, within 0.1 points."""
    import json

    from common.runner import main as stage_main
    from common.stages import load_specs

    folder = tmp_path / "answers"
    folder.mkdir()
    (folder / "worksheet.py").write_text("from common.nn.reference import *  # noqa: F401,F403\n")
    spec = load_specs(["04"])["04"]
    accuracies = []
    for extra in (["--exercises", str(folder)], []):
        out = tmp_path / ("yours" if extra else "fast")
        assert stage_main(spec, ["--epochs", "1", "--quiet", "--no-plots", "--out", str(out), *extra]) == 0
        accuracies.append(json.loads((out / "metrics.json").read_text())["test_accuracy"])
    assert abs(accuracies[0] - accuracies[1]) <= 0.001, accuracies
