"""The one protocol every stage runs under: its settings, its data, training and evaluation.

A stage is a :class:`StageSpec` (its settings, stated once). :func:`train_stage` prepares the
data splits the spec asks for, builds the network, trains it and scores it on the official test
set; :func:`stage_metrics` turns that into the JSON-able record every result file holds. The stage
scripts (through ``common.runner``), the comparison, the ablations and the tuning all call these
two, so a number in any table is produced by exactly the code a reader runs stage by stage.
Together with ``common/nn/`` this module decides every number: the run cache fingerprints both.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from common import data as mnist
from common.environment import describe_environment
from common.nn.affine import random_affine
from common.nn.augment import random_shift
from common.nn.elastic import random_elastic
from common.nn.errors import UserError
from common.nn.init import INITIALIZERS
from common.nn.label_smoothing import label_smoothing_loss
from common.nn.layers import ACTIVATIONS
from common.nn.loss import softmax_cross_entropy
from common.nn.metrics import accuracy, confusion_matrix, precision_recall_f1
from common.nn.network import FAST_LAYERS, Architecture, Network
from common.nn.optimizers import OPTIMIZERS, make_optimizer
from common.nn.recalibrate import recalibrated_record
from common.nn.schedules import make_schedule
from common.nn.textbook import Textbook, textbook_parts
from common.nn.train import train

PIXEL_SCALES = ("unit", "raw")


def scale_pixels(images: np.ndarray, scale: str = "unit") -> np.ndarray:
    """Turn uint8 pixels ``(N, 784)`` into float32 ``(N, 784)``: "unit" -> [0, 1], "raw" -> 0..255.

    This is the one place where pixel bytes become floats.
    """
    if scale not in PIXEL_SCALES:
        raise UserError(f"unknown pixel scale {scale!r}; choose one of {', '.join(PIXEL_SCALES)}")
    out = np.asarray(images).astype(np.float32)
    if scale == "unit":
        out /= np.float32(255.0)
    return out

def sample_budget(num_available: int, n_train: int, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw disjoint index arrays ``(n_train,)`` and ``(n_holdout,)`` from ``range(num_available)``.

    Without replacement, reproducible from ``seed``: the first ``n_train`` entries of
    ``np.random.default_rng(seed).permutation(num_available)`` train, the next ``n_holdout`` are
    held out (the first source design used 1,000 + 350 drawn from the training set).
    """
    if n_train < 0 or n_holdout < 0:
        raise UserError(f"sample sizes must be >= 0 (got n_train={n_train}, n_holdout={n_holdout})")
    if n_train + n_holdout > num_available:
        raise UserError(f"cannot draw {n_train} training + {n_holdout} held-out examples from "
                        f"{num_available} without replacement; lower the budget")
    order = np.random.default_rng(seed).permutation(num_available)
    return order[:n_train], order[n_train:n_train + n_holdout]


@dataclass(frozen=True)
class StageSpec:
    """Everything that defines a stage. Defaults are the settings of the published design."""

    name: str                       # e.g. "04_adam": the script's name, and its output folder
    title: str                      # e.g. "Adam"
    adds: str                       # one line: what this stage adds over the previous one
    sizes: tuple[int, ...]          # layer sizes, input and output included (with layers: just those two)
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
    affine_rotation: float = 0.0    # random rotations of up to this many degrees (then shifts are in the same warp)
    affine_scale: float = 0.0       # random zooms by a factor between 1 - this and 1 + this
    affine_shear: float = 0.0       # random shears of up to this many degrees
    elastic_alpha: float = 0.0      # random elastic distortions: smoothed displacements scaled by this (pixels)
    elastic_sigma: float = 0.0      # and smoothed by a Gaussian this many pixels wide
    recalibrate_batchnorm: bool = False  # after training, batch norm's statistics averaged over clean training digits
    label_smoothing: float = 0.0    # train towards 1 - this on the label and this / 10 on every class
    eval_every: int = 1
    reproduces: str = ""            # which source design, if any
    published_accuracy: float | None = None  # as the source published it (a fraction)
    published_note: str = ""        # on what data the source measured it
    layers: tuple[str, ...] = ()    # a network that is not a perceptron, as layer strings (stage 06)
    quick: dict = field(default_factory=dict)  # overrides for --quick (tiny smoke-test budget)

    @property
    def is_full_batch(self) -> bool:
        return self.batch_size is None

    @property
    def step_label(self) -> str:
        return "iteration" if self.is_full_batch else "epoch"

    def architecture(self) -> Architecture:
        return Architecture(self.sizes, self.activation, self.input_dropout, self.hidden_dropout,
                            layers=self.layers)

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
        if self.layers:
            values["layers"] = list(self.layers)
        else:
            values.pop("layers")  # perceptrons: their settings (and run fingerprints) stay as they were
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
        (spec.pixel_scale in PIXEL_SCALES, f"unknown pixel scale {spec.pixel_scale!r}; choose one of {', '.join(PIXEL_SCALES)}"),
        (spec.train_size is None or spec.train_size >= 1, f"training-set size must be at least 1, got {spec.train_size}"),
        (spec.holdout_size >= 0 and spec.validation_size >= 0, "held-out and validation sizes must be >= 0"),
        (spec.eval_every >= 1, f"eval-every must be at least 1, got {spec.eval_every}"),
        (0 <= spec.shift <= 8, f"shift must be between 0 and 8 pixels, got {spec.shift}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    if not (0 <= spec.affine_rotation <= 180 and 0 <= spec.affine_scale < 1 and 0 <= spec.affine_shear < 80):
        raise UserError(f"affine distortions need rotation 0-180 degrees, scale 0 to below 1 and shear 0 to below "
                        f"80 degrees; got {spec.affine_rotation}, {spec.affine_scale}, {spec.affine_shear}")
    if spec.elastic_alpha or spec.elastic_sigma:
        if not (0 < spec.elastic_alpha <= 100 and 0 < spec.elastic_sigma <= 20):
            raise UserError(f"elastic distortions need alpha above 0 and at most 100 pixels and sigma above 0 and at "
                            f"most 20 pixels; got {spec.elastic_alpha}, {spec.elastic_sigma}")
    if spec.recalibrate_batchnorm and not any(str(layer).split()[:1] == ["batchnorm"] for layer in spec.layers):
        raise UserError("recalibrate_batchnorm needs a network with a 'batchnorm' layer")
    if spec.label_smoothing and not 0 < spec.label_smoothing < 1:
        raise UserError(f"label smoothing must be at least 0 and below 1, got {spec.label_smoothing}")
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
    train_index, rest_index = sample_budget(num_available, train_size,
                                                  spec.holdout_size + spec.validation_size, seed)
    if spec.train_size is None and spec.holdout_size == 0 and spec.validation_size == 0:
        train_index = np.arange(num_available)  # all images, in the official order
    splits = {"train": train_index, "holdout": rest_index[:spec.holdout_size],
              "val": rest_index[spec.holdout_size:]}
    out = {name: Split(scale_pixels(data.train_images[index], spec.pixel_scale), data.train_labels[index])
           for name, index in splits.items() if len(index)}
    out["test"] = Split(scale_pixels(data.test_images, spec.pixel_scale), data.test_labels)
    return out


def spawn_generators(seed: int, count: int) -> list[np.random.Generator]:
    """``count`` independent generators from one seed (``SeedSequence.spawn``; the same streams as
    ``np.random.default_rng(seed).spawn(count)``, which needs NumPy 1.25)."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(count)]


@dataclass
class TrainedStage:
    """What :func:`train_stage` leaves: the network, its history, the splits, its test predictions."""

    spec: StageSpec
    seed: int
    network: Network
    history: list[dict]
    splits: dict[str, Split]
    probabilities: np.ndarray       # (N_test, 10) softmax outputs on the official test set
    figure_rng: np.random.Generator  # for the figures' random choices, apart from training's stream
    implementation: str = "fast core"  # which code computed it: the fast core, or a textbook


def train_stage(spec: StageSpec, seed: int, data: mnist.MNIST, progress: bool = True,
                book: Textbook | None = None) -> TrainedStage:
    """Train ``spec`` with ``seed`` on ``data`` and predict the official test set.

    ``book``: train on the textbook's plain functions instead of the fast core (``Textbook()`` for
    the reference, or a learner's functions standing in for some of them; ``common.nn.textbook``).
    The seeded streams are the same either way: the same data, the same starting weights.
    """
    validate_spec(spec)
    init_rng, train_rng, figure_rng = spawn_generators(seed, 3)
    splits = prepare_splits(spec, data, seed)
    if book is None:
        kit, loss, shift = FAST_LAYERS, softmax_cross_entropy, random_shift
        optimizer = make_optimizer(spec.optimizer, spec.lr, spec.weight_decay)
    else:
        kit, loss, build_optimizer = textbook_parts(book)
        shift, optimizer = book.random_shift, build_optimizer(spec.optimizer, spec.lr, spec.weight_decay)
    network = Network.from_architecture(spec.architecture(), init_rng, spec.init, spec.init_scale, kit)
    schedule = make_schedule(spec.schedule, spec.lr, spec.epochs, spec.warmup)
    augment = (lambda x, rng: shift(x, rng, spec.shift)) if spec.shift else None
    if spec.affine_rotation or spec.affine_scale or spec.affine_shear:  # one warp: rotation, zoom, shear, shift
        augment = lambda x, rng: random_affine(x, rng, spec.affine_rotation, spec.affine_scale,  # noqa: E731
                                               spec.affine_shear, spec.shift)
    if spec.elastic_alpha:  # each digit's own smooth displacement field, after the affine map or shift
        distort = augment
        augment = lambda x, rng: random_elastic(x if distort is None else distort(x, rng), rng,  # noqa: E731
                                                spec.elastic_alpha, spec.elastic_sigma)
    if spec.label_smoothing:  # smoothed targets instead of one-hot ones; the textbook's loss is replaced too
        loss = label_smoothing_loss(spec.label_smoothing, textbook=book is not None)
    eval_sets = {name: (split.x, split.y) for name, split in splits.items()}
    if progress:
        print(f"stage {spec.name}: {spec.architecture().describe()}, {spec.optimizer_label()}, "
              f"batch {spec.batch_size or 'full'}, {spec.epochs} {spec.step_label}s, "
              f"{len(splits['train'].y):,} training images, seed {seed}"
              + ("" if book is None else f", on {describe_book(book)}"), flush=True)
    history = train(network, optimizer, splits["train"].x, splits["train"].y, epochs=spec.epochs,
                    rng=train_rng, batch_size=spec.batch_size, eval_sets=eval_sets,
                    eval_every=spec.eval_every, lr_schedule=schedule, augment=augment, loss=loss,
                    progress=progress, progress_label=spec.step_label)
    if spec.recalibrate_batchnorm:  # running statistics re-estimated on the clean training digits
        history[-1] = recalibrated_record(network, splits["train"].x, spec.batch_size or len(splits["train"].y),
                                          eval_sets, history[-1], progress)
    probabilities = network.predict_proba(splits["test"].x)
    return TrainedStage(spec, seed, network, history, splits, probabilities, figure_rng,
                        "fast core" if book is None else describe_book(book))


def describe_book(book: Textbook) -> str:
    """E.g. ``the textbook (common.nn.reference)`` or ``the textbook with your dense_backward, relu_backward``."""
    replaced = book.replaced()
    if not replaced:
        return "the textbook (common.nn.reference)"
    return "the textbook with your " + ", ".join(replaced)


def stage_metrics(trained: TrainedStage) -> dict:
    """The JSON-able record of a trained stage: accuracies, sizes, scores, settings, history, environment."""
    spec, splits, final = trained.spec, trained.splits, trained.history[-1]
    test = splits["test"]
    predicted = trained.probabilities.argmax(axis=1)
    matrix = confusion_matrix(test.y, predicted)
    scores = precision_recall_f1(matrix)
    held_out = [name for name in ("holdout", "val") if name in splits]
    return {
        "stage": spec.name, "title": spec.title, "adds": spec.adds,
        "train_accuracy": final["train_accuracy"],
        "test_accuracy": accuracy(predicted, test.y),
        **{f"{name}_accuracy": final[f"{name}_accuracy"] for name in held_out},
        "train_size": len(splits["train"].y), "test_size": len(test.y),
        **{f"{name}_size": len(splits[name].y) for name in held_out},
        "epochs": spec.epochs, "step_label": spec.step_label,
        "seconds": final["seconds"], "train_seconds": final["train_seconds"],
        "seed": trained.seed,
        "implementation": trained.implementation,
        "architecture": spec.architecture().describe(),
        "num_parameters": trained.network.num_parameters,
        "optimizer": spec.optimizer_label(),
        "published_accuracy": spec.published_accuracy,
        "settings": spec.settings(),
        **{f"macro_{key}": scores[f"macro_{key}"] for key in ("precision", "recall", "f1")},
        "per_class": {key: scores[key].tolist() for key in ("precision", "recall", "f1", "support")},
        "confusion_matrix": matrix.tolist(),
        "history": trained.history,
        "environment": describe_environment(),
    }
