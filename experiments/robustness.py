"""Beyond the test set: how each stage holds up when digits move, turn, resize, get noisy or hidden, or are attacked.

    python experiments/robustness.py                     # every stage, all 10,000 test images
    python experiments/robustness.py --stages 04,05      # some stages
    python experiments/robustness.py --quick --out /tmp/rob   # 500 images, two stages, for tests

A test accuracy says how a network does on digits prepared exactly like its training digits. This
measures each trained stage (``results/stages/<stage>/model.npz``; a missing one is trained first
by running its own script, unless ``--no-train``) on transformed copies of the official test
images, all made in ``common/robustness.py`` from pixels in [0, 1]:

* shift: each digit moved by 2 or 4 pixels up, down, left or right (direction drawn per image);
  pixels that leave are lost, those that come in are 0;
* rotation: each digit turned by 15 or 30 degrees about the image centre, clockwise or
  counter-clockwise (drawn per image); bilinear interpolation, corners 0;
* scale: each digit resized by 0.8 or 1.2 about the image centre, the frame kept 28x28;
* noise: Gaussian noise of standard deviation 0.2 or 0.4 added to every pixel, clipped to [0, 1];
* occlusion: an 8x8 square set to 0 at a place drawn per image (anywhere it fits);
* FGSM: the fast gradient sign method, a white-box attack: every pixel moved by at most epsilon
  (0.05, 0.1, 0.2; the result clipped to [0, 1]) in the direction that raises that model's own
  loss on the true label.

Every random choice comes from ``--seed`` (default 0), and every stage sees the SAME transformed
images; only FGSM differs per model, by definition. Writes ``robustness.md`` (the table, a reading
computed from the numbers, the command and the environment), ``robustness.csv`` (one row per
stage, accuracies in %), ``robustness.png`` (accuracy against strength, one panel per kind of
transform), ``robustness_examples.png`` (every transform on the same few test digits) and
``robustness_saliency.png`` (where each stage looks: the gradient of its chosen class's score
with respect to the pixels).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tabulate import tabulate

from common import blas, robustness
from common.cli import OneLineParser, non_negative_int, parse_list, positive_int, run_cli, writable_folder
from common.environment import describe_environment
from common.files import atomic_write_text
from common.nn.errors import UserError
from common.nn.network import Network
from common.paths import LOCAL_DIR, REPO_ROOT, RESULTS_DIR, shown
from common.plots import save_figure, show_digit, subplots
from common.predict import load_model
from common.protocol import StageSpec, scale_pixels, spawn_generators
from common.report import QUICK_BANNER, environment_line
from common.runner import load_data
from common.stages import load_specs, stage_files

DEFAULT_OUT = RESULTS_DIR
QUICK_OUT = LOCAL_DIR / "quick"
LOCAL_OUT = LOCAL_DIR / "robustness"
DEFAULT_MODELS = RESULTS_DIR / "stages"
QUICK_IMAGES = 500
NUM_EXAMPLES = 6          # test digits shown in the two picture figures


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


# -- models ------------------------------------------------------------------------------------

@dataclass
class Stage:
    number: str
    spec: StageSpec
    network: Network
    pixel_scale: str
    path: Path

    @property
    def convolutional(self) -> bool:
        return any(layer.startswith("conv") for layer in (self.network.architecture.layers or ()))


def train_missing(script: Path, args: list[str]) -> None:
    """Run a stage's own script (``python stages/<stage>.py ARGS``); a failure is one line."""
    command = [sys.executable, str(script), *args]
    print(f"  training it: python {shown(script)}{' ' if args else ''}{' '.join(args)}", flush=True)
    done = subprocess.run(command, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise UserError(f"training {script.stem} failed (exit code {done.returncode}); run "
                        f"`python {shown(script)}` to see why, or leave it out with --no-train")


def find_model(number: str, spec: StageSpec, script: Path, options: argparse.Namespace) -> Path | None:
    """The model file of a stage: ``<models-dir>/<stage>/model.npz``; with ``--quick``, else a quick
    model in ``<out>/<stage>/``. A missing model is trained (its stage's script) unless ``--no-train``."""
    path = options.models_dir / spec.name / "model.npz"
    if path.is_file():
        return path
    quick_path = options.out / spec.name / "model.npz"
    if options.quick and quick_path.is_file():
        return quick_path
    if options.no_train:
        print(f"stage {spec.name}: no model at {shown(path)}; skipped (--no-train)", flush=True)
        return None
    print(f"stage {spec.name}: no model at {shown(path)}", flush=True)
    data = ["--data-dir", options.data_dir] if getattr(options, "data_dir", None) is not None else []
    if options.quick:
        train_missing(script, ["--quick", "--quiet", "--no-plots", "--out", str(quick_path.parent), *data])
        return quick_path
    train_missing(script, ["--out", str(path.parent), *data])
    return path


def load_stages(specs: dict[str, StageSpec], options: argparse.Namespace) -> list[Stage]:
    files = stage_files()
    stages = []
    for number, spec in specs.items():
        path = find_model(number, spec, files[number], options)
        if path is not None:
            network, metadata = load_model(path)
            stages.append(Stage(number, spec, network, metadata["pixel_scale"], path))
    if not stages:
        raise UserError("no stage model to measure; train a stage first (python stages/04_adam.py) "
                        "or run without --no-train")
    return stages


def quick_selection(options: argparse.Namespace) -> list[str]:
    """--quick without --stages: the first and last stages whose model exists (else the first stage)."""
    files = stage_files()
    specs = load_specs(list(files))
    present = [n for n, spec in specs.items()
               if (options.models_dir / spec.name / "model.npz").is_file()
               or (options.out / spec.name / "model.npz").is_file()]
    if not present:
        return [next(iter(files))]
    return sorted({present[0], present[-1]})


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


def measure(stages: list[Stage], images: np.ndarray, labels: np.ndarray, seed: int,
            example_rows: np.ndarray) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Accuracy of every stage on the clean images and on each transform.

    Returns ``({stage number: {"clean" or transform key: accuracy}}, {row name: the example images
    (len(example_rows), 784)})``; the FGSM rows of the second show the attack on the last stage.
    """
    generators = spawn_generators(seed, len(TRANSFORMS) + 2)[2:]  # [0], [1]: test sample, examples
    table = {s.number: {"clean": robustness.accuracy_on(s.network, images, labels, s.pixel_scale)} for s in stages}
    examples = {"clean": images[example_rows]}
    for transform, rng in zip(TRANSFORMS, generators):
        if transform.apply is None:
            continue
        started = time.perf_counter()
        moved = transform.apply(images, rng)
        for stage in stages:
            table[stage.number][transform.key] = robustness.accuracy_on(stage.network, moved, labels, stage.pixel_scale)
        examples[transform.label] = moved[example_rows]
        report_line(transform.label, stages, table, transform.key, time.perf_counter() - started)
    attacks = [t for t in TRANSFORMS if t.apply is None]
    for stage in stages:
        started = time.perf_counter()
        direction = robustness.fgsm_direction(stage.network, images, labels, stage.pixel_scale)
        for transform in attacks:
            attacked = robustness.fgsm(images, direction, transform.strength)
            table[stage.number][transform.key] = robustness.accuracy_on(stage.network, attacked, labels,
                                                                        stage.pixel_scale)
            if stage is stages[-1]:
                examples[f"{transform.label} (vs {stage.spec.name})"] = attacked[example_rows]
        print(f"FGSM on {stage.spec.name}: " + ", ".join(f"{t.strength:g}: {100 * table[stage.number][t.key]:.2f} %"
                                                          for t in attacks)
              + f" ({time.perf_counter() - started:.1f} s)", flush=True)
    return table, examples


def report_line(label: str, stages: list[Stage], table: dict, key: str, seconds: float) -> None:
    print(f"{label}: " + ", ".join(f"{s.number} {100 * table[s.number][key]:.2f} %" for s in stages)
          + f" ({seconds:.1f} s)", flush=True)


# -- readings: computed from the numbers, never typed ------------------------------------------

def pts(x: float) -> str:
    return f"{100 * x:.2f}"


def names(stages: list[Stage]) -> str:
    labels = [s.spec.name for s in stages]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def separated(a: float, b: float, count: int) -> bool:
    """Whether accuracies ``a`` and ``b`` (fractions, each on ``count`` images) differ by more than
    twice the standard error of their difference, ``sqrt(a (1 - a) / n + b (1 - b) / n)``."""
    return abs(a - b) > 2 * np.sqrt((a * (1 - a) + b * (1 - b)) / count)


def leaders(stages: list[Stage], score: Callable[[Stage], float], count: int, best: bool = True) -> list[Stage]:
    """The stages with the highest (``best``) or lowest ``score``: the first, then any others not
    separated from it by sampling error (:func:`separated`)."""
    ranked = sorted(stages, key=score, reverse=best)
    return [s for s in ranked if s is ranked[0] or not separated(score(ranked[0]), score(s), count)]


def who_does(group: list[Stage], verb: str) -> str:
    """"A holds up best" or "A and B hold up best (within sampling error of each other)"."""
    if len(group) == 1:
        return f"{group[0].spec.name} {verb}"
    plural_verb = {"holds": "hold", "resists": "resist"}.get(verb.split()[0], verb.split()[0])
    return f"{names(group)} {plural_verb} {' '.join(verb.split()[1:])} (within sampling error of each other)"


def read_shifts(stages: list[Stage], table: dict, count: int) -> str:
    """Which stage holds up best under the largest shift, against its clean accuracy; which least."""
    shifts = sorted((t for t in TRANSFORMS if t.family == "shift"), key=lambda t: t.strength)
    key = shifts[-1].key

    def path(group: list[Stage], first: bool = True) -> str:
        row = table[group[0].number]
        moved = " and ".join(f"{pts(row[t.key])} % at {t.strength:g}" for t in shifts)
        who = "it" if len(group) == 1 else group[0].spec.name
        return f"{who} goes from {pts(row['clean'])} %{' on the digits as they are' if first else ''} to {moved} pixels"

    best = leaders(stages, lambda s: table[s.number][key], count)
    if len(best) == len(stages) > 1:
        return (f"**Shifts.** No stage holds up clearly better than the others (all within sampling error at "
                f"{shifts[-1].strength:g} pixels): {path(best)}.")
    lost = table[best[0].number]["clean"] - table[best[0].number][key]
    change = f"{pts(abs(lost))} points {'lost' if lost >= 0 else 'gained'} at {shifts[-1].strength:g} pixels"
    if len(stages) == 1:
        text = f"**Shifts.** {path(best).replace('it goes', best[0].spec.name + ' goes', 1)} ({change})"
    else:
        text = f"**Shifts.** {who_does(best, 'holds up best')}: {path(best)} ({change})"
    worst = leaders(stages, lambda s: table[s.number][key], count, best=False)
    if not {s.number for s in worst} & {s.number for s in best}:
        text += f"; {who_does(worst, 'holds up least')}: {path(worst, first=False)}"
    trained = [s for s in stages if s.spec.shift]
    if trained:
        amounts = sorted({s.spec.shift for s in trained})
        text += (f". {names(trained)} {'was' if len(trained) == 1 else 'were'} trained on digits shifted at random "
                 f"by up to {' or '.join(str(a) for a in amounts)} pixels")
    convolutional = [s for s in stages if s.convolutional]
    if convolutional:
        text += f"; {names(convolutional)} {'is' if len(convolutional) == 1 else 'are'} convolutional"
    return text + "."


def read_worst_transform(stages: list[Stage], table: dict) -> str:
    """Which transform (FGSM aside) costs the perceptron stages most on average, and the convolutional ones."""
    perceptrons = [s for s in stages if not s.convolutional]
    kinds = [t for t in TRANSFORMS if t.apply is not None]
    parts = []
    if perceptrons:
        drops = {t.key: float(np.mean([table[s.number]["clean"] - table[s.number][t.key] for s in perceptrons]))
                 for t in kinds}
        worst = max(kinds, key=lambda t: drops[t.key])
        mildest = min(kinds, key=lambda t: drops[t.key])
        each = ", ".join(f"{s.spec.name} {pts(table[s.number]['clean'])} → {pts(table[s.number][worst.key])} %"
                         for s in perceptrons)
        who = "the perceptron stage" if len(perceptrons) == 1 else "the perceptron stages"
        parts.append(f"Of the transforms that do not look at the model, {worst.label} hurts {who} most: {each} "
                     f"({pts(drops[worst.key])} points lost on average); {mildest.label} hurts least "
                     f"({pts(drops[mildest.key])} points on average).")
    for stage in (s for s in stages if s.convolutional):
        row = table[stage.number]
        worst = max(kinds, key=lambda t: row["clean"] - row[t.key])
        parts.append(f"For the convolutional {stage.spec.name}, {worst.label} hurts most "
                     f"({pts(row['clean'])} → {pts(row[worst.key])} %).")
    return "**What hurts most.** " + " ".join(parts)


def read_fgsm(stages: list[Stage], table: dict, count: int) -> str:
    """What FGSM at ``FGSM_READ`` does to each stage, against random noise of the largest std measured."""
    key = next(t.key for t in TRANSFORMS if t.apply is None and t.strength == FGSM_READ)
    noise = max((t for t in TRANSFORMS if t.family == "noise"), key=lambda t: t.strength)
    each = ", ".join(f"{s.spec.name} from {pts(table[s.number]['clean'])} % to {pts(table[s.number][key])} %"
                     for s in stages)
    text = (f"**Attack.** FGSM at epsilon {FGSM_READ:g}, every pixel moved by at most {FGSM_READ:g} "
            f"({FGSM_READ * 255:g} of 255 grey levels) in the direction that raises the model's own loss, "
            f"takes {each}")
    best = leaders(stages, lambda s: table[s.number][key], count)
    if len(best) == len(stages) > 1:
        text += "; none resists it clearly better than the others (all within sampling error)"
    elif len(stages) > 1:
        text += "; " + who_does(best, "resists it best")
    kept = ", ".join(f"{s.spec.name} at {pts(table[s.number][noise.key])} %" for s in stages)
    text += (f". Random Gaussian noise of standard deviation {noise.strength:g} ({noise.strength / FGSM_READ:g} "
             f"times epsilon) leaves {kept}")
    if all(table[s.number][noise.key] > table[s.number][key] for s in stages):
        text += ": what makes the attack work is its direction, not its size"
    return text + "."


def read_rankings(stages: list[Stage], table: dict, count: int) -> str:
    """Under which transforms the best stage on the clean images is clearly overtaken, and by whom."""
    if len(stages) < 2:
        return ""
    top = leaders(stages, lambda s: table[s.number]["clean"], count)
    first = top[0]
    overtaken = []
    for transform in TRANSFORMS:
        best = leaders(stages, lambda s, key=transform.key: table[s.number][key], count)
        if not {s.number for s in top} & {s.number for s in best}:
            overtaken.append(f"{transform.label} ({best[0].spec.name} {pts(table[best[0].number][transform.key])} % "
                             f"against {pts(table[first.number][transform.key])} %)")
    who = first.spec.name + (" (with " + names(top[1:]) + ", within sampling error)" if len(top) > 1 else "")
    if not overtaken:
        return (f"**Rankings.** {who}, the best on the digits as they are, stays the best, or within sampling error "
                "of the best, under every transform.")
    return (f"**Rankings change.** {who}, the best on the digits as they are, is clearly overtaken under "
            + "; ".join(overtaken) + ": a higher test accuracy does not promise more robustness.")


def read_precision(count: int, seed: int) -> str:
    worst = 100 * 0.5 / np.sqrt(count)
    return (f"Each accuracy is measured on the same {count:,} test images; as a proportion of {count:,} images its "
            f"sampling standard error, sqrt(p (1 - p) / {count:,}), is at most {worst:.2f} points (at p = 50 %), less "
            f"near 100 %. The readings call one stage better than another only when their accuracies differ by more "
            f"than twice the standard error of the difference. The directions, angles, noise and patch places are "
            f"drawn from seed {seed}.")


def read_clean(stages: list[Stage], table: dict, count: int, test_size: int) -> str:
    """On the whole test set, whether the clean column equals what each stage's metrics.json records."""
    saved = {}
    for stage in stages:
        metrics = stage.path.parent / "metrics.json"
        if count == test_size and metrics.is_file():
            saved[stage.number] = json.loads(metrics.read_text(encoding="utf-8")).get("test_accuracy")
    if not saved:
        return ""
    differ = [s for s in stages if s.number in saved and abs(saved[s.number] - table[s.number]["clean"]) > 0.5 / count]
    if not differ:
        return ("The clean column equals the test accuracy recorded in each stage's metrics.json, beside its model: "
                "the same model on the same images.")
    return " ".join(f"For {s.spec.name}, the clean accuracy here ({pts(table[s.number]['clean'])} %) differs from its "
                    f"metrics.json ({pts(saved[s.number])} %): that model file and metrics.json are not from the same run."
                    for s in differ)


def readings(stages: list[Stage], table: dict, count: int, test_size: int, seed: int) -> str:
    bullets = [read_shifts(stages, table, count), read_worst_transform(stages, table), read_fgsm(stages, table, count),
               read_rankings(stages, table, count)]
    text = "\n".join(f"* {b}" for b in bullets if b) + "\n\n" + read_precision(count, seed)
    clean = read_clean(stages, table, count, test_size)
    return text + (" " + clean if clean else "")


# -- outputs -------------------------------------------------------------------------------------

def results_frame(stages: list[Stage], table: dict, count: int) -> pd.DataFrame:
    rows = []
    for stage in stages:
        row = {"stage": stage.spec.name, "model": shown(stage.path), "pixel_scale": stage.pixel_scale,
               "architecture": stage.network.architecture.describe(), "images": count,
               "clean": round(100 * table[stage.number]["clean"], 2)}
        row.update({t.key: round(100 * table[stage.number][t.key], 2) for t in TRANSFORMS})
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(stages: list[Stage], table: dict) -> str:
    headers = ["stage", "clean", *(t.label for t in TRANSFORMS)]
    rows = [[s.spec.name, pts(table[s.number]["clean"]), *(pts(table[s.number][t.key]) for t in TRANSFORMS)]
            for s in stages]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def robustness_markdown(stages: list[Stage], table: dict, count: int, test_size: int,
                        options: argparse.Namespace, seconds: float, environment: dict) -> str:
    parts = ["# Beyond the test set: moved, turned, resized, noisy, hidden and attacked digits", ""]
    if options.quick:
        parts += [QUICK_BANNER, ""]
    parts += [
        f"Accuracy in % of each trained stage on {count:,} images of the official MNIST test set"
        + (" (a seeded random sample)" if count < test_size else "") + ", as they are (\"clean\") and transformed; "
        "every stage sees the same transformed images, except under FGSM, an attack computed against each model "
        "itself. How each transform is made: the docstring of `experiments/robustness.py` and "
        "`common/robustness.py`.", "",
        markdown_table(stages, table), "",
        "What the numbers say (computed from the table):", "",
        readings(stages, table, count, test_size, options.seed), "",
        "![Accuracy against the strength of each transform](robustness.png)", "",
        "Each transform on the same test digits:", "",
        "![Examples](robustness_examples.png)", "",
        "Where each stage looks: the gradient of the score (logit) of the class it chose with respect to each pixel. "
        "Red: more ink there raises that score; blue: lowers it (colour scale per tile, symmetric around 0); "
        "the outline is the digit.", "",
        "![Saliency](robustness_saliency.png)", "",
        f"The measurement took {seconds:.0f} s of wall-clock time on the machine below (its 1-minute load average "
        f"was {options.load:.2f} on {environment['cpu_count']} CPUs when it started).", "",
        environment_line(environment),
    ]
    return "\n".join(parts) + "\n"


def plot_curves(stages: list[Stage], table: dict, path: Path) -> Path:
    fig, axes = subplots(2, 3, figsize=(13.0, 7.6))
    for ax, (family, (title, x_label, neutral)) in zip(axes.ravel(), FAMILIES.items()):
        members = [t for t in TRANSFORMS if t.family == family]
        xs = sorted([neutral] + [t.strength for t in members])
        for stage in stages:
            values = {neutral: table[stage.number]["clean"], **{t.strength: table[stage.number][t.key] for t in members}}
            ax.plot(xs, [100 * values[x] for x in xs], marker="o", linewidth=1.8, label=stage.spec.name)
        ax.set_title(title)
        ax.set_xlabel(x_label)
        ax.set_ylabel("test accuracy %")
        ax.set_xticks(xs)
        ax.set_ylim(top=100)
        ax.grid(True, alpha=0.35)
    handles, legend_labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, legend_labels, loc="outside lower center", ncol=min(len(stages), 6), frameon=False)
    fig.suptitle("Accuracy on transformed test digits (the leftmost point of each panel: the digits as they are)")
    return save_figure(fig, path)


def plot_examples(examples: dict[str, np.ndarray], labels: np.ndarray, reference: Stage, path: Path) -> Path:
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
    fig.suptitle(f"The same test digits under each transform; above each, what {reference.spec.name} "
                 "predicts (green: right, red: wrong)", fontsize=10)
    return save_figure(fig, path)


def plot_saliency(stages: list[Stage], images: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """First row the digits, then one row per stage: d score(predicted class) / d pixel."""
    columns = len(labels)
    fig, axes = subplots(len(stages) + 1, columns, figsize=(1.3 * columns + 1.8, 1.3 * (len(stages) + 1) + 0.8),
                         squeeze=False)
    for ax, image, truth in zip(axes[0], images, labels):
        show_digit(ax, image)
        ax.set_title(f"label {int(truth)}", fontsize=9)
    axes[0][0].set_ylabel("digit", rotation=0, ha="right", va="center", fontsize=9)
    for axes_row, stage in zip(axes[1:], stages):
        gradient, predicted = robustness.saliency(stage.network, images, stage.pixel_scale)
        for ax, grad, image, guess, truth in zip(axes_row, gradient, images, predicted, labels):
            limit = float(np.abs(grad).max()) or 1.0
            ax.imshow(grad.reshape(28, 28), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
            ax.contour(image.reshape(28, 28), levels=[0.5], colors="k", linewidths=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"says {int(guess)}", fontsize=9, color="#1a7f37" if guess == truth else "#c62828")
        axes_row[0].set_ylabel(stage.spec.name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle("Where each stage looks: gradient of its chosen class's score with respect to the pixels "
                 "(red raises it, blue lowers it)", fontsize=10)
    return save_figure(fig, path)


# -- main --------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python experiments/robustness.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=None, help="comma-separated stage numbers, e.g. 04,05 (default: all; "
                        "with --quick, the first and last stages with a saved model)")
    parser.add_argument("--images", type=positive_int, default=None,
                        help=f"measure on a seeded sample of this many test images (default all 10,000; "
                             f"with --quick, {QUICK_IMAGES})")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of every random choice: the sample, directions, angles, noise, patches (default 0)")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS,
                        help="where the models are: <models-dir>/<stage>/model.npz (default results/stages)")
    parser.add_argument("--no-train", action="store_true", help="skip stages without a saved model instead of training them")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_IMAGES} images and two stages, for tests")
    parser.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default results/ for every stage's committed model; otherwise "
                             "results/local/robustness/, or results/local/quick/ with --quick)")
    options = parser.parse_args(argv)
    full = not options.quick and options.stages is None and options.images is None and options.seed == 0 \
        and options.models_dir.resolve() == DEFAULT_MODELS.resolve()
    options.out = options.out or (DEFAULT_OUT if full else QUICK_OUT if options.quick else LOCAL_OUT)
    if options.images is None and options.quick:
        options.images = QUICK_IMAGES
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    selection = parse_list(options.stages, str, "--stages")
    blas.configure()
    specs = load_specs(selection if selection or not options.quick else quick_selection(options))
    writable_folder(options.out)
    data = load_data(options.data_dir)
    stages = load_stages(specs, options)
    options.load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    started = time.perf_counter()
    sample_rng, example_rng = spawn_generators(options.seed, len(TRANSFORMS) + 2)[:2]
    images, labels = test_sample(data, options.images, sample_rng)
    example_rows = example_indices(labels, example_rng)
    print(f"measuring {names(stages)} on {len(labels):,} test images", flush=True)
    table, examples = measure(stages, images, labels, options.seed, example_rows)
    seconds = time.perf_counter() - started
    out = options.out
    atomic_write_text(out / "robustness.csv", results_frame(stages, table, len(labels)).to_csv(index=False))
    plot_curves(stages, table, out / "robustness.png")
    plot_examples(examples, labels[example_rows], stages[-1], out / "robustness_examples.png")
    plot_saliency(stages, images[example_rows], labels[example_rows], out / "robustness_saliency.png")
    markdown = robustness_markdown(stages, table, len(labels), len(data.test_labels), options, seconds,
                                    describe_environment())
    atomic_write_text(out / "robustness.md", markdown)
    print()
    print(markdown_table(stages, table))
    print(f"\nwrote {out / 'robustness.md'}, robustness.csv, robustness.png, robustness_examples.png, "
          f"robustness_saliency.png ({seconds:.0f} s of measurement)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
