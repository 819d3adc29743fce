"""Tests for common.nn.conv: Conv2D against the textbook loop (common.nn.reference) and finite differences (float64), MaxPool2D's
one-element-per-window gradient and its tie rule, Flatten, a small conv net end to end, dtypes, and the
first-layer shortcut."""
from __future__ import annotations

import numpy as np
import pytest

from common.nn import reference
from common.nn.conv import Conv2D, Flatten, MaxPool2D, Reshape
from common.nn.gradcheck import numerical_gradient, numerical_gradient_of_output, rel_error
from common.nn.init import init_weights
from common.nn.layers import Dense, ReLU
from common.nn.loss import softmax_cross_entropy

TOL = 1e-6
H = 1e-5


def make_conv(rng: np.random.Generator, k: int, c_in: int, c_out: int, padding: str,
              dtype: type = np.float64) -> Conv2D:
    weights = rng.standard_normal((k, k, c_in, c_out)).astype(dtype)
    return Conv2D(weights, rng.standard_normal(c_out).astype(dtype), padding)


def conv_weights(k: int, c_in: int, c_out: int, rng: np.random.Generator) -> np.ndarray:
    """He-initialised ``(k, k, c_in, c_out)`` float64 weights, as ``Network`` draws them."""
    return init_weights("he", k * k * c_in, c_out, rng).reshape(k, k, c_in, c_out)


# -- Conv2D ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("k, c_in, size", [(3, 1, 7), (5, 3, 9), (3, 3, 8)])
def test_conv_forward_matches_the_textbook_loop(padding, k, c_in, size):
    """Conv2D forward equals reference.conv_forward, the direct sum over every window, for both paddings."""
    rng = np.random.default_rng(0)
    layer = make_conv(rng, k, c_in, 4, padding)
    x = rng.standard_normal((2, size, size + 2, c_in))
    out = layer.forward(x, training=True)
    pad = (k - 1) // 2 if padding == "same" else 0
    expected = reference.conv_forward(x, layer.params["W"], layer.params["b"], pad)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.forward(x, training=False), expected, rtol=1e-12, atol=1e-12)


def test_conv_hand_cases():
    """A valid 3x3 on a 3x3 image is sum(x * W) + b; a same conv with a centred 1 is the identity."""
    x = np.arange(9.0).reshape(1, 3, 3, 1)
    weights = np.arange(9.0).reshape(3, 3, 1, 1) - 4
    out = Conv2D(weights, np.array([0.5]), "valid").forward(x)
    np.testing.assert_array_equal(out, [[[[np.sum(x.ravel() * weights.ravel()) + 0.5]]]])
    identity = np.zeros((3, 3, 1, 1))
    identity[1, 1] = 1.0
    np.testing.assert_array_equal(Conv2D(identity, np.zeros(1), "same").forward(x), x)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("k, c_in, size", [(3, 1, 7), (3, 3, 9), (5, 1, 9), (5, 3, 7)])
def test_conv_gradients_match_finite_differences(padding, k, c_in, size):
    """Conv2D backward: dx, dW and db agree with finite differences of sum(forward * dout)."""
    rng = np.random.default_rng(1)
    layer = make_conv(rng, k, c_in, 3, padding)
    x = rng.standard_normal((2, size, size, c_in))
    out = layer.forward(x, training=True)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    dW, db = layer.grads["W"].copy(), layer.grads["b"].copy()
    forward = lambda: layer.forward(x, training=True)  # noqa: E731
    assert dx.shape == x.shape and dW.shape == layer.params["W"].shape and db.shape == (3,)
    assert rel_error(dx, numerical_gradient_of_output(forward, x, dout, H)) < TOL
    assert rel_error(dW, numerical_gradient_of_output(forward, layer.params["W"], dout, H)) < TOL
    assert rel_error(db, numerical_gradient_of_output(forward, layer.params["b"], dout, H)) < TOL


def test_conv_without_input_grad_returns_none_but_fills_grads():
    """A first layer (needs_input_grad=False) returns None and fills the same dW, db as otherwise."""
    rng = np.random.default_rng(2)
    layer = make_conv(rng, 3, 2, 4, "same")
    x = rng.standard_normal((3, 6, 6, 2))
    dout = rng.standard_normal((3, 6, 6, 4))
    layer.forward(x, training=True)
    assert layer.backward(dout) is not None
    dW, db = layer.grads["W"].copy(), layer.grads["b"].copy()
    layer.needs_input_grad = False
    layer.forward(x, training=True)
    assert layer.backward(dout) is None
    np.testing.assert_allclose(layer.grads["W"], dW, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["b"], db, rtol=1e-12)
    np.testing.assert_allclose(db, dout.sum(axis=(0, 1, 2)), rtol=1e-12)


def test_conv_writes_grads_in_place_and_follows_the_latest_batch():
    """grads are filled in place (a network may alias them into one buffer); after two training
    forwards of different batch sizes, backward uses the second (the reused patch memory)."""
    rng = np.random.default_rng(3)
    layer = make_conv(rng, 3, 2, 4, "valid")
    buffer = np.zeros(layer.params["W"].size)
    layer.grads["W"] = buffer.reshape(layer.params["W"].shape)
    x1, x2 = rng.standard_normal((5, 6, 6, 2)), rng.standard_normal((2, 6, 6, 2))
    dout = rng.standard_normal((2, 4, 4, 4))
    layer.forward(x1, training=True)
    layer.forward(x2, training=True)
    layer.backward(dout)
    fresh = Conv2D(layer.params["W"], layer.params["b"], "valid")
    fresh.forward(x2, training=True)
    fresh.backward(dout)
    np.testing.assert_allclose(buffer.reshape(fresh.grads["W"].shape), fresh.grads["W"], rtol=1e-12)


def test_conv_forward_is_right_again_after_other_shapes_and_modes():
    """The patch memory (with its column of ones for the bias) is reused and remade: every call is
    right, whatever came before it (another batch size, an inference call, both layouts)."""
    rng = np.random.default_rng(8)
    for k, c_in, size in ((3, 1, 9), (3, 4, 6)):  # a short window row (offset-first) and a long one
        layer = make_conv(rng, k, c_in, 3, "valid")
        for batch, training in ((2, True), (2, True), (3, False), (3, True), (2, False), (2, True)):
            x = rng.standard_normal((batch, size, size, c_in))
            expected = reference.conv_forward(x, layer.params["W"], layer.params["b"], 0)
            np.testing.assert_allclose(layer.forward(x, training=training), expected, rtol=1e-12, atol=1e-12)


def test_conv_backward_after_an_inference_forward_is_refused():
    """forward(training=False) keeps no patches, so a following backward raises instead of using stale ones."""
    rng = np.random.default_rng(4)
    layer = make_conv(rng, 3, 1, 2, "same")
    x = rng.standard_normal((1, 5, 5, 1))
    layer.forward(x, training=True)
    layer.forward(x, training=False)
    with pytest.raises(RuntimeError):
        layer.backward(np.ones((1, 5, 5, 2)))


@pytest.mark.parametrize("bad", [
    dict(weights=np.zeros((2, 2, 1, 3)), bias=np.zeros(3)),        # even kernel
    dict(weights=np.zeros((3, 5, 1, 3)), bias=np.zeros(3)),        # not square
    dict(weights=np.zeros((3, 3, 1, 3)), bias=np.zeros(4)),        # bias does not match
    dict(weights=np.zeros((3, 3, 1, 3)), bias=np.zeros(3), padding="full"),
], ids=["even", "not-square", "bias", "padding"])
def test_conv_rejects_bad_arguments(bad):
    """Even or non-square kernels, a mismatched bias and unknown paddings are refused."""
    with pytest.raises(ValueError):
        Conv2D(**bad)


def test_conv_rejects_wrong_channel_count():
    """An input whose last axis is not C_in is refused (an NCHW batch, say)."""
    layer = Conv2D(np.zeros((3, 3, 1, 2)), np.zeros(2))
    with pytest.raises(ValueError):
        layer.forward(np.zeros((2, 1, 8, 8)))


# -- MaxPool2D -------------------------------------------------------------------------------------
def test_maxpool_forward_and_tie_rule():
    """Each window's gradient goes to ONE element: the first maximum in row-major order."""
    channel0 = np.array([[1, 1, 0, 2],
                         [1, 1, 1, 2],    # windows: all tied | tie top-right & bottom-right
                         [0, 1, 5, 0],
                         [3, 3, 0, 5]])   # windows: tie bottom-left & bottom-right | tie top-left & bottom-right
    channel1 = np.array([[0, 4, 7, 7],
                         [4, 4, 7, 7],    # windows: tie top-right, bottom-left, bottom-right | all tied
                         [9, 0, 0, 0],
                         [0, 0, 0, 8]])   # windows: single max top-left | single max bottom-right
    x = np.stack([channel0, channel1], axis=-1)[None].astype(np.float64)
    layer = MaxPool2D()
    out = layer.forward(x, training=True)
    np.testing.assert_array_equal(out[0, :, :, 0], [[1, 2], [3, 5]])
    np.testing.assert_array_equal(out[0, :, :, 1], [[4, 7], [9, 8]])
    dout = np.arange(1.0, 9.0).reshape(1, 2, 2, 2)
    dx = layer.backward(dout)
    expected = np.zeros_like(x)
    for (r, c), (h, w) in {(0, 0): (0, 0), (0, 1): (0, 3), (1, 0): (3, 0), (1, 1): (2, 2)}.items():
        expected[0, h, w, 0] = dout[0, r, c, 0]
    for (r, c), (h, w) in {(0, 0): (0, 1), (0, 1): (0, 2), (1, 0): (2, 0), (1, 1): (3, 3)}.items():
        expected[0, h, w, 1] = dout[0, r, c, 1]
    np.testing.assert_array_equal(dx, expected)
    assert np.count_nonzero(dx) == dout.size  # exactly one element per window


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_tie_rule_on_every_window_of_three_values(dtype):
    """All 81 windows with elements from {0, 1, 2}: the gradient goes to the first maximum in
    row-major order, and the maximum is right, in training (the tournament) and in inference."""
    import itertools

    windows = np.array(list(itertools.product(range(3), repeat=4)), dtype=dtype)  # (81, 4) row-major
    x = windows.reshape(81, 2, 2).transpose(1, 0, 2).reshape(1, 2, 162, 1)  # window s: columns 2s, 2s+1
    layer = MaxPool2D()
    out = layer.forward(x, training=True)
    np.testing.assert_array_equal(out[0, 0, :, 0], windows.max(axis=1))
    np.testing.assert_array_equal(layer.forward(x, training=False), out)
    layer.forward(x, training=True)
    dout = np.arange(1, 82, dtype=dtype).reshape(1, 1, 81, 1)
    dx = layer.backward(dout)
    routed = dx.reshape(2, 81, 2).transpose(1, 0, 2).reshape(81, 4)  # back to (window, row-major element)
    expected = np.zeros((81, 4), dtype=dtype)
    expected[np.arange(81), windows.argmax(axis=1)] = dout.ravel()  # argmax: the first maximum
    np.testing.assert_array_equal(routed, expected)


def test_maxpool_backward_after_an_inference_forward_is_refused():
    """Inference records no winners, so backward without a training forward raises."""
    layer = MaxPool2D()
    layer.forward(np.zeros((1, 4, 4, 1)), training=False)
    with pytest.raises(RuntimeError):
        layer.backward(np.ones((1, 2, 2, 1)))


def test_maxpool_gradients_match_finite_differences():
    """Random inputs (no ties): dx agrees with finite differences and equals dout at each maximum."""
    rng = np.random.default_rng(6)
    layer = MaxPool2D()
    x = rng.standard_normal((2, 6, 8, 3))
    out = layer.forward(x, training=True)
    assert out.shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(out, x.reshape(2, 3, 2, 4, 2, 3).max(axis=(2, 4)))
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    numeric = numerical_gradient_of_output(lambda: layer.forward(x, training=True), x, dout, H)
    assert rel_error(dx, numeric) < TOL


def test_maxpool_odd_size_drops_the_last_row_and_column():
    """5x7 -> 2x3 (floor): the dropped row and column take no part and get a zero gradient."""
    rng = np.random.default_rng(7)
    layer = MaxPool2D()
    x = rng.standard_normal((2, 5, 7, 2))
    out = layer.forward(x, training=True)
    np.testing.assert_array_equal(out, x[:, :4, :6].reshape(2, 2, 2, 3, 2, 2).max(axis=(2, 4)))
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    assert dx.shape == x.shape
    assert not dx[:, 4, :, :].any() and not dx[:, :, 6, :].any()
    numeric = numerical_gradient_of_output(lambda: layer.forward(x, training=True), x, dout, H)
    assert rel_error(dx, numeric) < TOL


# -- Flatten ---------------------------------------------------------------------------------------
def test_flatten_round_trip_and_order():
    """(B, H, W, C) -> (B, H*W*C) with x[b, h, w, c] at column (h*W + w)*C + c, and back."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 4, 5, 2))
    layer = Flatten()
    out = layer.forward(x, training=True)
    assert out.shape == (3, 40)
    assert out[1, (2 * 5 + 3) * 2 + 1] == x[1, 2, 3, 1]
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dx, dout.reshape(x.shape))
    numeric = numerical_gradient_of_output(lambda: layer.forward(x, training=True), x, dout, H)
    assert rel_error(dx, numeric) < TOL


# -- dtypes ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_float32_in_float32_out(padding):
    """float32 inputs and parameters give float32 outputs, input gradients and parameter gradients,
    close to the float64 results."""
    rng = np.random.default_rng(9)
    conv = make_conv(rng, 3, 2, 4, padding, np.float32)
    conv64 = Conv2D(conv.params["W"].astype(np.float64), conv.params["b"].astype(np.float64), padding)
    x = rng.standard_normal((2, 8, 8, 2)).astype(np.float32)
    for layer, data in ((conv, x), (conv64, x.astype(np.float64))):
        pool, flat = MaxPool2D(), Flatten()
        out = flat.forward(pool.forward(layer.forward(data, training=True), training=True), training=True)
        dout = np.ones_like(out)
        dx = layer.backward(pool.backward(flat.backward(dout)))
        if layer is conv:
            assert out.dtype == dx.dtype == np.float32
            assert conv.grads["W"].dtype == conv.grads["b"].dtype == np.float32
            out32, dx32 = out, dx
    np.testing.assert_allclose(out32, out, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx32, dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv.grads["W"], conv64.grads["W"], rtol=1e-4, atol=1e-4)


# -- a small conv net end to end -------------------------------------------------------------------
ROUNDOFF = 1e-10  # float64 roundoff of a loss near 1, divided by 2h: ~1e-15 / 2e-5, measured up to 1.6e-11


def assert_matches_loss_differences(analytic: np.ndarray, numeric: np.ndarray) -> None:
    """Relative error < TOL element by element, except for elements so small (below ~1e-4) that
    the loss's own roundoff dominates their finite difference: there, absolute error < ROUNDOFF."""
    error = np.abs(analytic - numeric)
    assert np.all((error <= TOL * (np.abs(analytic) + np.abs(numeric))) | (error < ROUNDOFF)), rel_error(analytic, numeric)


def test_small_conv_net_gradients_match_finite_differences_of_the_loss():
    """Conv(same) -> ReLU -> MaxPool -> Conv(valid) -> ReLU -> Flatten -> Dense -> softmax cross-entropy:
    backprop through the stack agrees with finite differences of the loss for every parameter and the input."""
    rng = np.random.default_rng(13)
    layers = [Conv2D(conv_weights(3, 2, 4, rng), 0.1 * rng.standard_normal(4), "same"),
              ReLU(), MaxPool2D(),
              Conv2D(conv_weights(3, 4, 3, rng), 0.1 * rng.standard_normal(3), "valid"),
              ReLU(), Flatten(),
              Dense(rng.standard_normal((27, 5)) / np.sqrt(27), np.zeros(5))]
    x = rng.standard_normal((3, 10, 10, 2))
    labels = np.array([0, 3, 4])

    def loss() -> float:
        out = x
        for layer in layers:
            out = layer.forward(out, training=True)
        return softmax_cross_entropy(out, labels)[0]

    out = x
    for layer in layers:
        out = layer.forward(out, training=True)
    grad = softmax_cross_entropy(out, labels)[1]
    for layer in reversed(layers):
        grad = layer.backward(grad)
    dx = grad
    analytic = [(layer.params[key], layer.grads[key].copy()) for layer in layers for key in layer.params]
    assert len(analytic) == 6
    # not a vacuous check: signal reaches every parameter and a good part of the input
    assert all(np.count_nonzero(grad) > grad.size // 2 for _, grad in analytic)
    assert np.count_nonzero(dx) > dx.size // 8
    for param, grad in analytic:
        assert_matches_loss_differences(grad, numerical_gradient(loss, param, H))
    assert_matches_loss_differences(dx, numerical_gradient(loss, x, H))


def test_reshape_turns_rows_into_images_and_back():
    """(B, 784) rows become (B, 28, 28, 1) images in row-major pixel order; backward undoes it."""
    x = np.arange(2 * 784, dtype=np.float32).reshape(2, 784)
    layer = Reshape((28, 28, 1))
    images = layer.forward(x)
    assert images.shape == (2, 28, 28, 1) and images[1, 3, 5, 0] == x[1, 3 * 28 + 5]
    np.testing.assert_array_equal(layer.backward(images), x)
    with pytest.raises(ValueError):
        layer.forward(np.zeros((2, 783), np.float32))
