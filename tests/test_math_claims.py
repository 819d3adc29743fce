"""The numbers and identities of docs/math.md, recomputed: raw pixels as a 255^2 learning rate on the
first layer, the order and the size of weight decay, stage 01's starting statistics on the real MNIST,
the cost of skipping dLoss/dPixels, the mini-batch count, the warm-up, Xavier against He in a deep
network, batch size against learning rate, the generalisation gap as the code measures it, receptive
fields, FGSM and gradient masking, clipped noise, the one rule for "better", and the settings the
page quotes from the stages.

Each test also checks that the page states the number it recomputes, so the two cannot drift apart.
Measured results (accuracies, tuning tables) are not quoted on the page: it links the generated pages
that have them, and the last test checks that no accuracy with two decimals is typed into it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
from mnist_available import needs_mnist

from common import robustness
from common.data import load_mnist
from common.nn.architecture import parse_layer
from common.nn.loss import softmax_cross_entropy
from common.nn.metrics import accuracy
from common.nn.network import Network
from common.nn.optimizers import Adam, GradientDescent, ParamGroup
from common.nn.schedules import cosine, make_schedule
from common.paths import DEFAULT_DATA_DIR, REPO_ROOT, RESULTS_DIR
from common.protocol import StageSpec, prepare_splits, scale_pixels, spawn_generators, stage_metrics, train_stage
from common.stages import load_specs
from common.stats import binomial_se, difference
from experiments import ablations
from experiments import robustness as study

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


@needs_mnist
def test_stage_01_first_loss_is_close_to_ln_10():
    """The loss of stage 01's seed-0 start on its 1,000 training images, computed from the code, is the
    loss its run records for its first iteration (one full-batch update on 1,000 images: cheap)."""
    spec = load_specs()["01"]
    data = load_mnist(DEFAULT_DATA_DIR, fetch=False, progress=False)
    splits = prepare_splits(spec, data, 0)
    init_rng = spawn_generators(0, 3)[0]  # the stream train_stage draws the weights from
    network = Network.from_architecture(spec.architecture(), init_rng, spec.init, spec.init_scale)
    assert len(splits["train"].y) == 1_000 and spec.pixel_scale == "raw" and spec.init_scale == 0.001
    start, _ = softmax_cross_entropy(network.forward(splits["train"].x, training=True), splits["train"].y)
    assert f"{start:.3f}" == "2.308" and f"{math.log(10):.3f}" == "2.303"
    recorded = train_stage(dataclasses.replace(spec, epochs=1, eval_every=1), 0, data, progress=False).history[0]["loss"]
    assert recorded == pytest.approx(start, rel=1e-6)
    text = section("Worked example: stage 01")
    assert "2.308" in text and "\\ln 10 = 2.303" in text and "1,000 training images" in text


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
    one_epoch = cosine(0.001, 30, warmup=1)
    assert one_epoch(0) == pytest.approx(0.0005) and one_epoch(1) == pytest.approx(0.001)
    schedule = cosine(1.0, 10, warmup=3)
    assert [schedule(e) for e in range(4)] == pytest.approx([1 / 4, 2 / 4, 3 / 4, 1.0])
    text = section("Learning-rate schedules")
    assert "\\frac{e + 1}{W + 1}" in text
    assert "A warm-up of one epoch, $W = 1$, runs epoch 0 at $\\eta_0 / 2$ and epoch 1 at $\\eta_0$" in text


# -- What sets the learning rate: the settings it quotes, and the stage-02 run ---------------------

def test_learning_rate_settings_quoted_from_the_stages():
    specs = load_specs()
    stage02, stage03 = specs["02"], specs["03"]
    assert stage02.is_full_batch and stage02.optimizer == stage03.optimizer == "gd"
    assert stage02.pixel_scale == "unit" and stage02.schedule == "constant"
    assert stage03.batch_size == 128 and stage03.lr < stage02.lr, "the mini-batch rate is below full batch's"
    text = section("What sets the learning rate")
    assert f"({2 / stage02.lr:g} for stage 02's $\\eta = {stage02.lr:g}$, its `lr`)" in text
    assert f"chose {stage03.lr:g} for plain gradient descent on batches of {stage03.batch_size}, below full batch's {stage02.lr:g}" in text
    assert f"({stage02.epochs} full-batch steps against {stage03.epochs} epochs of mini-batch steps)" in text
    assert f"recorded every {stage02.eval_every} iterations" in text
    assert f"uses one rate, {stage02.lr:g}, for every layer" in section("Raw pixels are a hidden learning-rate change")


def test_the_stage_02_run_sometimes_raises_its_full_batch_loss_and_recovers():
    """Read from the committed run, without typing its numbers: rises there are, the test accuracy ends at
    its highest, and the page says it can dip only if it does."""
    run = load_json("runs/02/seed0.json")
    spec = load_specs()["02"]
    assert run["settings"]["lr"] == spec.lr and run["settings"]["batch_size"] is None
    history = run["history"]
    losses = [h["loss"] for h in history]
    assert any(later > earlier for earlier, later in zip(losses, losses[1:])), "the loss never rose"
    accuracy_curve = [h["test_accuracy"] for h in history if h["test_accuracy"] is not None]
    assert accuracy_curve[-1] == max(accuracy_curve), "ends at its highest"
    dips = max(a - b for a, b in zip(accuracy_curve, accuracy_curve[1:])) > 0
    text = " ".join(section("What sets the learning rate").split())
    assert "goes up from one iteration to the next now and then" in text and "yet ends at its highest" in text
    assert ("can dip from one record to the next" in text) == dips


def test_stage_04_budget_is_named_as_chosen_on_validation_without_quoting_the_table():
    text = section("What sets the learning rate")
    assert "stage 04's `epochs` and `schedule` are the setting chosen there" in text
    assert "clearly ahead" not in PAGE and "which is the bouncing" not in PAGE


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


# -- When initialisation matters: Xavier against He in the init ablation's deep network ------------

def init_ablation() -> ablations.Ablation:
    return next(a for a in ablations.build_ablations(quick=False) if a.name == "init")


def test_xavier_is_he_scaled_down_layer_by_layer_in_the_deep_network():
    sizes = ablations.DEEP_SIZES
    assert sizes == (784, 256, 256, 256, 256, 10)
    ablation = init_ablation()
    assert ablation.base["sizes"] == sizes and ablation.base["optimizer"] == "momentum"
    inits = {v.name: v.overrides for v in ablation.variants}
    assert inits["xavier"] == {"init": "xavier"} and inits["he"] == {"init": "he"}
    assert inits["normal-0.001"] == {"init": "normal", "init_scale": 0.001}

    pairs = list(zip(sizes[:-1], sizes[1:]))
    gains = [n_in / (n_in + n_out) for n_in, n_out in pairs]  # Xavier's variance over He's, layer by layer
    assert gains[1:4] == [0.5, 0.5, 0.5]
    c = [math.sqrt(g) for g in gains]
    total = math.prod(c)
    assert f"{total ** 2:.3f}" == "0.091" and f"{total:.2f}" == "0.30"
    relative = [total / cl ** 2 for cl in c]  # each layer's step relative to its weights, over He's
    assert [f"{r:.2f}" for r in relative] == ["0.40", "0.60", "0.60", "0.60", "0.31"]
    assert f"{0.5 ** 20:.1e}" == "9.5e-07" and f"{math.sqrt(0.5 ** 20):.0e}" == "1e-03"
    assert f"{2 ** -10 / 0.5:.3f}" == "0.002"
    fixed = [0.001 / math.sqrt(2 / n_in) for n_in in sizes[:-1]]
    assert round(1 / fixed[1]) == 88 and f"{fixed[0]:.3f}" == "0.020"
    assert f"{math.prod(fixed):.1e}" == "3.2e-10" and f"{math.prod(fixed) / fixed[1] ** 2:.1e}" == "2.5e-06"

    # The same draws under both inits: the Xavier network computes exactly He's logits times prod(c),
    # and for the same dlogits its weight gradients are He's times prod(c) / c_l.
    he, xavier = (Network.from_sizes(list(sizes), np.random.default_rng(0), init=name, dtype="float64")
                  for name in ("he", "xavier"))
    x = np.random.default_rng(1).random((16, sizes[0]))
    np.testing.assert_allclose(xavier.forward(x, training=True), total * he.forward(x, training=True), rtol=1e-10)
    dlogits = np.random.default_rng(2).standard_normal((16, sizes[-1]))
    he.backward(dlogits)
    xavier.backward(dlogits)
    for layer_he, layer_x, cl in zip(he.weighted_layers(), xavier.weighted_layers(), c):
        np.testing.assert_allclose(layer_x.params["W"], cl * layer_he.params["W"], rtol=1e-12)
        np.testing.assert_allclose(layer_x.grads["W"], total / cl * layer_he.grads["W"], rtol=1e-9, atol=1e-300)

    text = section("When initialisation matters")
    for quoted in ("`[784, 256, 256, 256, 256, 10]`", "\\tfrac{784}{1040} \\cdot \\left(\\tfrac12\\right)^3 \\cdot \\tfrac{256}{266} = 0.091",
                   "(0.30 in standard deviation)", "0.60 of He's", "0.40 in the first and 0.31 in the last",
                   "\\left(\\tfrac12\\right)^{20} = 9.5 \\times 10^{-7}", "about a thousandth", "2^{-10} / \\tfrac12 = 0.002",
                   "0.001 / \\sqrt{2/256} = 1/88", "0.001/\\sqrt{2/784} = 0.020", "3.2 \\times 10^{-10}",
                   "2.5 \\times 10^{-6}", "trained with momentum"):
        assert quoted in text, quoted


# -- How large weight decay really is: stage 05's schedule -----------------------------------------

EXAMPLE_DECAY = 0.01  # the page's example when stage 05 has no weight decay


def test_total_weight_decay_shrinkage_over_stage_05_schedule():
    spec = load_specs()["05"]
    lam = spec.weight_decay or EXAMPLE_DECAY  # with decay off, the same sum for the example value
    assert spec.optimizer == "adam" and spec.schedule == "cosine" and spec.train_size is None
    images = 60_000 - spec.holdout_size - spec.validation_size
    steps = math.ceil(images / spec.batch_size)
    schedule = make_schedule(spec.schedule, spec.lr, spec.epochs, spec.warmup)
    rates = [schedule(e) for e in range(spec.epochs)]
    assert sum(rates) == pytest.approx(spec.lr * (spec.epochs + 1) / 2, rel=1e-12)  # whatever the warm-up
    for warmup in (0, 1, 7):
        assert sum(cosine(1.0, 30, warmup=warmup)(e) for e in range(30)) == pytest.approx(31 / 2)
    assert sum(math.cos(math.pi * k / 29) for k in range(29)) == pytest.approx(1.0)
    total_rate = steps * sum(rates)
    product = math.prod((1 - rate * lam) ** steps for rate in rates)
    assert product == pytest.approx(math.exp(-lam * total_rate), rel=1e-5)

    # The optimizer itself, with a zero gradient, leaves exactly that product.
    weight, zero = np.array([1.0]), np.zeros(1)
    optimizer = Adam(lr=spec.lr, weight_decay=lam)
    for rate in rates:
        optimizer.lr = rate
        for _ in range(steps):
            optimizer.step([ParamGroup("weights", weight, zero, decay=True)])
    assert weight[0] == pytest.approx(product, rel=1e-9)

    expected = {
        "settings": f"$\\eta_0 = {spec.lr:g}$, cosine over $E = {spec.epochs}$ epochs after $W = {spec.warmup}$ "
                    f"warm-up epoch, batches of {spec.batch_size}, so $K = {steps}$ steps per epoch",
        "sum": f"$\\sum_t \\eta_t = {steps} \\times {spec.lr:g} \\times {spec.epochs + 1}/2 = {total_rate:.2f}$",
        "lambda": f"$\\lambda = {lam:g}$",
        "product": f"the product is ${product:.3f}$",
        "shrinkage": f"would shrink by {100 * (1 - product):.1f} %",
        "paper": f"is the paper's $\\lambda = 10^{{{round(math.log10(spec.lr * lam))}}}$",
        "adam": f"about $\\sum_t \\eta_t = {total_rate:.2f}$",
    }
    assert (steps, f"{total_rate:.2f}", f"{product:.3f}", f"{100 * (1 - product):.1f}") == (469, "7.27", "0.930", "7.0")
    assert spec.lr * lam == pytest.approx(1e-5) and math.sqrt(2 / 784) == pytest.approx(0.0505, abs=1e-4)
    text = section("How large weight decay really is")
    for name, quoted in expected.items():
        assert quoted in text, f"{name}: the page should say {quoted!r} (stage 05's settings changed?)"
    assert "an example" in text and "\\sqrt{2/784} = 0.05" in text


def test_decoupled_decay_is_multiplied_by_the_learning_rate():
    """This code's (and PyTorch's) form: theta <- (1 - lr * lambda) theta, so halving lr halves the decay."""
    for lr in (0.1, 0.05):
        weight = np.array([1.0])
        GradientDescent(lr=lr, weight_decay=0.2).step([ParamGroup("weights", weight, np.zeros(1), decay=True)])
        assert weight[0] == pytest.approx(1 - lr * 0.2)
    text = section("How large weight decay really is")
    assert "\\lambda_{paper} = \\alpha \\lambda_{code}" in text and "`torch.optim.AdamW`" in text


# -- Batch size and learning rate ------------------------------------------------------------------

def test_k_small_steps_are_one_step_of_k_times_the_rate_to_first_order():
    """Least squares on 64 examples: 4 steps of rate eta on batches of 16 against one step of 4 eta on all
    64. The two displacements differ by O(eta^2), so their relative difference falls like eta."""
    rng = np.random.default_rng(0)
    a, target = rng.standard_normal((64, 5)), rng.standard_normal(64)
    theta0 = rng.standard_normal(5)

    def gradient(theta, rows):
        return a[rows].T @ (a[rows] @ theta - target[rows]) / len(rows)

    gaps = []
    for eta in (1e-2, 1e-3):
        theta = theta0.copy()
        for k in range(4):
            theta -= eta * gradient(theta, np.arange(16 * k, 16 * k + 16))
        big = theta0 - 4 * eta * gradient(theta0, np.arange(64))
        gaps.append(np.linalg.norm(theta - big) / np.linalg.norm(big - theta0))
    assert gaps[1] < gaps[0] / 5 and gaps[1] < 0.01


def test_adam_step_grows_like_the_square_root_of_the_batch_where_noise_dominates():
    """A weight whose batch gradient is g + noise of variance sigma^2 / B: Adam's mean step is about
    eta * sqrt(B) * g / sigma, so 16 times the batch gives about 4 times the mean step."""
    g, sigma, eta, weights, steps = 0.05, 1.0, 0.001, 2_000, 1_000
    mean_steps = {}
    for batch in (1, 16):
        rng = np.random.default_rng(batch)
        theta = np.zeros(weights)
        optimizer = Adam(lr=eta)
        for _ in range(steps):
            grad = g + sigma / math.sqrt(batch) * rng.standard_normal(weights)
            optimizer.step([ParamGroup("w", theta, grad)])
        mean_steps[batch] = -theta.mean() / steps
    for batch, step in mean_steps.items():
        assert step == pytest.approx(eta * math.sqrt(batch) * g / sigma, rel=0.2), batch
    assert 3.4 < mean_steps[16] / mean_steps[1] < 4.4


def test_batch_size_ablation_updates_and_its_linear_scaling():
    base = {"epochs": ablations.BASE_EPOCHS, "train_size": None}
    ablation = ablations.batch_size_ablation(base)
    batches = sorted({v.overrides["batch_size"] for v in ablation.variants})
    assert batches == [32, 128, 512, 2048] and ablations.SCALE_BATCH == 128 and ablations.BASE_EPOCHS == 10
    updates = [ablations.BASE_EPOCHS * math.ceil(60_000 / b) for b in batches]
    assert updates == [18_750, 4_690, 1_180, 300]
    scaled = {v.overrides["batch_size"]: v.overrides["lr"] for v in ablation.variants if "lr" in v.overrides}
    assert scaled == {b: pytest.approx(0.001 * b / 128) for b in (32, 512, 2048)}
    assert load_specs()["04"].optimizer == "adam"  # the ablations' base design
    assert 2048 // 128 == 16 and math.sqrt(2048 / 128) == 4
    text = section("Batch size and learning rate")
    for quoted in ("10 epochs (`BASE_EPOCHS`", "18,750, 4,690, 1,180 and 300 updates", "16 of them at batch 2048",
                   "$\\mathrm{lr} \\times B / 128$", "16 times the rate, where the square-root rule would take 4 times",
                   "[results/ablations/batch_size.md]"):
        assert quoted in text, quoted


# -- Generalisation: how the code measures the gap --------------------------------------------------

def test_training_accuracy_is_measured_on_clean_images_without_dropout(monkeypatch):
    """A tiny stage with input and hidden dropout and random shifts, through the protocol every stage
    runs: its recorded training accuracy is that of the final network as it predicts (dropout off) on
    the stored, unshifted training images."""
    rng = np.random.default_rng(0)
    data = SimpleNamespace(train_images=rng.integers(0, 256, (300, 784), dtype=np.uint8),
                           train_labels=rng.integers(0, 10, 300),
                           test_images=rng.integers(0, 256, (100, 784), dtype=np.uint8),
                           test_labels=rng.integers(0, 10, 100))
    spec = StageSpec(name="gap", title="gap", adds="", sizes=(784, 32, 10), optimizer="adam", lr=0.01, epochs=2,
                     batch_size=50, input_dropout=0.2, hidden_dropout=0.5, shift=2)
    trained = train_stage(spec, 0, data, progress=False)
    clean = scale_pixels(data.train_images, spec.pixel_scale)
    predicted = trained.network.predict(clean)
    np.testing.assert_array_equal(predicted, trained.network.predict(clean))  # no dropout when predicting
    assert trained.history[-1]["train_accuracy"] == accuracy(predicted, data.train_labels)
    monkeypatch.setattr("common.protocol.describe_environment", dict)  # no git call for a record of a toy run
    metrics = stage_metrics(trained)
    assert metrics["train_accuracy"] == trained.history[-1]["train_accuracy"]
    assert metrics["test_accuracy"] == accuracy(trained.network.predict(scale_pixels(data.test_images)), data.test_labels)
    text = section("Generalisation")
    assert "training accuracy minus test accuracy" in text and "with dropout off" in text
    assert "never the stored set" in text and "The gap is not the objective" in text


# -- What convolution buys apart from augmentation -------------------------------------------------

def receptive_fields(layers: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """``(layer, r, j)`` after each conv and maxpool: the window side r and the step j, in input pixels."""
    r, j, rows = 1, 1, []
    for text in layers:
        kind, args = parse_layer(text)
        if kind == "conv":
            r += (args[1] - 1) * j
        elif kind == "maxpool":
            r, j = r + j, 2 * j
        else:
            continue
        rows.append((text, r, j))
    return rows


def test_stage_06_receptive_fields():
    from common.nn.architecture import walk_layers

    spec = load_specs()["06"]
    fields = receptive_fields(spec.layers)
    assert fields == [("conv 32 5x5 valid", 5, 1), ("maxpool", 6, 2), ("conv 64 5x5 valid", 14, 2), ("maxpool", 16, 4)]
    last = [layer.out_shape for layer in walk_layers(784, spec.layers) if layer.kind == "maxpool"][-1]
    assert last[:2] == (4, 4) and 4 * (last[0] - 1) + 16 - 1 == 27
    text = section("What convolution buys apart from augmentation")
    for quoted in ("| `conv 32 5x5 valid` | $1 + 4 \\cdot 1 = 5$ | 1 |", "| `maxpool` | $5 + 1 = 6$ | 2 |",
                   "| `conv 64 5x5 valid` | $6 + 4 \\cdot 2 = 14$ | 2 |", "| `maxpool` | $14 + 2 = 16$ | 4 |",
                   "$16 \\times 16$ window", "$4 \\times 4$ positions", "$4 \\cdot 3 + 15 = 27$",
                   "moving the digit by 4 pixels moves the last map by exactly one position"):
        assert quoted in text, quoted


def test_a_shift_by_the_last_step_moves_stage_06_last_map_by_exactly_one_position():
    spec = load_specs()["06"]
    architecture = dataclasses.replace(spec.architecture(), dtype="float64")
    network = Network.from_architecture(architecture, np.random.default_rng(0), spec.init)
    images = np.random.default_rng(1).random((3, 784))
    pools = {}
    for name, x in (("as is", images), ("down", robustness.shift_images(images, 4, 0)),
                    ("right", robustness.shift_images(images, 0, 4)), ("down 2", robustness.shift_images(images, 2, 0))):
        pools[name] = [out for layer, out in network.activations(x) if type(layer).__name__ == "MaxPool2D"]
    first, last = pools["as is"]
    assert last.shape[1:3] == (4, 4)
    np.testing.assert_allclose(pools["down"][1][:, 1:], last[:, :-1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pools["right"][1][:, :, 1:], last[:, :, :-1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pools["down 2"][0][:, 1:], first[:, :-1], rtol=1e-9, atol=1e-12)  # first pooling: step 2
    assert not np.allclose(pools["down"][1], last), "a shift is not invariance"


def test_the_robustness_study_measures_stage_06_without_its_shifts():
    specs = load_specs()
    variant = next(v for v in study.VARIANTS if v.stage == "06")
    assert variant.overrides == {"shift": 0} and specs["06"].shift > 0
    unshifted = [s for s in specs.values() if s.shift == 0]
    assert unshifted and not any(layer.startswith("conv") for s in unshifted for layer in s.layers)
    text = section("What convolution buys apart from augmentation")
    assert "`VARIANTS` in `experiments/robustness.py`" in text and "perceptron stages trained without shifts" in text


# -- Batch normalization and the affine distortions: stage 07 ---------------------------------------

def test_stage_07_normalises_after_each_pooling_and_the_dense_layer():
    from common.nn.architecture import Architecture, walk_layers

    specs = load_specs()
    stage07, stage06 = specs["07"], specs["06"]
    assert tuple(layer for layer in stage07.layers if layer != "batchnorm") == stage06.layers
    walked = walk_layers(784, stage07.layers)
    before = [walked[i - 1].kind for i, layer in enumerate(walked) if layer.kind == "batchnorm"]
    after = [walked[i + 1].kind for i, layer in enumerate(walked) if layer.kind == "batchnorm"]
    assert before == ["maxpool", "maxpool", "dense"] and after == ["relu"] * 3
    shapes = [layer.out_shape for layer in walked if layer.kind == "batchnorm"]
    assert shapes == [(12, 12, 32), (4, 4, 64), (256,)] and stage07.batch_size == 128
    values = [stage07.batch_size * math.prod(shape[:-1]) for shape in shapes]
    scales = [sum(math.prod(s) for s in layer.param_shapes.values()) for layer in walked if layer.kind == "batchnorm"]
    assert values == [18_432, 2_048, 128] and scales == [64, 128, 512] and sum(scales) == 704
    assert Architecture(sizes=stage07.sizes, layers=stage07.layers).num_parameters == 317_066 + 704 == 317_770
    assert 12 * 12 * 4 == 24 * 24  # "on a quarter of the numbers"
    text = section("Where stage 07 normalises")
    for quoted in ("$M = 128 \\cdot 12 \\cdot 12 = 18{,}432$", "$M = 128 \\cdot 4 \\cdot 4 = 2{,}048$", "| $M = 128$ |",
                   "$2 \\cdot 32 = 64$", "$2 \\cdot 64 = 128$", "$2 \\cdot 256 = 512$", "704 parameters",
                   "stage 06's 317,066", "stage 07 has 317,770", "the $12 \\times 12$ pooled pixels",
                   "the $24 \\times 24$ of the convolution's map"):
        assert quoted in text, quoted


def test_pooling_commutes_with_a_fixed_normalisation_only_where_the_scale_is_positive():
    from common.nn import reference

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 8, 8, 3))
    mean, var = rng.standard_normal(3), rng.random(3) + 0.5
    beta = rng.standard_normal(3)
    positive, mixed = np.array([0.5, 1.0, 2.0]), np.array([0.5, -1.0, 2.0])

    def normalise(images, gamma):
        return reference.batchnorm_inference(images, gamma, beta, mean, var)

    pool = reference.maxpool_forward
    np.testing.assert_allclose(pool(normalise(x, positive)), normalise(pool(x), positive), rtol=1e-12)
    differs = ~np.isclose(pool(normalise(x, mixed)), normalise(pool(x), mixed), rtol=1e-12)
    assert not differs[..., [0, 2]].any() and differs[..., 1].all()
    # in training the statistics are the window maxima's, or every pixel's: not the same layer
    trained_after = reference.batchnorm_forward(pool(x), positive, beta)[0]
    trained_before = pool(reference.batchnorm_forward(x, positive, beta)[0])
    assert not np.allclose(trained_after, trained_before)


def test_a_bias_before_batch_normalization_has_a_roundoff_gradient_that_adam_makes_drift():
    from common.nn.architecture import Architecture
    from common.nn.optimizers import make_optimizer

    layers = ("reshape 28x28x1", "conv 4 5x5 valid", "maxpool", "batchnorm", "relu", "flatten", "dense 10")
    network = Network.from_architecture(Architecture((784, 10), layers=layers), np.random.default_rng(0), "he")
    assert network.flat_params.dtype == np.float32
    conv = network.layers[1]
    lr = load_specs(["07"])["07"].lr
    optimizer = make_optimizer("adam", lr, 0.0)
    rng = np.random.default_rng(1)
    x, y = rng.random((32, 784), dtype=np.float32), rng.integers(0, 10, 32)
    largest_gradient = 0.0
    for _ in range(20):
        _, dlogits = softmax_cross_entropy(network.forward(x, training=True), y)
        network.backward(dlogits)
        largest_gradient = max(largest_gradient, float(np.abs(conv.grads["b"]).max()))
        optimizer.step(network.parameter_groups())
    assert largest_gradient < 1e-4, "the gradient is 0 up to roundoff"
    assert np.abs(conv.params["b"]).max() > 100 * 20 * lr * largest_gradient, "Adam's steps are not roundoff-sized"
    shifted = network.forward(x, training=True).copy()
    conv.params["b"][...] = 0
    np.testing.assert_allclose(network.forward(x, training=True), shifted, rtol=1e-4, atol=1e-5)
    text = " ".join(section("Where stage 07 normalises").split())
    assert "in float32 these biases drift away from 0 rather than stay there" in text
    assert "That changes no training output" in text


def test_stage_07_affine_strengths_as_quoted():
    spec = load_specs()["07"]
    assert (spec.affine_rotation, spec.affine_scale, spec.affine_shear, spec.shift) == (10.0, 0.1, 10.0, 2)
    text = " ".join(section("Random affine distortions").split())
    assert (f"$\\theta$ up to {spec.affine_rotation:g} degrees either way, $s$ in $1 \\pm {spec.affine_scale:g}$, "
            f"$\\varphi$ up to {spec.affine_shear:g} degrees either way, and $t_x$ and $t_y$ each up to {spec.shift} "
            "pixels either way") in text
    assert "$(13.5, 13.5)$ for $S = 28$" in text and (28 - 1) / 2 == 13.5
    assert "Elastic distortions go further still" in text and "### Elastic distortions" in PAGE


# -- FGSM and saliency -------------------------------------------------------------------------------

def test_the_sign_of_the_gradient_is_the_steepest_ascent_under_a_per_pixel_limit():
    rng = np.random.default_rng(0)
    eps = 0.1
    for _ in range(20):
        g = rng.standard_normal(6)
        corners = np.array(np.meshgrid(*[[-eps, eps]] * 6)).reshape(6, -1).T  # every vertex of the box
        best = corners[np.argmax(corners @ g)]
        np.testing.assert_allclose(best, eps * np.sign(g))
        assert (corners @ g).max() == pytest.approx(eps * np.abs(g).sum())
        inside = rng.uniform(-eps, eps, (1000, 6))
        assert (inside @ g).max() <= eps * np.abs(g).sum()
    assert math.sqrt(784) == 28
    flat = np.full(784, 0.3)
    assert np.abs(flat).sum() == pytest.approx(28 * np.linalg.norm(flat))
    g = rng.standard_normal(784)
    signs = rng.choice([-eps, eps], size=(20_000, 784))
    assert (signs @ g).std() == pytest.approx(eps * np.linalg.norm(g), rel=0.03)
    text = section("FGSM and saliency")
    assert "\\epsilon \\lVert g \\rVert_1" in text and "\\sqrt{784} \\, \\lVert g \\rVert_2 = 28 \\lVert g \\rVert_2" in text


def test_epsilon_in_grey_levels_and_the_clip():
    strengths = [t.strength for t in study.TRANSFORMS if t.apply is None]
    assert strengths == [0.05, 0.1, 0.2] and study.FGSM_READ == 0.1
    assert [f"{255 * e:g}" for e in strengths] == ["12.75", "25.5", "51"]
    clean = np.array([[0.0, 0.0, 1.0, 1.0, 0.5]], dtype=np.float32)
    direction = np.array([[-1.0, 1.0, 1.0, -1.0, -1.0]], dtype=np.float32)
    attacked = robustness.fgsm(clean, direction, 0.1)
    np.testing.assert_allclose(attacked, [[0.0, 0.1, 1.0, 0.9, 0.4]], atol=1e-7)
    text = section("FGSM and saliency")
    assert "25.5 of 255 grey levels" in text and "0.05, 0.1 and 0.2 are 12.75, 25.5 and 51" in text
    assert "the background can only gain ink" in text


def textbook_true_entry(margin: float) -> float:
    """The float32 textbook (p - y) / B entry of the true class, with one competitor ``margin`` logits behind."""
    logits = np.array([[margin, 0.0] + [-100.0] * 8], dtype=np.float32)
    return float(softmax_cross_entropy(logits, np.array([0]))[1][0, 0])


def test_float32_loses_the_true_class_entry_beyond_a_margin_of_ln_2_to_the_24():
    threshold = math.log(2 ** 24)
    assert f"{threshold:.1f}" == "16.6" and threshold == pytest.approx(24 * math.log(2))
    assert textbook_true_entry(16.5) < 0 and textbook_true_entry(16.8) == 0.0
    assert np.float32(1) + np.float32(2 ** -24) == 1 and np.float32(1) + np.float32(2 ** -23) > 1
    big = np.array([[200.0, 0.0] + [-100.0] * 8], dtype=np.float32)
    assert not softmax_cross_entropy(big, np.array([0]))[1].any(), "at large margins the whole row underflows"
    for margin in (16.8, 200.0):
        logits = np.array([[margin, 0.0] + [-100.0] * 8], dtype=np.float32)
        direction = robustness.loss_gradient_of_logits(logits, np.array([0]))
        assert direction.dtype == np.float32 and direction[0, 0] == -1.0 and direction[0, 1] == 1.0
        assert np.abs(direction).max() == 1.0 and (direction[0, 1:] >= 0).all()
    text = section("FGSM and saliency")
    for quoted in ("$2^{-23}$ apart", "$s \\le 2^{-24}$", "m \\ge \\ln 2^{24} = 24 \\ln 2 = 16.6", "-\\sum_{k \\ne y} P_k",
                   "divides each row by its largest entry in absolute value", "`common.robustness.loss_gradient_of_logits`"):
        assert quoted in text, quoted


def test_saliency_is_a_sensitivity_not_an_importance():
    """A linear model: the saliency at a blank pixel is that pixel's weight for the chosen class, though
    the pixel adds nothing to the score; and the probability's gradient vanishes as it nears 1."""
    network = Network.from_sizes([4, 3], np.random.default_rng(0))
    layer = next(network.weighted_layers())
    layer.params["W"][...] = np.array([[9.0, 0.0, 1.0], [2.0, 1.0, 0.0], [-3.0, 1.0, 2.0], [4.0, 0.0, 1.0]])
    layer.params["b"][...] = 0.0
    x = np.array([[1.0, 1.0, 0.0, 1.0]], dtype=np.float32)
    gradient, predicted = robustness.saliency(network, x, "unit")
    assert predicted[0] == 0 and gradient[0, 2] == -3.0 and x[0, 2] * gradient[0, 2] == 0.0
    z = (x @ layer.params["W"]).astype(np.float64)[0]
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    dp = p[0] * ((np.arange(3) == 0) - p) @ layer.params["W"].astype(np.float64).T  # dP_0 / dx
    assert np.abs(dp).max() < 1e-4 * np.abs(gradient).max()
    assert "**sensitivity**" in section("FGSM and saliency")


# -- Why a convolutional network can collapse under noise ------------------------------------------

def normal_tail(x: float) -> float:
    return 0.5 * math.erfc(x / math.sqrt(2))


def clipped_background_mean(sigma: float) -> float:
    """E[clip(sigma z, 0, 1)] = E[max(0, sigma z)] - E[max(0, sigma z - 1)]."""
    density = math.exp(-0.5 / sigma ** 2) / math.sqrt(2 * math.pi)
    return sigma / math.sqrt(2 * math.pi) - (sigma * density - normal_tail(1 / sigma))


def test_clipped_noise_raises_the_background():
    strengths = [t.strength for t in study.TRANSFORMS if t.family == "noise"]
    assert strengths == [0.2, 0.4]
    assert f"{0.4 / math.sqrt(2 * math.pi):.3f}" == "0.160"
    cap = 0.4 / math.sqrt(2 * math.pi) - clipped_background_mean(0.4)
    assert f"{cap:.4f}" == "0.0008"
    assert f"{clipped_background_mean(0.4):.3f}" == "0.159" and f"{clipped_background_mean(0.2):.3f}" == "0.080"
    noisy = robustness.gaussian_noise(np.zeros((200, 784), dtype=np.float32), np.random.default_rng(0), 0.4)
    assert float(noisy.mean()) == pytest.approx(clipped_background_mean(0.4), abs=0.003)
    assert float((noisy > 0).mean()) == pytest.approx(0.5, abs=0.01)
    text = section("Why a convolutional network can collapse under noise")
    for quoted in ("\\frac{\\sigma}{\\sqrt{2\\pi}}", "0.160 for $\\sigma = 0.4$", "= 0.0008", "leaves 0.159",
                   "for $\\sigma = 0.2$ the mean is 0.080", "a grey veil of about 0.16", "every filter sees ink everywhere",
                   "Convolution brings shift equivariance", "[results/robustness.md]"):
        assert quoted in text, quoted


@needs_mnist
def test_mnist_background_share_and_mean_pixel():
    test_images = load_mnist(DEFAULT_DATA_DIR, fetch=False, progress=False).test_images
    background = float((test_images == 0).mean())
    mean_pixel = float(test_images.mean()) / 255
    assert round(100 * background) == 81 and f"{mean_pixel:.2f}" == "0.13"
    assert clipped_background_mean(0.4) > mean_pixel
    assert "(81 % of the test images' pixels)" in section("FGSM and saliency")
    noise = section("Why a convolutional network can collapse under noise")
    assert "81 % of the pixels" in noise and "ink included (0.13)" in noise


# -- Reading the statistics ---------------------------------------------------------------------------

def student_t_cdf(t: float, dof: int, points: int = 200_001) -> float:
    """The Student t distribution function, by the trapezoidal rule on its density (no SciPy here)."""
    grid = np.linspace(0.0, t, points)
    log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)
    density = np.exp(log_norm - (dof + 1) / 2 * np.log1p(grid ** 2 / dof))
    return 0.5 + float(((density[1:] + density[:-1]) / 2 * np.diff(grid)).sum())


def two_sided_limit(dof: int, level: float = 0.95) -> float:
    low, high = 0.0, 50.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if student_t_cdf(mid, dof, 20_001) < (1 + level) / 2 else (low, mid)
    return (low + high) / 2


def test_binomial_standard_error_of_a_test_accuracy():
    assert f"{binomial_se(0.99):.6f}" == "0.000995" and round(100 * binomial_se(0.99), 1) == 0.1
    assert binomial_se(0.5) == pytest.approx(0.005)
    text = section("Reading the statistics")
    assert "\\sqrt{\\frac{0.99 \\times 0.01}{10{,}000}} = 0.000995" in text and "about 0.1 points at 99 %" in text
    assert "(0.5 points at 50 %)" in text


def test_the_one_rule_paired_and_welch():
    a, b, seeds = [0.981, 0.983, 0.979], [0.978, 0.981, 0.978], [0, 1, 2]
    paired = difference(a, b, seeds, seeds)
    d = np.subtract(a, b)
    assert paired.paired and paired.se == pytest.approx(np.std(d, ddof=1) / math.sqrt(3))
    assert paired.mean == pytest.approx(d.mean()) and paired.distinguishable == (abs(d.mean()) > 2 * paired.se)
    welch = difference(a, b, seeds, [3, 4, 5])
    assert not welch.paired
    assert welch.se == pytest.approx(math.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 3))
    one = difference([0.98], [0.97], [0], [0])
    assert one.se is None and one.distinguishable is None and one.verdict() == "one seed: no verdict"
    text = section("Reading the statistics")
    for quoted in ("\\lvert \\bar d \\rvert \\gt 2 \\, \\mathrm{SE}", "\\mathrm{SE} = s_d / \\sqrt{n}",
                   "\\mathrm{SE} = \\sqrt{s_a^2 / n_a + s_b^2 / n_b}", "`ddof=1`", "no verdict"):
        assert quoted in text, quoted


def test_why_three_seeds_make_it_a_rule_of_thumb():
    closed = lambda t: 0.5 + t / (2 * math.sqrt(2 + t * t))  # noqa: E731 - the page's formula
    for t in (0.5, 2.0, 4.3):
        assert student_t_cdf(t, 2) == pytest.approx(closed(t), abs=1e-9)
    limit2 = math.sqrt(2 * 0.95 ** 2 / (1 - 0.95 ** 2))
    assert f"{limit2:.1f}" == "4.3" and two_sided_limit(2) == pytest.approx(limit2, abs=1e-6)
    assert f"{two_sided_limit(4):.2f}" == "2.78"
    chance = 2 * (1 - closed(2))
    assert chance == pytest.approx(1 - 2 / math.sqrt(6)) and f"{chance:.2f}" == "0.18"
    assert f"{100 * math.erfc(2 / math.sqrt(2)):.1f}" == "4.6"  # 2 (1 - Phi(2)) for the normal
    # The rule itself, on three paired seeds whose true difference is 0: passed about 18 % of the time.
    rng = np.random.default_rng(0)
    passed = [difference(rng.standard_normal(3), np.zeros(3), [0, 1, 2], [0, 1, 2]).distinguishable
              for _ in range(4_000)]
    assert np.mean(passed) == pytest.approx(chance, abs=0.025)
    text = section("Reading the statistics")
    for quoted in ("F(t) = \\tfrac12 + t / \\left(2 \\sqrt{2 + t^2}\\right)", "t = 4.3", "1 - 2/\\sqrt{6} = 0.18",
                   "4.6 % of the time", "the 95 % limit is 2.78", "never \"significant\""):
        assert quoted in text, quoted


# -- The numbers of the older derivations ------------------------------------------------------------

def test_numbers_of_the_derivations():
    # softmax: where exp overflows, and the log-sum-exp example
    assert f"{math.log(np.finfo(np.float64).max):.2f}" == "709.78"
    assert f"{math.log(float(np.finfo(np.float32).max)):.2f}" == "88.72"
    loss, _ = softmax_cross_entropy(np.array([[1000.0, 0.0, -1000.0]]), np.array([2]))
    assert loss == 2000.0
    # the tan bug
    from common.nn.gradcheck import rel_error
    buggy, right = 1 - math.tan(0.5) ** 2, 1 - math.tanh(0.5) ** 2
    assert (f"{buggy:.4f}", f"{right:.4f}") == ("0.7016", "0.7864")
    assert f"{rel_error(np.array([buggy]), np.array([right])):.1e}" == "5.7e-02"
    # He and Xavier standard deviations for [784, 128, 64, 10]
    sizes = [784, 128, 64, 10]
    he = [math.sqrt(2 / n_in) for n_in in sizes[:-1]]
    xavier = [math.sqrt(2 / (n_in + n_out)) for n_in, n_out in zip(sizes[:-1], sizes[1:])]
    assert [f"{s:.3g}" for s in he] == ["0.0505", "0.125", "0.177"]
    assert [f"{s:.3g}" for s in xavier] == ["0.0468", "0.102", "0.164"]
    # momentum, RMSprop and Adam
    assert 1 / (1 - 0.9) == pytest.approx(10)
    assert f"{1 / math.sqrt(0.1):.2f}" == "3.16" and f"{0.1 / math.sqrt(0.001):.2f}" == "3.16"
    t = np.arange(1, 10_001)
    ratio = (1 - 0.9 ** t) / np.sqrt(1 - 0.999 ** t)
    assert f"{ratio.max():.1f}" == "6.6" and t[ratio.argmax()] == 12 and f"{ratio[999]:.2f}" == "1.26"
    # the flush of tiny optimizer state
    tiny = float(np.finfo(np.float32).tiny)
    assert f"{tiny:.1e}" == "1.2e-38" and f"{2 ** 24 * tiny:.0e}" == "2e-31"
    assert f"{2 ** (-24 / 16):.2f}" == "0.35"
    assert 1e-3 * 2 ** 24 * tiny / (0.1 * 1e-8) < 2e-25 * 1.0001
    assert 0.5 * 1e-17 * 2 ** -23 > 1e-3 * 2 ** 24 * tiny / (0.1 * 1e-8)  # below half a float32 step of 1e-17
    assert math.sqrt(2 ** 24 * tiny) < 5e-16
    # finite differences
    e64, e32 = float(np.finfo(np.float64).eps), float(np.finfo(np.float32).eps)
    assert f"{e64:.1e}" == "2.2e-16" and f"{e64 ** (1 / 3):.0e}" == "6e-06" and f"{e64 ** (2 / 3):.0e}" == "4e-11"
    assert f"{e32:.1e}" == "1.2e-07" and f"{e32 ** (1 / 3):.0e}" == "5e-03" and f"{e32 ** (2 / 3):.0e}" == "2e-05"
    assert f"{e32 / 1e-5:.0e}" == "1e-02"
    for quoted in ("709.78", "88.72", "$\\ell = 2000$", "0.7016 instead of 0.7864", "5.7 \\times 10^{-2}",
                   "| 0.0505 | 0.0468 |", "| 0.125 | 0.102 |", "| 0.177 | 0.164 |", "10g", "3.16\\eta",
                   "about 6.6 near $t = 12$", "1.26 at $t = 1000$", "1.2 \\cdot 10^{-38}", "2 \\cdot 10^{-31}",
                   "\\approx 0.35", "2 \\cdot 10^{-25}", "10^{-17}", "5 \\cdot 10^{-16}", "2.2 \\times 10^{-16}",
                   "6 \\times 10^{-6}", "4 \\times 10^{-11}", "1.2 \\times 10^{-7}", "5 \\times 10^{-3}",
                   "2 \\times 10^{-5}", "10^{-2} \\lvert f \\rvert"):
        assert quoted in PAGE, quoted


def test_no_measured_accuracy_is_typed_into_the_page():
    """Measured results are linked, not copied: no percentage with two decimals, and every results page
    the text names exists."""
    assert not re.findall(r"\d+\.\d\d ?%", PAGE)
    for link in set(re.findall(r"\(\.\./(results/[^)#]+)\)", PAGE)):
        assert (REPO_ROOT / link).exists(), link
    assert "(#reading-the-statistics)" in PAGE and "## Reading the statistics" in PAGE


def test_training_compute_worked_example_is_stage_04s():
    """The section's stage-04 numbers come from common.compute and the stage's settings."""
    from common.compute import forward_multiply_adds, training_gflop, training_multiply_adds_per_example
    from common.stages import load_specs

    spec = load_specs(["04"])["04"]
    architecture = spec.architecture()
    text = " ".join(section("Training compute").split())
    forward = forward_multiply_adds(architecture)
    assert f"M = 784 \\cdot 128 + 128 \\cdot 64 + 64 \\cdot 10 = {sum(forward):,}".replace(",", "{,}") in text
    assert f"M_1 = {forward[0]:,}".replace(",", "{,}") in text
    assert f"3M - M_1 = {training_multiply_adds_per_example(architecture):,}".replace(",", "{,}") in text
    assert spec.epochs == 30 and spec.train_size in (None, 60_000)
    assert f"\\approx {training_gflop(architecture, spec.epochs * 60_000):.0f}$ GFLOP" in text


def test_elastic_fields_shrink_by_14_and_move_pixels_about_1_3():
    """Elastic distortions: a sigma-4 blur divides a uniform field's spread by about 14, so alpha 34 moves a
    typical pixel about 1.3 pixels and the farthest about 6."""
    from common.nn.elastic import elastic_fields, smooth_fields

    raw = np.random.default_rng(0).uniform(-1, 1, (2000, 28, 28))
    ratio = raw[:, 8:20, 8:20].std() / smooth_fields(raw, 4.0)[:, 8:20, 8:20].std()  # away from the border
    assert round(ratio) == 14 and "about 14 times smaller" in PAGE
    fields = elastic_fields(np.random.default_rng(0), 1000, 28, 34.0, 4.0)
    assert round(float(fields.std()), 1) == 1.3 and round(float(np.abs(fields).max())) == 6
    assert "about 1.3 pixels, up to about 6" in PAGE and "$\\alpha = 34$" in PAGE and "$\\sigma = 4$" in PAGE


def test_the_last_22_batches_carry_90_percent_of_the_running_averages():
    """Batch norm's running averages with momentum 0.1: the last 22 batches are the fewest that carry 90 %."""
    from common.nn.batchnorm import MOMENTUM

    carried = [1 - (1 - MOMENTUM) ** steps for steps in range(1, 40)]
    assert next(steps for steps, weight in enumerate(carried, start=1) if weight >= 0.9) == 22
    assert "the last 22 batches carry 90 % of the weight" in PAGE and "$0.1 \\cdot 0.9^t$" in PAGE


def test_label_smoothing_margin_and_smallest_loss():
    """Label smoothing 0.1 over 10 classes: targets 0.91 and 0.01, a logit gap of ln 91 = 4.5 where the gradient
    vanishes, and a smallest loss (the targets' entropy) of 0.50."""
    from common.nn.label_smoothing import label_smoothing_cross_entropy, smoothed_targets

    targets = smoothed_targets(np.array([0]), 10, 0.1, np.float64)[0]
    assert targets[0] == pytest.approx(0.91) and targets[1] == pytest.approx(0.01)
    gap = math.log(targets[0] / targets[1])
    assert targets[0] / targets[1] == pytest.approx(1 + 10 * 0.9 / 0.1) == pytest.approx(91)
    assert round(gap, 1) == 4.5 and "$g = \\ln 91 \\approx 4.5$" in PAGE
    logits = np.array([[gap] + [0.0] * 9])
    loss, grad = label_smoothing_cross_entropy(logits, np.array([0]), 0.1)
    np.testing.assert_allclose(grad, 0.0, atol=1e-12)
    entropy = -float(np.sum(targets * np.log(targets)))
    assert loss == pytest.approx(entropy) and round(entropy, 2) == 0.50
    assert "\\approx 0.50$" in PAGE and "never prints a training loss below 0.50" in PAGE
