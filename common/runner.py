"""What every stage script runs: parse its options, load MNIST, train, write every output.

A stage script is only a :class:`~common.protocol.StageSpec` and ``main(SPEC)``; the training
and evaluation themselves are :func:`common.protocol.train_stage`. This module adds the command
line, the output folder (``metrics.json``, ``per_class.md``, ``model.npz`` and the figures) and
the summary printed at the end.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tabulate import tabulate

from common import blas, threads
from common import data as mnist
from common.cli import (
    OneLineParser,
    hidden_sizes,
    non_negative_int,
    positive_float,
    positive_int,
    run_cli,
    writable_folder,
)
from common.exercises import load_learner_book
from common.files import STALE_SECONDS, atomic_write_json, atomic_write_text
from common.nn.affine import random_affine
from common.nn.augment import random_shift
from common.nn.conv import Conv2D
from common.nn.elastic import random_elastic
from common.nn.errors import DivergenceError, UserError
from common.nn.init import INITIALIZERS
from common.nn.layers import ACTIVATIONS
from common.nn.metrics import misclassified_indices
from common.nn.network import Network
from common.nn.optimizers import OPTIMIZERS
from common.nn.textbook import Textbook
from common.paths import LOCAL_DIR, shown
from common.protocol import StageSpec, TrainedStage, stage_metrics, train_stage, validate_spec
from common.runs import model_metadata
from common.serialize import save_network


def run_stage(spec: StageSpec, seed: int, data: mnist.MNIST, out_dir: Path | None,
              plots: bool = True, progress: bool = True, book: Textbook | None = None) -> dict:
    """Train ``spec`` with ``seed`` and return its metrics; write every output to ``out_dir``.

    ``out_dir=None`` writes nothing (the comparison runner keeps only the metrics). ``book``: train
    on the textbook's functions instead of the fast core (``common.protocol.train_stage``).
    """
    trained = train_stage(spec, seed, data, progress, book)
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

OUTPUT_SUFFIXES = (".json", ".md", ".npz", ".png")  # what a stage writes into its folder


def check_output_folder(out_dir: Path) -> Path:
    """Before training: ``out_dir`` must be a name the outputs can carry (UTF-8), writable, and hold nothing
    but a stage's outputs, since a finished run replaces the whole folder with its own set. A link to a
    folder is followed: the outputs go into the folder it points to, and the link stays. Returns the
    folder to write (the link's target for a link)."""
    try:
        str(out_dir).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"--out {str(out_dir).encode('utf-8', 'replace').decode()}: the name is not valid UTF-8, "
                        "which the outputs (metrics.json names its folder) cannot carry; choose another name") from None
    if out_dir.is_symlink():
        target = out_dir.resolve()
        if target.exists() and not target.is_dir():
            raise UserError(f"--out {out_dir} links to {target}, which is not a folder; choose a folder")
        out_dir = target
    writable_folder(out_dir)
    if out_dir.is_dir():
        foreign = [p.name for p in out_dir.iterdir() if p.is_dir() or p.suffix not in OUTPUT_SUFFIXES]
        if foreign:
            raise UserError(f"--out {out_dir} holds {', '.join(sorted(foreign)[:3])}, which a stage does not "
                            "write; a run replaces the whole folder, so choose a new or empty one")
    return out_dir


def write_outputs(trained: TrainedStage, metrics: dict, out_dir: Path, plots: bool) -> None:
    """metrics.json, per_class.md, model.npz and (unless ``plots`` is False) the PNG figures, as one set.

    They are written into a fresh hidden folder beside ``out_dir`` that then replaces it, so a reader
    never sees a model and metrics from two different runs, even if a run is interrupted.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_folders(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    try:
        save_network(staging / "model.npz", trained.network, model_metadata(trained))
        atomic_write_text(staging / "per_class.md", per_class_table(metrics))
        if plots:
            write_figures(trained, metrics, staging)
        atomic_write_json(staging / "metrics.json", metrics)
        replace_folder(staging, out_dir)
    except OSError as error:  # a full disk, a quota, a folder made read-only meanwhile
        raise UserError(f"cannot write the outputs in {shown(out_dir)}: {error.strerror or error}; "
                        "nothing there was changed") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sweep_stale_folders(out_dir: Path) -> None:
    """Remove the hidden ``.NAME.new-*`` and ``.NAME.old-*`` folders beside ``out_dir`` that a run killed while
    writing its outputs left behind (untouched for ``common.files.STALE_SECONDS``; a run in progress is newer)."""
    now = time.time()
    for pattern in (f".{glob.escape(out_dir.name)}.new-*", f".{glob.escape(out_dir.name)}.old-*"):
        for folder in out_dir.parent.glob(pattern):
            with contextlib.suppress(OSError):
                if folder.is_dir() and not folder.is_symlink() and now - folder.stat().st_mtime > STALE_SECONDS:
                    shutil.rmtree(folder)


def replace_folder(new: Path, target: Path, attempts: int = 5) -> None:
    """Put folder ``new`` in place of ``target``: move the old one aside, rename, delete the old one."""
    for _ in range(attempts):
        old = target.with_name(f".{target.name}.old-{secrets.token_hex(4)}")
        if target.exists():
            os.replace(target, old)
        try:
            os.rename(new, target)
            shutil.rmtree(old, ignore_errors=True)
            return
        except OSError:  # another run put its set in place meanwhile: move that aside too
            shutil.rmtree(old, ignore_errors=True)
    raise UserError(f"could not put the outputs in place at {target}: other runs keep writing there")


def write_figures(trained: TrainedStage, metrics: dict, out_dir: Path) -> None:
    """loss.png, accuracy.png, confusion_matrix.png, misclassified.png, example_prediction.png and
    what the first layer learned: first_layer.png (a perceptron's weights as 28x28 tiles), or
    filters.png and feature_maps.png (a convolutional network's first filters, and its feature maps
    for the example image)."""
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
    if affine_distorts(spec) or spec.elastic_alpha:
        train = trained.splits["train"].x
        chosen = trained.figure_rng.choice(len(train), size=6, replace=False)
        draws = np.stack([distorted(spec, train[chosen], trained.figure_rng) for _ in range(6)], axis=1)
        figures.plot_augmentation(train[chosen], draws, out_dir / "augmentation.png",
                                  f"{spec.name}: training digits, distorted anew every epoch\n({distortions_text(spec)})")
    first = next(trained.network.weighted_layers())
    if isinstance(first, Conv2D):
        figures.plot_conv_filters(first.params["W"], out_dir / "filters.png",
                                  f"{spec.name}: the {first.params['W'].shape[-1]} filters of the first convolution")
        figures.plot_feature_maps(test.x[index], feature_maps(trained.network, test.x[index]),
                                  out_dir / "feature_maps.png", f"{spec.name}: what the convolutions see "
                                  f"in test image #{index} (first channels)")
    else:
        figures.plot_first_layer_weights(first.params["W"], out_dir / "first_layer.png",
                                         f"{spec.name}: first-layer weights, one 28x28 tile per hidden unit")


def affine_distorts(spec: StageSpec) -> bool:
    """Whether the stage distorts its training digits by random affine maps (which then include its shift)."""
    return bool(spec.affine_rotation or spec.affine_scale or spec.affine_shear)


def distorted(spec: StageSpec, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``images (B, 784)`` distorted as the stage's training distorts them: the affine map (with the
    shift), then the elastic field, each only if the stage has it."""
    if affine_distorts(spec):
        images = random_affine(images, rng, spec.affine_rotation, spec.affine_scale, spec.affine_shear, spec.shift)
    elif spec.shift:
        images = random_shift(images, rng, spec.shift)
    if spec.elastic_alpha:
        images = random_elastic(images, rng, spec.elastic_alpha, spec.elastic_sigma)
    return images


def distortions_text(spec: StageSpec) -> str:
    """E.g. ``rotation up to 10°, scale 1 ± 0.1, shear up to 10°, shift up to 2 px; elastic alpha 34, sigma 4 px``."""
    parts = []
    if affine_distorts(spec):
        parts.append(f"rotation up to {spec.affine_rotation:g}°, scale 1 ± {spec.affine_scale:g}, shear up to "
                     f"{spec.affine_shear:g}°, shift up to {spec.shift} px")
    elif spec.shift:
        parts.append(f"shift up to {spec.shift} px")
    if spec.elastic_alpha:
        parts.append(f"elastic alpha {spec.elastic_alpha:g}, sigma {spec.elastic_sigma:g} px")
    return "; ".join(parts)


def feature_maps(network: Network, pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """``[("conv 1 + maxpool", maps (12, 12, 32)), ...]``: the output of the layer that follows each
    convolution, for one image ``pixels (784,)``, as the network computes it when it predicts."""
    maps, convolutions, previous = [], 0, None
    for layer, out in network.activations(pixels[None, :]):
        if isinstance(previous, Conv2D):
            convolutions += 1
            maps.append((f"conv {convolutions} + {type(layer).__name__.lower()}", out[0]))
        previous = layer
    return maps


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
                        help=f"output folder (default results/local/stages/{spec.name}, git-ignored; with --quick, "
                             f"results/local/quick/{spec.name}; the committed outputs: --out results/stages/{spec.name})")
    common.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    common.add_argument("--quick", action="store_true",
                        help="a tiny budget (a few seconds) for smoke tests; numbers are not meaningful"
                             + (" (this stage also swaps in a smaller network)" if {"sizes", "layers"} & set(spec.quick) else ""))
    common.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    threads.add_threads_option(common)
    implementation = common.add_mutually_exclusive_group()
    implementation.add_argument("--reference", action="store_true",
                                help="train on the textbook's plain functions (common.nn.reference) instead of the "
                                     "fast core: the same maths, slower")
    implementation.add_argument("--exercises", metavar="DIR", default=None,
                                help="train on your own functions from the worksheet in DIR (python -m common.exercises "
                                     "start), the textbook's wherever yours is still blank")
    hyper = parser.add_argument_group("hyper-parameters of this stage")
    hyper.add_argument("--lr", type=positive_float, default=None, help=f"learning rate (default {spec.lr:g})")
    hyper.add_argument("--batch-size", type=positive_int, default=None,
                       help=f"mini-batch size (default {spec.batch_size or 'the whole training set'})")
    hyper.add_argument("--hidden", type=hidden_sizes, default=None,
                       help="hidden layer widths, comma-separated (default "
                            f"{','.join(str(n) for n in spec.sizes[1:-1]) or 'none: layers given in SPEC'})")
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
    if spec.layers and (args.hidden is not None or args.activation is not None):
        raise UserError(f"stage {spec.name} is described layer by layer (in its SPEC); --hidden and "
                        "--activation apply to the perceptron stages")
    if args.hidden is not None:
        overrides["sizes"] = (spec.sizes[0], *args.hidden, spec.sizes[-1])
    spec = dataclasses.replace(spec, **overrides)
    validate_spec(spec)
    return spec

def check_memory(spec: StageSpec) -> None:
    """Refuse, in one line, a network whose weights, gradients and optimizer state alone would not
    fit in this machine's memory (``--hidden 10000000000``), instead of failing inside NumPy."""
    parameters = spec.architecture().num_parameters
    needed = parameters * np.dtype(spec.architecture().dtype).itemsize * 5  # weights, grads, 2 moments, scratch
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return  # no way to know here; NumPy's MemoryError is still turned into one line by run_cli
    if needed > available:
        raise UserError(f"a network of {parameters:,} parameters needs about {needed / 1e9:,.0f} GB for its weights, "
                        f"gradients and optimizer state, more than this machine's {available / 1e9:,.0f} GB; "
                        "use smaller --hidden widths")


def load_data(data_dir: str | None) -> mnist.MNIST:
    """MNIST from ``data_dir`` (which must exist if given) or the default folder (fetched if needed).
    An empty ``--data-dir`` is refused rather than taken as the default folder; a file or device given
    as the folder is named as such by the loader."""
    if data_dir is not None and not str(data_dir).strip():
        raise UserError("--data-dir is empty; give the folder of the MNIST files, or leave the option out for "
                        "the default folder")
    if data_dir is not None and not os.path.lexists(data_dir):
        raise UserError(f"data directory {data_dir} does not exist; fetch the data into it with "
                        f"`python -m common.data fetch --data-dir {data_dir}` or leave out --data-dir")
    return mnist.load_mnist(data_dir)

def print_summary(metrics: dict, out_dir: Path | None, published_budget: bool = True) -> None:
    """The run's accuracies, time and outputs; the source's published figure only when this run had the
    source's budget (``published_budget``), since a shortened run is not comparable with it."""
    heading = f"{metrics['stage']} ({metrics['title']}), seed {metrics['seed']}"
    if metrics.get("implementation", "fast core") != "fast core":
        heading += f", on {metrics['implementation']}"
    lines = [heading + ":", f"  train accuracy {100 * metrics['train_accuracy']:.2f} % on {metrics['train_size']:,} images"]
    if "holdout_accuracy" in metrics:
        lines.append(f"  held-out accuracy {100 * metrics['holdout_accuracy']:.2f} % on "
                     f"{metrics['holdout_size']:,} training-set images (what the source called 'test')")
    if "val_accuracy" in metrics:
        lines.append(f"  validation accuracy {100 * metrics['val_accuracy']:.2f} % on {metrics['val_size']:,} images")
    lines.append(f"  test accuracy  {100 * metrics['test_accuracy']:.2f} % on the official "
                 f"{metrics['test_size']:,}-image test set")
    if metrics.get("published_accuracy") and published_budget:
        lines.append(f"  (the source design published {100 * metrics['published_accuracy']:.2f} %)")
    lines.append(f"  time {metrics['seconds']:.1f} s ({metrics['train_seconds']:.1f} s training)")
    if out_dir is not None:
        lines.append(f"  outputs in {shown(out_dir)}")
    print("\n".join(lines), flush=True)


def chosen_book(args: argparse.Namespace) -> Textbook | None:
    """The textbook to train on: the reference (``--reference``), a learner's worksheet (``--exercises``,
    saying whose functions run), or None for the fast core."""
    if args.reference:
        return Textbook()
    if args.exercises is None:
        return None
    learner = load_learner_book(args.exercises)
    print(f"training on your functions from {args.exercises}: {', '.join(learner.replaced) or 'none written yet'}"
          + (f"; the textbook's for {', '.join(learner.blank)}" if learner.blank else ""), flush=True)
    return learner.book


def main(spec: StageSpec, argv: Sequence[str] | None = None, description: str | None = None) -> int:
    """The entry point of every stage script: ``sys.exit(main(SPEC, description=__doc__))``."""

    def _main(argv: Sequence[str] | None) -> int:
        args = build_parser(spec, description).parse_args(argv)
        stage = spec_from_args(spec, args)
        check_memory(stage)
        out_dir = check_output_folder(args.out or LOCAL_DIR / ("quick" if args.quick else "stages") / spec.name)
        book = chosen_book(args)
        if not args.no_plots:
            from common.plots import require_matplotlib  # matplotlib is loaded only when figures are made

            require_matplotlib()  # before training, not after: say at once that the figures cannot be drawn
        data = load_data(args.data_dir)
        blas.configure()
        threads.configure(args.threads)
        try:
            metrics = run_stage(stage, args.seed, data, out_dir, plots=not args.no_plots, progress=not args.quiet,
                                book=book)
        except DivergenceError as error:
            raise DivergenceError(f"{error} (--lr)") from None
        print_summary(metrics, out_dir, published_budget=stage.settings() == spec.settings())
        return 0

    return run_cli(_main, argv)
