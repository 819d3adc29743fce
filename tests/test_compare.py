"""The comparison runner: quick mode end to end, resuming, failures reported, README in sync with results/."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from experiments import compare

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, str]:
    """One quick comparison of every stage (seed 0), shared by the tests below."""
    out = tmp_path_factory.mktemp("compare")
    result = subprocess.run([sys.executable, "experiments/compare.py", "--quick", "--seeds", "0", "--quiet",
                             "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_quick_comparison_writes_tables_csv_and_figure(quick_run):
    """comparison.md has one row per stage, the CSV one row per run, and the figure exists."""
    out, _ = quick_run
    stages = sorted(p.stem for p in (REPO / "stages").glob("[0-9][0-9]_*.py"))
    table = (out / "comparison.md").read_text()
    for name in stages:
        assert f"| {name}" in table
    assert "Data budget versus model and optimizer" in table
    assert "Quick mode" in table
    assert "Numbers from" in table and "NumPy" in table
    frame = pd.read_csv(out / "comparison.csv")
    assert set(frame["stage"]) >= set(stages)
    assert (frame["status"] == "ok").all()
    assert frame["test_accuracy"].between(0.5, 1.0).all(), "quick runs still beat chance widely"
    assert (out / "learning_curves.png").stat().st_size > 10_000
    environment = json.loads((out / "environment.json").read_text())
    assert environment["cpu_count"] >= 1 and environment["runs"] == len(frame)


def test_rerun_resumes_without_training_and_writes_nothing(quick_run):
    """A second run of the same comparison finds every saved result unchanged, trains nothing, and leaves
    every file it wrote byte for byte (the pages say which runs made the numbers, not when they were shown)."""
    out, _ = quick_run
    before = {path: path.read_bytes() for path in out.iterdir() if path.is_file()}
    result = subprocess.run([sys.executable, "experiments/compare.py", "--quick", "--seeds", "0", "--quiet",
                             "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "training ..." not in result.stdout and "nothing written" in result.stdout
    assert {path: path.read_bytes() for path in out.iterdir() if path.is_file()} == before


def test_rerun_of_some_stages_resumes_without_training(quick_run):
    """A run of some of the saved stages trains nothing."""
    out, _ = quick_run
    result = subprocess.run([sys.executable, "experiments/compare.py", "--quick", "--seeds", "0", "--quiet",
                             "--stages", "03,04", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "training ..." not in result.stdout
    assert result.stdout.count("unchanged, reusing") >= 2


def test_interrupted_run_resumes_only_the_missing_result(quick_run, tmp_path):
    """Deleting one saved result (as if the run had stopped before it) re-trains only that one."""
    out, _ = quick_run
    saved = out / "runs" / "03" / "seed0.json"
    assert saved.is_file()
    saved.unlink()
    result = subprocess.run([sys.executable, "experiments/compare.py", "--quick", "--seeds", "0", "--quiet",
                             "--stages", "03,04", "--no-budget", "--out", str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("training ...") == 1 and "[03 seed 0] training" in result.stdout
    assert saved.is_file()


def test_a_failing_stage_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    """A stage that diverges shows up as failed, with its reason, in the table; the rest is unaffected."""
    import dataclasses

    specs = compare.load_specs(["03", "04"])
    specs["03"] = dataclasses.replace(specs["03"], lr=1e6)
    monkeypatch.setattr(compare, "load_specs", lambda selection=None: specs)
    code = compare.main(["--quick", "--seeds", "0", "--quiet", "--no-budget", "--out", str(tmp_path)])
    assert code == 0
    table = (tmp_path / "comparison.md").read_text()
    row03 = next(line for line in table.splitlines() if line.startswith("| 03_minibatch"))
    assert "failed" in row03 and "diverged" in row03
    row04 = next(line for line in table.splitlines() if line.startswith("| 04_adam"))
    assert "failed" not in row04


def test_bad_options_are_one_line(tmp_path):
    for args in (["--stages", "99"], ["--seeds", "x"], ["--bogus"]):
        result = subprocess.run([sys.executable, "experiments/compare.py", *args, "--out", str(tmp_path)],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, args
        assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def test_readme_table_matches_the_committed_comparison():
    """The README shows exactly the generated comparison (never a hand-typed copy)."""
    committed = REPO / "results" / "comparison.md"
    assert committed.is_file(), "results/comparison.md is missing: run python experiments/compare.py"
    assert compare.readme_block() == compare.readme_block_of(committed.read_text(encoding="utf-8"))


def test_long_runs_show_their_overall_progress(quick_run):
    """After each run: runs done of all, how many were trained, the minutes so far (and the time left)."""
    _, stdout = quick_run
    lines = [line for line in stdout.splitlines() if " runs, " in line and " trained, " in line]
    total = len([p for p in (REPO / "stages").glob("[0-9][0-9]_*.py")]) + len(compare.DATA_BUDGET_VARIANTS)
    assert f"[1/{total} runs, " in lines[0] and f"[{total}/{total} runs, {total} trained, " in lines[-1]
    assert "min so far" in lines[-1]


def test_the_committee_reading_quotes_the_committee_of_these_runs_only(tmp_path):
    runs = [{"status": "ok", "test_accuracy": accuracy} for accuracy in (0.9946, 0.9944, 0.9954)]
    record = {"stage": "06", "name": "06_conv", "member_accuracies": [0.9946, 0.9944, 0.9954],
              "committee_accuracy": 0.9956, "errors": [{"index": i, "label": 0, "answer": 1} for i in range(44)],
              "forward_multiply_adds": {"member": 4_002_304, "committee": 12_006_912}}
    (tmp_path / "committee.json").write_text(json.dumps({"committees": [record]}), encoding="utf-8")
    reading = compare.read_committees({"06": runs}, tmp_path)
    assert "06_conv 99.56 % against its members' 99.48 % on average, 44 test digits wrong, at 3x" in reading
    other = [{"status": "ok", "test_accuracy": 0.99}] * 3  # other models than the committee's
    assert compare.read_committees({"06": other}, tmp_path) == ""
    assert compare.read_committees({"06": runs}, tmp_path / "missing") == ""


def test_the_page_says_which_runs_were_timed_on_which_machine():
    """Seconds measured on different CPUs are not comparable: the page names each run's CPU when they differ, and
    says nothing when every run agrees."""
    def run(stage: str, seed: int, cpu: str | None) -> dict:
        environment = {"cpu": cpu} if cpu else {}
        return {"status": "ok", "stage": stage, "seed": seed, "environment": environment}

    runs = [run("07_batchnorm", 1, "CPU B"), run("07_batchnorm", 0, "CPU B"), run("06_conv", 0, None),
            run("06_conv", 1, None), {"status": "failed", "stage": "05_regularized", "seed": 0}]
    assert compare.timing_machines(runs) == (
        " Not every run was timed on one machine: 07_batchnorm (seeds 0, 1) on the CPU CPU B; the other 2 runs on "
        "an earlier machine whose records do not name its CPU. Seconds compare only between runs timed on the same "
        "machine.")
    assert compare.timing_machines(runs[:2]) == compare.timing_machines(runs[2:4]) == ""
