"""Beyond the test set: how each stage holds up when digits move, turn, resize, get noisy or hidden, or are attacked.

    python experiments/robustness.py                     # every stage and variant, seeds 0,1,2, all 10,000 images
    python experiments/robustness.py --stages 04,05      # some stages
    python experiments/robustness.py --seeds 0           # one model per stage: numbers, no verdicts
    python experiments/robustness.py --quick --out /tmp/rob   # tiny models, 500 images, two stages, seed 0

A test accuracy says how a network does on digits prepared exactly like its training digits. This
measures the models of every stage, one per seed (``--seeds``, default 0, 1 and 2, as the comparison
trains them), on transformed copies of the official test images, all made in ``common/robustness.py``
from pixels in [0, 1]:

* shift: each digit moved by 2 or 4 pixels up, down, left or right (direction drawn per image);
  pixels that leave are lost, those that come in are 0;
* rotation: each digit turned by 15 or 30 degrees about the image centre, clockwise or
  counter-clockwise (drawn per image); bilinear interpolation, corners 0;
* scale: each digit resized by 0.8 or 1.2 about the image centre, the frame kept 28x28;
* noise: Gaussian noise of standard deviation 0.2 or 0.4 added to every pixel, clipped to [0, 1] (why it
  can undo a convolutional network: docs/math.md#why-a-convolutional-network-can-collapse-under-noise);
* occlusion: an 8x8 square set to 0 at a place drawn per image (anywhere it fits);
* FGSM: the fast gradient sign method, a white-box attack: every pixel moved by at most epsilon
  (0.05, 0.1, 0.2; the result clipped to [0, 1]) in the direction that raises that model's own
  loss on the true label.

Every random choice comes from ``--sample-seed`` (default 0), and every model sees the SAME
transformed images; only FGSM differs per model, by definition.

The models. The model of a stage and seed is ``results/local/models/<key>/seed<s>/model.npz``
(git-ignored), used while its metadata's fingerprint (settings, seed and numeric code,
``common.runs.fingerprint``) is today's and the fast core trained it; for seed 0 of a stage as it is,
the committed ``results/stages/<stage>/model.npz`` serves too when its fingerprint is today's. A
missing or stale model is trained here (``common.protocol.train_stage``) and saved into that cache,
unless ``--no-train`` (the stage is then left out). A model file whose metadata names another stage
is refused. :data:`VARIANTS` adds a stage's design with some settings changed, cached the same way:
stage 06 without its random shifts, to see what convolution buys apart from augmentation.
``--quick`` measures the stages' tiny ``--quick`` budgets instead (cached in results/local/quick/models/).

The readings call one model set better than another by the one rule of ``common.stats`` (two
standard errors over the seeds, paired by seed): with one seed they give numbers and no verdict.

Writes ``robustness.md`` (the table of means ± standard deviations over the seeds, a reading computed
from the numbers, the provenance), ``robustness.csv`` (one row per model: stage or variant, and seed;
accuracies in %), ``robustness.png`` (accuracy against strength, mean ± sd, one panel per kind of
transform), ``robustness_examples.png`` (every transform on the same few test digits),
``robustness_saliency.png`` (where each stage's first-seed model looks: the gradient of its chosen
class's score with respect to the pixels) and ``robustness.json`` (what they were made from). A re-run
whose models, options and code are unchanged writes nothing. Only the full run (every stage and
variant, seeds 0,1,2, all images, sample seed 0) writes into results/; any other goes to
results/local/robustness/ (``--quick``: results/local/quick/).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tabulate import tabulate

from common import blas, robustness, threads
from common.cli import OneLineParser, non_negative_int, parse_list, positive_int, run_cli, writable_folder
from common.environment import describe_environment
from common.files import atomic_write_json, atomic_write_text
from common.models import COMMITTED_MODELS, MODELS_CACHE, Entry, Model, gather_models
from common.nn.errors import UserError
from common.paths import LOCAL_DIR, REPO_ROOT, RESULTS_DIR, shown
from common.plots import save_figure, show_digit, subplots
from common.protocol import StageSpec, scale_pixels, spawn_generators
from common.report import (
    QUICK_BANNER,
    environment_line,
    percent,
    provenance_line,
    render_key,
    runs_environment,
    up_to_date,
)
from common.runner import load_data
from common.stages import load_specs, stage_files
from common.stats import RULE, Difference, binomial_se, difference

DEFAULT_OUT = RESULTS_DIR
QUICK_OUT = LOCAL_DIR / "quick"
LOCAL_OUT = LOCAL_DIR / "robustness"
QUICK_MODELS_CACHE = QUICK_OUT / "models"    # the same for the --quick budgets
FULL_SEEDS = [0, 1, 2]
QUICK_IMAGES = 500
NUM_EXAMPLES = 6          # test digits shown in the two picture figures
OUTPUTS = ("robustness.md", "robustness.csv", "robustness.png", "robustness_examples.png", "robustness_saliency.png")
PROVENANCE = "robustness.json"
RENDER_CODE = [Path(__file__).resolve(), *(REPO_ROOT / "common" / name for name in
                                           ("robustness.py", "report.py", "plots.py", "stats.py"))]


@dataclass(frozen=True)
class Transform:
    key: str              # CSV column, e.g. "shift_2px"
    label: str            # table header, e.g. "shift 2 px"
    family: str           # panel of robustness.png
    strength: float       # x position in that panel
    apply: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None  # None: FGSM, made per model


TRANSFORMS = (
    Transform("shift_2px", "shift 2 px", "shift", 2, partial(robustness.random_direction_shift, distance=2)),
    Transform("shift_4px", "shift 4 px", "shift", 4, partial(robustness.random_direction_shift, distance=4)),
    Transform("rotate_15deg", "rotate 15°", "rotation", 15, partial(robustness.random_rotation, degrees=15)),
    Transform("rotate_30deg", "rotate 30°", "rotation", 30, partial(robustness.random_rotation, degrees=30)),
    Transform("scale_0.8", "scale 0.8", "scale", 0.8, lambda x, rng: robustness.scale(x, 0.8)),
    Transform("scale_1.2", "scale 1.2", "scale", 1.2, lambda x, rng: robustness.scale(x, 1.2)),
    Transform("noise_0.2", "noise 0.2", "noise", 0.2, partial(robustness.gaussian_noise, std=0.2)),
    Transform("noise_0.4", "noise 0.4", "noise", 0.4, partial(robustness.gaussian_noise, std=0.4)),
    Transform("occlusion_8x8", "occlusion 8x8", "occlusion", 8, partial(robustness.occlude, size=8)),
    Transform("fgsm_0.05", "FGSM 0.05", "FGSM", 0.05, None),
    Transform("fgsm_0.1", "FGSM 0.1", "FGSM", 0.1, None),
    Transform("fgsm_0.2", "FGSM 0.2", "FGSM", 0.2, None),
)
FAMILIES = {  # panel title, x-axis label, the strength that means "unchanged" (the clean images)
    "shift": ("shift", "pixels moved", 0.0),
    "rotation": ("rotation", "degrees turned (either way)", 0.0),
    "scale": ("scale", "scale factor", 1.0),
    "noise": ("Gaussian noise", "standard deviation (pixels in [0, 1])", 0.0),
    "occlusion": ("occlusion", "side of the hidden square (pixels)", 0.0),
    "FGSM": ("FGSM attack (white box)", "epsilon (pixels in [0, 1])", 0.0),
}
FGSM_READ = 0.1           # the epsilon the reading describes for every stage


def transform(key: str) -> Transform:
    return next(t for t in TRANSFORMS if t.key == key)


def strongest(family: str) -> Transform:
    return max((t for t in TRANSFORMS if t.family == family), key=lambda t: t.strength)


# -- what is measured: the stages as they are, and variants of them ----------------------------

@dataclass(frozen=True)
class Variant:
    """A stage's design with some settings changed, measured beside the stages and cached like them."""

    key: str          # cache folder and CSV key, e.g. "06_conv-no-shifts"
    stage: str        # the number of the stage whose spec it changes, e.g. "06"
    label: str        # its row in the table, e.g. "06_conv, no shifts"
    overrides: dict   # applied with dataclasses.replace(spec, **overrides)
    read: str         # the transform column its reading is about
    purpose: str      # what it separates, for the reading
    peers: str        # the stages that share its changed settings, for the reading


VARIANTS = (
    Variant("06_conv-no-shifts", "06", "06_conv, no shifts", {"shift": 0}, "shift_4px",
            "stage 06 trained on the digits as they are, without its random shifts: what convolution buys "
            "apart from augmentation", "trained without shifts"),
)


def study_entries(specs: dict[str, StageSpec], quick: bool,
                  variants: Sequence[Variant] = VARIANTS) -> list[Entry]:
    """The stages of ``specs`` (their ``--quick`` budgets with ``quick``), then the variants of those stages."""
    def budget(spec: StageSpec) -> StageSpec:
        return dataclasses.replace(spec, **spec.quick) if quick else spec

    entries = [Entry(spec.name, spec.name, number, budget(spec)) for number, spec in specs.items()]
    for variant in variants:
        if variant.stage in specs:
            spec = dataclasses.replace(budget(specs[variant.stage]), **variant.overrides)
            entries.append(Entry(variant.key, variant.label, variant.stage, spec, variant))
    return entries


# -- measuring ---------------------------------------------------------------------------------

def test_sample(data, count: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The official test images in [0, 1] ``(N, 784)`` and labels: all, or a seeded sample of ``count``."""
    images, labels = data.test_images, data.test_labels
    if count is not None and count < len(labels):
        index = np.sort(rng.choice(len(labels), size=count, replace=False))
        images, labels = images[index], labels[index]
    return scale_pixels(images, "unit"), labels


def example_indices(labels: np.ndarray, rng: np.random.Generator, count: int = NUM_EXAMPLES) -> np.ndarray:
    """``count`` images drawn at random, of different digits while there are enough of them."""
    chosen, seen = [], set()
    order = rng.permutation(len(labels))
    for index in order:
        if int(labels[index]) not in seen:
            chosen.append(index)
            seen.add(int(labels[index]))
        if len(chosen) == count:
            break
    chosen += [i for i in order if i not in chosen][:count - len(chosen)]
    return np.array(chosen, dtype=np.intp)


@dataclass
class Measurement:
    """What every model did on the clean and the transformed images; columns: "clean" or a transform key."""

    seeds: list[int]
    count: int                                      # images measured
    label_counts: np.ndarray                        # (10,) how many of them show each digit
    background_share: float = 0.0                   # fraction of the clean pixels that are 0 (background)
    accuracy: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)  # (key, seed) -> column -> fraction
    answers: dict[tuple[str, int], dict[str, np.ndarray]] = field(default_factory=dict)  # -> column -> (10,) counts
    background: dict[str, float] = field(default_factory=dict)  # noise column -> mean of those pixels after it

    def values(self, key: str, column: str) -> list[float]:
        """The accuracies of entry ``key``'s models in ``column``, in seed order."""
        return [self.accuracy[key, seed][column] for seed in self.seeds]

    def mean(self, key: str, column: str) -> float:
        return float(np.mean(self.values(key, column)))


def record(measured: Measurement, model: Model, column: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Predict ``images (N, 784)`` in [0, 1] with ``model``; keep its accuracy and how often it gave each answer."""
    predicted = model.network.predict(robustness.model_input(images, model.pixel_scale))
    key = (model.entry.key, model.seed)
    measured.accuracy.setdefault(key, {})[column] = float(np.mean(predicted == labels))
    measured.answers.setdefault(key, {})[column] = np.bincount(predicted, minlength=10)


def measure(models: list[Model], images: np.ndarray, labels: np.ndarray, sample_seed: int,
            example_rows: np.ndarray, reference: Model | None = None) -> tuple[Measurement, dict[str, np.ndarray]]:
    """Every model on the clean images and under each transform, the same images for all.

    Returns the :class:`Measurement` and ``{row name: example images (len(example_rows), 784)}``; the
    FGSM rows show the attack on ``reference`` (default the last model).
    """
    generators = spawn_generators(sample_seed, len(TRANSFORMS) + 2)[2:]  # [0], [1]: test sample, examples
    entries = list({id(m.entry): m.entry for m in models}.values())
    measured = Measurement(sorted({m.seed for m in models}), len(labels), np.bincount(labels, minlength=10),
                           float(np.mean(images == 0)))
    for model in models:
        record(measured, model, "clean", images, labels)
    examples = {"clean": images[example_rows]}
    for step, rng in zip(TRANSFORMS, generators):
        if step.apply is None:
            continue
        started = time.perf_counter()
        moved = step.apply(images, rng)
        for model in models:
            record(measured, model, step.key, moved, labels)
        if step.family == "noise":
            measured.background[step.key] = float(moved[images == 0].mean())
        examples[step.label] = moved[example_rows]
        print(f"{step.label}: " + ", ".join(f"{e.label} {percent(measured.values(e.key, step.key))} %" for e in entries)
              + f" ({time.perf_counter() - started:.1f} s)", flush=True)
    attack(measured, models, images, labels, example_rows, reference or models[-1], examples)
    return measured, examples


def attack(measured: Measurement, models: list[Model], images: np.ndarray, labels: np.ndarray,
           example_rows: np.ndarray, reference: Model, examples: dict[str, np.ndarray]) -> None:
    """FGSM against each model itself, at every epsilon of :data:`TRANSFORMS`."""
    attacks = [t for t in TRANSFORMS if t.apply is None]
    for model in models:
        started = time.perf_counter()
        direction = robustness.fgsm_direction(model.network, images, labels, model.pixel_scale)
        for step in attacks:
            attacked = robustness.fgsm(images, direction, step.strength)
            record(measured, model, step.key, attacked, labels)
            if model is reference:
                examples[f"{step.label} (vs {reference.entry.label})"] = attacked[example_rows]
        row = measured.accuracy[model.entry.key, model.seed]
        print(f"FGSM on {model.entry.label} seed {model.seed}: "
              + ", ".join(f"{t.strength:g}: {100 * row[t.key]:.2f} %" for t in attacks)
              + f" ({time.perf_counter() - started:.1f} s)", flush=True)


# -- readings: computed from the numbers, never typed; one rule for "better" ---------------------

def pc(measured: Measurement, entry: Entry, column: str) -> str:
    """``98.92 ± 0.05``: the mean and sd over the seeds' models, in %."""
    return percent(measured.values(entry.key, column))


def names(labels: Sequence[str]) -> str:
    labels = list(labels)
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def compare(measured: Measurement, a: Entry, b: Entry, column: str, column_b: str | None = None) -> Difference:
    """``a`` minus ``b`` in ``column`` (``b`` in ``column_b`` if given), paired by seed (:mod:`common.stats`)."""
    return difference(measured.values(a.key, column), measured.values(b.key, column_b or column),
                      measured.seeds, measured.seeds)


def with_verdict(d: Difference) -> str:
    return f"{d.points()}, {d.verdict()}"


def lost(d: Difference) -> str:
    """``70.73 ± 0.50 points lost`` for a drop ``d`` (clean minus transformed)."""
    return f"{d.points()[1:]} {'lost' if d.mean >= 0 else 'gained'}"


def verdicts(measured: Measurement) -> bool:
    """Whether there are seeds enough for a standard error, hence for any verdict."""
    return len(measured.seeds) > 1


def leaders(entries: list[Entry], measured: Measurement, column: str, best: bool = True) -> list[Entry]:
    """The entry with the highest (``best``) or lowest mean in ``column``, then those not distinguishable from it."""
    ranked = sorted(entries, key=lambda e: measured.mean(e.key, column), reverse=best)
    return [e for e in ranked if e is ranked[0] or not compare(measured, ranked[0], e, column).distinguishable]


def who_does(group: list[Entry], verb: str) -> str:
    """"A holds up best" or "A and B hold up best (not distinguishable from each other)"."""
    if len(group) == 1:
        return f"{group[0].label} {verb}"
    first, rest = verb.split(" ", 1)
    plural = {"holds": "hold", "resists": "resist"}.get(first, first)
    return f"{names(e.label for e in group)} {plural} {rest} (not distinguishable from each other)"


def shift_notes(entries: list[Entry]) -> str:
    """Which entries were trained on shifted digits, and which are convolutional."""
    text, trained = "", [e for e in entries if e.spec.shift]
    if trained:
        amounts = sorted({e.spec.shift for e in trained})
        text += (f". {names(e.label for e in trained)} {'was' if len(trained) == 1 else 'were'} trained on digits "
                 f"shifted at random by up to {' or '.join(str(a) for a in amounts)} pixels")
    distorted = [e for e in trained if e.spec.affine_rotation or e.spec.affine_scale or e.spec.affine_shear]
    if distorted:
        text += (f", {names(e.label for e in distorted)} also rotated, zoomed and sheared at random (up to "
                 + " or ".join(sorted({f"{e.spec.affine_rotation:g} degrees, 1 +- {e.spec.affine_scale:g} and "
                                       f"{e.spec.affine_shear:g} degrees" for e in distorted})) + ")")
    convolutional = [e for e in entries if e.convolutional]
    if convolutional:
        text += f"; {names(e.label for e in convolutional)} {'is' if len(convolutional) == 1 else 'are'} convolutional"
    return text


def read_shifts(entries: list[Entry], measured: Measurement) -> str:
    """Which entry holds up best under the largest shift, against its clean accuracy; which least."""
    shifts = sorted((t for t in TRANSFORMS if t.family == "shift"), key=lambda t: t.strength)
    key, far = shifts[-1].key, f"{shifts[-1].strength:g} pixels"

    def path(entry: Entry, subject: str | None = None) -> str:
        moved = " and ".join(f"{pc(measured, entry, t.key)} % at {t.strength:g}" for t in shifts)
        drop = compare(measured, entry, entry, "clean", key)
        return (f"{subject or entry.label} goes from {pc(measured, entry, 'clean')} % to {moved} pixels "
                f"({lost(drop)} at {far})")

    if len(entries) == 1:
        return f"**Shifts.** {path(entries[0])}{shift_notes(entries)}."
    each = ", ".join(f"{e.label} {pc(measured, e, key)} %" for e in entries)
    if not verdicts(measured):
        return f"**Shifts.** At {far} (one seed: no verdict on which holds up best): {each}{shift_notes(entries)}."
    best = leaders(entries, measured, key)
    if len(best) == len(entries):
        return (f"**Shifts.** At {far} no stage holds up distinguishably better than the others (each not "
                f"distinguishable from the best): {each}{shift_notes(entries)}.")
    text = f"**Shifts.** {who_does(best, 'holds up best')}: {path(best[0], 'it' if len(best) == 1 else None)}"
    worst = leaders(entries, measured, key, best=False)
    if not {e.key for e in worst} & {e.key for e in best}:
        text += f"; {who_does(worst, 'holds up least')}: {path(worst[0], 'it' if len(worst) == 1 else None)}"
    return text + shift_notes(entries) + "."


def read_worst_transform(entries: list[Entry], measured: Measurement) -> str:
    """For each entry, the transform (FGSM aside) with the largest mean drop, and any not distinguishable from it."""
    kinds = [t for t in TRANSFORMS if t.apply is not None]
    parts = []
    for entry in entries:
        drops = {t.key: compare(measured, entry, entry, "clean", t.key) for t in kinds}
        worst = max(kinds, key=lambda t: drops[t.key].mean)
        text = (f"{entry.label}: {worst.label} ({pc(measured, entry, 'clean')} → {pc(measured, entry, worst.key)} %, "
                f"{lost(drops[worst.key])})")
        if verdicts(measured):
            close = [t for t in kinds if t is not worst
                     and not compare(measured, entry, entry, t.key, worst.key).distinguishable]
            if close:
                text += ", not distinguishable from " + names(f"{t.label} ({lost(drops[t.key])})" for t in close)
        parts.append(text)
    return ("**What hurts most.** Of the transforms that do not look at the model, the one with the largest mean "
            "drop for each stage: " + "; ".join(parts) + ".")


def read_noise(entries: list[Entry], measured: Measurement) -> str:
    """Under the strongest noise, the convolutional entries' most common answer and its share, and why."""
    noise = strongest("noise")
    convolutional = [e for e in entries if e.convolutional]
    if not convolutional or noise.key not in measured.background:
        return ""
    parts, answers = [], set()
    for entry in convolutional:
        counts = [measured.answers[entry.key, seed][noise.key] for seed in measured.seeds]
        answer = int(np.argmax(np.sum(counts, axis=0)))
        answers.add(answer)
        text = (f"{entry.label} keeps {pc(measured, entry, noise.key)} % and answers {answer} for "
                f"{percent([c[answer] / measured.count for c in counts])} % of them")
        own = [int(np.argmax(c)) for c in counts]
        if len(set(own)) > 1:
            text += f" (the most common answer of each seed's model: {', '.join(map(str, own))})"
        parts.append(text)
    shares = names(f"{a} is the label of {100 * measured.label_counts[a] / measured.count:.2f} % of the images"
                   for a in sorted(answers))
    return (f"**Noise and convolution.** On the images with {noise.label}, " + "; ".join(parts) + f" ({shares}). "
            f"Clipping the noise at 0 raises the blank background ({100 * measured.background_share:.0f} % of the "
            f"pixels) by {measured.background[noise.key]:.2f} on average (the mean of clip(0 + noise) over the "
            "background pixels of these images): a grey veil over the whole image where every training digit "
            "had black. Convolution brings shift equivariance (the same filters at every place), not "
            "robustness to noise.")


def read_fgsm(entries: list[Entry], measured: Measurement) -> str:
    """What FGSM at ``FGSM_READ`` does to each entry, against random noise of the largest std measured."""
    key = next(t.key for t in TRANSFORMS if t.apply is None and t.strength == FGSM_READ)
    noise = strongest("noise")
    each = ", ".join(f"{e.label} from {pc(measured, e, 'clean')} % to {pc(measured, e, key)} %" for e in entries)
    text = (f"**Attack.** FGSM at epsilon {FGSM_READ:g}, every pixel moved by at most {FGSM_READ:g} "
            f"({FGSM_READ * 255:g} of 255 grey levels) in the direction that raises the model's own loss, "
            f"takes {each}")
    if len(entries) > 1 and not verdicts(measured):
        text += " (one seed: no verdict on which resists it best)"
    elif len(entries) > 1:
        best = leaders(entries, measured, key)
        text += ("; none resists it distinguishably better than the others" if len(best) == len(entries)
                 else "; " + who_does(best, "resists it best"))
    kept = ", ".join(f"{e.label} at {pc(measured, e, noise.key)} %" for e in entries)
    text += (f". Random Gaussian noise of standard deviation {noise.strength:g} ({noise.strength / FGSM_READ:g} "
             f"times epsilon) leaves {kept}")
    if verdicts(measured):
        harder = [e for e in entries if (d := compare(measured, e, e, noise.key, key)).distinguishable and d.mean > 0]
        if harder:
            text += (f": for {names(e.label for e in harder)} the attack costs distinguishably more than that "
                     "noise, so what makes it work is its direction, not its size")
    return text + "."


def read_rankings(entries: list[Entry], measured: Measurement) -> str:
    """Under which transforms the best entry on the clean images is distinguishably overtaken, and by whom."""
    if len(entries) < 2:
        return ""
    if not verdicts(measured):
        return "**Rankings.** One seed per stage: no verdict on whether the best on the digits as they are stays the best."
    top = leaders(entries, measured, "clean")
    overtaken = []
    for step in TRANSFORMS:
        best = leaders(entries, measured, step.key)
        if not {e.key for e in top} & {e.key for e in best}:
            overtaken.append(f"{step.label} ({best[0].label} {pc(measured, best[0], step.key)} % against "
                             f"{pc(measured, top[0], step.key)} %, {compare(measured, best[0], top[0], step.key).points()})")
    who = top[0].label + (f" (with {names(e.label for e in top[1:])}, not distinguishable from it)" if len(top) > 1 else "")
    if not overtaken:
        return (f"**Rankings.** {who}, the best on the digits as they are, stays the best, or not distinguishable "
                "from the best, under every transform.")
    return (f"**Rankings change.** {who}, the best on the digits as they are, is distinguishably overtaken under "
            + "; ".join(overtaken) + ": a higher test accuracy does not promise more robustness.")


def read_variant(entry: Entry, entries: list[Entry], measured: Measurement) -> str:
    """A variant against its stage, and against the best of the stages that share its changed settings."""
    variant = entry.variant
    base = next((e for e in entries if e.own and e.number == variant.stage), None)
    if base is None:
        return ""
    column = variant.read
    step = transform(column)
    text = (f"**{entry.label}** ({variant.purpose}). At {step.label} it keeps {pc(measured, entry, column)} % against "
            f"{pc(measured, base, column)} % for {base.label} ({base.label} minus it: "
            f"{with_verdict(compare(measured, base, entry, column))})")
    peers = [e for e in entries if e.own and e is not base
             and all(getattr(e.spec, name) == value for name, value in variant.overrides.items())]
    if peers:
        peer = max(peers, key=lambda e: measured.mean(e.key, column))
        text += (f" and {pc(measured, peer, column)} % for {peer.label}, the best there of the stages {variant.peers} "
                 f"(it minus {peer.label}: {with_verdict(compare(measured, entry, peer, column))})")
    return (text + f". On the digits as they are: {pc(measured, entry, 'clean')} % against "
            f"{pc(measured, base, 'clean')} % ({base.label} minus it: "
            f"{with_verdict(compare(measured, base, entry, 'clean'))}).")


def models_of(measured: Measurement) -> str:
    """``the mean ± standard deviation over the models of seeds 0, 1 and 2 (one per seed)``, or ``the model of seed 0``."""
    if not verdicts(measured):
        return f"the model of seed {measured.seeds[0]}"
    return (f"the mean ± standard deviation over the models of seeds {names(str(s) for s in measured.seeds)} "
            "(one per seed)")


def read_precision(measured: Measurement, sample_seed: int) -> str:
    """How each number was measured, the one rule for "better" (stated once), and the binomial context."""
    count, seeds = measured.count, measured.seeds
    text = f"Each row is {models_of(measured)}, {'each ' * verdicts(measured)}measured on the same {count:,} test images. "
    if verdicts(measured):
        text += (f"One rule decides \"better\" in every reading: {RULE}. Here every comparison is paired by seed, "
                 "since every model sees the same transformed images (FGSM aside: an attack made against each "
                 f"model); with {len(seeds)} seeds it is a rule of thumb, not a test, so the readings say "
                 "\"distinguishable\" or \"not distinguishable\". A ± after an accuracy is the standard deviation over "
                 "the seeds; after a difference in points, its standard error.")
    else:
        text += (f"One rule decides \"better\" in every reading: {RULE}; with one seed there is no standard error "
                 "over the seeds, so the readings give the numbers and no verdict.")
    return text + (f" For context, one accuracy on {count:,} images also has the binomial standard error of a "
                   f"proportion, sqrt(p (1 - p) / {count:,}): {100 * binomial_se(0.5, count):.2f} points at 50 %, "
                   f"{100 * binomial_se(0.99, count):.2f} at 99 %. The directions, angles, noise and patch places are "
                   f"drawn from sample seed {sample_seed}.")


def read_clean(models: list[Model], measured: Measurement, test_size: int) -> str:
    """On the whole test set, whether each model's clean accuracy is the test accuracy recorded when it was trained."""
    if measured.count != test_size:
        return ""
    known = [m for m in models if isinstance(m.run.get("test_accuracy"), float)]
    differ = [m for m in known if abs(m.run["test_accuracy"] - measured.accuracy[m.entry.key, m.seed]["clean"])
              > 0.5 / measured.count]
    if not known:
        return ""
    if not differ:
        return (f"The clean column equals the test accuracy recorded when each of these {len(known)} models was "
                "trained: the same models on the same images.")
    return " ".join(f"For {m.entry.label} seed {m.seed}, the clean accuracy here "
                    f"({100 * measured.accuracy[m.entry.key, m.seed]['clean']:.2f} %) differs from the "
                    f"{100 * m.run['test_accuracy']:.2f} % recorded when it was trained ({shown(m.path)})." for m in differ)


def readings(entries: list[Entry], models: list[Model], measured: Measurement, test_size: int,
             sample_seed: int) -> str:
    bullets = [read_shifts(entries, measured), read_worst_transform(entries, measured), read_noise(entries, measured),
               read_fgsm(entries, measured), read_rankings(entries, measured),
               *(read_variant(e, entries, measured) for e in entries if e.variant is not None)]
    text = "\n".join(f"* {b}" for b in bullets if b) + "\n\n" + read_precision(measured, sample_seed)
    clean = read_clean(models, measured, test_size)
    return text + (" " + clean if clean else "")


# -- outputs -------------------------------------------------------------------------------------

def results_frame(models: list[Model], measured: Measurement) -> pd.DataFrame:
    """One row per model (entry and seed), accuracies in %."""
    rows = []
    for model in models:
        row = measured.accuracy[model.entry.key, model.seed]
        rows.append({"key": model.entry.key, "label": model.entry.label, "stage": model.entry.spec.name,
                     "seed": model.seed, "model": shown(model.path), "fingerprint": model.metadata.get("fingerprint"),
                     "pixel_scale": model.pixel_scale, "architecture": model.network.architecture.describe(),
                     "images": measured.count, "clean": round(100 * row["clean"], 2),
                     **{t.key: round(100 * row[t.key], 2) for t in TRANSFORMS}})
    return pd.DataFrame(rows)


def markdown_table(entries: list[Entry], measured: Measurement) -> str:
    headers = ["stage", "clean", *(t.label for t in TRANSFORMS)]
    rows = [[e.label, pc(measured, e, "clean"), *(pc(measured, e, t.key) for t in TRANSFORMS)] for e in entries]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def models_line(models: list[Model]) -> str:
    """Where the models come from: the environments of the runs that trained them (those that recorded one)."""
    runs = [{"environment": m.run["environment"]} for m in models if isinstance(m.run.get("environment"), dict)]
    if not runs:
        return f"None of the {len(models)} models records the environment it was trained in."
    line = provenance_line(runs_environment(runs)).replace("Numbers from", "The models were trained in", 1)
    return line if len(runs) == len(models) else line + f" ({len(models) - len(runs)} models record none.)"


def robustness_markdown(entries: list[Entry], models: list[Model], measured: Measurement, test_size: int,
                        options: argparse.Namespace, seconds: float, environment: dict) -> str:
    parts = ["# Beyond the test set: moved, turned, resized, noisy, hidden and attacked digits", ""]
    if options.quick:
        parts += [QUICK_BANNER, ""]
    variants = "".join(f" The row {e.label} is a variant: {e.variant.purpose}." for e in entries if e.variant is not None)
    parts += [
        f"Accuracy in % of each stage's models on {measured.count:,} images of the official MNIST test set"
        + (" (a seeded random sample)" if measured.count < test_size else "") + ", as they are (\"clean\") and "
        f"transformed: {models_of(measured)}; robustness.csv has each model's row. Every model sees the same transformed images, except under FGSM, an attack computed against each model "
        f"itself.{variants} How each transform is made: the docstring of `experiments/robustness.py` and "
        "`common/robustness.py`.", "",
        markdown_table(entries, measured), "",
        "What the numbers say (computed from the measurements):", "",
        readings(entries, models, measured, test_size, options.seed), "",
        "![Accuracy against the strength of each transform](robustness.png)", "",
        f"Each transform on the same test digits (seed {measured.seeds[0]}'s models):", "",
        "![Examples](robustness_examples.png)", "",
        f"Where each stage's seed-{measured.seeds[0]} model looks: the gradient of the score (logit) of the class it "
        "chose with respect to each pixel. Red: more ink there raises that score; blue: lowers it (colour scale per "
        "tile, symmetric around 0); the outline is the digit.", "",
        "![Saliency](robustness_saliency.png)", "",
        f"The measurement took {seconds:.0f} s of wall-clock time on the machine below (its 1-minute load average "
        f"was {options.load:.2f} on {environment['cpu_count']} CPUs when it started).", "",
        models_line(models), "",
        environment_line(environment),
    ]
    return "\n".join(parts) + "\n"


def plot_curves(entries: list[Entry], measured: Measurement, path: Path) -> Path:
    """One panel per kind of transform: each entry's mean accuracy against strength, ± sd over the seeds."""
    fig, axes = subplots(2, 3, figsize=(13.0, 7.6))
    for ax, (family, (title, x_label, neutral)) in zip(axes.ravel(), FAMILIES.items()):
        columns = {neutral: "clean", **{t.strength: t.key for t in TRANSFORMS if t.family == family}}
        xs = sorted(columns)
        for entry in entries:
            values = [100 * np.array(measured.values(entry.key, columns[x])) for x in xs]
            spread = [float(np.std(v, ddof=1)) for v in values] if verdicts(measured) else None
            ax.errorbar(xs, [float(np.mean(v)) for v in values], yerr=spread, marker="o", linewidth=1.8,
                        capsize=3, label=entry.label)
        ax.set_title(title)
        ax.set_xlabel(x_label)
        ax.set_ylabel("test accuracy %")
        ax.set_xticks(xs)
        ax.set_ylim(top=100)
        ax.grid(True, alpha=0.35)
    handles, legend_labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, legend_labels, loc="outside lower center", ncol=min(len(entries), 4), frameon=False)
    spread = f"mean ± sd over seeds {names(str(s) for s in measured.seeds)}" if verdicts(measured) else \
        f"seed {measured.seeds[0]}"
    fig.suptitle(f"Accuracy on transformed test digits, {spread} (the leftmost point of each panel: the digits as they are)")
    return save_figure(fig, path)


def plot_examples(examples: dict[str, np.ndarray], labels: np.ndarray, reference: Model, path: Path) -> Path:
    """One row per transform, one column per digit; above each, ``reference``'s prediction."""
    rows, columns = len(examples), len(labels)
    fig, axes = subplots(rows, columns, figsize=(1.3 * columns + 1.6, 1.25 * rows + 0.8), squeeze=False)
    for axes_row, (name, images) in zip(axes, examples.items()):
        predicted = reference.network.predict(robustness.model_input(images, reference.pixel_scale))
        for ax, image, guess, truth in zip(axes_row, images, predicted, labels):
            show_digit(ax, image)
            title = f"label {int(truth)}, says {int(guess)}" if name == "clean" else f"says {int(guess)}"
            ax.set_title(title, fontsize=8, color="#1a7f37" if guess == truth else "#c62828")
        axes_row[0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"The same test digits under each transform; above each, what {reference.entry.label} (seed "
                 f"{reference.seed}) predicts (green: right, red: wrong)", fontsize=10)
    return save_figure(fig, path)


def plot_saliency(models: list[Model], images: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """First row the digits, then one row per model: d score(predicted class) / d pixel."""
    columns = len(labels)
    fig, axes = subplots(len(models) + 1, columns, figsize=(1.3 * columns + 2.4, 1.3 * (len(models) + 1) + 0.8),
                         squeeze=False)
    for ax, image, truth in zip(axes[0], images, labels):
        show_digit(ax, image)
        ax.set_title(f"label {int(truth)}", fontsize=9)
    axes[0][0].set_ylabel("digit", rotation=0, ha="right", va="center", fontsize=9)
    for axes_row, model in zip(axes[1:], models):
        gradient, predicted = robustness.saliency(model.network, images, model.pixel_scale)
        for ax, grad, image, guess, truth in zip(axes_row, gradient, images, predicted, labels):
            limit = float(np.abs(grad).max()) or 1.0
            ax.imshow(grad.reshape(28, 28), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            ax.contour(image.reshape(28, 28), levels=[0.5], colors="k", linewidths=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"says {int(guess)}", fontsize=9, color="#1a7f37" if guess == truth else "#c62828")
        axes_row[0].set_ylabel(model.entry.label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("Where each stage looks: gradient of its chosen class's score with respect to the pixels "
                 "(red raises it, blue lowers it)", fontsize=10)
    return save_figure(fig, path)


# -- main --------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python experiments/robustness.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=None, help="comma-separated stage numbers, e.g. 04,05, each with its "
                        "variants (default: all; with --quick, the first and the last)")
    parser.add_argument("--seeds", default=None, help="the models' seeds, comma-separated (default 0,1,2, as the "
                        "comparison; with --quick, 0)")
    parser.add_argument("--images", type=positive_int, default=None,
                        help=f"measure on a seeded sample of this many test images (default all 10,000; "
                             f"with --quick, {QUICK_IMAGES})")
    parser.add_argument("--sample-seed", "--seed", dest="seed", type=non_negative_int, default=0,
                        help="seed of every random choice of the measurement: the sample, directions, angles, noise, "
                             "patches (default 0); the models' own seeds are --seeds")
    parser.add_argument("--no-train", action="store_true",
                        help="leave out a stage without today's models instead of training them")
    parser.add_argument("--quick", action="store_true",
                        help=f"the stages' tiny --quick models, {QUICK_IMAGES} images, two stages, seed 0: for tests")
    parser.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default results/ for the full run; otherwise results/local/robustness/, "
                             "or results/local/quick/ with --quick)")
    threads.add_threads_option(parser)
    options = parser.parse_args(argv)
    options.seeds = parse_list(options.seeds, int, "--seeds") or ([0] if options.quick else list(FULL_SEEDS))
    if min(options.seeds) < 0:
        raise UserError(f"--seeds: seeds are whole numbers from 0, got {min(options.seeds)}")
    full = not options.quick and options.stages is None and options.images is None and options.seed == 0 \
        and options.seeds == FULL_SEEDS
    options.out = options.out or (DEFAULT_OUT if full else QUICK_OUT if options.quick else LOCAL_OUT)
    if options.images is None and options.quick:
        options.images = QUICK_IMAGES
    return options


def quick_selection() -> list[str]:
    """--quick without --stages: the first and the last stage."""
    numbers = list(stage_files())
    return sorted({numbers[0], numbers[-1]})


def provenance(models: list[Model], options: argparse.Namespace, count: int) -> dict:
    """What the pages are made from (each model's fingerprint and file, the options), and its render key."""
    records = [{"key": m.entry.key, "seed": m.seed, "fingerprint": m.metadata.get("fingerprint"),
                "model": shown(m.path)} for m in models]
    settings = {"images": count, "sample_seed": options.seed, "seeds": options.seeds, "quick": options.quick}
    key = render_key([*records, {"key": "~options", "seed": "", **settings}], RENDER_CODE)
    return {"rendered_from": key, "options": settings, "models": records}


def write_pages(entries: list[Entry], models: list[Model], data, images: np.ndarray, labels: np.ndarray,
                options: argparse.Namespace, stamp: dict) -> None:
    """Measure every model and write every output, robustness.json last."""
    out = options.out
    options.load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    started = time.perf_counter()
    example_rows = example_indices(labels, spawn_generators(options.seed, len(TRANSFORMS) + 2)[1])
    first = [next(m for m in models if m.entry is e) for e in entries]  # each entry's first-seed model
    reference = next((m for m in reversed(first) if m.entry.own), first[-1])
    print(f"measuring {len(models)} models on {len(labels):,} test images", flush=True)
    measured, examples = measure(models, images, labels, options.seed, example_rows, reference)
    seconds = time.perf_counter() - started
    atomic_write_text(out / "robustness.csv", results_frame(models, measured).to_csv(index=False))
    plot_curves(entries, measured, out / "robustness.png")
    plot_examples(examples, labels[example_rows], reference, out / "robustness_examples.png")
    plot_saliency(first, images[example_rows], labels[example_rows], out / "robustness_saliency.png")
    environment = describe_environment()
    markdown = robustness_markdown(entries, models, measured, len(data.test_labels), options, seconds, environment)
    atomic_write_text(out / "robustness.md", markdown)
    models_environment = runs_environment([{"environment": m.run["environment"]} for m in models
                                           if isinstance(m.run.get("environment"), dict)])
    atomic_write_json(out / PROVENANCE, {**stamp, "models_environment": models_environment, "measured": environment})
    print()
    print(markdown_table(entries, measured))
    print(f"\nwrote {shown(out / 'robustness.md')}, robustness.csv, robustness.png, robustness_examples.png, "
          f"robustness_saliency.png, {PROVENANCE} ({seconds:.0f} s of measurement)")


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    selection = parse_list(options.stages, str, "--stages")
    blas.configure()
    threads.configure(options.threads)
    specs = load_specs(selection if selection or not options.quick else quick_selection())
    writable_folder(options.out)
    data = load_data(options.data_dir)
    cache, committed = (QUICK_MODELS_CACHE, None) if options.quick else (MODELS_CACHE, COMMITTED_MODELS)
    entries = study_entries(specs, options.quick)
    found = gather_models(entries, options.seeds, data, cache, committed, train=not options.no_train,
                          progress=not options.quick)
    if not found:
        raise UserError("no stage model to measure; run without --no-train to train them here")
    entries = [e for e in entries if e.key in found]
    models = [model for entry in entries for model in found[entry.key]]
    images, labels = test_sample(data, options.images, spawn_generators(options.seed, len(TRANSFORMS) + 2)[0])
    stamp = provenance(models, options, len(labels))
    if up_to_date(stamp["rendered_from"], options.out / PROVENANCE, [options.out / name for name in OUTPUTS]):
        print(f"{shown(options.out / 'robustness.md')} and its figures are up to date with these {len(models)} "
              "models, options and code: nothing written")
        return 0
    write_pages(entries, models, data, images, labels, options, stamp)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
