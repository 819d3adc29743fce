"""The numbers and identities of docs/math.md, recomputed: raw pixels as a 255^2 learning rate on the
first layer, the order of weight decay, stage 01's starting statistics on the real MNIST, the cost
of skipping dLoss/dPixels, the mini-batch count, the warm-up, and the figures quoted from results/.

Each test also checks that the page states the number it recomputes, so the two cannot drift apart.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from mnist_available import needs_mnist

from common.data import load_mnist
from common.nn.loss import softmax_cross_entropy
from common.nn.network import Network
from common.nn.optimizers import Adam, GradientDescent, ParamGroup
from common.nn.schedules import cosine
from common.paths import DEFAULT_DATA_DIR, REPO_ROOT, RESULTS_DIR
from common.stages import load_specs

PAGE = (REPO_ROOT / "docs" / "math.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text under the heading ``title`` (any level) up to the next heading of the same or a higher level."""
    lines = PAGE.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("#").strip() == title and line.startswith("#"))
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level), len(lines))
    return "\n".join(lines[start:end])


def load_json(path: str) -> dict:
    return json.loads((RESULTS_DIR / path).read_text(encoding="utf-8"))


# -- Raw pixels are a hidden learning-rate change -------------------------------------------------

def twin_networks() -> tuple[Network, Network]:
    """The same [784, 16, 10] ReLU network twice (stage 01's 0.001 * randn start, float64); the second
    gets first-layer weights W' = 255 W, to be fed pixels in [0, 1]."""
    raw, unit = (Network.from_sizes([784, 16, 10], np.random.default_rng(0), init="normal", init_scale=0.001,
                                    dtype="float64") for _ in range(2))
    next(unit.weighted_layers()).params["W"] *= 255.0
    return raw, unit


def pixels(rng: np.random.Generator, rows: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``(x_raw, x)``: random 0..255 pixel values and the same divided by 255."""
    x_raw = rng.integers(0, 256, size=(rows, 784)).astype(np.float64)
    return x_raw, x_raw / 255.0


def test_raw_pixels_with_W_give_the_same_logits_as_unit_pixels_with_255_W():
    raw, unit = twin_networks()
    x_raw, x = pixels(np.random.default_rng(1))
    np.testing.assert_allclose(raw.forward(x_raw, training=True), unit.forward(x, training=True), rtol=1e-12, atol=1e-15)


def test_one_step_of_rate_eta_on_raw_pixels_is_rate_255_squared_eta_on_the_first_layer():
    raw, unit = twin_networks()
    rng = np.random.default_rng(2)
    x_raw, x = pixels(rng)
    y = rng.integers(0, 10, size=len(x))
    loss_raw, dlogits_raw = softmax_cross_entropy(raw.forward(x_raw, training=True), y)
    loss_unit, dlogits_unit = softmax_cross_entropy(unit.forward(x, training=True), y)
    assert loss_raw == pytest.approx(loss_unit, rel=1e-12)
    raw.backward(dlogits_raw)
    unit.backward(dlogits_unit)
    raw_layers, unit_layers = list(raw.weighted_layers()), list(unit.weighted_layers())
    # dW = X_raw^T dZ = 255 X^T dZ = 255 dW'; every other gradient is the same
    np.testing.assert_allclose(raw_layers[0].grads["W"], 255.0 * unit_layers[0].grads["W"], rtol=1e-10, atol=1e-15)
    assert np.abs(raw_layers[0].grads["W"]).max() > 0

    eta = 0.002  # stage 01's rate
    GradientDescent(eta).step([ParamGroup(*named) for named in raw.named_parameters()])
    unit_params = [ParamGroup(*named) for named in unit.named_parameters()]
    GradientDescent(255**2 * eta).step([p for p in unit_params if p.name == "0.W"])
    GradientDescent(eta).step([p for p in unit_params if p.name != "0.W"])

    np.testing.assert_allclose(unit_layers[0].params["W"], 255.0 * raw_layers[0].params["W"], rtol=1e-12, atol=1e-13)
    for key in ("b",):
        np.testing.assert_allclose(unit_layers[0].params[key], raw_layers[0].params[key], rtol=1e-12, atol=1e-15)
    for key in ("W", "b"):
        np.testing.assert_allclose(unit_layers[1].params[key], raw_layers[1].params[key], rtol=1e-12, atol=1e-15)
    # ... so the two networks still compute the same logits after the step
    np.testing.assert_allclose(raw.forward(x_raw), unit.forward(x), rtol=1e-10, atol=1e-13)


def test_stage_01_first_layer_rate_in_the_unit_picture():
    assert 255**2 == 65_025
    assert f"{0.002 * 255**2:.2f}" == "130.05"
    text = section("Raw pixels are a hidden learning-rate change")
    assert "65{,}025" in text and "130.05" in text and "0.002" in text


# -- Weight decay ----------------------------------------------------------------------------------

def test_weight_decay_order_worked_example():
    theta, delta, eta_lambda = 1.0, 0.3, 0.05
    decay_first = (1 - eta_lambda) * theta - delta
    decay_after = (1 - eta_lambda) * (theta - delta)
    assert decay_first == pytest.approx(0.65, abs=1e-12)
    assert decay_after == pytest.approx(0.665, abs=1e-12)
    assert decay_after - decay_first == pytest.approx(eta_lambda * delta, abs=1e-12)
    assert f"{eta_lambda * delta:.3f}" == "0.015"
    text = section("Weight decay")
    assert all(s in text for s in ("0.65", "0.665", "0.015", "\\eta\\lambda = 0.05", "\\delta = 0.3"))


@pytest.mark.parametrize("optimizer", [GradientDescent(lr=0.1, weight_decay=0.5), Adam(lr=0.3, weight_decay=1 / 6)],
                         ids=["gd", "adam"])
def test_optimizers_decay_before_the_step(optimizer):
    """lr * weight_decay = 0.05 and a first step of 0.3 (gradient descent: 0.1 * 3; Adam's first step is
    lr * g / |g|): decaying first gives 0.65, decaying after would give 0.665. Biases are not decayed."""
    weights, bias = np.array([1.0]), np.array([1.0])
    optimizer.step([ParamGroup("weights", weights, np.array([3.0]), decay=True),
                    ParamGroup("biases", bias, np.array([3.0]), decay=False)])
    assert weights[0] == pytest.approx(0.65, abs=1e-7)
    assert bias[0] == pytest.approx(0.7, abs=1e-7)


# -- Initialisation: stage 01's starting point on the real MNIST -----------------------------------

def pooled_std_of_layers(images: np.ndarray, w1: np.ndarray, w2: np.ndarray, rows: int = 10_000) -> tuple[float, float]:
    """Standard deviation of every entry of ``Z1 = X @ w1`` and of the logits ``max(0, Z1) @ w2``, in blocks."""
    sums = np.zeros((2, 3))  # per array: count, sum, sum of squares
    for start in range(0, len(images), rows):
        z1 = images[start:start + rows].astype(np.float64) @ w1
        logits = np.maximum(z1, 0.0) @ w2
        for k, values in enumerate((z1, logits)):
            sums[k] += (values.size, values.sum(), np.square(values).sum())
    return tuple(math.sqrt(ss / n - (s / n) ** 2) for n, s, ss in sums)


@needs_mnist
def test_stage_01_starting_statistics_on_the_real_mnist():
    images = load_mnist(DEFAULT_DATA_DIR, fetch=False, progress=False).train_images
    assert images.shape == (60_000, 784) and images.dtype == np.uint8
    as_float = images.astype(np.float64)
    mean_square_norm = float(np.einsum("ij,ij->i", as_float, as_float).mean())
    assert f"{mean_square_norm / 1e6:.2f}" == "5.71"
    assert f"{mean_square_norm / 784 / 255**2:.3f}" == "0.112"
    # std(Z1) = 0.001 * sqrt(mean ||x||^2), and the logits 0.001 * sqrt(1000 / 2) times that
    assert f"{0.001 * math.sqrt(mean_square_norm):.2f}" == "2.39"
    assert f"{0.001 * math.sqrt(500) * 0.001 * math.sqrt(mean_square_norm):.3f}" == "0.053"
    assert f"{0.001 * math.sqrt(5.71e6):.2f}" == "2.39" and f"{0.001 * math.sqrt(500) * 2.39:.3f}" == "0.053"
    assert f"{1 / math.sqrt(1000 * 1e-6 / 2):.1f}" == "44.7" and f"{1 / math.sqrt(128 * 1e-6 / 2):.0f}" == "125"

    rng = np.random.default_rng(0)  # the draw the page names
    w1 = 0.001 * rng.standard_normal((784, 1000))
    w2 = 0.001 * rng.standard_normal((1000, 10))
    z1_std, logit_std = pooled_std_of_layers(images, w1, w2)
    assert f"{z1_std:.2f}" == "2.41"
    assert f"{logit_std:.3f}" == "0.045"

    text = section("Worked example: stage 01")
    for number in ("5.71 \\times 10^6", "0.112", "= 2.39", "= 0.053", "2.41", "0.045", "default_rng(0)", "44.7"):
        assert number in text, number


def test_stage_01_first_loss_is_close_to_ln_10():
    first = load_json("runs/01/seed0.json")["history"][0]
    assert first["epoch"] == 1
    assert f"{first['loss']:.3f}" == "2.308" and f"{math.log(10):.3f}" == "2.303"
    assert "2.308" in section("Worked example: stage 01")


# -- Backpropagation: the cost of the skipped input gradient ---------------------------------------

def test_skipping_dloss_dpixels_saves_31_percent_of_the_step_without_the_skip():
    sizes = [784, 128, 64, 10]
    products = [n_in * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    forward = weight_gradients = sum(products)
    input_gradients = sum(products[1:])  # dA[2] and dA[1]; dA[0] skipped
    skipped = products[0]
    with_skip = forward + weight_gradients + input_gradients
    without_skip = with_skip + skipped
    assert (forward, input_gradients, skipped) == (109_184, 8_832, 100_352)
    assert (with_skip, without_skip) == (227_200, 327_552)
    assert (2 * with_skip, 2 * without_skip, 2 * skipped) == (454_400, 655_104, 200_704)
    assert f"{skipped / without_skip:.3f}" == "0.306" and round(100 * skipped / without_skip) == 31
    assert f"{skipped / with_skip:.3f}" == "0.442" and f"{without_skip / with_skip:.2f}" == "1.44"
    assert f"{60_000 * 2 * with_skip:.1e}" == "2.7e+10"
    text = section("Backpropagation through a dense layer")
    for number in ("100{,}352", "327{,}552", "227{,}200", "0.306", "0.442", "1.44", "31 %", "200,704"):
        assert number in text, number


# -- Mini-batches and the warm-up ------------------------------------------------------------------

def test_batches_of_128_per_epoch():
    batches = math.ceil(60_000 / 128)
    assert (batches, 60_000 - (batches - 1) * 128) == (469, 96)
    text = section("Gradient descent and mini-batches")
    assert "B = 128" in text and "= 469" in text and "= 96" in text and "B = 64" not in PAGE


def test_warm_up_epochs_are_below_the_peak():
    stage05 = cosine(0.001, 30, warmup=1)
    assert stage05(0) == pytest.approx(0.0005) and stage05(1) == pytest.approx(0.001)
    schedule = cosine(1.0, 10, warmup=3)
    assert [schedule(e) for e in range(4)] == pytest.approx([1 / 4, 2 / 4, 3 / 4, 1.0])
    assert "\\frac{e + 1}{W + 1}" in section("Learning-rate schedules")


# -- What sets the learning rate: the figures quoted from results/ ---------------------------------

def validation_percent(name: str, **setting) -> str:
    frame = pd.read_csv(RESULTS_DIR / "tuning" / f"{name}.csv")
    for key, value in setting.items():
        frame = frame[frame[key] == value]
    assert len(frame) == 1, setting
    return f"{100 * frame['val_accuracy'].iloc[0]:.2f}"


def test_quoted_tuning_results():
    text = section("What sets the learning rate")
    stage02 = [validation_percent("02_deep_relu", lr=lr) for lr in (0.1, 0.2, 0.5, 1.0)]
    assert stage02 == ["93.03", "94.94", "96.43", "96.16"]
    assert "93.03, 94.94, 96.43 and 96.16 %" in text
    assert [validation_percent("03_minibatch", lr=lr) for lr in (0.3, 0.5)] == ["97.85", "97.73"]
    frame = pd.read_csv(RESULTS_DIR / "tuning" / "03_minibatch.csv")
    assert frame.loc[frame["val_accuracy"].idxmax(), "lr"] == 0.3
    adam = pd.read_csv(RESULTS_DIR / "tuning" / "04_adam.csv").groupby(["schedule", "epochs"])["val_accuracy"]
    means, spreads = 100 * adam.mean(), 100 * adam.std()
    assert [f"{means[('cosine', e)]:.2f}" for e in (10, 20, 30)] == ["97.58", "97.74", "97.81"]
    assert [f"{means[('constant', e)]:.2f}" for e in (10, 20, 30)] == ["97.56", "97.38", "97.87"]
    assert (f"{spreads.min():.2f}", f"{spreads.max():.2f}") == ("0.08", "0.33")
    assert adam.count().eq(3).all() and means.idxmax() == ("constant", 30)
    for quoted in ("97.58, 97.74 and 97.81 %", "97.56, 97.38 and 97.87 %", "0.08 to 0.33 points",
                   "30 epochs at the published constant rate"):
        assert quoted in text, quoted
    spec = load_specs()["04"]
    assert (spec.epochs, spec.schedule, spec.lr) == (30, "constant", 0.001)


def test_quoted_stage_02_run():
    history = load_json("runs/02/seed0.json")["history"]
    assert len(history) == 400 and [h["epoch"] for h in history] == list(range(1, 401))
    losses = [h["loss"] for h in history]
    rises = [i for i in range(1, len(losses)) if losses[i] > losses[i - 1]]
    assert len(rises) == 63
    first = rises[0]  # index i: iteration i + 1 against iteration i
    assert (first, f"{losses[first - 1]:.3f}", f"{losses[first]:.3f}") == (4, "1.715", "2.022")
    accuracy = [h["test_accuracy"] for h in history if h["test_accuracy"] is not None]
    assert len(accuracy) == 20 and max(a - b for a, b in zip(accuracy, accuracy[1:])) < 0.002, "keeps climbing"
    text = section("What sets the learning rate")
    for number in ("63 times in 400", "1.715 at iteration 4", "2.022 at iteration 5", "keeps climbing"):
        assert number in text, number


# -- Convolution and max-pooling: stage 06's parameters and arithmetic ------------------------------

def test_stage_06_parameter_and_multiply_add_counts():
    from common.nn.architecture import Architecture, walk_layers

    specs = load_specs()
    stage06, stage05 = specs["06"], specs["05"]
    assert stage06.sizes == (784, 10) and stage06.init == "he" and stage06.shift > 0
    assert stage06.layers == ("reshape 28x28x1", "conv 32 5x5 valid", "maxpool", "relu", "conv 64 5x5 valid",
                              "maxpool", "relu", "flatten", "dense 256", "relu", "dense 10")
    walked = walk_layers(784, stage06.layers)
    weighted = [layer for layer in walked if layer.param_shapes]
    params = [math.prod(layer.param_shapes["W"]) + math.prod(layer.param_shapes["b"]) for layer in weighted]
    # a conv weight is used at every output position; a dense weight once
    madds = [math.prod(layer.param_shapes["W"]) * (math.prod(layer.out_shape[:2]) if layer.kind == "conv" else 1)
             for layer in weighted]
    assert params == [832, 51_264, 262_400, 2_570] and sum(params) == 317_066
    assert madds == [460_800, 3_276_800, 262_144, 2_560] and sum(madds) == 4_002_304
    assert [layer.out_shape for layer in walked if layer.kind in ("conv", "maxpool", "flatten")] == [
        (24, 24, 32), (12, 12, 32), (8, 8, 64), (4, 4, 64), (1024,)]
    assert Architecture(sizes=stage06.sizes, layers=stage06.layers).num_parameters == 317_066
    assert Network.from_architecture(Architecture(sizes=stage06.sizes, layers=stage06.layers),
                                     np.random.default_rng(0)).num_parameters == 317_066

    assert stage05.sizes == (784, 800, 800, 10)
    perceptron = Architecture(sizes=stage05.sizes)
    assert perceptron.num_parameters == 1_276_810 and round(1_276_810 / 317_066) == 4
    assert 262_400 / 317_066 > 0.5  # "most of stage 06's sit in its first dense layer"
    perceptron_madds = sum(n_in * n_out for n_in, n_out in zip(stage05.sizes[:-1], stage05.sizes[1:]))
    assert perceptron_madds == 1_275_200 and f"{4_002_304 / perceptron_madds:.1f}" == "3.1"
    assert 24 * 24 * 32 == 18_432 and 784 * 18_432 + 18_432 == 14_469_120
    assert (8 * 8, 5 * 5 * 32) == (64, 800)  # the second convolution's patch rows per image
    assert f"{math.sqrt(2 / 25):.3f}" == "0.283" and math.sqrt(2 / 800) == 0.05

    text = section("Convolution and max-pooling")
    for number in ("= 832", "= 51{,}264", "= 262{,}400", "= 2{,}570", "**317,066**", "= 460{,}800",
                   "= 3{,}276{,}800", "| 262,144 |", "| 2,560 |", "**4,002,304**", "1,276,810", "about four times",
                   "3.1 times stage 05's 1,275,200", "18{,}432", "14{,}469{,}120", "8 \\cdot 8 = 64",
                   "5 \\cdot 5 \\cdot 32 = 800", "\\sqrt{2/25} = 0.283", "\\sqrt{2/800} = 0.05"):
        assert number in text, number
