"""Ablations: vary one idea at a time, everything else fixed (around stage 04, and stage 05's and 07's ideas).

    python experiments/ablations.py                          # all seven, seeds 0,1,2
    python experiments/ablations.py --only optimizer,init --seeds 0
    python experiments/ablations.py --quick --out /tmp/abl   # tiny budgets, for tests

The first source design listed as "future work" other activations, RMSprop/Adam and other
hyper-parameters; the first five ablations measure them. Their base is the stage-04 design as
``stages/04_adam.py`` defines it ([784, 128, 64, 10] ReLU, He initialisation, Adam lr 0.001 with
that stage's learning-rate schedule, batch 128) with a SHORT fixed budget of 10 epochs (5 for the
deeper network of the init ablation), a third of stage 04's 30 epochs, so their numbers are below
stage 04's, and a ranking at this budget need not hold after much longer training. The sixth,
``regularization``, starts from stage 05 at its own budget and changes one of its ideas at a time; it takes most of the
study's time (each stage-05 run takes minutes). The seventh, ``normalization``, removes stage 07's
batch normalization, its affine distortions, or both, at stage 07's own budget. Every variant is trained with each seed on the same
data (all 60,000 training images unless the ablation varies that) and judged on the official
10,000-image test set. Nothing here was chosen by looking at test accuracy: the learning rates are
common defaults, not tuned. If the numeric code changes on disk while a study runs, it stops
(results so far are kept) and asks to be run again, so that no result is saved under the
fingerprint of code it did not run.

The ablations (names for --only):
  optimizer       gradient descent / momentum / RMSprop / Adam, each at its usual default learning rate
  activation      ReLU / tanh / sigmoid, all with He initialisation (only the activation changes)
  init            0.001 * randn (the first design's) / Xavier / He, in a deep 4x256 ReLU network trained
                  with momentum SGD, plus the 0.001 * randn start trained with Adam instead (why He and
                  Xavier can tie: docs/math.md#when-initialisation-matters)
  data_budget     1,000 / 5,000 / 20,000 / 60,000 training images at a FIXED number of updates
  batch_size      32 / 128 / 512 / 2048 at the same epochs: the same learning rate, then scaled with the batch
                  (docs/math.md#batch-size-and-learning-rate)
  regularization  stage 05 as it is; width back to 128-64; with dropout 0.2/0.4 (stage 05 has none: validation
                  chose so); no shifts; no weight decay; no warm-up; neither shifts nor weight decay
  normalization   stage 07 as it is; without batch normalization; shifts only, without the affine
                  distortions; neither

Each (variant, seed) result is saved under ``<out>/runs/ablation-<name>-<variant>/`` as soon as it
finishes (atomically, via ``common.runs.run_or_resume``) with a fingerprint of its
settings and of the numeric code; a re-run reuses unchanged results, so an interrupted study
resumes, and changed settings or code are re-run (``--force`` re-runs everything). A variant whose
settings equal an already finished one (the base design appears in several ablations) reuses it.
A variant that fails (for example diverges) is shown as failed with its reason; the others go on.

Writes, per ablation, ``<name>.md`` (table, reading, command, environment), ``<name>.csv`` (one row
per variant and seed) and ``<name>.png`` (test accuracy curves of the first seed, and final
accuracy mean ± std), and ``README.md`` indexing them.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tabulate import tabulate

from common import blas, threads
from common.cli import OneLineParser, parse_list, run_cli, writable_folder
from common.files import atomic_write_json, atomic_write_text
from common.nn.errors import UserError
from common.nn.optimizers import Momentum, make_optimizer
from common.paths import LOCAL_DIR, REPO_ROOT, RESULTS_DIR, shown
from common.protocol import StageSpec
from common.report import QUICK_BANNER, percent, provenance_line, render_key, runs_environment, up_to_date
from common.runner import load_data
from common.runs import Runner, plan_progress
from common.stages import load_specs
from common.stats import RULE, compare_runs

DEFAULT_OUT = RESULTS_DIR / "ablations"
QUICK_OUT = LOCAL_DIR / "quick" / "ablations"
LOCAL_OUT = LOCAL_DIR / "ablations"
BASE_STAGE = "04"
BASE_EPOCHS = 10                # the short budget of the whole study (stage 04 trains 30)
INIT_EPOCHS = 5                 # the deep network of the init ablation is ~3x slower per epoch
DEEP_SIZES = (784, 256, 256, 256, 256, 10)
NUM_TRAIN = 60_000
QUICK = {"train_size": 2000, "epochs": 1}   # --quick: tiny budgets; numbers mean nothing
QUICK_BUDGETS = (250, 500, 1000, 2000)      # --quick data_budget sizes (the full ones do not fit 2,000)
FULL_BUDGETS = (1000, 5000, 20000, None)    # None: all 60,000
CHANCE = 0.10
SCALE_BATCH = 128               # the batch size whose learning rate the scaled series keeps
REGULARIZATION_STAGE = "05"
NORMALIZATION_STAGE = "07"


# -- the ablations -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    name: str           # part of the run key: ablation-<ablation>-<name>
    label: str          # shown in tables and legends
    overrides: dict     # StageSpec fields changed from the ablation's base


@dataclass(frozen=True)
class Ablation:
    name: str
    question: str                 # what is varied (one line)
    varies: frozenset             # the StageSpec fields the variants change (the one idea)
    note: str                     # a remark on the fixed settings (the .md lists them from the specs)
    base: dict                    # StageSpec overrides of the stage-04 design shared by all variants
    variants: tuple[Variant, ...]
    x_axis: str                   # "epoch" or "update": x axis of the learning curves
    reading: Callable[[list[dict], "Ablation"], str]  # one sentence from the numbers
    stage: str = BASE_STAGE       # the stage whose design is the base


def updates_of(spec: StageSpec, train_size: int) -> int:
    """Number of optimizer steps: epochs x batches per epoch (the last, smaller batch included)."""
    per_epoch = 1 if spec.batch_size is None or spec.batch_size >= train_size else math.ceil(train_size / spec.batch_size)
    return spec.epochs * per_epoch


def train_size_of(spec: StageSpec) -> int:
    return spec.train_size if spec.train_size is not None else NUM_TRAIN - spec.holdout_size - spec.validation_size


def schedule_text(spec: StageSpec) -> str:
    return "constant learning rate" if spec.schedule == "constant" else f"{spec.schedule} learning-rate decay"


NICE = {"he": "He", "xavier": "Xavier", "normal": "fixed-scale normal", "relu": "ReLU", "tanh": "tanh",
        "sigmoid": "sigmoid"}


def optimizer_text(spec: StageSpec) -> str:
    """E.g. "Adam lr 0.001 with cosine decay" or "momentum (mu 0.9) lr 0.01, constant"."""
    label = spec.optimizer_label().replace("momentum", "momentum (mu 0.9)")
    if spec.schedule == "constant":
        return label + ", constant"
    return label.replace(f", {spec.schedule}", f" with {spec.schedule} decay")


def describe_fixed(spec: StageSpec, varies: frozenset) -> str:
    """The settings an ablation holds fixed, read off one of its specs (so it never goes stale)."""
    if spec.layers:
        parts = ["the network per variant" if "layers" in varies else spec.architecture().describe()]
    else:
        parts = ["-".join(str(n) for n in spec.sizes) + ("" if "activation" in varies else f" {NICE[spec.activation]}")]
    if "init" not in varies:
        parts.append(f"{NICE[spec.init]} init" + (f" (scale {spec.init_scale:g})" if spec.init_scale is not None else ""))
    if "optimizer" in varies:
        parts.append(schedule_text(spec))
    elif "lr" in varies:
        parts.append(optimizer_text(spec).replace(f" lr {spec.lr:g}", "") + " (learning rate per variant)")
    else:
        parts.append(optimizer_text(spec))
    if spec.input_dropout or spec.hidden_dropout:
        if not {"input_dropout", "hidden_dropout"} & varies:
            parts.append(f"dropout {spec.input_dropout:g}/{spec.hidden_dropout:g}")
    if spec.shift and "shift" not in varies:
        parts.append(f"random shifts of up to {spec.shift} px")
    if "affine_rotation" not in varies and (spec.affine_rotation or spec.affine_scale or spec.affine_shear):
        parts.append(affine_text(spec))
    if spec.weight_decay and "weight_decay" not in varies:
        parts.append(f"weight decay {spec.weight_decay:g}")
    if spec.warmup and "warmup" not in varies:
        parts.append(f"{plural(spec.warmup, 'warm-up epoch')}")
    if "batch_size" not in varies:
        parts.append(f"batch {spec.batch_size or 'full'}")
    if "epochs" not in varies:
        parts.append(plural(spec.epochs, "epoch"))
    if "train_size" not in varies:
        n = train_size_of(spec)
        parts.append(f"all {n:,} training images" if spec.train_size is None else f"{n:,} training images")
    return ", ".join(parts)


def affine_text(spec: StageSpec) -> str:
    """E.g. "affine distortions (rotation up to 10 deg, scale 1 +- 0.1, shear up to 10 deg)"."""
    return (f"affine distortions (rotation up to {spec.affine_rotation:g} deg, scale 1 +- {spec.affine_scale:g}, "
            f"shear up to {spec.affine_shear:g} deg)")


# -- readings: computed from the numbers, never typed ----------------------------------------

def summarise(ablation: Ablation, specs: dict[str, StageSpec], results: dict[str, list[dict]]) -> list[dict]:
    """Per variant: label, mean/std of train and test accuracy, seconds, updates, failures."""
    rows = []
    for variant in ablation.variants:
        runs = results[variant.name]
        ok = [r for r in runs if r["status"] == "ok"]
        tests = [r["test_accuracy"] for r in ok]
        trains = [r["train_accuracy"] for r in ok]
        spec = specs[variant.name]
        rows.append({
            "variant": variant, "spec": spec, "runs": runs, "ok": ok,
            "failed": [r for r in runs if r["status"] != "ok"],
            "test": float(np.mean(tests)) if ok else None,
            "test_std": float(np.std(tests, ddof=1)) if len(ok) > 1 else 0.0,
            "train": float(np.mean(trains)) if ok else None,
            "seconds": float(np.mean([r["seconds"] for r in ok])) if ok else None,
            "train_size": ok[0]["train_size"] if ok else train_size_of(spec),
        })
        rows[-1]["updates"] = updates_of(spec, rows[-1]["train_size"])
    return rows


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def pts(x: float) -> str:
    return f"{100 * x:.2f}"


def failed_clause(rows: list[dict]) -> str:
    failed = [r for r in rows if not r["ok"]]
    if not failed:
        return ""
    return "; " + ", ".join(f"{r['variant'].label} failed ({r['failed'][0]['reason']})" for r in failed)


def ranking(rows: list[dict]) -> str:
    """'A scores highest (x % test accuracy); B -d ± se points (not distinguishable), C ...': every other
    variant against the highest, under the one rule (common.stats: two standard errors, paired by seed)."""
    ok = sorted((r for r in rows if r["ok"]), key=lambda r: -r["test"])
    if not ok:
        return "every variant failed"
    best = ok[0]
    text = f"{best['variant'].label} scores highest ({pts(best['test'])} % test accuracy)"
    if len(ok) > 1:
        changes = [(r["variant"].label, compare_runs(r["ok"], best["ok"])) for r in ok[1:]]
        text += "; against it, " + ", ".join(f"{label} {change.points()} ({change.verdict()})"
                                             for label, change in changes)
    return text


def resolution(rows: list[dict]) -> str:
    """Whether the top two can be told apart under the one rule; empty when they can (ranking says so)."""
    ok = sorted((r for r in rows if r["ok"]), key=lambda r: -r["test"])
    if len(ok) < 2:
        return ""
    top = compare_runs(ok[0]["ok"], ok[1]["ok"])
    if top.distinguishable is False:
        return f" (so these seeds do not tell {ok[0]['variant'].label} and {ok[1]['variant'].label} apart)"
    return ""


def rate_text(spec: StageSpec) -> str:
    """E.g. ``GD 0.1`` or ``momentum 0.01 with mu 0.9, i.e. an effective 0.1``, read off the spec and the optimizer."""
    optimizer = make_optimizer(spec.optimizer, spec.lr)
    name = {"gd": "GD", "momentum": "momentum", "rmsprop": "RMSprop", "adam": "Adam"}[spec.optimizer]
    text = f"{name} {spec.lr:g}"
    if isinstance(optimizer, Momentum):
        text += f" with mu {optimizer.momentum:g}, i.e. an effective {spec.lr / (1 - optimizer.momentum):g}"
    return text


def read_optimizer(rows: list[dict], ablation: Ablation) -> str:
    spec, updates = rows[0]["spec"], rows[0]["updates"]
    peak = "" if spec.schedule == "constant" else f", decayed on a {spec.schedule} like the base"
    rates = "; ".join(rate_text(row["spec"]) for row in rows)
    return (f"At {plural(spec.epochs, 'epoch')} ({plural(updates, 'update')} of batch {spec.batch_size}), "
            f"{ranking(rows)}{resolution(rows)}; each optimizer starts from its standard default learning rate "
            f"({rates}){peak}, not tuned{failed_clause(rows)}.")


def read_activation(rows: list[dict], ablation: Ablation) -> str:
    spec = rows[0]["spec"]
    return (f"With {NICE[spec.init]} initialisation, {optimizer_text(spec)} and {plural(spec.epochs, 'epoch')} for all three, "
            f"{ranking(rows)}{resolution(rows)}; tanh and sigmoid are usually paired with Xavier "
            f"initialisation, which is not used here so that only the activation changes{failed_clause(rows)}.")


def read_init(rows: list[dict], ablation: Ablation) -> str:
    spec = rows[0]["spec"]
    by_name = {r["variant"].name: r for r in rows}
    arch = "-".join(str(n) for n in spec.sizes)
    text = (f"In the deep {arch} {NICE[spec.activation]} network trained with {optimizer_text(spec)} for "
            f"{plural(spec.epochs, 'epoch')}, {ranking(rows)}")
    small = by_name.get("normal-0.001")
    if small and small["ok"]:
        text += "; " + small_init_clause(small)
        adam = by_name.get("normal-0.001-adam")
        if adam and adam["ok"]:
            hides = adam["test"] - small["test"] > 0.5 * (by_name["he"]["test"] - small["test"]) if by_name.get("he", {}).get("ok") else False
            text += (f"; Adam, which rescales each weight's step by its gradient's running size, reaches "
                     f"{pts(adam['test'])} % from the same 0.001 * randn start"
                     + (": it hides much of the difference, which is why the other rows use momentum"
                        if hides else ": it does not rescue the tiny start either"))
    return text + failed_clause(rows) + "."


def small_init_clause(row: dict) -> str:
    """What the 0.001 * randn network did, from its runs: learned, or stuck answering one digit."""
    spec = row["spec"]
    width = spec.sizes[1]
    # A ReLU layer of width n with weights of std s scales the signal's std by s * sqrt(n / 2).
    shrink = 1 / (spec.init_scale * math.sqrt(width / 2))
    recalls = [r["per_class"]["recall"] for r in row["ok"] if "per_class" in r]
    if row["test"] >= CHANCE + 0.05 or not recalls:
        return f"0.001 * randn reaches {pts(row['test'])} %"
    stuck = [int(np.argmax(recall)) for recall in recalls if max(recall) == 1.0 and sum(recall) == 1.0]
    clause = (f"with 0.001 * randn the signal shrinks about {shrink:,.0f}x per layer of width {width} "
              f"(std x {spec.init_scale:g} x sqrt({width} / 2)), the gradients vanish and it never starts learning")
    if len(stuck) == len(recalls) and len(set(stuck)) == 1:
        clause += (f": it answers {stuck[0]} for every test image, so its {pts(row['test'])} % test accuracy is "
                   f"exactly the share of {stuck[0]}s in the test set")
    return clause


def read_data_budget(rows: list[dict], ablation: Ablation) -> str:
    ok = [r for r in rows if r["ok"]]
    if len(ok) < 2:
        return "Too few variants ran to read a trend" + failed_clause(rows) + "."
    small, large = ok[0], ok[-1]
    updates = sorted(r["updates"] for r in rows)
    batch = rows[0]["spec"].batch_size
    gap_small, gap_large = small["train"] - small["test"], large["train"] - large["test"]
    steps = f"{updates[0]:,}" if updates[0] == updates[-1] else f"{updates[0]:,} to {updates[-1]:,}"
    return (f"With the number of updates fixed (batch {batch}, {steps} steps, so small "
            f"sets are passed over many more times), test accuracy goes from {pts(small['test'])} % on "
            f"{small['train_size']:,} images to {pts(large['test'])} % on {large['train_size']:,} "
            f"({100 * (large['test'] - small['test']):+.2f} points), and the train-test gap "
            f"{'shrinks' if gap_large < gap_small else 'grows'} from "
            f"{pts(gap_small)} to {pts(gap_large)} points{failed_clause(rows)}.")


def read_batch_size(rows: list[dict], ablation: Ablation) -> str:
    spec = rows[0]["spec"]
    same = [r for r in rows if r["spec"].lr == spec.lr]
    scaled = [r for r in rows if r["spec"].lr != spec.lr or r["spec"].batch_size == SCALE_BATCH]
    ok = [r for r in same if r["ok"]]
    text = (f"At {plural(spec.epochs, 'epoch')} and the same {optimizer_text(spec)} for every batch size, "
            f"{ranking(same)}{resolution(same)}")
    if ok:
        few, many = min(ok, key=lambda r: r["updates"]), max(ok, key=lambda r: r["updates"])
        text += (f"; batch {few['spec'].batch_size} makes only {plural(few['updates'], 'update')} against "
                 f"{many['updates']:,} for batch {many['spec'].batch_size}")
    if len([r for r in scaled if r["ok"]]) > 1:
        text += (f". With the learning rate scaled with the batch (lr x B / {SCALE_BATCH}, so that an epoch moves "
                 f"the weights about as far), {ranking(scaled)}{resolution(scaled)}")
    return text + failed_clause(rows) + "."


def against_full(rows: list[dict], full: dict, with_train: bool) -> list[str]:
    """Each other variant that ran, against the full design under the one rule: "label 99.1 % (+0.2 ± 0.1
    points, verdict)", with its training accuracy too when ``with_train``."""
    costs = []
    for row in rows:
        if row is full or not row["ok"]:
            continue
        change = compare_runs(row["ok"], full["ok"])
        train = f"; train {pts(row['train'])} %" if with_train else ""
        costs.append(f"{row['variant'].label} {pts(row['test'])} % ({change.points()}, {change.verdict()}{train})")
    return costs


def read_regularization(rows: list[dict], ablation: Ablation) -> str:
    """What removing each of stage 05's ideas costs, against the full design, under the one rule."""
    by_name = {r["variant"].name: r for r in rows}
    full = by_name.get("all")
    if not full or not full["ok"]:
        return "The full stage-05 design did not run, so nothing can be compared" + failed_clause(rows) + "."
    costs = against_full(rows, full, with_train=True)
    gap = full["train"] - full["test"]
    text = (f"The full stage-05 design reaches {pts(full['test'])} % test accuracy (train {pts(full['train'])} %, "
            f"a generalisation gap of {pts(gap)} points); changing one idea at a time: " + "; ".join(costs))
    bare = by_name.get("none")
    if bare and bare["ok"]:
        text += (f". Without shifts and weight decay, the wide network's train-test gap is "
                 f"{pts(bare['train'] - bare['test'])} points")
    dropout = by_name.get("with-dropout")
    if dropout and dropout["ok"] and dropout["train"] - dropout["test"] < gap and dropout["train"] < full["train"]:
        text += (f". A smaller gap is not the aim, a higher test accuracy is: with dropout the gap is "
                 f"{pts(dropout['train'] - dropout['test'])} points against {pts(gap)}, with training accuracy "
                 f"at {pts(dropout['train'])} % against {pts(full['train'])} %")
    return text + failed_clause(rows) + "."


def budget_variants(sizes: Sequence[int | None], epochs: int, batch: int, full_size: int) -> tuple[Variant, ...]:
    """Each size trained for the same number of updates as ``epochs`` over ``full_size`` images."""
    target = epochs * math.ceil(full_size / batch)
    variants = []
    for size in sizes:
        n = full_size if size is None else size
        per_epoch = max(1, math.ceil(n / batch))
        variant_epochs = max(1, math.ceil(target / per_epoch))
        variants.append(Variant(str(n), f"{n:,} images ({variant_epochs} ep.)",
                                {"train_size": size, "epochs": variant_epochs,
                                 "eval_every": max(1, variant_epochs // 10)}))
    return tuple(variants)


def read_normalization(rows: list[dict], ablation: Ablation) -> str:
    """What batch normalization and the affine distortions each buy stage 07, under the one rule."""
    by_name = {r["variant"].name: r for r in rows}
    full = by_name.get("all")
    if not full or not full["ok"]:
        return "Stage 07 as it is did not run, so nothing can be compared" + failed_clause(rows) + "."
    costs = against_full(rows, full, with_train=False)
    text = (f"Stage 07 as it is reaches {pts(full['test'])} % test accuracy (train {pts(full['train'])} %); "
            "taking its ideas away: " + "; ".join(costs))
    return text + failed_clause(rows) + "."


def build_ablations(quick: bool) -> list[Ablation]:
    """The seven ablations; ``quick`` shrinks every budget to a smoke test."""
    epochs = QUICK["epochs"] if quick else BASE_EPOCHS
    init_epochs = QUICK["epochs"] if quick else INIT_EPOCHS
    train_size = QUICK["train_size"] if quick else None
    base = {"epochs": epochs, "train_size": train_size}
    budgets = (budget_variants(QUICK_BUDGETS, epochs, 128, QUICK["train_size"]) if quick
               else budget_variants(FULL_BUDGETS, epochs, 128, NUM_TRAIN))
    return [
        Ablation(
            "optimizer", "the optimizer, each at its standard default learning rate",
            frozenset({"optimizer", "lr"}),
            "the learning rates are common defaults, not tuned; momentum uses mu 0.9",
            base,
            (Variant("gd", "gradient descent (lr 0.1)", {"optimizer": "gd", "lr": 0.1}),
             Variant("momentum", "momentum (lr 0.01, mu 0.9)", {"optimizer": "momentum", "lr": 0.01}),
             Variant("rmsprop", "RMSprop (lr 0.001)", {"optimizer": "rmsprop", "lr": 0.001}),
             Variant("adam", "Adam (lr 0.001)", {"optimizer": "adam", "lr": 0.001})),
            "epoch", read_optimizer),
        Ablation(
            "activation", "the hidden activation",
            frozenset({"activation"}),
            "the same He init for all three, not the Xavier init usually paired with tanh and sigmoid, so "
            "that only the activation changes",
            base,
            (Variant("relu", "ReLU", {"activation": "relu"}),
             Variant("tanh", "tanh", {"activation": "tanh"}),
             Variant("sigmoid", "sigmoid", {"activation": "sigmoid"})),
            "epoch", read_activation),
        Ablation(
            "init", "the weight initialisation, in a deep network",
            frozenset({"init", "init_scale"}),
            "a deeper network than stage 04, where the initial scale matters most, and momentum rather than "
            "Adam; one extra row trains the 0.001 * randn start with Adam (lr 0.001) instead, to measure how much "
            "Adam's per-weight rescaling of the gradients hides",
            {**base, "epochs": init_epochs, "sizes": DEEP_SIZES, "optimizer": "momentum", "lr": 0.01},
            (Variant("normal-0.001", "0.001 * randn (first design)", {"init": "normal", "init_scale": 0.001}),
             Variant("xavier", "Xavier", {"init": "xavier"}),
             Variant("he", "He", {"init": "he"}),
             Variant("normal-0.001-adam", "0.001 * randn, Adam lr 0.001",
                     {"init": "normal", "init_scale": 0.001, "optimizer": "adam", "lr": 0.001})),
            "epoch", read_init),
        Ablation(
            "data_budget", "the number of training images, at a fixed number of updates",
            frozenset({"train_size", "epochs", "eval_every"}),
            "the epochs are chosen so that every size gets about the same number of mini-batch updates as "
            "the base budget on all images (small sets are passed over many more times)",
            {k: v for k, v in base.items() if k != "train_size"},
            budgets,
            "update", read_data_budget),
        batch_size_ablation(base),
        regularization_ablation(quick),
        normalization_ablation(quick),
    ]


def batch_size_ablation(base: dict) -> Ablation:
    """Batch sizes 32 to 2048 at the same epochs: one series at the base learning rate, one scaled with the batch."""
    return Ablation(
        "batch_size", "the mini-batch size at the same epochs, with the same and with a scaled learning rate",
        frozenset({"batch_size", "lr"}),
        f"larger batches make fewer updates; the first series keeps the base learning rate, the second "
        f"scales it with the batch (lr x B / {SCALE_BATCH})",
        base,
        tuple(Variant(str(b), f"batch {b}", {"batch_size": b}) for b in (32, 128, 512, 2048))
        + tuple(Variant(f"{b}-scaled", f"batch {b}, lr x {b}/{SCALE_BATCH}",
                        {"batch_size": b, "lr": 0.001 * b / SCALE_BATCH}) for b in (32, 512, 2048)),
        "epoch", read_batch_size)


def regularization_ablation(quick: bool) -> Ablation:
    """Stage 05 at its own budget with one of its ideas changed at a time (3 seeds: ~40 min on 2 cores).

    Stage 05 is what validation chose (results/tuning/05_regularized.md): no dropout, so the dropout
    variant adds the classic 0.2 / 0.4 rather than removing it."""
    return Ablation(
        "regularization", "stage 05's ideas, one changed at a time, at stage 05's own budget",
        frozenset({"sizes", "input_dropout", "hidden_dropout", "shift", "weight_decay", "warmup"}),
        "every variant is stage 05's design and budget with one idea changed; 'none' removes shifts and weight "
        "decay together, to see the wide network unregularised",
        dict(QUICK) if quick else {},
        (Variant("all", "stage 05 as it is", {}),
         Variant("narrow", "width 128-64 (stage 04's)", {"sizes": (784, 128, 64, 10)}),
         Variant("with-dropout", "with dropout 0.2/0.4", {"input_dropout": 0.2, "hidden_dropout": 0.4}),
         Variant("no-shifts", "no shifts", {"shift": 0}),
         Variant("no-weight-decay", "no weight decay", {"weight_decay": 0.0}),
         Variant("no-warmup", "no warm-up", {"warmup": 0}),
         Variant("none", "no shifts or weight decay", {"shift": 0, "weight_decay": 0.0})),
        "epoch", read_regularization, stage=REGULARIZATION_STAGE)


def normalization_ablation(quick: bool) -> Ablation:
    """Stage 07 at its own budget without batch normalization, without the affine distortions, or without
    both (3 seeds of each: about 40 minutes on 2 cores; stage 07 as it is is the comparison's runs)."""
    plain = tuple(layer for layer in load_specs([NORMALIZATION_STAGE])[NORMALIZATION_STAGE].layers
                  if layer != "batchnorm")
    no_affine = {"affine_rotation": 0.0, "affine_scale": 0.0, "affine_shear": 0.0}
    no_batchnorm = {"recalibrate_batchnorm": False}  # no statistics to re-estimate
    return Ablation(
        "normalization", "stage 07's two ideas, batch normalization and affine distortions, one removed at a time",
        frozenset({"layers", "recalibrate_batchnorm", "affine_rotation", "affine_scale", "affine_shear"}),
        "every variant is stage 07's design and budget (its learning rate included, chosen with batch "
        "normalization) with one idea removed; without the affine distortions the digits are still shifted by up "
        "to 2 pixels, as in stage 06, and without batch normalization there are no statistics to re-estimate "
        "after training",
        dict(QUICK) if quick else {},
        (Variant("all", "stage 07 as it is", {}),
         Variant("no-batchnorm", "no batch normalization", {"layers": plain, **no_batchnorm}),
         Variant("no-affine", "shifts only, no affine distortions", no_affine),
         Variant("neither", "neither", {"layers": plain, **no_batchnorm, **no_affine})),
        "epoch", read_normalization, stage=NORMALIZATION_STAGE)


ABLATION_NAMES = [a.name for a in build_ablations(False)]


def variant_spec(base: StageSpec, ablation: Ablation, variant: Variant) -> StageSpec:
    """The stage-04 spec with the ablation's base and the variant's overrides.

    Name, title and description are the same for every variant, so two variants with equal
    settings (e.g. Adam in the optimizer ablation and ReLU in the activation one) have equal
    fingerprints and are trained once.
    """
    spec = dataclasses.replace(base, name="ablation", title=f"stage-{ablation.stage} design",
                               adds="one idea varied at a time", reproduces="", published_accuracy=None,
                               published_note="", quick={})
    return dataclasses.replace(spec, **{**ablation.base, **variant.overrides})


# -- running -------------------------------------------------------------------------------------

# -- outputs -------------------------------------------------------------------------------------

def runs_frame(ablation: Ablation, rows: list[dict]) -> pd.DataFrame:
    records = []
    for row in rows:
        spec, variant = row["spec"], row["variant"]
        for r in row["runs"]:
            history = r.get("history") or []
            records.append({
                "ablation": ablation.name, "variant": variant.name, "label": variant.label, "key": r["key"],
                "seed": r["seed"], "status": r["status"], "reason": r.get("reason", ""),
                "architecture": "-".join(str(n) for n in spec.sizes) + f" {spec.activation}",
                "init": spec.init + (f" {spec.init_scale:g}" if spec.init_scale is not None else ""),
                "optimizer": spec.optimizer, "lr": spec.lr, "schedule": spec.schedule, "batch_size": spec.batch_size,
                "train_size": r.get("train_size", row["train_size"]), "epochs": spec.epochs,
                "updates": row["updates"],
                "train_accuracy": r.get("train_accuracy"), "test_accuracy": r.get("test_accuracy"),
                "final_loss": history[-1]["loss"] if history else None,
                "seconds": r.get("seconds"), "train_seconds": r.get("train_seconds"),
                "num_parameters": r.get("num_parameters"),
            })
    return pd.DataFrame(records)


def results_table(rows: list[dict]) -> str:
    table = []
    for row in rows:
        label = row["variant"].label
        if not row["ok"]:
            table.append([label, f"{row['train_size']:,}", row["spec"].epochs, f"{row['updates']:,}",
                          "-", f"failed: {row['failed'][0]['reason']}", "-"])
            continue
        test = percent([r["test_accuracy"] for r in row["ok"]])
        if row["failed"]:
            test += f" ({len(row['failed'])} of {len(row['runs'])} seeds failed: {row['failed'][0]['reason']})"
        table.append([label, f"{row['train_size']:,}", row["spec"].epochs, f"{row['updates']:,}",
                      percent([r["train_accuracy"] for r in row["ok"]]), test, f"{row['seconds']:.1f}"])
    return tabulate(table, headers=["variant", "train images", "epochs", "updates", "train acc. %",
                                    "test acc. %", "time (s)"], tablefmt="github", disable_numparse=True)


READING_PREFIX = "**Reading:** "


def ablation_markdown(ablation: Ablation, rows: list[dict], reading: str, seeds: list[int],
                      environment: dict, quick: bool) -> str:
    parts = [f"# Ablation: {ablation.name}", ""]
    if quick:
        parts += [QUICK_BANNER, ""]
    parts += [
        f"Varied: {ablation.question}. Fixed: {describe_fixed(rows[0]['spec'], ablation.varies)}; "
        f"{ablation.note}. Seeds {', '.join(map(str, seeds))}; "
        "accuracies are mean ± standard deviation over the seeds on the official 10,000-image test set "
        f"(the reading compares them under one rule: {RULE}) "
        "(train accuracy on the images trained on); time is the mean wall-clock seconds of one run, "
        "training and evaluation, and depends on what else the machine was doing.",
        "",
        results_table(rows),
        "",
        READING_PREFIX + reading,
        "",
        f"![{ablation.name}]({ablation.name}.png)",
        "",
        provenance_line(environment),
    ]
    return "\n".join(parts) + "\n"


def plot_ablation(ablation: Ablation, rows: list[dict], path: Path) -> None:
    """Left: test accuracy per epoch (or per update) of the first seed; right: final mean ± std."""
    from matplotlib.ticker import MaxNLocator

    from common.plots import save_figure, subplots

    fig, (curves, bars) = subplots(1, 2, figsize=(13, 4.8), layout=None)
    labels, means, stds, lows = [], [], [], []
    for row in rows:
        labels.append(row["variant"].label)
        if not row["ok"]:
            means.append(0.0)
            stds.append(0.0)
            continue
        first = row["ok"][0]
        history = [h for h in first["history"] if h.get("test_accuracy") is not None]
        per_epoch = row["updates"] / row["spec"].epochs
        xs = [h["epoch"] * (per_epoch if ablation.x_axis == "update" else 1) for h in history]
        ys = [100 * h["test_accuracy"] for h in history]
        curves.plot(xs, ys, marker="o", markersize=3, label=f"{row['variant'].label} (seed {first['seed']})")
        tests = [100 * r["test_accuracy"] for r in row["ok"]]
        means.append(float(np.mean(tests)))
        stds.append(float(np.std(tests, ddof=1)) if len(tests) > 1 else 0.0)
        lows.append(min(ys + [means[-1]]))
    curves.set_xlabel("mini-batch updates" if ablation.x_axis == "update" else "epoch")
    curves.set_ylabel("test accuracy %")
    curves.set_title(f"{ablation.name}: test accuracy during training")
    curves.grid(True, alpha=0.3)
    if curves.lines:
        curves.legend(fontsize=8, loc="best")
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    floor = min(lows, default=0.0)
    bottom = 0.0 if floor < 50 else max(0.0, 5 * math.floor((floor - 2) / 5))
    positions = np.arange(len(labels))
    bars.bar(positions, means, yerr=stds, capsize=4, color="tab:blue")
    for x, m, row in zip(positions, means, rows):
        bars.text(x, max(m, bottom), f"{m:.2f}" if row["ok"] else "failed", ha="center", va="bottom",
                  fontsize=8, color="black" if row["ok"] else "tab:red")
    bars.set_xticks(positions, labels, rotation=15, ha="right", fontsize=8)
    bars.set_ylim(bottom, 100)
    curves.set_ylim(bottom, 100)
    bars.set_ylabel("final test accuracy % (mean ± std over seeds)")
    bars.set_title(f"{ablation.name}: final test accuracy")
    fig.tight_layout()
    save_figure(fig, path)


def index_markdown(out: Path, ablations: list[Ablation], base: StageSpec, environment: dict, quick: bool) -> str:
    """README.md: every ablation whose page exists in ``out``, with the reading read from its page."""
    table = []
    commands = []
    for ablation in ablations:
        page = out / f"{ablation.name}.md"
        if not page.is_file():
            continue
        text = page.read_text(encoding="utf-8")
        reading = next((line[len(READING_PREFIX):] for line in text.splitlines()
                        if line.startswith(READING_PREFIX)), "")
        table.append([f"[{ablation.name}]({ablation.name}.md)", ablation.question, reading])
        match = re.search(r"runs made by `([^`]*)`", text)
        if match:
            commands.append(match.group(1))
    parts = ["# Ablations: one idea at a time", ""]
    if quick:
        parts += [QUICK_BANNER, ""]
    parts += [
        f"Base of the first five: the stage-04 design with a short budget: {describe_fixed(base, frozenset())}. "
        "The regularization study starts from stage 05 instead, at stage 05's own budget, and the normalization "
        "study from stage 07, at its own. Within each ablation "
        "the variants differ in one idea only; the settings an ablation holds fixed can differ from the base "
        "(the init ablation uses a deeper network and momentum), and its page lists them. Every reading below "
        "is computed from the numbers by `experiments/ablations.py`; at a short budget a ranking need not hold "
        "after much longer training.",
        "",
        tabulate(table, headers=["ablation", "what is varied", "reading"], tablefmt="github",
                 disable_numparse=True),
        "",
    ]
    others = [c for c in dict.fromkeys(commands) if c != environment["command"]]
    if others:
        parts += ["Some pages were produced by " + ", ".join(f"`{c}`" for c in others)
                  + "; each page lists its command and environment.", ""]
    parts.append(provenance_line(environment))
    return "\n".join(parts) + "\n"


# -- main ----------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python experiments/ablations.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=None,
                        help=f"comma-separated ablations to run: {','.join(ABLATION_NAMES)} (default: all)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; with --quick, 0)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (2,000 images, 1 epoch), for tests")
    parser.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: results/ablations/ for the whole study with seeds 0,1,2; "
                             "results/local/ablations/ for a part of it, results/local/quick/ablations/ with --quick)")
    parser.add_argument("--force", action="store_true", help="re-run results that are saved and unchanged")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    threads.add_threads_option(parser)
    return parser.parse_args(argv)


def chosen_ablations(args: argparse.Namespace) -> tuple[list[Ablation], list[Ablation], list[int]]:
    """``(all ablations, the chosen ones, seeds)`` from the options, checked."""
    only = parse_list(args.only, str, "--only")
    if args.only is not None and not only:
        raise UserError(f"--only needs one or more of {', '.join(ABLATION_NAMES)}")
    unknown = [name for name in only or [] if name not in ABLATION_NAMES]
    if unknown:
        raise UserError(f"unknown ablation {', '.join(unknown)}; choose from {', '.join(ABLATION_NAMES)}")
    seeds = parse_list(args.seeds if args.seeds is not None else ("0" if args.quick else "0,1,2"), int, "--seeds")
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError("--seeds needs one or more distinct non-negative integers, e.g. 0,1,2")
    all_ablations = build_ablations(args.quick)
    return all_ablations, [a for a in all_ablations if only is None or a.name in only], seeds


def _main(argv: Sequence[str] | None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    all_ablations, chosen, seeds = chosen_ablations(args)
    full = not args.quick and len(chosen) == len(all_ablations) and seeds == [0, 1, 2]
    out = args.out or (DEFAULT_OUT if full else QUICK_OUT if args.quick else LOCAL_OUT)
    writable_folder(out)
    if args.out is None and not full:
        print(f"not the full study: writing to {shown(out)}/ (the committed results stay as they are)")
    blas.configure()
    threads.configure(args.threads)
    numbers = sorted({BASE_STAGE} | {a.stage for a in chosen})
    bases = load_specs(numbers)
    planned = [(a, v, variant_spec(bases[a.stage], a, v)) for a in chosen for v in a.variants]
    sources = () if args.quick or out.resolve() == DEFAULT_OUT.resolve() else (DEFAULT_OUT / "runs",)
    shared_from = () if args.quick else (RESULTS_DIR / "runs",)  # the comparison's runs
    runner = Runner(load_data(args.data_dir), out / "runs", args.force, not args.quiet, sources, shared_from)
    runner.tracker = plan_progress([(f"ablation-{a.name}-{v.name}", spec, seed)
                                    for a, v, spec in planned for seed in seeds], out / "runs", args.force, sources)
    pages = []
    for ablation in chosen:
        specs = {v.name: spec for a, v, spec in planned if a is ablation}
        results = {name: [runner.run(f"ablation-{ablation.name}-{name}", spec, seed) for seed in seeds]
                   for name, spec in specs.items()}
        rows = summarise(ablation, specs, results)
        pages.append((ablation, rows, ablation.reading(rows, ablation)))
    write_pages(out, pages, all_ablations, variant_spec(bases[BASE_STAGE], all_ablations[0], Variant("base", "base", {})),
                seeds, args.quick)
    for ablation, rows, reading in pages:
        print(f"\n## {ablation.name}\n{results_table(rows)}\n{reading}")
    print(f"\n{runner.trained} runs trained, {runner.reused} reused, {runner.shared} shared between ablations; "
          f"{time.perf_counter() - started:.0f} s in all")
    return 0


def write_pages(out: Path, pages: list[tuple[Ablation, list[dict], str]], all_ablations: list[Ablation],
                study_base: StageSpec, seeds: list[int], quick: bool) -> None:
    """Each ablation's .md, .csv and .png and the index README.md, unless they were rendered from exactly
    these runs and this code already (then nothing is touched)."""
    records = [r for _, rows, _ in pages for row in rows for r in row["runs"]]
    key = render_key(records, [Path(__file__), *(REPO_ROOT / "common" / name for name in ("report.py", "plots.py",
                                                                                          "stats.py"))])
    outputs = [out / f"{a.name}{suffix}" for a, _, _ in pages for suffix in (".md", ".csv", ".png")] + [out / "README.md"]
    if up_to_date(key, out / "environment.json", outputs):
        print(f"{shown(out)}/: every page is up to date with its {len(records)} runs; nothing written")
        return
    for ablation, rows, reading in pages:
        environment = runs_environment([r for row in rows for r in row["ok"]])
        atomic_write_text(out / f"{ablation.name}.csv", runs_frame(ablation, rows).to_csv(index=False))
        plot_ablation(ablation, rows, out / f"{ablation.name}.png")
        atomic_write_text(out / f"{ablation.name}.md", ablation_markdown(ablation, rows, reading, seeds, environment, quick))
    environment = runs_environment([r for r in records if r.get("status") == "ok"])
    atomic_write_text(out / "README.md", index_markdown(out, all_ablations, study_base, environment, quick))
    atomic_write_json(out / "environment.json", {**environment, "rendered_from": key})
    print(f"wrote {', '.join(f'{a.name}.md/.csv/.png' for a, _, _ in pages)} and README.md in {shown(out)}/")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ablations; a bad option or input ends with one ``error:`` line and exit code 2."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
