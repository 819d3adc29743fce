"""Tests for experiments/ablations.py: outputs, readings, one idea at a time, resuming, bad options.

The end-to-end tests train tiny budgets (``--quick``: 2,000 images, 1 epoch) on the real MNIST in
the default data folder and are skipped if it is absent.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mnist_available import needs_mnist

from common import runs
from common.stages import load_specs
from experiments import ablations

REPO_ROOT = Path(__file__).resolve().parent.parent


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ONLY = ["optimizer", "activation"]
CHANCE = 0.10




def run_main(*argv: str) -> tuple[int, str]:
    """``ablations.main(argv)`` with its standard output captured."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = ablations.main(list(argv))
    return code, buffer.getvalue()


@pytest.fixture(scope="module")
def frozen_code(tmp_path_factory):
    """Fingerprint a snapshot of the numeric code, so that someone editing ``common/`` while the tests
    run cannot turn "reuse" into "re-train" between two runs."""
    snapshot = tmp_path_factory.mktemp("code")
    for path in runs.numeric_code_files():
        name = path.relative_to(runs.CODE_ROOT)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, snapshot / name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs, "CODE_ROOT", snapshot)
        yield snapshot


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, frozen_code) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("ablations")
    code, output = run_main("--quick", "--quiet", "--out", str(out), "--only", ",".join(ONLY))
    assert code == 0, output
    return out, output


# ------------------------------------------------------------------------- design (no training)


@pytest.mark.parametrize("quick", [False, True])
def test_each_ablation_varies_one_idea(quick: bool) -> None:
    """Within an ablation the variants differ only in the fields of that one idea."""
    allowed = {"optimizer": {"optimizer", "lr"}, "activation": {"activation"},
               "init": {"init", "init_scale", "optimizer", "lr"},  # the one extra Adam row changes the optimizer
               "data_budget": {"train_size", "epochs", "eval_every"}, "batch_size": {"batch_size", "lr"},
               "regularization": {"sizes", "input_dropout", "hidden_dropout", "shift", "weight_decay", "warmup"},
               "normalization": {"layers", "recalibrate_batchnorm", "affine_rotation", "affine_scale", "affine_shear"}}
    bases = load_specs(["04", "05", "07"])
    built = ablations.build_ablations(quick)
    assert [a.name for a in built] == ablations.ABLATION_NAMES == list(allowed)
    for ablation in built:
        base = bases[ablation.stage]
        specs = [dataclasses.asdict(ablations.variant_spec(base, ablation, v)) for v in ablation.variants]
        differing = {key for key in specs[0] if len({json.dumps(s[key]) for s in specs}) > 1}
        assert differing and differing <= allowed[ablation.name], (ablation.name, differing)
        assert len({v.name for v in ablation.variants}) == len(ablation.variants)


def test_full_design_matches_the_brief() -> None:
    base = load_specs(["04"])["04"]
    by_name = {a.name: a for a in ablations.build_ablations(False)}
    spec = ablations.variant_spec(base, by_name["optimizer"], by_name["optimizer"].variants[-1])
    assert (spec.sizes, spec.activation, spec.init, spec.optimizer, spec.lr, spec.batch_size, spec.train_size) == \
        ((784, 128, 64, 10), "relu", "he", "adam", 0.001, 128, None)
    lrs = {v.name: v.overrides["lr"] for v in by_name["optimizer"].variants}
    assert lrs == {"gd": 0.1, "momentum": 0.01, "rmsprop": 0.001, "adam": 0.001}
    for variant in by_name["activation"].variants:  # He init for every activation
        assert ablations.variant_spec(base, by_name["activation"], variant).init == "he"
    init_specs = [ablations.variant_spec(base, by_name["init"], v) for v in by_name["init"].variants]
    assert all(s.optimizer == "momentum" and len(s.sizes) == 6 for s in init_specs[:3])
    assert (init_specs[3].optimizer, init_specs[3].init, init_specs[3].init_scale) == ("adam", "normal", 0.001)
    assert init_specs[0].init == "normal" and init_specs[0].init_scale == 0.001
    batch_specs = [ablations.variant_spec(base, by_name["batch_size"], v) for v in by_name["batch_size"].variants]
    assert [(s.batch_size, s.lr) for s in batch_specs] == [
        (32, 0.001), (128, 0.001), (512, 0.001), (2048, 0.001),          # the same rate for every batch
        (32, 0.001 * 32 / 128), (512, 0.001 * 512 / 128), (2048, 0.001 * 2048 / 128)]  # scaled with the batch
    stage05 = load_specs(["05"])["05"]
    regularization = {v.name: ablations.variant_spec(stage05, by_name["regularization"], v)
                      for v in by_name["regularization"].variants}
    assert dataclasses.replace(regularization["all"], name=stage05.name, title=stage05.title, adds=stage05.adds,
                               reproduces=stage05.reproduces, published_accuracy=stage05.published_accuracy,
                               published_note=stage05.published_note, quick=stage05.quick) == stage05
    assert regularization["narrow"].sizes == (784, 128, 64, 10)
    assert regularization["no-warmup"].warmup == 0 and regularization["no-shifts"].shift == 0


def test_data_budget_fixes_the_number_of_updates() -> None:
    base = load_specs(["04"])["04"]
    ablation = {a.name: a for a in ablations.build_ablations(False)}["data_budget"]
    target = ablations.BASE_EPOCHS * math.ceil(60_000 / 128)
    sizes, updates = [], []
    for variant in ablation.variants:
        spec = ablations.variant_spec(base, ablation, variant)
        sizes.append(spec.train_size)
        n = ablations.train_size_of(spec)
        updates.append(ablations.updates_of(spec, n))
        assert target <= updates[-1] < target + math.ceil(n / 128)  # within one epoch of the target
    assert sizes == [1000, 5000, 20000, None]
    assert updates[-1] == target


# ------------------------------------------------------------------------- end to end (quick)


@needs_mnist
def test_quick_run_writes_every_output(quick_run) -> None:
    out, output = quick_run
    by_name = {a.name: a for a in ablations.build_ablations(True)}
    for name in ONLY:
        ablation = by_name[name]
        for suffix in ("md", "csv", "png"):
            assert (out / f"{name}.{suffix}").is_file(), f"{name}.{suffix} missing"
        assert (out / f"{name}.png").read_bytes()[:8] == PNG_SIGNATURE
        frame = pd.read_csv(out / f"{name}.csv")
        assert len(frame) == len(ablation.variants)  # one row per variant and seed (one seed)
        assert list(frame["variant"].astype(str)) == [v.name for v in ablation.variants]
        assert (frame["status"] == "ok").all()
        for column in ("train_accuracy", "test_accuracy"):
            assert frame[column].between(0.0, 1.0).all()
        assert (frame["test_accuracy"] > 2 * CHANCE).all(), frame[["variant", "test_accuracy"]]
        page = (out / f"{name}.md").read_text()
        assert "| variant" in page and "test acc. %" in page
        assert "Quick mode" in page and "runs made by `" in page and "NumPy" in page
        reading = next(line for line in page.splitlines() if line.startswith(ablations.READING_PREFIX))
        best = frame.loc[frame["test_accuracy"].idxmax()]
        # the reading is computed from the numbers: it names the best variant and its accuracy
        assert f"{best['label']} scores highest ({100 * best['test_accuracy']:.2f} % test accuracy)" in reading
        for variant in ablation.variants:
            assert (out / "runs" / f"ablation-{name}-{variant.name}" / "seed0.json").is_file()
    assert not (out / "init.md").exists()  # --only
    index = (out / "README.md").read_text()
    assert "[optimizer](optimizer.md)" in index and "[activation](activation.md)" in index
    assert "[init]" not in index
    assert "sharing its result" in output  # Adam in `optimizer` is ReLU in `activation`: trained once
    leftovers = [p.name for p in out.rglob(".*")]
    assert leftovers == [], f"temporary files left behind: {leftovers}"


@needs_mnist
def test_second_run_resumes(quick_run) -> None:
    out, _ = quick_run
    runs = sorted((out / "runs").rglob("seed*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    code, output = run_main("--quick", "--quiet", "--out", str(out), "--only", ",".join(ONLY))
    assert code == 0
    assert "training ..." not in output
    assert output.count("unchanged, reusing") == len(runs)
    assert re.search(r"\b0 runs trained, 7 reused", output), output
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps

    # an interrupted study (a missing result) and changed settings (another fingerprint) re-run
    # exactly those runs
    (out / "runs" / "ablation-activation-tanh" / "seed0.json").unlink()
    changed = out / "runs" / "ablation-optimizer-gd" / "seed0.json"
    saved = json.loads(changed.read_text())
    saved["fingerprint"] = "0" * 16
    changed.write_text(json.dumps(saved))
    code, output = run_main("--quick", "--quiet", "--out", str(out), "--only", ",".join(ONLY))
    assert code == 0
    trained = sorted(re.findall(r"\[(\S+) seed 0\] training", output))
    assert trained == ["ablation-activation-tanh", "ablation-optimizer-gd"]
    assert json.loads(changed.read_text())["fingerprint"] != "0" * 16


def test_bad_only_is_one_error_line() -> None:
    code, _ = run_main("--only", "nonsense")
    assert code == 2
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "experiments" / "ablations.py"), "--only", "nonsense"],
                               capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "nonsense" in lines[0], completed.stderr
    assert completed.stdout == ""


@pytest.mark.parametrize("argv", [["--seeds", "a,b"], ["--bogus"], ["--seeds", "-1"]])
def test_other_bad_options_exit_2(argv) -> None:
    completed = subprocess.run([sys.executable, str(REPO_ROOT / "experiments" / "ablations.py"), *argv],
                               capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), completed.stderr


@needs_mnist
def test_failed_variant_is_reported_and_others_continue(tmp_path, monkeypatch) -> None:
    real = ablations.build_ablations(True)[0]
    assert real.name == "optimizer"
    diverging = dataclasses.replace(real, variants=(
        ablations.Variant("huge", "gradient descent (lr 1e9)", {"optimizer": "gd", "lr": 1e9}),
        ablations.Variant("gd", "gradient descent (lr 0.1)", {"optimizer": "gd", "lr": 0.1})))
    monkeypatch.setattr(ablations, "build_ablations", lambda quick: [diverging])
    code, output = run_main("--quick", "--quiet", "--out", str(tmp_path), "--only", "optimizer")
    assert code == 0, output
    frame = pd.read_csv(tmp_path / "optimizer.csv")
    assert list(frame["status"]) == ["failed", "ok"]
    assert "diverged" in frame["reason"][0]
    assert frame["test_accuracy"][1] > 2 * CHANCE
    page = (tmp_path / "optimizer.md").read_text()
    assert "failed: training diverged" in page or "failed: the training loss" in page
    reading = next(line for line in page.splitlines() if line.startswith(ablations.READING_PREFIX))
    assert "gradient descent (lr 0.1) scores highest" in reading and "gradient descent (lr 1e9) failed" in reading
    assert (tmp_path / "optimizer.png").is_file()


def test_code_changed_during_the_study_stops_it(tmp_path, monkeypatch) -> None:
    for path in runs.numeric_code_files():
        name = path.relative_to(runs.CODE_ROOT)
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tmp_path / name)
    monkeypatch.setattr(runs, "CODE_ROOT", tmp_path)
    runner = runs.Runner(None, tmp_path / "runs", force=False, progress=False)
    runner.check_code()  # unchanged: no error
    with open(runs.numeric_code_files()[0], "a") as file:
        file.write("\nEDITED = True\n")  # code, not a comment: comments do not count
    with pytest.raises(ablations.UserError, match="changed while the study ran"):
        runner.check_code()


def test_the_normalization_study_removes_batch_normalization_and_the_affine_distortions() -> None:
    stage07 = load_specs(["07"])["07"]
    ablation = {a.name: a for a in ablations.build_ablations(False)}["normalization"]
    specs = {v.name: ablations.variant_spec(stage07, ablation, v) for v in ablation.variants}
    assert runs.fingerprint(specs["all"], 0) == runs.fingerprint(stage07, 0), "shared with the comparison's runs"
    assert "batchnorm" not in specs["no-batchnorm"].layers and "batchnorm" in specs["no-affine"].layers
    assert [layer for layer in stage07.layers if layer != "batchnorm"] == list(specs["neither"].layers)
    assert not (specs["no-affine"].affine_rotation or specs["no-affine"].affine_scale or specs["no-affine"].affine_shear)
    assert specs["no-affine"].shift == stage07.shift == 2
    assert "the network per variant" in ablations.describe_fixed(specs["all"], ablation.varies)
