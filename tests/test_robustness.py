"""Tests for common/robustness.py and experiments/robustness.py: each transform on known pixels, FGSM
raises a trained model's loss without moving any pixel by more than epsilon, saliency of a linear
model and of a convolutional one, the same transformed images for every model, the model cache
(today's models reused, stale ones trained again, the committed model for seed 0, a model of another
stage refused), the readings under the one rule for "better", a ``--quick`` run that writes every
output and a re-run that writes nothing, and bad options.

No test trains a real stage: training is replaced by a stand-in (an untrained tiny network, or a
one-epoch run on 600 images), and every model cache and output folder is a temporary one. The
end-to-end run is skipped if MNIST is not in the default data folder.
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mnist_available import needs_mnist
from PIL import Image

from common import models, robustness
from common.cli import run_cli
from common.nn.architecture import Architecture
from common.nn.errors import UserError
from common.nn.loss import softmax_cross_entropy
from common.nn.network import Network
from common.nn.optimizers import make_optimizer
from common.nn.train import train
from common.paths import RESULTS_DIR
from common.protocol import Split, StageSpec, TrainedStage
from common.protocol import train_stage as real_train_stage
from common.report import percent
from common.runs import fingerprint
from common.serialize import load_network, save_network
from common.stages import load_specs
from common.stats import RULE
from experiments import robustness as experiment

REPO = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIDE = 28
OUTPUTS = ["robustness.md", "robustness.csv", "robustness.png", "robustness_examples.png", "robustness_saliency.png"]
COLUMNS = ["clean", "shift_2px", "shift_4px", "rotate_15deg", "rotate_30deg", "scale_0.8", "scale_1.2",
           "noise_0.2", "noise_0.4", "occlusion_8x8", "fgsm_0.05", "fgsm_0.1", "fgsm_0.2"]
CONV = ("reshape 28x28x1", "conv 2 5x5 valid", "maxpool", "relu", "flatten", "dense 10")



def lit(row: int, col: int, count: int = 1) -> np.ndarray:
    """``count`` images ``(count, 784)``, each black but for the pixel ``(row, col)``."""
    images = np.zeros((count, SIDE, SIDE), dtype=np.float32)
    images[:, row, col] = 1.0
    return images.reshape(count, SIDE * SIDE)


def where_lit(images: np.ndarray) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in np.unravel_index(int(np.argmax(image)), (SIDE, SIDE))) for image in images]


# -- shifts ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dy, dx", [(2, 0), (-4, 0), (0, 3), (0, -1), (2, -2), (0, 0)])
def test_a_shift_moves_a_single_lit_pixel_by_exactly_the_shift(dy, dx):
    moved = robustness.shift_images(lit(10, 12), dy, dx).reshape(SIDE, SIDE)
    assert moved[10 + dy, 12 + dx] == 1.0 and moved.sum() == 1.0


def test_pixels_that_leave_are_lost_and_new_ones_are_zero():
    assert robustness.shift_images(lit(0, 5), -1, 0).sum() == 0  # off the top edge
    assert robustness.shift_images(np.ones((1, 784)), 0, SIDE + 3).sum() == 0  # moved further than the image
    moved = robustness.shift_images(np.ones((1, 784), dtype=np.float32), 4, -2).reshape(SIDE, SIDE)
    assert (moved[:4] == 0).all() and (moved[:, -2:] == 0).all() and moved.sum() == (SIDE - 4) * (SIDE - 2)


@pytest.mark.parametrize("distance", [2, 4])
def test_random_shifts_move_each_image_exactly_distance_pixels_in_one_of_four_directions(distance):
    moved = robustness.random_direction_shift(lit(14, 14, count=400), np.random.default_rng(0), distance)
    offsets = [(row - 14, col - 14) for row, col in where_lit(moved)]
    assert set(offsets) == {(-distance, 0), (distance, 0), (0, -distance), (0, distance)}
    again = robustness.random_direction_shift(lit(14, 14, count=400), np.random.default_rng(0), distance)
    assert np.array_equal(moved, again), "the same seed must give the same directions"


# -- rotation and scaling --------------------------------------------------------------------------

@pytest.mark.parametrize("degrees, quarter_turns", [(90, 1), (-90, -1), (180, 2), (270, 3)])
def test_a_quarter_turn_is_exact(degrees, quarter_turns):
    pattern = np.random.default_rng(1).random((3, 784)).astype(np.float32)
    turned = robustness.rotate(pattern, degrees).reshape(3, SIDE, SIDE)
    assert np.array_equal(turned, np.rot90(pattern.reshape(3, SIDE, SIDE), quarter_turns, axes=(1, 2)))


def test_positive_angles_turn_counter_clockwise_as_displayed():
    """A pixel in the top right corner goes to the top left after +90 degrees."""
    assert where_lit(robustness.rotate(lit(3, 20), 90)) == [(SIDE - 1 - 20, 3)]


def test_bilinear_rotation_agrees_with_pillow():
    """An independent implementation: Pillow's bilinear rotation about the centre, counter-clockwise."""
    image = np.random.default_rng(2).random((SIDE, SIDE)).astype(np.float32)
    pillow = np.asarray(Image.fromarray(image).rotate(15, resample=Image.Resampling.BILINEAR))
    ours = robustness.rotate(image.reshape(1, -1), 15).reshape(SIDE, SIDE)
    grid = np.arange(SIDE) - (SIDE - 1) / 2
    inside = np.hypot(grid[:, None], grid[None, :]) < 12  # whose source is well inside (the borders differ)
    assert np.abs(ours - pillow)[inside].max() < 1e-5


def test_random_rotation_turns_each_image_one_way_or_the_other():
    images = np.random.default_rng(3).random((200, 784)).astype(np.float32)
    turned = robustness.random_rotation(images, np.random.default_rng(0), 30)
    left, right = robustness.rotate(images, 30), robustness.rotate(images, -30)
    is_left = np.all(turned == left, axis=1)
    assert np.all(is_left | np.all(turned == right, axis=1)) and 0 < is_left.sum() < 200


def test_scale_by_one_and_rotation_by_zero_are_the_identity():
    images = np.random.default_rng(4).random((5, 784)).astype(np.float32)
    assert np.array_equal(robustness.scale(images, 1.0), images)
    assert np.array_equal(robustness.rotate(images, 0.0), images)


def test_scaling_grows_or_shrinks_the_ink_about_the_centre():
    grid = np.arange(SIDE) - (SIDE - 1) / 2
    blob = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * 3.0 ** 2)).reshape(1, -1).astype(np.float32)
    for factor in (0.8, 1.2):
        scaled = robustness.scale(blob, factor)
        assert scaled.sum() / blob.sum() == pytest.approx(factor ** 2, rel=0.03)
        assert where_lit(scaled) == where_lit(blob), "the centre stays where it is"
    with pytest.raises(ValueError):
        robustness.scale(blob, 0.0)


# -- noise and occlusion ---------------------------------------------------------------------------

def test_noise_with_std_zero_is_the_identity_and_noise_stays_in_0_1():
    images = np.random.default_rng(5).random((20, 784)).astype(np.float32)
    assert np.array_equal(robustness.gaussian_noise(images, np.random.default_rng(0), 0.0), images)
    loud = robustness.gaussian_noise(images, np.random.default_rng(0), 5.0)
    assert loud.min() == 0.0 and loud.max() == 1.0 and loud.dtype == np.float32
    grey = robustness.gaussian_noise(np.full((50, 784), 0.5, np.float32), np.random.default_rng(0), 0.2)
    assert float(np.std(grey)) == pytest.approx(0.2, rel=0.05)  # hardly clipped at 0.5 +- 2.5 std


def test_the_occluding_patch_zeroes_exactly_64_pixels_in_an_8x8_square_inside_the_image():
    hidden = robustness.occlude(np.ones((500, 784), dtype=np.float32), np.random.default_rng(0), size=8)
    places = set()
    for image in hidden.reshape(-1, SIDE, SIDE):
        rows, cols = np.nonzero(image == 0)
        assert len(rows) == 64
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
        places.add((rows.min(), cols.min()))
    assert len(places) > 100, "the place is drawn per image"
    assert {0, SIDE - 8} <= {row for row, _ in places}, "the patch reaches both edges, never beyond"


# -- a trained toy model ---------------------------------------------------------------------------

def toy_data(count: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes of noisy random strokes: a prototype per class plus noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((10, 784)) > 0.8).astype(np.float32)
    labels = rng.integers(0, 10, size=count)
    images = np.clip(prototypes[labels] + 0.3 * rng.standard_normal((count, 784)), 0, 1).astype(np.float32)
    return images, labels


@pytest.fixture(scope="module")
def toy_model() -> tuple[Network, np.ndarray, np.ndarray]:
    images, labels = toy_data()
    network = Network.from_sizes([784, 32, 10], np.random.default_rng(0))
    train(network, make_optimizer("adam", 0.001), images, labels, epochs=3, rng=np.random.default_rng(1),
          batch_size=64, progress=False)
    assert robustness.accuracy_on(network, images, labels, "unit") > 0.9
    return network, images, labels


def mean_loss(network: Network, images: np.ndarray, labels: np.ndarray) -> float:
    return softmax_cross_entropy(network.forward(images), labels)[0]


def test_fgsm_raises_the_loss_and_moves_every_pixel_by_at_most_epsilon_within_0_1(toy_model):
    network, images, labels = toy_model
    direction = robustness.fgsm_direction(network, images, labels, "unit")
    assert set(np.unique(direction)) <= {-1.0, 0.0, 1.0}
    losses = [mean_loss(network, images, labels)]
    for epsilon in (0.05, 0.1, 0.2):
        attacked = robustness.fgsm(images, direction, epsilon)
        assert np.abs(attacked - images).max() <= epsilon + 1e-6
        assert attacked.min() >= 0.0 and attacked.max() <= 1.0
        losses.append(mean_loss(network, attacked, labels))
    assert losses == sorted(losses) and losses[1] > losses[0], losses
    assert robustness.accuracy_on(network, robustness.fgsm(images, direction, 0.2), labels, "unit") < 0.5


def test_fgsm_works_in_chunks(toy_model):
    network, images, labels = toy_model
    whole = robustness.fgsm_direction(network, images, labels, "unit")
    network.chunk_rows = 7
    try:
        assert np.array_equal(robustness.fgsm_direction(network, images, labels, "unit"), whole)
    finally:
        network.chunk_rows = 8192


def test_a_raw_model_is_attacked_in_its_own_pixel_scale(toy_model):
    """A model on 0..255 pixels whose first weights are the unit model's / 255 computes the same
    function of the [0, 1] image: it gets the same attack and the same accuracies."""
    network, images, labels = toy_model
    raw = Network.from_sizes([784, 32, 10], np.random.default_rng(9))
    raw.flat_params[...] = network.flat_params
    first = next(raw.weighted_layers())
    first.params["W"][...] = network.layers[0].params["W"] / np.float32(255)
    unit_direction = robustness.fgsm_direction(network, images, labels, "unit")
    raw_direction = robustness.fgsm_direction(raw, images, labels, "raw")
    assert np.mean(unit_direction == raw_direction) > 0.999
    attacked = robustness.fgsm(images, raw_direction, 0.1)
    assert attacked.max() <= 1.0, "epsilon is applied in [0, 1] units, not 0..255"
    assert robustness.accuracy_on(raw, attacked, labels, "raw") == pytest.approx(
        robustness.accuracy_on(network, attacked, labels, "unit"), abs=0.01)


def test_the_gradient_pass_gives_the_test_time_logits_even_with_dropout():
    network = Network.from_sizes([784, 32, 10], np.random.default_rng(0), input_dropout=0.2, hidden_dropout=0.5)
    images, _ = toy_data(50)
    assert np.array_equal(network.forward(images, keep_for_backward=True), network.forward(images))


# -- saliency --------------------------------------------------------------------------------------

def test_the_saliency_of_a_linear_model_is_its_weight_column():
    network = Network.from_sizes([784, 10], np.random.default_rng(0))
    images, _ = toy_data(40)
    gradient, predicted = robustness.saliency(network, images, "unit")
    weights = network.layers[0].params["W"]
    assert np.array_equal(predicted, network.predict(images))
    assert np.allclose(gradient, weights[:, predicted].T, rtol=1e-6, atol=0)
    raw_gradient, raw_predicted = robustness.saliency(network, images, "raw")
    assert np.allclose(raw_gradient, 255 * weights[:, raw_predicted].T, rtol=1e-6, atol=0), "per [0, 1] pixel unit"


def test_the_saliency_of_a_convolutional_network_matches_finite_differences():
    architecture = Architecture(sizes=(784, 10), dtype="float64",
                                layers=("reshape 28x28x1", "conv 3 5x5 valid", "relu", "maxpool", "flatten", "dense 10"))
    network = Network.from_architecture(architecture, np.random.default_rng(0))
    image = np.random.default_rng(1).random((1, 784))
    gradient, predicted = robustness.saliency(network, image, "unit")
    k, h = int(predicted[0]), 1e-6
    for pixel in np.random.default_rng(2).choice(784, size=12, replace=False):
        up, down = image.copy(), image.copy()
        up[0, pixel] += h
        down[0, pixel] -= h
        numeric = (network.forward(up)[0, k] - network.forward(down)[0, k]) / (2 * h)
        assert gradient[0, pixel] == pytest.approx(numeric, rel=1e-4, abs=1e-7)


# -- the experiment: entries and measuring ---------------------------------------------------------

def tiny_spec(name: str = "04_fake", shift: int = 0, layers: tuple[str, ...] = (), **changes) -> StageSpec:
    """A stand-in stage: no file in stages/, a tiny network."""
    settings = {"optimizer": "adam", "lr": 0.001, "epochs": 1, "batch_size": 64, "train_size": 300, **changes}
    return StageSpec(name=name, title="tiny", adds="a test stand-in", sizes=(784, 10) if layers else (784, 16, 10),
                     shift=shift, layers=layers, **settings)


def entry_of(key: str, shift: int = 0, convolutional: bool = False, variant=None, number: str = "04") -> experiment.Entry:
    spec = tiny_spec(name=key if variant is None else variant.stage + "_base", shift=shift,
                     layers=CONV if convolutional else ())
    return experiment.Entry(key, key if variant is None else variant.label, number, spec, variant)


def model_of(entry: experiment.Entry, network, seed: int = 0, run: dict | None = None) -> experiment.Model:
    return experiment.Model(entry, seed, network, Path(f"/nowhere/{entry.key}/model.npz"), {"pixel_scale": "unit"},
                            run or {})


def test_every_model_sees_the_same_transformed_images_and_the_seed_fixes_them(toy_model, capsys):
    """Two models that are the same network must get identical accuracies in every column: they
    would not if each drew its own shifts, angles, noise or patches."""
    network, images, labels = toy_model
    models = [model_of(entry_of("a"), network), model_of(entry_of("b"), network)]
    measured, examples = experiment.measure(models, images, labels, 0, np.arange(6))
    assert set(measured.accuracy["a", 0]) == set(COLUMNS) and measured.accuracy["a", 0] == measured.accuracy["b", 0]
    again, _ = experiment.measure(models, images, labels, 0, np.arange(6))
    other, _ = experiment.measure(models, images, labels, 1, np.arange(6))
    assert again.accuracy == measured.accuracy and other.accuracy != measured.accuracy
    assert len(examples) == 1 + len(experiment.TRANSFORMS) and all(v.shape == (6, 784) for v in examples.values())
    assert all(counts.sum() == len(labels) for counts in measured.answers["a", 0].values())
    assert measured.background_share == pytest.approx(float(np.mean(images == 0)))
    # clip(0 + 0.4 z) has mean 0.4 / sqrt(2 pi) = 0.16 (less a hair clipped at 1): the reading's "about 0.16"
    assert measured.background["noise_0.4"] == pytest.approx(0.4 / np.sqrt(2 * np.pi), abs=0.003)


def seeds3(value: float, jitter: float = 0.002) -> list[float]:
    return [value - jitter, value + jitter, value]


def fake_measurement(rows: dict[str, dict[str, list[float]]], seeds: tuple[int, ...] = (0, 1, 2),
                     count: int = 10_000) -> experiment.Measurement:
    """Accuracies per seed; every column not given takes the row's clean ones. Every model answers each
    digit equally often, and the noise raises the background by 0.08 and 0.16."""
    measured = experiment.Measurement(list(seeds), count, np.full(10, count // 10), 0.81,
                                      background={"noise_0.2": 0.08, "noise_0.4": 0.16})
    for key, columns in rows.items():
        for i, seed in enumerate(seeds):
            measured.accuracy[key, seed] = {c: columns.get(c, columns["clean"])[i] for c in COLUMNS}
            measured.answers[key, seed] = {c: np.full(10, count // 10) for c in COLUMNS}
    return measured


def study() -> tuple[list[experiment.Entry], experiment.Measurement]:
    """A perceptron, a wide perceptron trained on shifts, a convolutional network and its no-shift variant."""
    variant = experiment.VARIANTS[0]
    entries = [entry_of("01_mlp"), entry_of("05_wide", shift=2), entry_of("06_conv", shift=2, convolutional=True, number="06"),
               entry_of(variant.key, convolutional=True, variant=variant, number="06")]
    measured = fake_measurement({
        "01_mlp": {"clean": seeds3(0.90), "shift_2px": seeds3(0.60), "shift_4px": seeds3(0.20, 0.01),
                   "noise_0.4": seeds3(0.70), "fgsm_0.1": seeds3(0.30)},
        "05_wide": {"clean": seeds3(0.99), "shift_2px": seeds3(0.97), "shift_4px": seeds3(0.925),
                    "noise_0.2": seeds3(0.64), "noise_0.4": seeds3(0.28), "fgsm_0.1": seeds3(0.40)},
        "06_conv": {"clean": seeds3(0.995), "shift_2px": seeds3(0.99), "shift_4px": seeds3(0.97, 0.003),
                    "noise_0.4": seeds3(0.20), "occlusion_8x8": seeds3(0.80), "fgsm_0.1": seeds3(0.60, 0.01)},
        variant.key: {"clean": seeds3(0.993, 0.003), "shift_2px": seeds3(0.95), "shift_4px": seeds3(0.70),
                      "noise_0.4": seeds3(0.25), "fgsm_0.1": seeds3(0.55)},
    })
    for seed, share in zip(measured.seeds, (6000, 6200, 6100)):
        measured.answers["06_conv", seed]["noise_0.4"] = np.array([0] * 8 + [share, 10_000 - share])
        measured.answers[variant.key, seed]["noise_0.4"] = np.array([10_000 - share + 500, 0, 0, 0, 0, 0, 0, 0,
                                                                     share - 500, 0])
    return entries, measured


def test_the_readings_follow_the_numbers():
    entries, measured = study()
    text = experiment.readings(entries, [], measured, 10_000, 0)
    shifts, worst, noise, attack, rankings, variant = text.split("\n")[:6]
    assert "06_conv holds up best: it goes from 99.50 ± 0.20 % to 99.00 ± 0.20 % at 2 and 97.00 ± 0.30 % at 4" \
        in shifts and "01_mlp holds up least: it goes from 90.00 ± 0.20 %" in shifts and "2.50 ± 0.06 points lost" in shifts
    assert "05_wide and 06_conv were trained on digits shifted" in shifts and "are convolutional" in shifts
    assert "01_mlp: shift 4 px (90.00 ± 0.20 → 20.00 ± 1.00 %, 70.00 ± " in worst
    assert "05_wide: noise 0.4 (99.00 ± 0.20 → 28.00 ± 0.20 %, 71.00 ± 0.00 points lost)" in worst, "per stage, not averaged"
    assert "06_conv: noise 0.4" in worst
    assert "06_conv keeps 20.00 ± 0.20 % and answers 8 for 61.00 ± 1.00 % of them" in noise
    assert "06_conv, no shifts keeps 25.00 ± 0.20 % and answers 8 for 56.00 ± 1.00 %" in noise
    assert "8 is the label of 10.00 % of the images" in noise and "81 % of the pixels) by 0.16 on average" in noise
    assert "shift equivariance" in noise
    assert "01_mlp from 90.00 ± 0.20 % to 30.00 ± 0.20 %" in attack and "06_conv resists it best" in attack
    assert "the attack costs distinguishably more than that noise" in attack and "01_mlp and 05_wide" not in attack
    assert "06_conv, the best on the digits as they are" in rankings and "noise 0.4 (01_mlp 70.00 ± 0.20 %" in rankings
    assert variant.startswith("* **06_conv, no shifts** (stage 06 trained on the digits as they are")
    assert "At shift 4 px it keeps 70.00 ± 0.20 % against 97.00 ± 0.30 % for 06_conv (06_conv minus it: +27.00" in variant
    assert "20.00 ± 1.00 % for 01_mlp, the best there of the stages trained without shifts" in variant
    assert "distinguishable" in variant
    assert text.count(RULE) == 1 and "sqrt(p (1 - p) / 10,000)" in text and "0.50 points at 50 %" in text


def test_what_hurts_most_names_the_transforms_the_seeds_cannot_separate_from_it():
    measured = fake_measurement({"a": {"clean": seeds3(0.95), "shift_4px": [0.30, 0.40, 0.35],
                                       "noise_0.4": [0.36, 0.31, 0.37]}})
    text = experiment.read_worst_transform([entry_of("a")], measured)
    assert "a: noise 0.4" in text and "not distinguishable from shift 4 px (" in text


def test_the_readings_say_not_distinguishable_when_three_seeds_cannot_separate_the_stages():
    entries = [entry_of("one"), entry_of("two")]
    measured = fake_measurement({"one": {"clean": [0.95, 0.96, 0.97], "shift_4px": [0.80, 0.83, 0.77],
                                         "fgsm_0.1": [0.30, 0.33, 0.27]},
                                 "two": {"clean": [0.96, 0.95, 0.97], "shift_4px": [0.82, 0.78, 0.81],
                                         "fgsm_0.1": [0.31, 0.28, 0.33]}})
    text = experiment.readings(entries, [], measured, 10_000, 0)
    assert "no stage holds up distinguishably better" in text and "holds up best" not in text
    assert "none resists it distinguishably better" in text and "resists it best" not in text
    assert "stays the best, or not distinguishable from the best, under every transform" in text


def test_one_seed_gives_numbers_and_no_verdict():
    entries, three = study()
    one = fake_measurement({e.key: {c: [three.accuracy[e.key, 0][c]] for c in COLUMNS} for e in entries}, seeds=(0,))
    text = experiment.readings(entries, [], one, 10_000, 0)
    assert "one seed: no verdict on which holds up best" in text and "holds up best:" not in text
    assert "one seed: no verdict on which resists it best" in text and "resists it best" not in text.replace(
        "no verdict on which resists it best", "")
    assert "**Rankings.** One seed per stage: no verdict" in text and "overtaken" not in text
    assert "one seed: no verdict" in text.split("\n")[5], "the variant's comparisons too"
    assert "no verdict" in text and " distinguishable" not in text
    assert text.count(RULE) == 1


def test_the_clean_column_is_checked_against_the_test_accuracy_recorded_in_training():
    entry = entry_of("a")
    measured = fake_measurement({"a": {"clean": [0.9]}}, seeds=(0,))
    models = [model_of(entry, None, run={"test_accuracy": 0.9})]
    assert "equals the test accuracy recorded when each of these 1 models" in experiment.read_clean(models, measured, 10_000)
    assert experiment.read_clean(models, measured, 20_000) == "", "a sample is not the whole test set"
    models[0].run["test_accuracy"] = 0.9002
    assert "differs from the 90.02 % recorded when it was trained" in experiment.read_clean(models, measured, 10_000)


# -- the model cache -------------------------------------------------------------------------------

@pytest.fixture
def stand_in_training(monkeypatch) -> list[tuple[str, int, int]]:
    """common.models.train_stage replaced by a stand-in that returns an untrained network of the spec;
    returns the list of (stage, shift, seed) it was asked to train."""
    calls = []
    images, labels = toy_data(50)

    def untrained(spec, seed, data, progress=True, book=None):
        calls.append((spec.name, spec.shift, seed))
        network = Network.from_architecture(spec.architecture(), np.random.default_rng(seed))
        return TrainedStage(spec, seed, network, [{"seconds": 0.5}], {"test": Split(images, labels)},
                            network.predict_proba(images), np.random.default_rng(0))

    monkeypatch.setattr(models, "train_stage", untrained)
    return calls


def save_as(path: Path, spec: StageSpec, seed: int = 0, **metadata) -> Path:
    network = Network.from_architecture(spec.architecture(), np.random.default_rng(7))
    described = {"stage": spec.name, "pixel_scale": "unit", "seed": seed, "implementation": "fast core",
                 "fingerprint": fingerprint(spec, seed), **metadata}
    return save_network(path, network, described)


def test_a_missing_model_is_trained_saved_in_the_cache_and_then_reused(tmp_path, stand_in_training, capsys):
    entry = experiment.Entry("04_fake", "04_fake", "04", tiny_spec())
    cache = tmp_path / "cache"
    models = experiment.gather_models([entry], [0, 1], None, cache, tmp_path / "committed", progress=False)
    assert stand_in_training == [("04_fake", 0, 0), ("04_fake", 0, 1)]
    path = cache / "04_fake" / "seed1" / "model.npz"
    assert models["04_fake"][1].path == path
    _, metadata = load_network(path)
    assert metadata["fingerprint"] == fingerprint(entry.spec, 1) and metadata["implementation"] == "fast core"
    assert metadata["stage"] == "04_fake" and metadata["seed"] == 1 and metadata["environment"]["command"]
    out = capsys.readouterr().out
    assert out.count("trained: test") == 2 and "[2/2 runs, 2 trained" in out
    again = experiment.gather_models([entry], [0, 1], None, cache, tmp_path / "committed", progress=False)
    assert len(stand_in_training) == 2, "today's models are reused, not trained again"
    assert "[2/2 runs, 0 trained" in capsys.readouterr().out
    assert np.array_equal(again["04_fake"][1].network.flat_params, models["04_fake"][1].network.flat_params)


def test_a_model_of_other_settings_or_another_implementation_is_trained_again(tmp_path, stand_in_training, capsys):
    cache = tmp_path / "cache"
    save_as(cache / "04_fake" / "seed0" / "model.npz", tiny_spec(lr=0.01))
    entry = experiment.Entry("04_fake", "04_fake", "04", tiny_spec())
    experiment.gather_models([entry], [0], None, cache, None, progress=False)
    assert stand_in_training == [("04_fake", 0, 0)] and "its fingerprint is not today's" in capsys.readouterr().out
    save_as(cache / "04_fake" / "seed0" / "model.npz", tiny_spec(), implementation="the textbook (common.nn.reference)")
    experiment.gather_models([entry], [0], None, cache, None, progress=False)
    assert len(stand_in_training) == 2 and "not the fast core" in capsys.readouterr().out


def test_the_committed_model_serves_seed_0_of_the_stage_as_it_is_only(tmp_path, stand_in_training):
    spec, committed = tiny_spec(), tmp_path / "committed"
    path = save_as(committed / "04_fake" / "model.npz", spec)
    (committed / "04_fake" / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5, "environment": {"date": "x"}}))
    variant = experiment.Variant("04_fake-slow", "04", "04_fake, slower", {"lr": 0.0001}, "shift_4px", "p", "q")
    entries = experiment.study_entries({"04": spec}, quick=False, variants=[variant])
    assert [e.key for e in entries] == ["04_fake", "04_fake-slow"] and entries[1].spec.lr == 0.0001
    models = experiment.gather_models(entries, [0, 1], None, tmp_path / "cache", committed, progress=False)
    assert models["04_fake"][0].path == path and models["04_fake"][0].run == {"test_accuracy": 0.5,
                                                                              "environment": {"date": "x"}}
    assert sorted(stand_in_training) == [("04_fake", 0, 0), ("04_fake", 0, 1), ("04_fake", 0, 1)]
    assert models["04_fake-slow"][0].path == tmp_path / "cache" / "04_fake-slow" / "seed0" / "model.npz"


@pytest.mark.parametrize("where", ["committed", "cache"])
def test_a_model_of_another_stage_is_refused_in_one_line(tmp_path, stand_in_training, where):
    """A stage-01 model put in 04_fake's folder is not today's 04_fake: it is refused, not silently retrained over."""
    path = (tmp_path / "committed" / "04_fake" / "model.npz" if where == "committed"
            else tmp_path / "cache" / "04_fake" / "seed0" / "model.npz")
    save_as(path, tiny_spec(name="01_other"))
    entry = experiment.Entry("04_fake", "04_fake", "04", tiny_spec())
    with pytest.raises(UserError, match="holds a model of stage 01_other, not of 04_fake") as error:
        experiment.gather_models([entry], [0], None, tmp_path / "cache", tmp_path / "committed", progress=False)
    assert "\n" not in str(error.value) and stand_in_training == []


def test_without_training_a_stage_missing_a_model_is_left_out(tmp_path, stand_in_training, capsys):
    spec = tiny_spec()
    save_as(tmp_path / "cache" / "04_fake" / "seed0" / "model.npz", spec)
    entry = experiment.Entry("04_fake", "04_fake", "04", spec)
    models = experiment.gather_models([entry], [0, 1], None, tmp_path / "cache", None, train=False)
    assert models == {} and stand_in_training == []
    assert "04_fake: no model of today's code for seed 1" in capsys.readouterr().out
    assert set(experiment.gather_models([entry], [0], None, tmp_path / "cache", None, train=False)) == {"04_fake"}


# -- the command line ------------------------------------------------------------------------------

def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "experiments/robustness.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_only_the_full_run_writes_into_results():
    full = experiment.parse_args([])
    assert full.out == experiment.DEFAULT_OUT and full.seeds == [0, 1, 2] and full.images is None
    for args in (["--seeds", "0"], ["--stages", "04"], ["--images", "100"], ["--seed", "3"], ["--sample-seed", "3"]):
        assert experiment.parse_args(args).out == experiment.LOCAL_OUT, args
    quick = experiment.parse_args(["--quick"])
    assert quick.out == experiment.QUICK_OUT and quick.seeds == [0] and quick.images == experiment.QUICK_IMAGES


@pytest.fixture
def tiny_training(monkeypatch) -> list[tuple[str, int, int]]:
    """common.models.train_stage replaced by one epoch of the (quick) spec on 600 real images."""
    calls = []

    def one_epoch(spec, seed, data, progress=True, book=None):
        calls.append((spec.name, spec.shift, seed))
        trained = real_train_stage(dataclasses.replace(spec, train_size=600, epochs=1, eval_every=1), seed, data, False)
        trained.spec = spec  # saved as the model of the spec asked for
        return trained

    monkeypatch.setattr(models, "train_stage", one_epoch)
    return calls


@needs_mnist
def test_a_quick_run_writes_every_output_and_a_rerun_writes_nothing(tmp_path, monkeypatch, tiny_training, capsys):
    monkeypatch.setattr(experiment, "QUICK_MODELS_CACHE", tmp_path / "cache")
    out = tmp_path / "out"
    args = ["--quick", "--stages", "06", "--seeds", "0,1", "--images", "200", "--out", str(out)]
    assert experiment.main(args) == 0
    assert sorted(tiny_training) == [("06_conv", 0, 0), ("06_conv", 0, 1), ("06_conv", 2, 0), ("06_conv", 2, 1)]
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
    frame = pd.read_csv(out / "robustness.csv")
    assert list(zip(frame["key"], frame["seed"])) == [("06_conv", 0), ("06_conv", 1), ("06_conv-no-shifts", 0),
                                                      ("06_conv-no-shifts", 1)]
    assert (frame["images"] == 200).all() and all(((frame[c] >= 0) & (frame[c] <= 100)).all() for c in COLUMNS)
    markdown = (out / "robustness.md").read_text(encoding="utf-8")
    for text in ("Quick mode", "**Shifts.**", "**What hurts most.**", "**Noise and convolution.**", "**Attack.**",
                 "**06_conv, no shifts**", RULE, "| 06_conv, no shifts ", "robustness.png", "robustness_examples.png",
                 "robustness_saliency.png", "The models were trained in 4 runs", "Produced by `"):
        assert text in markdown, text
    assert not [p for p in out.rglob(".*")], "temporary files left behind"
    written = {path: path.stat().st_mtime_ns for path in out.iterdir()}
    stamp = json.loads((out / "robustness.json").read_text())["rendered_from"]
    capsys.readouterr()
    assert experiment.main(args) == 0
    assert "nothing written" in capsys.readouterr().out and len(tiny_training) == 4
    assert {path: path.stat().st_mtime_ns for path in out.iterdir()} == written, "an unchanged re-run touched a file"
    assert experiment.main([*args, "--images", "150"]) == 0 and len(tiny_training) == 4
    assert json.loads((out / "robustness.json").read_text())["rendered_from"] != stamp
    assert (pd.read_csv(out / "robustness.csv")["images"] == 150).all()


@needs_mnist
def test_no_model_and_no_training_gives_one_line(tmp_path, monkeypatch, stand_in_training, capsys):
    monkeypatch.setattr(experiment, "MODELS_CACHE", tmp_path / "cache")
    monkeypatch.setattr(experiment, "COMMITTED_MODELS", tmp_path / "committed")
    code = run_cli(experiment.main, ["--stages", "04", "--no-train", "--images", "50", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2 and "left out (--no-train)" in captured.out and stand_in_training == []
    assert captured.err.startswith("error: no stage model") and len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["--images", "0"], ["--stages", "99"], ["--seed", "-1"], ["--bogus"],
                                  ["--stages", ""], ["--images", "many"], ["--seeds", "-1"], ["--seeds", "0,0"],
                                  ["--seeds", "one"], ["--sample-seed", "-2"]])
def test_bad_options_give_one_line_and_exit_2(args):
    result = run(*args, timeout=120)
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


def test_an_output_folder_that_is_a_file_gives_one_line(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("--quick", "--stages", "04", "--out", str(blocker / "sub"), timeout=120)
    assert result.returncode == 2 and result.stderr.strip().startswith("error:")
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_committed_table_covers_every_stage_and_variant_over_three_seeds():
    """results/robustness.csv has a row for every stage in stages/ and every variant, each with seeds 0, 1
    and 2; the markdown shows each row's mean ± sd; a row measuring a committed stage model has that
    stage's committed test accuracy as its clean accuracy."""
    frame = pd.read_csv(RESULTS_DIR / "robustness.csv")
    if "seed" not in frame.columns:
        pytest.skip("results/robustness.csv predates the three-seed study: regenerate it with "
                    "python experiments/robustness.py")
    entries = experiment.study_entries(load_specs(), quick=False)
    assert sorted(zip(frame["key"], frame["seed"])) == sorted((e.key, s) for e in entries for s in experiment.FULL_SEEDS)
    assert (frame["images"] == 10_000).all()
    stamp = json.loads((RESULTS_DIR / "robustness.json").read_text(encoding="utf-8"))
    assert stamp["options"]["seeds"] == experiment.FULL_SEEDS and stamp["rendered_from"]
    markdown = (RESULTS_DIR / "robustness.md").read_text(encoding="utf-8")
    assert "python3 experiments/robustness.py" in markdown or "python experiments/robustness.py" in markdown
    for entry in entries:
        rows = frame[frame["key"] == entry.key].sort_values("seed")
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {entry.label} "))
        cells = [cell.strip() for cell in line.strip("|").split("|")][1:]
        assert cells == [percent(list(rows[column] / 100)) for column in COLUMNS], entry.key
    for _, row in frame[frame["model"].str.startswith("results/stages/")].iterrows():
        metrics = json.loads((REPO / row["model"]).with_name("metrics.json").read_text(encoding="utf-8"))
        assert row["clean"] == round(100 * metrics["test_accuracy"], 2), row["model"]


def test_fgsm_keeps_the_true_class_part_of_the_gradient_for_a_confident_prediction():
    """A linear model 30 logits sure of class 0: float32 rounds p_0 to exactly 1, so the textbook p - y
    loses its true-class entry and the gradient only raises the other classes. The attack's direction
    must be the sign of the exact gradient, sum_j p_j (W_j - W_0), which also lowers class 0."""
    network = Network.from_sizes([4, 3], np.random.default_rng(0))
    layer = next(network.weighted_layers())
    layer.params["W"][...] = np.array([[10.0, 0.0, 3.0], [10.0, 2.0, 0.0], [0.0, -1.0, 1.0], [5.0, 1.0, 1.0]])
    layer.params["b"][...] = 0.0
    x = np.array([[1.0, 1.0, 0.0, 1.0]], dtype=np.float32)  # logits 25, 3, 4: p_0 = 1 - 8e-10
    logits = network.forward(x)
    assert softmax_cross_entropy(logits, np.array([0]))[1][0, 0] == 0.0  # the float32 textbook entry is gone
    W = layer.params["W"].astype(np.float64)
    z = x.astype(np.float64) @ W
    p = np.exp(z - z.max())
    p /= p.sum()
    exact = (p[0, 1] * (W[:, 1] - W[:, 0]) + p[0, 2] * (W[:, 2] - W[:, 0]))[None, :]
    direction = robustness.fgsm_direction(network, x / 1.0, np.array([0]), "unit")
    np.testing.assert_array_equal(direction, np.sign(exact).astype(np.float32))
    assert direction[0, 0] == -1.0, "the pixel that feeds class 0 most is darkened, not left alone"
