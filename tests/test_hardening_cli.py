"""Bad options and interruptions of the stage scripts and the comparison: one line, a non-zero exit,
nothing half-written, checked before any training."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mnist_available import needs_mnist

from common import runner
from common.cli import EXIT_BROKEN_PIPE, parse_list, run_cli, writable_folder
from common.nn.errors import UserError
from common.serialize import load_network
from common.stages import load_specs

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("text", ["", ",", " , "])
def test_a_list_option_that_lists_nothing_is_refused(text):
    with pytest.raises(UserError, match="lists nothing"):
        parse_list(text, int, "--seeds")


def test_a_list_option_naming_an_item_twice_is_refused():
    with pytest.raises(UserError, match="--seeds lists 0 more than once"):
        parse_list("0,1,0", int, "--seeds")
    assert parse_list(None) is None and parse_list("2,0", int) == [2, 0]


@pytest.mark.parametrize("args, expected", [
    (["--stages", ""], "--stages '' lists nothing"),
    (["--stages", ","], "lists nothing"),
    (["--seeds", "0,0"], "--seeds lists 0 more than once"),
    (["--out", "/proc/xyz"], "--out /proc/xyz"),
    (["--out", "README.md/sub"], "is a file, not a folder"),
])
def test_compare_refuses_bad_options_before_any_training(args, expected):
    line = one_error_line(run("experiments/compare.py", "--quick", *args, timeout=60))
    assert expected in line


@pytest.mark.parametrize("out", ["/proc/xyz", "README.md", "README.md/sub"])
def test_stage_checks_its_output_folder_before_training(out):
    result = run("stages/04_adam.py", "--quick", "--out", out)
    assert "cannot write" in one_error_line(result) or "not a folder" in result.stderr
    assert "epoch" not in result.stdout, "the check must come before any training"


def test_stage_refuses_a_folder_holding_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    line = one_error_line(run("stages/04_adam.py", "--quick", "--out", str(tmp_path)))
    assert "notes.txt" in line and (tmp_path / "notes.txt").read_text() == "mine"


def test_a_network_too_large_for_memory_is_one_line():
    line = one_error_line(run("stages/04_adam.py", "--quick", "--hidden", "10000000000"))
    assert "GB" in line and "--hidden" in line


def test_writable_folder_leaves_nothing_behind(tmp_path):
    target = tmp_path / "a" / "b"
    assert writable_folder(target) == target
    assert list(tmp_path.iterdir()) == []


def test_an_os_error_naming_a_file_is_one_line(capsys):
    def main(argv):
        raise PermissionError(13, "Permission denied", "/somewhere/metrics.json")

    assert run_cli(main, []) == 2
    assert capsys.readouterr().err.strip() == "error: cannot use /somewhere/metrics.json: Permission denied"


@needs_mnist
def test_an_interrupted_run_leaves_the_previous_set_whole(tmp_path, monkeypatch):
    """Seed 0 writes its set; seed 1 is interrupted while writing: the folder still holds seed 0's
    metrics and seed 0's model, side by side, and no hidden staging folder is left."""
    spec = load_specs(["04"])["04"]
    out = tmp_path / "D"
    assert runner.main(spec, ["--quick", "--quiet", "--no-plots", "--seed", "0", "--out", str(out)]) == 0

    def interrupted(path, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "atomic_write_json", interrupted)
    assert runner.main(spec, ["--quick", "--quiet", "--no-plots", "--seed", "1", "--out", str(out)]) == 130
    assert json.loads((out / "metrics.json").read_text())["seed"] == 0
    assert load_network(out / "model.npz")[1]["seed"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["D"]


@needs_mnist
def test_a_second_run_replaces_the_whole_set(tmp_path):
    spec = load_specs(["04"])["04"]
    out = tmp_path / "D"
    for seed in ("0", "1"):
        assert runner.main(spec, ["--quick", "--quiet", "--no-plots", "--seed", seed, "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["seed"] == 1
    assert load_network(out / "model.npz")[1]["seed"] == 1


@needs_mnist
def test_a_closed_output_pipe_ends_quietly(tmp_path):
    process = subprocess.Popen([sys.executable, "experiments/compare.py", "--quick", "--stages", "03", "--seeds", "0",
                                "--no-budget", "--quiet", "--out", str(tmp_path)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.readline()
    process.stdout.close()  # like `| head -1`
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == EXIT_BROKEN_PIPE
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


@needs_mnist
@pytest.mark.slow
def test_verify_reproduces_a_committed_run_and_catches_a_tampered_one(tmp_path):
    committed = REPO / "results" / "runs" / "01" / "seed0.json"
    for name, change in (("clean", 0.0), ("tampered", 0.01)):
        out = tmp_path / name
        (out / "runs" / "01").mkdir(parents=True)
        saved = json.loads(committed.read_text())
        saved["test_accuracy"] = float(np.clip(saved["test_accuracy"] + change, 0, 1))
        (out / "runs" / "01" / "seed0.json").write_text(json.dumps(saved))
        before = sorted(p.name for p in out.rglob("*"))
        result = run("experiments/compare.py", "--verify", "--stages", "01", "--seeds", "0", "--quiet",
                     "--out", str(out), timeout=300)
        assert sorted(p.name for p in out.rglob("*")) == before, "--verify must not write anything"
        if change:
            assert result.returncode == 1 and "NOT reproduced" in result.stdout, result.stdout
        else:
            assert result.returncode == 0 and "reproduced: largest accuracy difference" in result.stdout, result.stdout
    shutil.rmtree(tmp_path)


# -- issue: hardening, round 2 -------------------------------------------------------------------

def quick_trained(tmp_path: Path):
    """A trained stage-04 network on a few synthetic images, with its metrics: what write_outputs takes."""
    import dataclasses

    from common.data import MNIST
    from common.protocol import stage_metrics, train_stage

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(120, 784), dtype=np.uint8)
    data = MNIST(images[:100], rng.integers(0, 10, 100), images[100:], rng.integers(0, 10, 20))
    trained = train_stage(dataclasses.replace(load_specs(["04"])["04"], epochs=1), 0, data, progress=False)
    return trained, stage_metrics(trained)


def test_a_full_disk_while_writing_the_outputs_is_one_line_and_changes_nothing(tmp_path: Path, monkeypatch):
    trained, metrics = quick_trained(tmp_path)
    out = tmp_path / "out"
    runner.write_outputs(trained, metrics, out, plots=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner, "atomic_write_json", full_disk)
    with pytest.raises(UserError, match="cannot write the outputs in .*No space left on device; nothing there was changed"):
        runner.write_outputs(trained, metrics, out, plots=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == [], "no staging folder left"


def test_an_oserror_without_a_file_name_for_a_full_disk_is_one_line(capsys):
    def main(argv):
        raise OSError(28, "No space left on device")

    assert run_cli(main, []) == 2
    assert capsys.readouterr().err.strip() == "error: cannot write: No space left on device"


def test_stale_staging_folders_of_killed_runs_are_swept_and_fresh_ones_kept(tmp_path: Path):
    import os
    import time

    out = tmp_path / "stage"
    stale_new, stale_old, fresh = tmp_path / ".stage.new-abc", tmp_path / ".stage.old-def", tmp_path / ".stage.new-now"
    for folder in (stale_new, stale_old, fresh):
        folder.mkdir()
        (folder / "model.npz").write_bytes(b"x" * 1000)
    long_ago = time.time() - 3600
    for folder in (stale_new, stale_old):
        os.utime(folder, (long_ago, long_ago))
    runner.sweep_stale_folders(out)
    assert not stale_new.exists() and not stale_old.exists() and fresh.exists()


def test_an_out_folder_that_is_not_valid_utf8_is_refused_before_training(tmp_path: Path):
    bad = Path(str(tmp_path) + "/caf\udce9")  # the byte 0xE9 alone, as a Latin-1 shell would pass it
    with pytest.raises(UserError, match="not valid UTF-8"):
        runner.check_output_folder(bad)


def test_an_out_folder_given_as_a_link_is_followed_and_the_link_kept(tmp_path: Path):
    trained, metrics = quick_trained(tmp_path)
    target, link = tmp_path / "real", tmp_path / "link"
    target.mkdir()
    link.symlink_to(target)
    out = runner.check_output_folder(link)
    assert out == target.resolve()
    runner.write_outputs(trained, metrics, out, plots=False)
    assert link.is_symlink() and (target / "metrics.json").is_file() and (link / "model.npz").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".link.", ".real."))]


def test_an_empty_data_dir_is_refused_not_taken_as_the_default():
    with pytest.raises(UserError, match="--data-dir is empty"):
        runner.load_data("")


@needs_mnist
def test_verify_checks_the_held_out_accuracy_too(tmp_path: Path):
    """A tampered held-out accuracy (stage 01's 350-image figure the README quotes) is caught."""
    from experiments import compare

    out = tmp_path / "cmp"
    assert compare.main(["--quick", "--stages", "01", "--seeds", "0", "--no-budget", "--quiet", "--out", str(out)]) == 0
    saved = out / "runs" / "01" / "seed0.json"
    record = json.loads(saved.read_text())
    record["holdout_accuracy"] = record["holdout_accuracy"] - 0.05
    saved.write_text(json.dumps(record))
    code = compare.main(["--quick", "--stages", "01", "--seeds", "0", "--no-budget", "--quiet", "--out", str(out),
                         "--verify"])
    assert code == 1


@pytest.mark.parametrize("tolerance", ["nan", "-1", "inf"])
def test_verify_refuses_a_tolerance_that_is_not_a_number_of_points(tolerance, tmp_path: Path):
    one_error_line(run("experiments/compare.py", "--verify", "--tolerance", tolerance, "--out", str(tmp_path)))


@pytest.mark.parametrize("damage", ["truncated", "no accuracy", "string accuracy", "no history"])
def test_a_damaged_saved_run_is_named_and_retrained(damage, tmp_path: Path):
    """Outside --verify a damaged saved run is named in one line and trained again; under --verify it is
    one error line naming the file."""
    from common.runs import read_record

    saved = tmp_path / "seed0.json"
    record = {"status": "ok", "fingerprint": "x", "test_accuracy": 0.9, "train_accuracy": 0.9, "seconds": 1.0,
              "history": []}
    text = {"truncated": json.dumps(record)[:40],
            "no accuracy": json.dumps({k: v for k, v in record.items() if k != "test_accuracy"}),
            "string accuracy": json.dumps({**record, "test_accuracy": "0.9"}),
            "no history": json.dumps({k: v for k, v in record.items() if k != "history"})}[damage]
    saved.write_text(text)
    assert read_record(saved)[0] is None and read_record(saved)[1]
