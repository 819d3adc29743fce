"""What every stage script runs: parse its options, load MNIST, train, write every output.

A stage script is only a :class:`~common.protocol.StageSpec` and ``main(SPEC)``; the training
and evaluation themselves are :func:`common.protocol.train_stage`. This module adds the command
line, the output folder (``metrics.json``, ``per_class.md``, ``model.npz`` and the figures) and
the summary printed at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
from tabulate import tabulate

from common import data as mnist
from common.cli import OneLineParser, hidden_sizes, non_negative_int, positive_float, positive_int, run_cli
from common.files import atomic_write_json, atomic_write_text
from common.nn.errors import UserError
from common.nn.init import INITIALIZERS
from common.nn.layers import ACTIVATIONS
from common.nn.metrics import misclassified_indices
from common.nn.optimizers import OPTIMIZERS
from common.paths import RESULTS_DIR
from common.protocol import StageSpec, TrainedStage, stage_metrics, train_stage, validate_spec
from common.serialize import save_network


def run_stage(spec: StageSpec, seed: int, data: mnist.MNIST, out_dir: Path | None,
              plots: bool = True, progress: bool = True) -> dict:
    """Train ``spec`` with ``seed`` and return its metrics; write every output to ``out_dir``.

    ``out_dir=None`` writes nothing (the comparison runner keeps only the metrics).
    """
    trained = train_stage(spec, seed, data, progress)
    metrics = stage_metrics(trained)
    if out_dir is not None:
        write_outputs(trained, metrics, out_dir, plots)
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

def write_outputs(trained: TrainedStage, metrics: dict, out_dir: Path, plots: bool) -> None:
    """metrics.json, per_class.md, model.npz and (unless ``plots`` is False) the PNG figures."""
    spec = trained.spec
    out_dir.mkdir(parents=True, exist_ok=True)
    save_network(out_dir / "model.npz", trained.network,
                 {"stage": spec.name, "pixel_scale": spec.pixel_scale, "seed": metrics["seed"]})
    atomic_write_text(out_dir / "per_class.md", per_class_table(metrics))
    if plots:
        write_figures(trained, metrics, out_dir)
    atomic_write_json(out_dir / "metrics.json", metrics)  # last: its presence means the run is complete


def write_figures(trained: TrainedStage, metrics: dict, out_dir: Path) -> None:
    """loss.png, accuracy.png, confusion_matrix.png, misclassified.png and example_prediction.png."""
    from common import plots as figures  # matplotlib is imported only when figures are made

    spec, test, probabilities = trained.spec, trained.splits["test"], trained.probabilities
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
    index = int(trained.figure_rng.integers(len(test.y)))
    figures.plot_prediction_example(test.x[index], int(test.y[index]), int(predicted[index]),
                                    probabilities[index], out_dir / "example_prediction.png",
                                    title=f"{spec.name}: random test image #{index}")


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
        out_dir = args.out or RESULTS_DIR / ("quick" if args.quick else "stages") / spec.name
        data = load_data(args.data_dir)
        metrics = run_stage(stage, args.seed, data, out_dir, plots=not args.no_plots, progress=not args.quiet)
        print_summary(metrics, out_dir)
        return 0

    return run_cli(_main, argv)
