"""End-to-end: every stage script runs on the real MNIST, writes its outputs and learns; bad options fail cleanly."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAGES = sorted(p for p in (REPO / "stages").glob("[0-9][0-9]_*.py"))
FIGURES = ["loss.png", "accuracy.png", "confusion_matrix.png", "misclassified.png", "example_prediction.png"]


def run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "error::RuntimeWarning"})


def test_there_are_at_least_four_stages():
    """The suite's path starts with the four stages that reproduce the source designs."""
    names = [p.stem for p in STAGES]
    assert names[:4] == ["01_one_hidden_gd", "02_deep_relu", "03_minibatch", "04_adam"]


@pytest.mark.parametrize("script", STAGES, ids=lambda p: p.stem)
def test_stage_quick_run_writes_every_output_and_beats_chance(script: Path, tmp_path: Path):
    """`--quick` trains a tiny budget on real MNIST; metrics.json, the table, the model and every figure exist."""
    result = run([str(script.relative_to(REPO)), "--quick", "--quiet", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout and str(tmp_path) in result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("stage", "train_accuracy", "test_accuracy", "train_size", "test_size", "epochs", "seconds",
                "seed", "settings", "history"):
        assert key in metrics, key
    assert metrics["stage"] == script.stem
    assert metrics["test_size"] == 10_000
    assert metrics["test_accuracy"] > 0.6, "a tiny budget must still beat chance (10 %) by a wide margin"
    assert 0.0 <= metrics["train_accuracy"] <= 1.0
    assert len(metrics["history"]) == metrics["epochs"]
    first_layer = ["filters.png", "feature_maps.png"] if metrics["settings"].get("layers") else ["first_layer.png"]
    for name in FIGURES + first_layer + ["per_class.md", "model.npz"]:
        assert (tmp_path / name).stat().st_size > 0, name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_stage01_reports_the_held_out_slice(tmp_path: Path):
    """Stage 01 also reports accuracy on 350 held-out training images, as its source did."""
    result = run(["stages/01_one_hidden_gd.py", "--quick", "--quiet", "--no-plots", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["holdout_size"] == 350 and metrics["train_size"] == 1000
    assert metrics["settings"]["pixel_scale"] == "raw"
    assert "held-out accuracy" in result.stdout


@pytest.mark.slow
def test_stage04_clearly_learns_in_one_epoch(tmp_path: Path):
    """One epoch of the second design on all 60,000 images is already above 94 % on the official test set."""
    result = run(["stages/04_adam.py", "--epochs", "1", "--quiet", "--no-plots", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train_size"] == 60_000
    assert metrics["test_accuracy"] > 0.94


@pytest.mark.parametrize("args, fragment", [
    (["--epochs", "-3"], "--epochs"),
    (["--epochs", "0"], "--epochs"),
    (["--activation", "swish"], "unknown activation"),
    (["--init", "zeros"], "unknown initialisation"),
    (["--lr", "nan"], "--lr"),
    (["--hidden", "12,x"], "--hidden"),
    (["--data-dir", "/nonexistent/mnist"], "does not exist"),
    (["--nonsense"], "unrecognized"),
])
def test_bad_options_give_one_line_and_nonzero_exit(args: list[str], fragment: str, tmp_path: Path):
    """Bad options end with one `error:` line naming the problem, exit code 2, and no traceback."""
    result = run(["stages/04_adam.py", "--quick", "--out", str(tmp_path), *args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_corrupt_data_file_reaches_the_stage_as_one_line(tmp_path: Path):
    """A truncated IDX file in --data-dir stops a stage with one line naming the file (through common.data)."""
    data_dir = tmp_path / "mnist"
    data_dir.mkdir()
    from common.data import resolve_data_dir
    source = resolve_data_dir(None)
    for path in source.iterdir():
        if path.name.endswith("-ubyte.gz"):
            (data_dir / path.name).write_bytes(path.read_bytes())
    labels = data_dir / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:200])
    result = run(["stages/03_minibatch.py", "--quick", "--data-dir", str(data_dir), "--out", str(tmp_path / "o")])
    assert result.returncode != 0
    assert "t10k-labels-idx1-ubyte" in result.stderr
    assert "Traceback" not in result.stderr


def test_divergence_stops_with_a_clear_line(tmp_path: Path):
    """An absurd learning rate makes the loss overflow: the stage stops naming the epoch and suggesting a lower lr."""
    result = run(["stages/01_one_hidden_gd.py", "--quick", "--no-plots", "--lr", "1000", "--out", str(tmp_path)])
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "iteration" in last and "lower learning rate" in last
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("option", [["--hidden", "64"], ["--activation", "tanh"]])
def test_a_stage_given_as_layers_refuses_perceptron_options(option: list[str], tmp_path: Path):
    """Stage 06 is described layer by layer: --hidden and --activation are refused in one line, before training."""
    result = run(["stages/06_conv.py", "--quick", "--out", str(tmp_path), *option])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "layer by layer" in result.stderr
