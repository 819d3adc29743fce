"""Committed results match today's code, and a user's own commands never change them.

* Every saved run under results/ (the comparison's, the ablations', the tuning's) carries the fingerprint
  today's code gives its settings: a change that can move a number cannot land without regenerating what
  it moves.
* The README's short comparison, a quick stage and the full comparison with every run reused leave every
  committed file byte for byte (a run of your own goes to results/local/, git-ignored).
"""
from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mnist_available import needs_mnist

from common.runs import expected_fingerprint, read_record

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"
RUN_FOLDERS = [RESULTS / "runs", RESULTS / "ablations" / "runs", RESULTS / "tuning" / "runs",
               RESULTS / "speedrun" / "runs"]


def committed_records() -> list[Path]:
    return sorted(path for folder in RUN_FOLDERS for path in folder.rglob("seed*.json"))


def stale_records() -> list[str]:
    """The committed run records whose fingerprint is not the one today's code gives them."""
    stale = []
    for path in committed_records():
        record, why = read_record(path)
        if record is None:
            stale.append(f"{path.relative_to(REPO)}: {why}")
        elif record["fingerprint"] != expected_fingerprint(record):
            stale.append(str(path.relative_to(REPO)))
    return stale


def test_every_committed_run_has_the_fingerprint_of_the_committed_code():
    assert len(committed_records()) >= 27 + 87, "the comparison's and the ablations' runs are committed"
    stale = stale_records()
    assert not stale, (f"{len(stale)} committed runs were made by other code (first: {stale[:3]}); regenerate "
                       "them with the commands their pages name")


def test_the_tuning_tables_come_from_their_saved_runs():
    """Each committed tuning table has its runs saved beside it, one per row of its CSV."""
    for table in sorted((RESULTS / "tuning").glob("*.csv")):
        runs = list((RESULTS / "tuning" / "runs" / table.stem).rglob("seed*.json"))
        rows = table.read_text(encoding="utf-8").strip().splitlines()[1:]
        assert len(runs) == len(rows), f"{table.name}: {len(rows)} rows, {len(runs)} saved runs"


def tracked_digests() -> dict[str, str]:
    """sha256 of every tracked file under results/ and of README.md."""
    listed = subprocess.run(["git", "ls-files", "results", "README.md"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.split()
    return {name: hashlib.sha256((REPO / name).read_bytes()).hexdigest() for name in listed if (REPO / name).is_file()}


def run(*command: str, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done


@needs_mnist
def test_a_users_own_runs_leave_the_committed_results_as_they_are():
    """The README's short run reuses the committed runs and writes its two-row table to results/local/; a
    quick stage writes to results/local/quick/; the full comparison, every run reused, writes nothing."""
    assert not stale_records(), "regenerate the committed runs first (the test above says which)"
    before = tracked_digests()
    short = run("experiments/compare.py", "--stages", "01,04", "--seeds", "0", "--quiet")
    assert "training ..." not in short.stdout and "results/local/comparison" in short.stdout
    table = (RESULTS / "local" / "comparison" / "comparison.md").read_text(encoding="utf-8")
    assert "| 01_one_hidden_gd" in table and "| 04_adam" in table and "| 03_minibatch" not in table
    run("stages/04_adam.py", "--quick", "--quiet", "--no-plots")
    full = run("experiments/compare.py", "--quiet")
    assert "training ..." not in full.stdout and "nothing written" in full.stdout
    assert tracked_digests() == before


def test_a_second_rendering_of_the_committed_comparison_would_write_the_same_files():
    """What the committed pages record as their source is what they were rendered from."""
    environment = json.loads((RESULTS / "environment.json").read_text(encoding="utf-8"))
    assert environment["runs"] == len(list((RESULTS / "runs").rglob("seed*.json")))
    assert len(environment.get("rendered_from", "")) == 16


@pytest.mark.parametrize("folder", ["runs", "ablations/runs", "speedrun/runs"])
def test_saved_runs_name_the_command_that_made_them(folder):
    for path in sorted((RESULTS / folder).rglob("seed*.json"))[:5]:
        command = json.loads(path.read_text(encoding="utf-8"))["environment"]["command"]
        assert "experiments/" in command, (path, command)


def tiny_runs_of_every_kind():
    """Synthetic data and tiny specs of every kind of run the studies make (full-batch descent; a perceptron
    with dropout, shifts and AdamW; a convolutional network), for tracing what a run executes."""
    import dataclasses

    import numpy as np

    from common.data import MNIST
    from common.stages import load_specs

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 784), dtype=np.uint8)
    data = MNIST(images[:200], rng.integers(0, 10, 200), images[200:], rng.integers(0, 10, 100))
    tiny = {"02": {"epochs": 2}, "05": {"epochs": 1, "sizes": (784, 16, 10), "input_dropout": 0.1, "hidden_dropout": 0.2},
            "06": {"epochs": 1, "layers": ("reshape 28x28x1", "conv 4 5x5 valid", "maxpool", "relu", "flatten",
                                           "dense 10")}}
    return data, {number: dataclasses.replace(spec, **tiny[number]) for number, spec in load_specs(list(tiny)).items()}


def test_a_saved_run_never_executes_the_modules_the_fingerprint_leaves_out():
    """The fingerprint skips common.runs.NEVER_RUN (the textbook and its layers, the finite differences),
    so editing them keeps every saved result: proved here by tracing a run of every kind the studies make
    (a perceptron with dropout, shifts and AdamW; a convolutional network; full-batch descent)."""
    import sys as system

    from common import runs
    from common.protocol import train_stage

    data, specs = tiny_runs_of_every_kind()
    executed: set[str] = set()

    def record(frame, event, arg):
        if event == "call":
            executed.add(Path(frame.f_code.co_filename).name)

    for spec in specs.values():
        system.setprofile(record)
        try:
            train_stage(spec, 0, data, progress=False)
        finally:
            system.setprofile(None)
    assert {"network.py", "train.py", "optimizers.py", "conv.py", "layers.py"} <= executed
    assert not executed & set(runs.NEVER_RUN), executed & set(runs.NEVER_RUN)


def feature_bodies(source: str, word: str) -> set[int]:
    """The lines of ``source`` that only a run using the feature ``word`` may execute: the bodies of the
    functions and classes named after it and of the ``if`` / ``elif`` clauses whose test names it (their
    tests run for every run, and are false for the others)."""
    from common.runs import _names_feature

    bodies: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        named = (isinstance(node, ast.If) and _names_feature(node.test, word)) or (
            isinstance(node, (ast.FunctionDef, ast.ClassDef)) and word in node.name.lower())
        if named:
            bodies.update(range(node.body[0].lineno, node.body[-1].end_lineno + 1))
    return bodies


def test_a_run_without_a_feature_never_executes_the_code_its_fingerprint_leaves_out():
    """The fingerprint of a run that uses no feature (common.runs.FEATURES: batch normalization, affine
    distortions) leaves out their modules and the statements naming them, so adding them kept every saved
    run: proved by tracing, line by line, a run of every kind the studies make without them."""
    import sys as system

    from common import runs
    from common.protocol import train_stage

    data, specs = tiny_runs_of_every_kind()
    core = {str(path.resolve()): path for path in runs.numeric_code_files()}
    executed: set[tuple[str, int]] = set()

    def record(frame, event, arg):
        if frame.f_code.co_filename not in core:
            return None
        if event == "line":
            executed.add((frame.f_code.co_filename, frame.f_lineno))
        return record

    for spec in specs.values():
        assert not runs.features_used(spec.settings())
        system.settrace(record)
        try:
            train_stage(spec, 0, data, progress=False)
        finally:
            system.settrace(None)
    files = {Path(name).name for name, _ in executed}
    assert {"network.py", "train.py", "optimizers.py", "conv.py", "layers.py", "protocol.py"} <= files, files
    for word in runs.FEATURES:
        assert not any(word in name for name in files), (word, files)
        for name, path in core.items():
            bodies = feature_bodies(path.read_text(encoding="utf-8"), word)
            ran = sorted(line for file, line in executed if file == name and line in bodies)
            assert not ran, f"{path.name} lines {ran} belong to {word!r} but ran without it"
        assert any(runs.feature_lines(path.read_text(encoding="utf-8"), word) for path in core.values()
                   if word not in path.stem), f"no statement outside its modules names {word!r}"
