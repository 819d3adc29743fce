"""Run every stage under one protocol and write the comparison table: 88 % -> 98 % and beyond.

    python experiments/compare.py                    # all stages, seeds 0,1,2 (saved runs are reused)
    python experiments/compare.py --force            # train every run again (the table says how long)
    python experiments/compare.py --stages 01,04 --seeds 0
    python experiments/compare.py --quick --out /tmp/cmp   # tiny budgets, for tests

Every numbered script in ``stages/`` joins by itself. Each stage is trained with each seed on the
same data and judged on the same official 10,000-image test set. Each (stage, seed) result is
saved under ``<out>/runs/`` as soon as it finishes (atomically), with a fingerprint of its
settings and of the code that produced it; a re-run skips results whose fingerprint is unchanged,
so an interrupted comparison resumes where it stopped (``--force`` re-runs everything). A stage
that fails (for example diverges) appears in the table as failed, with its reason.

Writes ``comparison.md`` (the tables, with the environment and command), ``comparison.csv`` (one
row per stage and seed), ``learning_curves.png`` and ``environment.json``; a full default run
also copies the tables into README.md between the comparison markers.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tabulate import tabulate

from common import blas, threads
from common import data as mnist
from common.cli import OneLineParser, parse_list, run_cli, writable_folder
from common.compute import training_gflop
from common.files import atomic_write_json, atomic_write_text
from common.nn.errors import UserError
from common.paths import LOCAL_DIR, REPO_ROOT, RESULTS_DIR, shown
from common.protocol import StageSpec
from common.report import QUICK_BANNER, percent, provenance_line, render_key, runs_environment, up_to_date
from common.runner import load_data
from common.runs import Progress, plan_progress, read_record, run_or_resume, run_path, spec_of_record
from common.stages import load_specs, stage_files
from common.stats import RULE, compare_runs

DEFAULT_OUT = RESULTS_DIR
FULL_SEEDS = [0, 1, 2]
README = REPO_ROOT / "README.md"
RENDER_CODE = [Path(__file__), *(REPO_ROOT / "common" / name for name in ("report.py", "plots.py", "stats.py",
                                                                          "compute.py"))]
README_START, README_END = "<!-- comparison:start -->", "<!-- comparison:end -->"
@dataclasses.dataclass(frozen=True)
class Variant:
    """A stage's design re-run with another data budget (for the data-vs-model table)."""

    key: str            # e.g. "04@1000"
    stage: str          # the stage number whose design is used
    label: str
    overrides: dict


# The 88 % -> 98 % jump mixes 60x more data with a deeper network and Adam. These runs separate them.
DATA_BUDGET_VARIANTS = [
    Variant("04@1000", "04", "stage-04 design (deep ReLU + Adam) on 1,000 images",
            {"train_size": 1000, "epochs": 200, "eval_every": 20}),
    Variant("04@3000", "04", "stage-04 design (deep ReLU + Adam) on 3,000 images",
            {"train_size": 3000, "epochs": 100, "eval_every": 10}),
    Variant("01@3000", "01", "stage-01 design (one hidden layer, GD, raw pixels) on 3,000 images",
            {"train_size": 3000, "eval_every": 50}),
]


# -- tables ----------------------------------------------------------------------------------

def run_gflop(run: dict) -> float:
    """The matrix-product GFLOP of a run's training (common.compute): every epoch (or full-batch
    iteration) passes all its training images forward and back."""
    spec = spec_of_record(run)
    return training_gflop(spec.architecture(), spec.epochs * run.get("train_size", spec.train_size))


def runs_frame(results: list[dict]) -> pd.DataFrame:
    """One row per (stage or variant, seed) with the figures a reader may want to analyse."""
    rows = []
    for r in results:
        settings = r["settings"]
        rows.append({
            "key": r["key"], "stage": r["stage"], "seed": r["seed"], "status": r["status"],
            "reason": r.get("reason", ""),
            "train_size": r.get("train_size", settings.get("train_size")),
            "architecture": r.get("architecture", ""), "optimizer": r.get("optimizer", ""),
            "batch_size": settings["batch_size"] or "full", "epochs": settings["epochs"],
            "lr": settings["lr"],
            "train_accuracy": r.get("train_accuracy"), "test_accuracy": r.get("test_accuracy"),
            "holdout_accuracy": r.get("holdout_accuracy"), "macro_f1": r.get("macro_f1"),
            "seconds": r.get("seconds"), "train_seconds": r.get("train_seconds"),
            "num_parameters": r.get("num_parameters"), "train_gflop": round(run_gflop(r), 1),
            "published_accuracy": r.get("published_accuracy", None),
        })
    return pd.DataFrame(rows)


def stage_table(specs: dict[str, StageSpec], results: dict[str, list[dict]]) -> str:
    rows, previous_ok = [], None
    for number, spec in specs.items():
        runs = results[number]
        ok = [r for r in runs if r["status"] == "ok"]
        failed = [r for r in runs if r["status"] != "ok"]
        published = (f"{100 * spec.published_accuracy:.2f}" if spec.published_accuracy else "")
        if not ok:
            rows.append([spec.name, spec.adds, "-", "-", "-", "-", "-", "-",
                         f"failed: {failed[0]['reason']}", "-", "-", "-", "-", published])
            previous_ok = None
            continue
        test_mean = float(np.mean([r["test_accuracy"] for r in ok]))
        gain = "" if previous_ok is None else compare_runs(ok, previous_ok).points().removesuffix(" points")
        if spec.published_accuracy:
            shortfall = test_mean - spec.published_accuracy
            published += " (" + ("reached" if shortfall >= 0 else f"{100 * shortfall:+.2f}, short") + ")"
        test_text = percent([r["test_accuracy"] for r in ok])
        if failed:
            test_text += f" ({len(failed)} of {len(runs)} seeds failed: {failed[0]['reason']})"
        rows.append([spec.name, spec.adds, f"{ok[0]['train_size']:,}", ok[0]["architecture"],
                     ok[0]["optimizer"], spec.batch_size or "full",
                     f"{spec.epochs} {'it.' if spec.is_full_batch else 'ep.'}",
                     percent([r["train_accuracy"] for r in ok]), test_text, gain,
                     f"{np.mean([r['seconds'] for r in ok]):.0f}", f"{run_gflop(ok[0]):,.0f}",
                     f"{ok[0]['num_parameters']:,}", published])
        previous_ok = ok
    headers = ["stage", "what it adds", "train images", "architecture", "optimizer", "batch", "budget",
               "train acc. %", "test acc. %", "gain (points)", "time (s)", "train GFLOP", "parameters", "published %"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def design_label(number: str, spec: StageSpec) -> str:
    """E.g. ``stage-04 design: 784-128-64-10 relu, he init, Adam lr 0.001, batch 128``, from the spec."""
    text = (f"stage-{number} design: {spec.architecture().describe()}, {spec.init} init, "
            f"{spec.optimizer_label()}, batch {spec.batch_size or 'full'}")
    return text + (", raw 0-255 pixels" if spec.pixel_scale == "raw" else "")


def budget_table(specs: dict[str, StageSpec], results: dict[str, list[dict]],
                 variant_results: dict[str, list[dict]]) -> str:
    """Test accuracy of the two designs at each data budget, the stage runs included."""
    entries = []  # (design, images, runs)
    for number in ("01", "04"):
        if number in results:
            runs = [r for r in results[number] if r["status"] == "ok"]
            if runs:
                entries.append((number, runs[0]["train_size"], results[number]))
    for variant in DATA_BUDGET_VARIANTS:
        if variant.key in variant_results:
            runs = variant_results[variant.key]
            size = variant.overrides.get("train_size", 60_000)
            entries.append((variant.stage, size, runs))
    rows = []
    for design, size, runs in sorted(entries, key=lambda e: (e[0], e[1])):
        ok = [r for r in runs if r["status"] == "ok"]
        label = design_label(design, specs[design]) if design in specs else f"stage-{design} design"
        settings = runs[0]["settings"]
        epochs = settings["epochs"]
        per_epoch = 1 if settings["batch_size"] is None else math.ceil(size / settings["batch_size"])
        rows.append([label, f"{size:,}", f"{epochs:,}", f"{epochs * per_epoch:,}",
                     percent([r["train_accuracy"] for r in ok]) if ok else "failed",
                     percent([r["test_accuracy"] for r in ok]) if ok else runs[0].get("reason", ""),
                     f"{np.mean([r['seconds'] for r in ok]):.0f}" if ok else "-"])
    return tabulate(rows, headers=["design", "train images", "epochs (full batch: iterations)", "updates",
                                   "train acc. %", "test acc. %", "time (s)"], tablefmt="github", disable_numparse=True)


def ok_of(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r["status"] == "ok"]


def budget_reading(results: dict[str, list[dict]], variant_results: dict[str, list[dict]]) -> str:
    """One or two sentences read off the numbers (not typed): what data bought vs model + optimizer."""
    def mean(runs):
        ok = [r["test_accuracy"] for r in runs or [] if r["status"] == "ok"]
        return 100 * float(np.mean(ok)) if ok else None

    s01, s04, v04 = mean(results.get("01")), mean(results.get("04")), mean(variant_results.get("04@1000"))
    if None in (s01, s04, v04):
        return ""
    model = compare_runs(ok_of(variant_results["04@1000"]), ok_of(results["01"]))
    data = compare_runs(ok_of(results["04"]), ok_of(variant_results["04@1000"]))
    verdict = ("Most of the climb from stage 01 to stage 04 is the data." if data.mean > model.mean
               else "Most of the climb from stage 01 to stage 04 is the model and optimizer.")
    return (f"On the same 1,000 images, the stage-04 network and optimizer reach {v04:.2f} % against "
            f"stage 01's {s01:.2f} % ({model.points()}); giving that design all 60,000 images "
            f"adds another {data.points()} ({s04:.2f} %). {verdict} The designs on fewer images make "
            "fewer updates, as the table shows (a pass over a small set is a few steps); "
            "[the data-budget ablation](results/ablations/data_budget.md) holds the number of updates fixed.")


# -- readings: what the numbers say, computed (never typed) ---------------------------------------

def ok_runs(results: dict[str, list[dict]], number: str) -> list[dict]:
    return [r for r in results.get(number, []) if r["status"] == "ok"]


def mean_percent(runs: list[dict], key: str) -> float:
    return 100 * float(np.mean([r[key] for r in runs]))


def train_seconds_to_reach(run: dict, target: float) -> float | None:
    """Training seconds (evaluation excluded) until the run's test accuracy first reaches ``target``."""
    return next((h["train_seconds"] for h in run["history"] if (h.get("test_accuracy") or 0) >= target), None)


def read_first_stage(results: dict[str, list[dict]]) -> str:
    runs = ok_runs(results, "01")
    if not runs:
        return ""
    text = (f"**Stage 01** fits its {runs[0]['train_size']:,} training images ({mean_percent(runs, 'train_accuracy'):.2f} % "
            f"training accuracy) and scores {mean_percent(runs, 'test_accuracy'):.2f} % on the official test set")
    if all("holdout_accuracy" in r for r in runs):
        text += (f" ({mean_percent(runs, 'holdout_accuracy'):.2f} % on {runs[0]['holdout_size']} held-out training "
                 "images, the kind of set its source measured on)")
    return text + ": a generalisation gap, the distance between training and test accuracy, of " \
        f"{mean_percent(runs, 'train_accuracy') - mean_percent(runs, 'test_accuracy'):.1f} points."


def read_minibatches(results: dict[str, list[dict]]) -> str:
    full, mini, adam = ok_runs(results, "02"), ok_runs(results, "03"), ok_runs(results, "04")
    if not (full and mini):
        return ""
    target = min(r["test_accuracy"] for r in full)  # every full-batch run reaches it by its end
    ratios = [train_seconds_to_reach(f, target) / train_seconds_to_reach(m, target)
              for f, m in zip(full, mini) if train_seconds_to_reach(m, target)]
    text = (f"**Stage 03** reaches the test accuracy every stage-02 run ends above ({100 * target:.2f} %) "
            f"about {float(np.median(ratios)):.0f}x sooner in training time than full-batch descent "
            f"(median over {len(ratios)} seeds): hundreds of noisy updates per pass over the data instead of one.")
    if adam:
        gap = compare_runs(mini, adam)
        text += (f" With its learning rate chosen on validation, plain mini-batch gradient descent ends "
                 f"{gap.points()} from Adam (stage 04): {gap.verdict()}.")
    return text


def sweep_range(path: Path) -> tuple[float, float, float, float] | None:
    """(lowest, highest) mean validation accuracy in % over a learning-rate sweep, and its lr range."""
    if not path.is_file():
        return None
    means = pd.read_csv(path).groupby("lr")["val_accuracy"].mean()
    return 100 * means.min(), 100 * means.max(), means.index.min(), means.index.max()


def read_adam(results: dict[str, list[dict]], tuning_dir: Path) -> str:
    runs = ok_runs(results, "04")
    if not runs:
        return ""
    text = f"**Stage 04** (Adam) ends at {mean_percent(runs, 'test_accuracy'):.2f} %."
    adam, sgd = sweep_range(tuning_dir / "04_adam_lr.csv"), sweep_range(tuning_dir / "03_minibatch_lr.csv")
    if adam and sgd:
        calmer = "Adam" if adam[1] - adam[0] < sgd[1] - sgd[0] else "plain mini-batch gradient descent"
        text += (f" Swept on validation over learning rates {adam[2]:g} to {adam[3]:g}, Adam's accuracy spans "
                 f"{adam[0]:.2f}-{adam[1]:.2f} %; plain mini-batch gradient descent over {sgd[2]:g} to {sgd[3]:g} "
                 f"spans {sgd[0]:.2f}-{sgd[1]:.2f} % (results/tuning/04_adam_lr.md, 03_minibatch_lr.md): over the same "
                 f"100x range around each one's default, {calmer} is the less sensitive to its learning rate.")
    return text


def ablation_means(path: Path) -> dict[str, list[dict]]:
    """The runs of each variant of an ablation, from its CSV (status ok only), as run-like dicts."""
    if not path.is_file():
        return {}
    frame = pd.read_csv(path)
    frame = frame[frame["status"] == "ok"]
    return {str(variant): rows.to_dict("records") for variant, rows in frame.groupby("variant")}


def read_regularized(results: dict[str, list[dict]], ablations_dir: Path) -> str:
    wide, base = ok_runs(results, "05"), ok_runs(results, "04")
    if not (wide and base):
        return ""
    gain = compare_runs(wide, base)
    text = (f"**Stage 05** ends at {mean_percent(wide, 'test_accuracy'):.2f} % against stage 04's "
            f"{mean_percent(base, 'test_accuracy'):.2f} % ({gain.points()}, {gain.verdict()}), with a generalisation "
            f"gap of {mean_percent(wide, 'train_accuracy') - mean_percent(wide, 'test_accuracy'):.1f} points against "
            f"{mean_percent(base, 'train_accuracy') - mean_percent(base, 'test_accuracy'):.1f}.")
    variants = ablation_means(ablations_dir / "regularization.csv")
    if "all" in variants:
        text += " " + ablation_clause(variants, "regularization", "stage 05 as it is")
    return text


def spec_differences(a: StageSpec, b: StageSpec) -> list[str]:
    """The training settings in which spec ``a`` differs from ``b``, besides the network, in words."""
    names = {"shift": "random shifts (px)", "input_dropout": "input dropout", "hidden_dropout": "hidden dropout",
             "weight_decay": "weight decay", "schedule": "schedule", "warmup": "warm-up epochs", "epochs": "epochs",
             "lr": "learning rate", "batch_size": "batch size", "optimizer": "optimizer",
             "recalibrate_batchnorm": "batch-norm statistics re-estimated after training"}

    def value(spec: StageSpec, key: str) -> str:
        setting = getattr(spec, key)
        if isinstance(setting, bool):
            return "yes" if setting else "no"
        return f"{setting:g}" if isinstance(setting, (int, float)) else str(setting)

    return [f"{label} {value(b, key)} -> {value(a, key)}" for key, label in names.items()
            if getattr(a, key) != getattr(b, key)]


def read_convolutional(results: dict[str, list[dict]], specs: dict[str, StageSpec] | None = None) -> str:
    conv, wide = ok_runs(results, "06"), ok_runs(results, "05")
    if not (conv and wide):
        return ""
    errors = {name: 10_000 - mean_percent(runs, "test_accuracy") * 100 for name, runs in (("06", conv), ("05", wide))}
    median = 100 * float(np.median([r["test_accuracy"] for r in conv]))
    seconds = {name: float(np.mean([r["seconds"] for r in runs])) for name, runs in (("06", conv), ("05", wide))}
    parameters = conv[0]["num_parameters"], wide[0]["num_parameters"]
    gain = compare_runs(conv, wide)
    text = (f"**Stage 06** (convolutions) ends at {mean_percent(conv, 'test_accuracy'):.2f} % (median "
            f"{median:.2f} %) against stage 05's {mean_percent(wide, 'test_accuracy'):.2f} % ({gain.points()}, "
            f"{gain.verdict()}): {errors['06']:.0f} test digits wrong out of 10,000 instead of {errors['05']:.0f}, "
            f"{1 - errors['06'] / errors['05']:.0%} fewer. It does so with {parameters[0]:,} parameters, "
            f"{parameters[1] / parameters[0]:.1f}x fewer than stage 05's {parameters[1]:,} (shared filters: "
            f"docs/math.md#convolution-and-max-pooling); a run takes {seconds['06']:.0f} s against {seconds['05']:.0f} s.")
    if specs and "05" in specs and "06" in specs:
        changes = spec_differences(specs["06"], specs["05"])
        if changes:
            text += (" Convolution is not all that changed from stage 05 to 06 (" + "; ".join(changes)
                     + "), so the difference is not convolution's alone; the robustness study's stage-06 variant "
                     "without shifts separates what the shifts add (results/robustness.md).")
    return text


SIMARD_2003 = 0.996
"""Simard, Steinkraus and Platt (2003): a convolutional network trained on elastically distorted digits, the
published single-model result stage 07 is measured against."""


def read_batchnorm(results: dict[str, list[dict]], ablations_dir: Path,
                   specs: dict[str, StageSpec] | None = None) -> str:
    normalized, conv = ok_runs(results, "07"), ok_runs(results, "06")
    if not (normalized and conv):
        return ""
    gain = compare_runs(normalized, conv)
    median = float(np.median([r["test_accuracy"] for r in normalized]))
    seconds = float(np.mean([r["seconds"] for r in normalized]))
    errors = 10_000 - mean_percent(normalized, "test_accuracy") * 100
    text = (f"**Stage 07** (batch normalization, affine distortions) ends at "
            f"{mean_percent(normalized, 'test_accuracy'):.2f} % (median {100 * median:.2f} %) against stage 06's "
            f"{mean_percent(conv, 'test_accuracy'):.2f} % ({gain.points()}, {gain.verdict()}): {errors:.0f} test "
            f"digits wrong; a run takes {seconds:.0f} s. Its median is "
            + (f"{100 * (median - SIMARD_2003):+.2f} points from" if median != SIMARD_2003 else "at")
            + f" the {100 * SIMARD_2003:.1f} % Simard et al. (2003) published for a convolutional network on "
            "elastically distorted digits" + (", which it does not reach." if median < SIMARD_2003 else "."))
    if specs and "06" in specs and "07" in specs:
        changes = spec_differences(specs["07"], specs["06"])  # the distortions' settings are not among them
        if changes:
            text += " Besides the two ideas, its training differs from stage 06's in: " + "; ".join(changes) + "."
    variants = ablation_means(ablations_dir / "normalization.csv")
    if "all" in variants:
        text += " " + ablation_clause(variants, "normalization", "the stage as it is")
    return text


def ablation_clause(variants: dict[str, list[dict]], study: str, design: str) -> str:
    """Against an ablation's full design ("all", called ``design``), what each variant changes, under the one rule."""
    gains = {name: compare_runs(runs, variants["all"]) for name, runs in variants.items() if name != "all"}
    parts = [f"{name.replace('-', ' ')} {gain.points()} ({gain.verdict()})" for name, gain in gains.items()]
    return (f"In the {study} ablation, against {design}, changing one idea at a time gives: "
            + "; ".join(parts) + f" (results/ablations/{study}.md).")


def read_committees(results: dict[str, list[dict]], committee_dir: Path) -> str:
    """The committees of ``experiments/committee.py`` (three seeds' models, probabilities averaged), when their
    record is there and its members are this comparison's runs."""
    path = committee_dir / "committee.json"
    if not path.is_file():
        return ""
    parts = []
    for record in json.loads(path.read_text(encoding="utf-8")).get("committees", []):
        runs = ok_runs(results, record["stage"])
        if sorted(round(r["test_accuracy"], 4) for r in runs) != sorted(round(a, 4) for a in record["member_accuracies"]):
            continue  # not the models of these runs
        cost = record["forward_multiply_adds"]["committee"] / record["forward_multiply_adds"]["member"]
        wrong = record["errors"] if isinstance(record["errors"], int) else len(record["errors"])
        parts.append(f"{record['name']} {100 * record['committee_accuracy']:.2f} % against its members' "
                     f"{100 * float(np.mean(record['member_accuracies'])):.2f} % on average, {wrong} test "
                     f"digits wrong, at {cost:.0f}x the inference cost")
    if not parts:
        return ""
    return ("**Committees** (the three seeds' models of a stage, their probabilities averaged; no new training): "
            + "; ".join(parts) + " (results/committee/committee.md, which draws every digit they still get wrong).")


def readings(results: dict[str, list[dict]], out: Path, specs: dict[str, StageSpec] | None = None) -> str:
    """The 'how to read it' paragraph under the table: one computed sentence or two per stage."""
    parts = [read_first_stage(results), read_minibatches(results), read_adam(results, out / "tuning"),
             read_regularized(results, out / "ablations"), read_convolutional(results, specs),
             read_batchnorm(results, out / "ablations", specs), read_committees(results, out / "committee")]
    return "\n".join(f"* {part}" for part in parts if part) + f"\n\nEvery verdict follows one rule: {RULE} (docs/math.md#reading-the-statistics)."


# -- figure ------------------------------------------------------------------------------------

def learning_curves(specs: dict[str, StageSpec], results: dict[str, list[dict]], path: Path) -> None:
    """Test accuracy against passes over the data and against seconds (first seed), and final bars."""
    from common.plots import save_figure, subplots

    fig, (by_epoch, by_time, bars) = subplots(1, 3, figsize=(16, 4.8), layout=None)
    names, means, stds = [], [], []
    for number, spec in specs.items():
        ok = [r for r in results[number] if r["status"] == "ok"]
        if not ok:
            continue
        history = [h for h in ok[0]["history"] if h.get("test_accuracy") is not None]
        epochs = [h["epoch"] for h in history]
        accuracies = [100 * h["test_accuracy"] for h in history]
        label = f"{spec.name}"
        by_epoch.plot(epochs, accuracies, marker="o", markersize=3, label=label)
        by_time.plot([max(h["train_seconds"], 1e-3) for h in history], accuracies, marker="o", markersize=3, label=label)
        names.append(spec.name)
        tests = [100 * r["test_accuracy"] for r in ok]
        means.append(np.mean(tests))
        stds.append(np.std(tests, ddof=1) if len(tests) > 1 else 0.0)
    for ax, xlabel in ((by_epoch, "epoch (full-batch stages: iteration)"), (by_time, "training seconds")):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy %")
        ax.set_ylim(80, 100)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    by_epoch.set_title("Test accuracy per epoch (seed of the first run)")
    by_time.set_title("Test accuracy against training time")
    positions = np.arange(len(names))
    bars.bar(positions, means, yerr=stds, capsize=4, color="tab:blue")
    for x, m in zip(positions, means):
        bars.text(x, m + 0.3, f"{m:.2f}", ha="center", fontsize=8)
    bars.set_xticks(positions, [n.split("_", 1)[0] for n in names])
    bars.set_ylim(max(0, min(means, default=80) - 5), 100)
    bars.set_ylabel("final test accuracy % (mean ± std over seeds)")
    bars.set_title("Final test accuracy by stage")
    fig.tight_layout()
    save_figure(fig, path)


def accuracy_against_compute(specs: dict[str, StageSpec], results: dict[str, list[dict]], path: Path) -> None:
    """Each stage's mean test accuracy (± std over seeds) against its training GFLOP, log scale."""
    from common.plots import save_figure, subplots

    fig, ax = subplots(1, 1, figsize=(7, 4.8), layout=None)
    for number, spec in specs.items():
        ok = [r for r in results[number] if r["status"] == "ok"]
        if not ok:
            continue
        tests = [100 * r["test_accuracy"] for r in ok]
        gflop = run_gflop(ok[0])
        ax.errorbar([gflop], [np.mean(tests)], yerr=[np.std(tests, ddof=1) if len(tests) > 1 else 0.0],
                    marker="o", capsize=4, label=spec.name)
        ax.annotate(number, (gflop, np.mean(tests)), textcoords="offset points", xytext=(6, -12), fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("training GFLOP (matrix products, forward and back)")
    ax.set_ylabel("test accuracy % (mean ± std over seeds)")
    ax.set_title("Test accuracy against the compute of training")
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


# -- README ------------------------------------------------------------------------------------

def update_readme(block: str, readme: Path = README) -> bool:
    """Replace the text between the comparison markers in README.md; False if there are none."""
    if not readme.is_file():
        return False
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    new = text[:start + len(README_START)] + "\n" + block.strip() + "\n" + text[end:]
    atomic_write_text(readme, new)
    return True


def readme_block_of(comparison_md: str) -> str:
    """What goes into the README: comparison.md without its title, with paths relative to the root."""
    lines = comparison_md.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    text = "\n".join(lines).strip()
    for figure in ("learning_curves.png", "accuracy_vs_compute.png"):
        text = text.replace(f"]({figure})", f"](results/{figure})")
    return text


def readme_block(readme: Path = README) -> str | None:
    """The text between the comparison markers of README.md, or None if there are no markers."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return None
    return text[start + len(README_START):end].strip()


# -- main --------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python experiments/compare.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=None, help="comma-separated stage numbers, e.g. 01,04 (default: all)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (each stage's --quick), for tests")
    parser.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: results/ for the full comparison; results/local/comparison/ "
                             "for a selection of stages or seeds, results/local/quick/ with --quick)")
    parser.add_argument("--force", action="store_true", help="re-run results that are saved and unchanged")
    parser.add_argument("--no-budget", action="store_true", help="skip the data-budget table's extra runs")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    parser.add_argument("--verify", action="store_true",
                        help="re-train the selected runs and compare them with the saved ones in --out (results/ "
                             "by default) without writing anything; exit 1 if any differs by more than --tolerance")
    parser.add_argument("--tolerance", type=float, default=VERIFY_TOLERANCE,
                        help=f"--verify: largest accepted difference in accuracy, in points (default {VERIFY_TOLERANCE})")
    threads.add_threads_option(parser)
    return parser.parse_args(argv)


@dataclasses.dataclass
class Study:
    """What one invocation runs: the stages and seeds, where results go (``sources``: other saved runs
    to reuse, read only), how to train; ``committed``: this is the full comparison in results/."""

    specs: dict[str, StageSpec]
    seeds: list[int]
    files: dict[str, Path]
    data: mnist.MNIST
    out: Path
    quick: bool
    force: bool
    progress: bool
    sources: tuple[Path, ...] = ()
    committed: bool = False
    tracker: Progress | None = None

    def run(self, key: str, spec: StageSpec, number: str) -> list[dict]:
        return [run_or_resume(key, spec, seed, self.data, self.out / "runs", self.force, self.progress,
                              self.sources, self.tracker) for seed in self.seeds]

    def plan(self, with_budget: bool) -> None:
        """Count the runs to come, for the overall progress line printed after each one."""
        entries = [(number, spec, seed) for number, spec in self.specs.items() for seed in self.seeds]
        if with_budget:
            entries += [(key, spec, seed) for key, _, spec in budget_variants(self) for seed in self.seeds]
        self.tracker = plan_progress(entries, self.out / "runs", self.force, self.sources)


def budget_variants(study: Study) -> list[tuple[str, str, StageSpec]]:
    """The data-budget table's extra runs, ``(key, stage number, spec)``: a stage's design with another
    number of training images."""
    base_specs = load_specs([v.stage for v in DATA_BUDGET_VARIANTS if v.stage in study.files])
    variants = []
    for variant in DATA_BUDGET_VARIANTS:
        if variant.stage not in base_specs:
            continue
        base = base_specs[variant.stage]
        overrides = dict(variant.overrides)
        if study.quick:
            overrides.update({k: v for k, v in base.quick.items() if k != "train_size"})
            overrides["epochs"] = min(overrides.get("epochs", base.epochs), base.quick.get("epochs", 2))
        variants.append((variant.key, variant.stage, dataclasses.replace(base, **overrides)))
    return variants


def budget_variant_runs(study: Study) -> dict[str, list[dict]]:
    return {key: study.run(key, spec, stage) for key, stage, spec in budget_variants(study)}


def timing_machines(runs: list[dict]) -> str:
    """`` Not every run was timed on one machine: ...``, naming the CPU each run's record names (records made
    before they named it count as one earlier machine), or ``""`` when they all agree."""
    machines: dict[str, dict[str, list[int]]] = {}
    for run in runs:
        if run["status"] == "ok":
            cpu = (run.get("environment") or {}).get("cpu") or ""
            machines.setdefault(cpu, {}).setdefault(run["stage"], []).append(run["seed"])
    if len(machines) < 2:
        return ""
    named = [", ".join(f"{stage} (seeds {', '.join(map(str, sorted(seeds)))})" for stage, seeds in sorted(stages.items()))
             + f" on the CPU {cpu}" for cpu, stages in machines.items() if cpu]
    earlier = (f"the other {sum(map(len, machines[''].values()))} runs on an earlier machine whose records do not "
               "name its CPU") if "" in machines else ""
    return (" Not every run was timed on one machine: " + "; ".join([*named, *([earlier] if earlier else [])])
            + ". Seconds compare only between runs timed on the same machine.")


def comparison_markdown(study: Study, results: dict[str, list[dict]], variant_results: dict[str, list[dict]],
                        environment: dict) -> str:
    """comparison.md: the stage table, the data-budget table and its reading, time, figure, provenance."""
    all_runs = [r for runs in [*results.values(), *variant_results.values()] for r in runs]
    parts = [
        "# Comparison of the stages", "",
        f"Every stage trained with seeds {', '.join(str(s) for s in study.seeds)} and judged on the official "
        "10,000-image MNIST test set; accuracies are mean ± standard deviation over the seeds, time is the mean "
        "wall-clock seconds of one run (training and evaluation) on the machine that ran it. \"gain\" is the change in "
        "mean test accuracy over the previous stage, ± its standard error over the seeds (paired by seed); \"published\" is what the source design reported (stage "
        "01's source measured its 88.29 % on 350 held-out *training* images, not the official test set). "
        "\"train GFLOP\" is the arithmetic of one run's training: its matrix products, forward and back, over every "
        "image of every epoch (docs/math.md#training-compute).", "",
        stage_table(study.specs, results), "",
    ]
    if study.quick:
        parts.insert(1, "\n" + QUICK_BANNER)
    reading = readings(results, DEFAULT_OUT, study.specs)
    if reading:
        parts += ["What the numbers say (computed from the runs and the tables they name):", "", reading, ""]
    if variant_results:
        parts += ["## Data budget versus model and optimizer", "",
                  budget_table(study.specs, results, variant_results), "",
                  budget_reading(results, variant_results), ""]
    total_seconds = sum(r.get("seconds", 0.0) for r in all_runs if r["status"] == "ok")
    parts += [f"All {len(all_runs)} runs together took {total_seconds / 60:.1f} minutes of wall-clock time "
              "(as measured when each ran; reused results keep their original time)." + timing_machines(all_runs), "",
              "![Learning curves](learning_curves.png)", "",
              "Test accuracy against the arithmetic of training (log scale: each step right is ten times the "
              "compute):", "", "![Accuracy against compute](accuracy_vs_compute.png)", "", provenance_line(environment),
              "Rendered by `python experiments/compare.py` from the saved runs in `runs/` (nothing is retrained "
              "while their fingerprints match the code)."]
    return "\n".join(parts) + "\n"


# --verify: on the same machine and environment a run is reproduced exactly (the core is deterministic
# given the seed). Another BLAS kernel or thread count rounds differently; full-batch descent at the
# edge of stability (stage 02) amplifies that: switching OpenBLAS from its AVX2 to its AVX-512 kernels
# moved one stage-02 run by 8 test images when this was written. 0.15 points (15 of the 10,000 test
# images) allows for that, and still catches any real change of the code or the data.
VERIFY_TOLERANCE = 0.15


def verify(study: Study, variant_keys: list[str], tolerance: float) -> int:
    """Re-train every selected (run, seed) into a temporary folder and compare it with the saved one:
    every accuracy the tables show (test, train, and the held-out one where there is one)."""
    rows, worst = [], 0.0
    with tempfile.TemporaryDirectory(prefix="verify-") as scratch:
        keys = [(number, spec) for number, spec in study.specs.items()]
        keys += [(v.key, None) for v in DATA_BUDGET_VARIANTS if v.key in variant_keys]
        for key, spec in keys:
            for seed in study.seeds:
                saved_path = run_path(study.out / "runs", key, seed)
                saved, why = read_record(saved_path)
                if saved is None:
                    raise UserError(f"cannot verify {shown(saved_path)}: {why}; run without --verify to make it")
                spec = spec or spec_of_record(saved)
                fresh = run_or_resume(key, spec, seed, study.data, Path(scratch) / "runs", True, study.progress)
                row, difference = verify_row(key, seed, saved, fresh)
                rows.append(row)
                worst = max(worst, difference)
    print(tabulate(rows, headers=["run", "seed", "test % saved", "test % now", "train % saved", "train % now",
                                  "held-out % saved", "held-out % now", "seconds saved", "seconds now"],
                   tablefmt="github", disable_numparse=True))
    verdict = "reproduced" if worst <= tolerance else "NOT reproduced"
    print(f"{verdict}: largest accuracy difference {worst:.2f} points (tolerance {tolerance:g})")
    return 0 if worst <= tolerance else 1


VERIFIED = ("test_accuracy", "train_accuracy", "holdout_accuracy")
"""Every accuracy the comparison shows; ``holdout_accuracy`` exists for stage 01 only."""


def verify_row(key: str, seed: int, saved: dict, fresh: dict) -> tuple[list, float]:
    if saved.get("status") != "ok" or fresh.get("status") != "ok":
        same = saved.get("status") == fresh.get("status")
        return [key, seed, saved.get("status"), fresh.get("status"), "", "", "", "", "", ""], 0.0 if same else math.inf
    measured = [name for name in VERIFIED if name in saved or name in fresh]
    if any(not isinstance(saved.get(name), float) or not isinstance(fresh.get(name), float) for name in measured):
        return [key, seed, "damaged", "", "", "", "", "", "", ""], math.inf
    difference = max(abs(100 * (saved[name] - fresh[name])) for name in measured)

    def shown_pair(name: str) -> list[str]:
        return [f"{100 * saved[name]:.2f}", f"{100 * fresh[name]:.2f}"] if name in measured else ["", ""]

    return ([key, seed, *shown_pair("test_accuracy"), *shown_pair("train_accuracy"), *shown_pair("holdout_accuracy"),
             f"{saved['seconds']:.1f}", f"{fresh['seconds']:.1f}"], difference)


def study_of(args: argparse.Namespace) -> Study:
    """What this invocation runs, and where: only the full default comparison (every stage, seeds 0, 1, 2,
    the data-budget runs) writes into results/ and README.md; any other selection goes to
    results/local/ (unless --out), reusing the committed runs it can."""
    seeds = parse_list(args.seeds, int, "--seeds")
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError("--seeds needs distinct non-negative integers, e.g. 0,1,2")
    specs = load_specs(parse_list(args.stages, str, "--stages"))
    if args.quick:
        specs = {n: dataclasses.replace(s, **s.quick) for n, s in specs.items()}
    full = not args.quick and args.stages is None and seeds == FULL_SEEDS and not args.no_budget
    out = args.out or (DEFAULT_OUT if full or (args.verify and not args.quick)
                       else LOCAL_DIR / ("quick" if args.quick else "comparison"))
    committed = full and out.resolve() == DEFAULT_OUT.resolve()
    sources = () if args.quick or out.resolve() == DEFAULT_OUT.resolve() else (DEFAULT_OUT / "runs",)
    if not args.verify:
        writable_folder(out)
        if not committed and args.out is None:
            print(f"not the full comparison: writing to {shown(out)}/ (the committed results stay as they are)")
    return Study(specs, seeds, stage_files(), load_data(args.data_dir), out, args.quick, args.force,
                 not args.quiet, sources, committed)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tolerance != args.tolerance or not 0 <= args.tolerance < 100:
        raise UserError(f"--tolerance must be a number of points from 0 to 100, got {args.tolerance}")
    study = study_of(args)
    blas.configure()
    threads.configure(args.threads)
    if args.verify:
        chosen = [] if args.no_budget or args.stages is not None else [v.key for v in DATA_BUDGET_VARIANTS]
        return verify(study, chosen, args.tolerance)
    study.plan(not args.no_budget)
    results = {number: study.run(number, spec, number) for number, spec in study.specs.items()}
    variant_results = {} if args.no_budget else budget_variant_runs(study)
    print()
    print(stage_table(study.specs, results))
    write_pages(study, results, variant_results)
    return 0


def reading_sources(out: Path) -> list[dict]:
    """The other pages the readings quote (tuning tables, ablation results), as records for the render key:
    when one of them changes, the readings are written again."""
    files = [*sorted((out / "tuning").glob("*.csv")), *sorted((out / "ablations").glob("*.csv")),
             out / "committee" / "committee.json"]
    return [{"key": f"~{path.relative_to(out)}", "seed": "", "text": path.read_text(encoding="utf-8")}
            for path in files if path.is_file()]


def write_pages(study: Study, results: dict[str, list[dict]], variant_results: dict[str, list[dict]]) -> None:
    """comparison.md, comparison.csv, learning_curves.png and environment.json (and the README's table for
    the committed comparison), unless they were rendered from exactly these runs and this code already."""
    out = study.out
    all_runs = [r for runs in [*results.values(), *variant_results.values()] for r in runs]
    key = render_key(all_runs + reading_sources(out), RENDER_CODE)
    outputs = [out / name for name in ("comparison.md", "comparison.csv", "learning_curves.png",
                                       "accuracy_vs_compute.png")]
    if up_to_date(key, out / "environment.json", outputs):
        print(f"\n{shown(out / 'comparison.md')} and its figure are up to date with these {len(all_runs)} runs: "
              "nothing written")
        return
    environment = {**runs_environment([r for r in all_runs if r["status"] == "ok"]), "rendered_from": key}
    atomic_write_text(out / "comparison.csv", runs_frame(all_runs).to_csv(index=False))
    learning_curves(study.specs, results, out / "learning_curves.png")
    accuracy_against_compute(study.specs, results, out / "accuracy_vs_compute.png")
    comparison = comparison_markdown(study, results, variant_results, environment)
    atomic_write_text(out / "comparison.md", comparison)
    atomic_write_json(out / "environment.json", environment)
    print(f"\nwrote {shown(out / 'comparison.md')}, comparison.csv, learning_curves.png, accuracy_vs_compute.png")
    if study.committed and update_readme(readme_block_of(comparison)):
        print("updated the comparison in README.md")


if __name__ == "__main__":
    sys.exit(run_cli(main))
