"""Every fast path against its textbook form (common.nn.reference), and the textbook itself against finite
differences and hand-made cases.

In float64: exactly equal where the two do the same operations in the same order, to 1e-12 relative
otherwise (a different summation order, the bias trick, Adam's cheaper form); max-pooling with ties
included. Then the textbook network (common.nn.textbook) trains like the fast one.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from common.nn import parallel, reference
from common.nn.augment import random_shift
from common.nn.conv import Conv2D, MaxPool2D
from common.nn.gradcheck import numerical_gradient, numerical_gradient_of_output, rel_error
from common.nn.layers import Dense, Dropout, ReLU, Sigmoid, Tanh
from common.nn.loss import softmax, softmax_cross_entropy
from common.nn.network import Architecture, Network
from common.nn.optimizers import Adam, GradientDescent, Momentum, ParamGroup, RMSprop
from common.nn.textbook import Textbook, TextbookOptimizer, textbook_parts
from common.nn.train import train

RTOL = 1e-12


def close(fast: np.ndarray, textbook: np.ndarray) -> None:
    assert fast.shape == textbook.shape and fast.dtype == textbook.dtype
    np.testing.assert_allclose(fast, textbook, rtol=RTOL, atol=1e-14)


@pytest.fixture(params=["one thread", "three threads"])
def threads(request, monkeypatch):
    """Run each comparison once as it is and once with every element-wise step split over 3 threads."""
    if request.param == "three threads":
        monkeypatch.setattr(parallel, "MIN_ELEMENTS", 1)
        monkeypatch.setattr(parallel, "THREADS", 3)
        monkeypatch.setattr(parallel, "_pool", None)
    return request.param


# -- dense layer ----------------------------------------------------------------------------------

def test_dense_is_the_textbook(threads):
    rng = np.random.default_rng(0)
    x, W, b = rng.standard_normal((7, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    layer = Dense(W.copy(), b.copy())
    z = layer.forward(x, training=True)
    np.testing.assert_array_equal(z, reference.dense_forward(x, W, b))  # the same two operations
    dz = rng.standard_normal(z.shape)
    dx = layer.backward(dz)
    dx_ref, dW_ref, db_ref = reference.dense_backward(dz, x, W)
    np.testing.assert_array_equal(dx, dx_ref)
    np.testing.assert_array_equal(layer.grads["W"], dW_ref)
    close(layer.grads["b"], db_ref)  # ones @ dz against dz.sum(axis=0): another summation order


def test_the_textbook_dense_backward_is_the_derivative():
    rng = np.random.default_rng(1)
    x, W, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    dz = rng.standard_normal((4, 3))
    dx, dW, db = reference.dense_backward(dz, x, W)
    for value, wrt in ((dx, x), (dW, W), (db, b)):
        assert rel_error(value, numerical_gradient_of_output(lambda: reference.dense_forward(x, W, b), wrt, dz)) < 1e-7


# -- activations ----------------------------------------------------------------------------------

def activation_input(rng: np.random.Generator) -> np.ndarray:
    z = rng.standard_normal((6, 9))
    z[0, :3] = [0.0, -0.0, 1e-300]  # the kink of ReLU, and a number a hair above it
    z[1, :2] = [40.0, -40.0]         # the saturated ends of tanh and sigmoid
    return z


@pytest.mark.parametrize("name, layer_class", [("relu", ReLU), ("tanh", Tanh), ("sigmoid", Sigmoid)])
def test_activations_are_the_textbook(threads, name, layer_class):
    rng = np.random.default_rng(2)
    z = activation_input(rng)
    da = rng.standard_normal(z.shape)
    layer = layer_class()
    a = layer.forward(z, training=True)
    forward, backward = getattr(reference, f"{name}_forward"), getattr(reference, f"{name}_backward")
    np.testing.assert_array_equal(a, forward(z))
    kept = z if name == "relu" else a  # ReLU's derivative from its input, tanh's and sigmoid's from the output
    np.testing.assert_array_equal(layer.backward(da), backward(da, kept))


@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid"])
def test_the_textbook_activations_have_the_right_derivative(name):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((5, 4))
    z[np.abs(z) < 1e-3] = 0.5  # keep clear of ReLU's kink, where there is no derivative
    da = rng.standard_normal(z.shape)
    forward, backward = getattr(reference, f"{name}_forward"), getattr(reference, f"{name}_backward")
    kept = z if name == "relu" else forward(z)
    assert rel_error(backward(da, kept), numerical_gradient_of_output(lambda: forward(z), z, da)) < 1e-7
    assert reference.relu_backward(np.ones(3), np.array([-1.0, 0.0, 2.0])).tolist() == [0.0, 0.0, 1.0]


# -- softmax and cross-entropy --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_cross_entropy_is_the_textbook(dtype):
    rng = np.random.default_rng(4)
    logits = (6 * rng.standard_normal((9, 10))).astype(dtype)
    logits[0, 3] = 80.0  # a confident row: its probabilities are 1 and ~1e-35
    labels = rng.integers(0, 10, 9)
    loss, dlogits = softmax_cross_entropy(logits.copy(), labels)
    loss_ref, dlogits_ref = reference.softmax_cross_entropy(logits, labels)
    np.testing.assert_array_equal(dlogits, dlogits_ref)  # p / sum, minus one-hot, over B: the same steps
    assert loss == pytest.approx(loss_ref, rel=1e-12 if dtype == np.float64 else 1e-6)
    np.testing.assert_array_equal(softmax(logits.copy()), reference.softmax(logits))


def test_the_textbook_loss_and_its_gradient_by_hand_and_by_finite_differences():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    loss, dlogits = reference.softmax_cross_entropy(logits, np.array([2, 1]))
    assert loss == pytest.approx((2000.0 + np.log(3)) / 2, rel=1e-15)  # no log(0): log-sum-exp
    np.testing.assert_allclose(dlogits, [[0.5, 0.0, -0.5], [1 / 6, -1 / 3, 1 / 6]], atol=1e-15)
    rng = np.random.default_rng(5)
    z, y = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    numeric = numerical_gradient(lambda: reference.softmax_cross_entropy(z, y)[0], z)
    assert rel_error(reference.softmax_cross_entropy(z, y)[1], numeric) < 1e-7


# -- dropout --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dropout_is_the_textbook(dtype):
    x = np.random.default_rng(6).standard_normal((50, 40)).astype(dtype)
    layer = Dropout(0.3, np.random.default_rng(7))
    out = layer.forward(x, training=True)
    out_ref, mask = reference.dropout_forward(x, 0.3, np.random.default_rng(7))
    np.testing.assert_array_equal(out, out_ref)
    dout = np.ones_like(x)
    np.testing.assert_array_equal(layer.backward(dout), reference.dropout_backward(dout, mask))
    assert set(np.unique(mask)) == {0, dtype(1 / 0.7)}  # survivors scaled by 1 / (1 - rate)
    np.testing.assert_array_equal(layer.forward(x), x)  # not training: the identity


# -- convolution and max-pooling ------------------------------------------------------------------

@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("k, c_in, height, width", [(3, 1, 7, 9), (5, 3, 9, 8), (3, 4, 6, 6), (5, 1, 12, 12)])
def test_conv_is_the_textbook(threads, padding, k, c_in, height, width):
    """Both patch layouts (offset first when k * C_in < W'), both paddings, odd sizes."""
    rng = np.random.default_rng(8)
    W, b = rng.standard_normal((k, k, c_in, 3)), rng.standard_normal(3)
    x = rng.standard_normal((2, height, width, c_in))
    layer = Conv2D(W.copy(), b.copy(), padding)
    pad = layer.pad
    out = layer.forward(x, training=True)
    close(out, reference.conv_forward(x, W, b, pad))
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    dx_ref, dW_ref, db_ref = reference.conv_backward(dout, x, W, pad)
    close(dx, dx_ref)
    close(layer.grads["W"], dW_ref)
    close(layer.grads["b"], db_ref)


@pytest.mark.parametrize("pad", [0, 1, 2])
def test_the_textbook_conv_backward_is_the_derivative(pad):
    rng = np.random.default_rng(9)
    W, b = rng.standard_normal((5, 5, 2, 3)), rng.standard_normal(3)
    x = rng.standard_normal((2, 7, 6, 2))
    dout = rng.standard_normal(reference.conv_forward(x, W, b, pad).shape)
    dx, dW, db = reference.conv_backward(dout, x, W, pad)
    forward = lambda: reference.conv_forward(x, W, b, pad)  # noqa: E731
    for value, wrt in ((dx, x), (dW, W), (db, b)):
        assert rel_error(value, numerical_gradient_of_output(forward, wrt, dout)) < 1e-7


def test_the_textbook_conv_is_a_cross_correlation():
    """A 3x3 kernel with a single 1 at offset (0, 0) copies the pixel up and to the left of each output."""
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    W = np.zeros((3, 3, 1, 1))
    W[0, 0] = 1.0
    np.testing.assert_array_equal(reference.conv_forward(x, W, np.zeros(1))[0, :, :, 0], x[0, :2, :2, 0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_maxpool_is_the_textbook_on_every_tie_pattern(threads, dtype):
    """Every 2x2 window of the values {0, 1, 2} (81 windows, every kind of tie) in one batch: the same
    maxima and the gradient routed to the same element (the first maximum in row-major order)."""
    windows = np.array(list(itertools.product([0.0, 1.0, 2.0], repeat=4)), dtype=dtype)  # (81, 4)
    x = windows.reshape(81, 2, 2).transpose(1, 0, 2).reshape(1, 2, 162, 1)  # window w at columns 2w, 2w+1
    x = np.repeat(x, 2, axis=3)
    layer = MaxPool2D()
    out = layer.forward(x, training=True)
    np.testing.assert_array_equal(out, reference.maxpool_forward(x))
    dout = np.arange(1, out.size + 1, dtype=dtype).reshape(out.shape)
    np.testing.assert_array_equal(layer.backward(dout), reference.maxpool_backward(dout, x))


@pytest.mark.parametrize("height, width", [(6, 8), (7, 5)])
def test_maxpool_is_the_textbook_on_random_and_odd_sizes(threads, height, width):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, height, width, 4))
    x[0] = 0.0  # windows of zeros, as after a ReLU
    layer = MaxPool2D()
    out = layer.forward(x, training=True)
    np.testing.assert_array_equal(out, reference.maxpool_forward(x))
    dout = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(layer.backward(dout), reference.maxpool_backward(dout, x))


def test_the_textbook_maxpool_backward_is_the_derivative_away_from_ties():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 5, 6, 3))  # distinct values: a derivative exists everywhere
    dout = rng.standard_normal((2, 2, 3, 3))
    numeric = numerical_gradient_of_output(lambda: reference.maxpool_forward(x), x, dout)
    assert rel_error(reference.maxpool_backward(dout, x), numeric) < 1e-7


# -- augmentation ---------------------------------------------------------------------------------

def test_random_shift_is_the_textbook():
    images = np.random.default_rng(12).random((64, 784), dtype=np.float32)
    for max_shift in (1, 2, 3):
        fast = random_shift(images, np.random.default_rng(13), max_shift)
        np.testing.assert_array_equal(fast, reference.random_shift(images, np.random.default_rng(13), max_shift))


def test_the_textbook_shift_moves_a_pixel_by_its_offsets():
    image = np.zeros((1, 25))
    image[0, 2 * 5 + 2] = 1.0  # the centre of a 5x5 image
    rng = np.random.default_rng(14)
    top, left = np.random.default_rng(14).integers(0, 3, size=(2, 1))  # the draw the function makes
    shifted = reference.random_shift(image, rng, max_shift=1).reshape(5, 5)
    # output pixel (r, c) reads padded (r + top, c + left), i.e. input (r + top - 1, c + left - 1)
    assert shifted[2 - (top[0] - 1), 2 - (left[0] - 1)] == 1.0 and shifted.sum() == 1.0


# -- optimizers -----------------------------------------------------------------------------------

RULES = {
    "sgd": (lambda: GradientDescent(0.1, weight_decay=0.05), lambda p, g, s, t: reference.sgd_step(p, g, 0.1)),
    "momentum": (lambda: Momentum(0.1, weight_decay=0.05),
                 lambda p, g, s, t: reference.momentum_step(p, g, s[0], 0.1)),
    "rmsprop": (lambda: RMSprop(0.01, weight_decay=0.05),
                lambda p, g, s, t: reference.rmsprop_step(p, g, s[0], 0.01)),
    "adam": (lambda: Adam(0.01, weight_decay=0.05), lambda p, g, s, t: reference.adam_step(p, g, s[0], s[1], t, 0.01)),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_optimizers_are_the_textbook_steps(threads, rule):
    """Five steps on weights (decayed) and biases (not) against the textbook's steps; the fast rules
    are the same maths in fewer passes, so equal to 1e-12."""
    make, textbook_step = RULES[rule]
    rng = np.random.default_rng(15)
    weights, biases = rng.standard_normal(300), rng.standard_normal(20)
    fast, optimizer = (weights.copy(), biases.copy()), make()
    slow, state = (weights.copy(), biases.copy()), [[np.zeros(300), np.zeros(300)], [np.zeros(20), np.zeros(20)]]
    for t in range(1, 6):
        grads = rng.standard_normal(300), rng.standard_normal(20)
        optimizer.step([ParamGroup("weights", fast[0], grads[0], decay=True), ParamGroup("biases", fast[1], grads[1])])
        lr = optimizer.lr
        reference.decay_weights(slow[0], lr, 0.05)
        for param, grad, kept in zip(slow, grads, state):
            textbook_step(param, grad, kept, t)
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(a, b, rtol=RTOL)


@pytest.mark.parametrize("rule", ["gd", "momentum", "rmsprop", "adam"])
def test_the_textbook_optimizer_steps_like_the_fast_one(rule):
    fast = {"gd": GradientDescent, "momentum": Momentum, "rmsprop": RMSprop, "adam": Adam}[rule](0.01, weight_decay=0.1)
    slow = TextbookOptimizer(rule, 0.01, 0.1, Textbook())
    rng = np.random.default_rng(16)
    a, b = rng.standard_normal(50), rng.standard_normal(50)
    a2, b2 = a.copy(), b.copy()
    for _ in range(4):
        ga, gb = rng.standard_normal(50), rng.standard_normal(50)
        fast.step([ParamGroup("w", a, ga, decay=True), ParamGroup("b", b, gb)])
        slow.step([ParamGroup("w", a2, ga, decay=True), ParamGroup("b", b2, gb)])
    np.testing.assert_allclose(a, a2, rtol=RTOL)
    np.testing.assert_allclose(b, b2, rtol=RTOL)


# -- whole networks -------------------------------------------------------------------------------

ARCHITECTURES = {
    "perceptron": Architecture((36, 12, 8, 4), "relu", 0.2, 0.3, "float64"),
    "tanh perceptron": Architecture((36, 10, 4), "tanh", dtype="float64"),
    "conv": Architecture((36, 4), dtype="float64", layers=(
        "reshape 6x6x1", "conv 3 3x3 same", "maxpool", "relu", "conv 4 3x3 valid", "sigmoid", "flatten",
        "dropout 0.25", "dense 5", "relu", "dense 4")),
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_the_textbook_network_trains_like_the_fast_one(name):
    """The same architecture, seed, data and Adam(W) settings, built from the fast layers and from the
    textbook's: after 6 float64 steps (dropout and shifts drawn from the same streams) the weights agree."""
    architecture = ARCHITECTURES[name]
    rng = np.random.default_rng(17)
    x, y = rng.random((40, 36)), rng.integers(0, 4, 40)
    layers, loss, make_optimizer = textbook_parts(Textbook())
    fast = Network.from_architecture(architecture, np.random.default_rng(18))
    slow = Network.from_architecture(architecture, np.random.default_rng(18), kit=layers)
    assert [type(layer).__name__ for layer in slow.layers][:2] != [type(layer).__name__ for layer in fast.layers][:2]
    np.testing.assert_array_equal(fast.flat_params, slow.flat_params)
    settings = dict(epochs=2, batch_size=16, progress=False)
    train(fast, Adam(0.01, weight_decay=0.1), x, y, rng=np.random.default_rng(19), **settings)
    train(slow, make_optimizer("adam", 0.01, 0.1), x, y, rng=np.random.default_rng(19), loss=loss, **settings)
    np.testing.assert_allclose(fast.flat_params, slow.flat_params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast.predict_proba(x), slow.predict_proba(x), rtol=1e-9)


def test_a_learners_function_stands_in_for_the_textbooks():
    """Replacing one function runs everything else on the reference, and says which one was replaced."""
    calls = []

    def my_relu_forward(z):
        calls.append(z.shape)
        return np.maximum(z, 0)

    book = Textbook(relu_forward=my_relu_forward)
    assert book.replaced() == ["relu_forward"] and Textbook().replaced() == []
    layers, _, _ = textbook_parts(book)
    network = Network.from_architecture(Architecture((6, 5, 3)), np.random.default_rng(0), kit=layers)
    network.forward(np.ones((2, 6)))
    assert calls == [(2, 5)]
