"""Run one stage: parse its options, load MNIST, train, evaluate, write every output.

A stage script is only a :class:`StageSpec` (its settings, stated once) and ``main(SPEC)``.
``experiments/compare.py`` imports the same specs and calls :func:`run_stage`, so a number in
the comparison table is produced by exactly the code a reader runs stage by stage.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tabulate import tabulate

from common import data as mnist
from common.augment import random_shift
from common.cli import (OneLineParser, hidden_sizes, non_negative_int, positive_float,  # noqa: F401
                        positive_int)
from common.environment import REPO_ROOT, describe_environment
from common.errors import UserError, run_cli
from common.files import atomic_write_json, atomic_write_text
from common.init import INITIALIZERS
from common.layers import ACTIVATIONS
from common.metrics import accuracy, confusion_matrix, misclassified_indices, precision_recall_f1
from common.network import Architecture, Network
from common.optimizers import OPTIMIZERS, make_optimizer
from common.schedules import make_schedule
from common.serialize import save_network
from common.train import train

NUM_TRAIN_IMAGES = 60_000


@dataclass(frozen=True)
class StageSpec:
    """Everything that defines a stage. Defaults are the settings of the published design."""

    name: str                       # e.g. "04_adam": the script's name, and its output folder
    title: str                      # e.g. "Adam"
    adds: str                       # one line: what this stage adds over the previous one
    sizes: tuple[int, ...]          # layer sizes, input and output included
    optimizer: str                  # gd, momentum, rmsprop or adam
    lr: float
    epochs: int                     # epochs (mini-batch) or iterations (full batch)
    batch_size: int | None = None   # None: full batch, one update per pass over the data
    activation: str = "relu"
    init: str = "he"
    init_scale: float | None = None  # only for init="normal"
    pixel_scale: str = "unit"       # "unit": [0, 1]; "raw": 0..255 as the first design fed them
    train_size: int | None = None   # None: all 60,000; else a seeded sample of the training images
    holdout_size: int = 0           # a disjoint held-out slice of the training images (stage 01: 350)
    validation_size: int = 0        # carve a validation split off the training images for choices
    schedule: str = "constant"      # constant or cosine
    warmup: int = 0
    weight_decay: float = 0.0
    input_dropout: float = 0.0
    hidden_dropout: float = 0.0
    shift: int = 0                  # random translations of up to this many pixels
    eval_every: int = 1
    reproduces: str = ""            # which source design, if any
    published_accuracy: float | None = None  # as the source published it (a fraction)
    published_note: str = ""        # on what data the source measured it
    quick: dict = field(default_factory=dict)  # overrides for --quick (tiny smoke-test budget)

    @property
    def is_full_batch(self) -> bool:
        return self.batch_size is None

    @property
    def step_label(self) -> str:
        return "iteration" if self.is_full_batch else "epoch"

    def architecture(self) -> Architecture:
        return Architecture(self.sizes, self.activation, self.input_dropout, self.hidden_dropout)

    def optimizer_label(self) -> str:
        text = {"gd": "gradient descent", "momentum": "momentum", "rmsprop": "RMSprop",
                "adam": "AdamW" if self.weight_decay else "Adam"}[self.optimizer]
        text += f" lr {self.lr:g}"
        if self.schedule != "constant":
            text += f", {self.schedule}"
        return text

    def settings(self) -> dict:
        """The JSON-able settings (everything but the quick overrides)."""
        values = dataclasses.asdict(self)
        values.pop("quick")
        values["sizes"] = list(self.sizes)
        return values


def validate_spec(spec: StageSpec) -> None:
    """Reject settings that cannot run, with one line each."""
    checks = [
        (spec.epochs >= 1, f"epochs must be at least 1, got {spec.epochs}"),
        (spec.lr > 0, f"learning rate must be positive, got {spec.lr}"),
        (spec.batch_size is None or spec.batch_size >= 1, f"batch size must be at least 1, got {spec.batch_size}"),
        (spec.activation in ACTIVATIONS, f"unknown activation {spec.activation!r}; choose one of {', '.join(ACTIVATIONS)}"),
        (spec.init in INITIALIZERS, f"unknown initialisation {spec.init!r}; choose one of {', '.join(INITIALIZERS)}"),
        (spec.optimizer in OPTIMIZERS, f"unknown optimizer {spec.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"),
        (spec.pixel_scale in mnist.PIXEL_SCALES, f"unknown pixel scale {spec.pixel_scale!r}; choose one of {', '.join(mnist.PIXEL_SCALES)}"),
        (spec.train_size is None or spec.train_size >= 1, f"training-set size must be at least 1, got {spec.train_size}"),
        (spec.holdout_size >= 0 and spec.validation_size >= 0, "held-out and validation sizes must be >= 0"),
        (spec.eval_every >= 1, f"eval-every must be at least 1, got {spec.eval_every}"),
        (0 <= spec.shift <= 8, f"shift must be between 0 and 8 pixels, got {spec.shift}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    spec.architecture()  # validates sizes and dropout rates


@dataclass
class Split:
    """Images ``x (N, 784)`` as float32 and labels ``y (N,)``."""

    x: np.ndarray
    y: np.ndarray


def prepare_splits(spec: StageSpec, data: mnist.MNIST, seed: int) -> dict[str, Split]:
    """The training set, optional held-out / validation slices and the official test set.

    With ``train_size`` set, the training images are a random sample (without replacement,
    drawn from ``seed``) of the 60,000, and the held-out and validation slices are disjoint
    from it. Pixels are scaled once, here, to ``spec.pixel_scale``.
    """
    num_available = len(data.train_labels)
    train_size = spec.train_size
    if train_size is None:
        train_size = num_available - spec.holdout_size - spec.validation_size
        if train_size < 1:
            raise UserError(f"held-out + validation slices ({spec.holdout_size} + {spec.validation_size}) "
                            f"leave no training images out of {num_available}")
    train_index, rest_index = mnist.sample_budget(num_available, train_size,
                                                  spec.holdout_size + spec.validation_size, seed)
    if spec.train_size is None and spec.holdout_size == 0 and spec.validation_size == 0:
        train_index = np.arange(num_available)  # all images, in the official order
    splits = {"train": train_index, "holdout": rest_index[:spec.holdout_size],
              "val": rest_index[spec.holdout_size:]}
    out = {name: Split(mnist.scale_pixels(data.train_images[index], spec.pixel_scale), data.train_labels[index])
           for name, index in splits.items() if len(index)}
    out["test"] = Split(mnist.scale_pixels(data.test_images, spec.pixel_scale), data.test_labels)
    return out


def run_stage(spec: StageSpec, seed: int, data: mnist.MNIST, out_dir: Path | None,
              plots: bool = True, progress: bool = True) -> dict:
    """Train ``spec`` with ``seed`` and return its metrics; write every output to ``out_dir``.

    ``out_dir=None`` writes nothing (the comparison runner keeps only the metrics).
    """
    validate_spec(spec)
    init_rng, train_rng, figure_rng = np.random.default_rng(seed).spawn(3)
    splits = prepare_splits(spec, data, seed)
    network = Network.from_architecture(spec.architecture(), init_rng, spec.init, spec.init_scale)
    optimizer = make_optimizer(spec.optimizer, spec.lr, spec.weight_decay)
    schedule = make_schedule(spec.schedule, spec.lr, spec.epochs, spec.warmup)
    augment = (lambda x, rng: random_shift(x, rng, spec.shift)) if spec.shift else None
    eval_sets = {name: (split.x, split.y) for name, split in splits.items()}

    if progress:
        print(f"stage {spec.name}: {spec.architecture().describe()}, {spec.optimizer_label()}, "
              f"batch {spec.batch_size or 'full'}, {spec.epochs} {spec.step_label}s, "
              f"{len(splits['train'].y):,} training images, seed {seed}", flush=True)
    history = train(network, optimizer, splits["train"].x, splits["train"].y, epochs=spec.epochs,
                    rng=train_rng, batch_size=spec.batch_size, eval_sets=eval_sets,
                    eval_every=spec.eval_every, lr_schedule=schedule, augment=augment,
                    progress=progress, progress_label=spec.step_label)

    test = splits["test"]
    probabilities = network.predict_proba(test.x)
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(test.y, predicted)
    scores = precision_recall_f1(matrix)
    final = history[-1]
    metrics = {
        "stage": spec.name,
        "title": spec.title,
        "adds": spec.adds,
        "train_accuracy": final["train_accuracy"],
        "test_accuracy": accuracy(predicted, test.y),
        **{f"{name}_accuracy": final[f"{name}_accuracy"] for name in ("holdout", "val") if name in splits},
        "train_size": len(splits["train"].y),
        "test_size": len(test.y),
        **{f"{name}_size": len(splits[name].y) for name in ("holdout", "val") if name in splits},
        "epochs": spec.epochs,
        "step_label": spec.step_label,
        "seconds": final["seconds"],
        "train_seconds": final["train_seconds"],
        "seed": seed,
        "architecture": spec.architecture().describe(),
        "num_parameters": network.num_parameters,
        "optimizer": spec.optimizer_label(),
        "published_accuracy": spec.published_accuracy,
        "settings": spec.settings(),
        "macro_precision": scores["macro_precision"],
        "macro_recall": scores["macro_recall"],
        "macro_f1": scores["macro_f1"],
        "per_class": {key: scores[key].tolist() for key in ("precision", "recall", "f1", "support")},
        "confusion_matrix": matrix.tolist(),
        "history": history,
        "environment": describe_environment(),
    }
    if out_dir is not None:
        write_outputs(spec, metrics, network, test, probabilities, out_dir, plots, figure_rng)
    return metrics


def per_class_table(metrics: dict) -> str:
    """Per-class precision / recall / F1 on the test set as a Markdown table."""
    per_class = metrics["per_class"]
    rows = [[digit, f"{100 * p:.2f}", f"{100 * r:.2f}", f"{100 * f:.2f}", s]
            for digit, (p, r, f, s) in enumerate(zip(per_class["precision"], per_class["recall"],
                                                     per_class["f1"], per_class["support"]))]
    rows.append(["macro", f"{100 * metrics['macro_precision']:.2f}", f"{100 * metrics['macro_recall']:.2f}",
                 f"{100 * metrics['macro_f1']:.2f}", sum(per_class["support"])])
    table = tabulate(rows, headers=["class", "precision %", "recall %", "F1 %", "support"],
                     tablefmt="github")
    return (f"# {metrics['stage']}: per-class scores on the official test set\n\n{table}\n\n"
            f"Command: `{metrics['environment']['command']}`\n")


def write_outputs(spec: StageSpec, metrics: dict, network: Network, test: Split,
                  probabilities: np.ndarray, out_dir: Path, plots: bool,
                  rng: np.random.Generator) -> None:
    """metrics.json, per_class.md, model.npz and (unless ``plots`` is False) the PNG figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_network(out_dir / "model.npz", network,
                 {"stage": spec.name, "pixel_scale": spec.pixel_scale, "seed": metrics["seed"]})
    atomic_write_text(out_dir / "per_class.md", per_class_table(metrics))
    if plots:
        from common import plots as figures  # matplotlib is imported only when figures are made

        history, label = metrics["history"], spec.step_label
        figures.plot_loss(history, out_dir / "loss.png", f"{spec.name}: training loss", x_label=label)
        figures.plot_accuracy(history, out_dir / "accuracy.png", f"{spec.name}: accuracy", x_label=label)
        figures.plot_confusion_matrix(np.array(metrics["confusion_matrix"]), out_dir / "confusion_matrix.png",
                                      f"{spec.name}: confusion matrix (official test set)")
        predicted = probabilities.argmax(axis=1)
        wrong = misclassified_indices(test.y, predicted)
        figures.plot_misclassified(test.x[wrong], test.y[wrong], predicted[wrong],
                                   probabilities[wrong, predicted[wrong]], out_dir / "misclassified.png",
                                   title=f"{spec.name}: {len(wrong)} misclassified test digits (first 25)")
        index = int(rng.integers(len(test.y)))
        figures.plot_prediction_example(test.x[index], int(test.y[index]), int(predicted[index]),
                                        probabilities[index], out_dir / "example_prediction.png",
                                        title=f"{spec.name}: random test image #{index}")
    atomic_write_json(out_dir / "metrics.json", metrics)  # last: its presence means the run is complete


# -- command line --------------------------------------------------------------------------

def build_parser(spec: StageSpec, description: str | None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=f"python stages/{spec.name}.py",
        description=description or spec.adds,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common = parser.add_argument_group("common options")
    common.add_argument("--epochs", type=positive_int, default=None,
                        help=f"number of {spec.step_label}s (default {spec.epochs})")
    common.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed for the initial weights, the batch order and the data sample (default 0)")
    common.add_argument("--data-dir", default=None,
                        help="folder with the four MNIST IDX files (default: $MNIST_DATA_DIR or data/mnist, "
                             "fetched automatically on first use)")
    common.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default results/stages/{spec.name}; with --quick, results/quick/{spec.name})")
    common.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    common.add_argument("--quick", action="store_true",
                        help="a tiny budget (a few seconds) for smoke tests; numbers are not meaningful")
    common.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    hyper = parser.add_argument_group("hyper-parameters of this stage")
    hyper.add_argument("--lr", type=positive_float, default=None, help=f"learning rate (default {spec.lr:g})")
    hyper.add_argument("--batch-size", type=positive_int, default=None,
                       help=f"mini-batch size (default {spec.batch_size or 'the whole training set'})")
    hyper.add_argument("--hidden", type=hidden_sizes, default=None,
                       help="hidden layer widths, comma-separated (default "
                            f"{','.join(str(n) for n in spec.sizes[1:-1])})")
    hyper.add_argument("--activation", default=None,
                       help=f"hidden activation: {', '.join(ACTIVATIONS)} (default {spec.activation})")
    hyper.add_argument("--init", default=None,
                       help=f"weight initialisation: {', '.join(INITIALIZERS)} (default {spec.init})")
    hyper.add_argument("--optimizer", default=None,
                       help=f"{', '.join(OPTIMIZERS)} (default {spec.optimizer})")
    hyper.add_argument("--schedule", choices=["constant", "cosine"], default=None,
                       help=f"learning-rate schedule over the run (default {spec.schedule})")
    hyper.add_argument("--train-size", type=positive_int, default=None,
                       help=f"train on a seeded random sample of this many images (default "
                            f"{spec.train_size or 'all 60,000'})")
    hyper.add_argument("--validation-size", type=non_negative_int, default=None,
                       help="hold out this many training images as a validation split and report "
                            f"accuracy on it (default {spec.validation_size}); use it, never the test set, "
                            "to choose settings")
    hyper.add_argument("--eval-every", type=positive_int, default=None,
                       help=f"measure accuracies every k {spec.step_label}s (default {spec.eval_every})")
    return parser


def spec_from_args(spec: StageSpec, args: argparse.Namespace) -> StageSpec:
    """Apply --quick, then explicit options, to the stage's defaults."""
    if args.quick:
        spec = dataclasses.replace(spec, **spec.quick)
    overrides = {
        "epochs": args.epochs, "lr": args.lr, "activation": args.activation, "init": args.init,
        "optimizer": args.optimizer, "train_size": args.train_size, "schedule": args.schedule,
        "validation_size": args.validation_size, "eval_every": args.eval_every,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    if args.hidden is not None:
        overrides["sizes"] = (spec.sizes[0], *args.hidden, spec.sizes[-1])
    spec = dataclasses.replace(spec, **overrides)
    validate_spec(spec)
    return spec


def load_data(data_dir: str | None) -> mnist.MNIST:
    """MNIST from ``data_dir`` (which must exist if given) or the default folder (fetched if needed)."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UserError(f"data directory {data_dir} does not exist; fetch the data into it with "
                        f"`python -m common.data fetch --data-dir {data_dir}` or leave out --data-dir")
    return mnist.load_mnist(data_dir)


def print_summary(metrics: dict, out_dir: Path | None) -> None:
    lines = [f"{metrics['stage']} ({metrics['title']}), seed {metrics['seed']}:",
             f"  train accuracy {100 * metrics['train_accuracy']:.2f} % on {metrics['train_size']:,} images"]
    if "holdout_accuracy" in metrics:
        lines.append(f"  held-out accuracy {100 * metrics['holdout_accuracy']:.2f} % on "
                     f"{metrics['holdout_size']:,} training-set images (what the source called 'test')")
    if "val_accuracy" in metrics:
        lines.append(f"  validation accuracy {100 * metrics['val_accuracy']:.2f} % on {metrics['val_size']:,} images")
    lines.append(f"  test accuracy  {100 * metrics['test_accuracy']:.2f} % on the official "
                 f"{metrics['test_size']:,}-image test set")
    if metrics.get("published_accuracy"):
        lines.append(f"  (the source design published {100 * metrics['published_accuracy']:.2f} %)")
    lines.append(f"  time {metrics['seconds']:.1f} s ({metrics['train_seconds']:.1f} s training)")
    if out_dir is not None:
        lines.append(f"  outputs in {out_dir}")
    print("\n".join(lines), flush=True)


def main(spec: StageSpec, argv: Sequence[str] | None = None, description: str | None = None) -> int:
    """The entry point of every stage script: ``sys.exit(main(SPEC, description=__doc__))``."""

    def _main(argv: Sequence[str] | None) -> int:
        args = build_parser(spec, description).parse_args(argv)
        stage = spec_from_args(spec, args)
        out_dir = args.out or REPO_ROOT / "results" / ("quick" if args.quick else "stages") / spec.name
        data = load_data(args.data_dir)
        metrics = run_stage(stage, args.seed, data, out_dir, plots=not args.no_plots, progress=not args.quiet)
        print_summary(metrics, out_dir)
        return 0

    return run_cli(_main, argv)
