"""Tests for common.nn.layers: every backward pass against centered finite differences (float64),
the first-layer shortcut, dropout's fixed mask and scaling, and the overflow-free sigmoid."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from common.nn.gradcheck import numerical_gradient_of_output, rel_error
from common.nn.layers import Dense, Dropout, ReLU, Sigmoid, Tanh, stable_sigmoid

TOL = 1e-6
H = 1e-5


def make_dense(rng: np.random.Generator, fan_in: int = 5, fan_out: int = 4) -> Dense:
    return Dense(rng.standard_normal((fan_in, fan_out)), rng.standard_normal(fan_out))


def test_dense_gradients_match_finite_differences():
    """Dense backward: dx, dW and db agree with finite differences of sum(forward * dout)."""
    rng = np.random.default_rng(0)
    layer = make_dense(rng)
    x = rng.standard_normal((3, 5))
    dout = rng.standard_normal((3, 4))
    layer.forward(x, training=True)
    dx = layer.backward(dout)
    dW, db = layer.grads["W"].copy(), layer.grads["b"].copy()
    forward = lambda: layer.forward(x, training=True)  # noqa: E731
    assert dx.shape == x.shape
    assert rel_error(dx, numerical_gradient_of_output(forward, x, dout, H)) < TOL
    assert rel_error(dW, numerical_gradient_of_output(forward, layer.params["W"], dout, H)) < TOL
    assert rel_error(db, numerical_gradient_of_output(forward, layer.params["b"], dout, H)) < TOL


def test_dense_exact_values_small_case():
    """Dense forward and backward on a hand case: z = xW + b, dW = x^T dout, db = sum dout, dx = dout W^T."""
    layer = Dense(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([0.5, -0.5]))
    x = np.array([[1.0, 1.0]])
    np.testing.assert_array_equal(layer.forward(x), [[4.5, 5.5]])
    dx = layer.backward(np.array([[1.0, -1.0]]))
    np.testing.assert_array_equal(dx, [[-1.0, -1.0]])
    np.testing.assert_array_equal(layer.grads["W"], [[1.0, -1.0], [1.0, -1.0]])
    np.testing.assert_array_equal(layer.grads["b"], [1.0, -1.0])


def test_dense_without_input_grad_returns_none_but_fills_grads():
    """A first layer (needs_input_grad=False) returns None from backward and still fills dW, db."""
    rng = np.random.default_rng(1)
    layer = make_dense(rng)
    layer.needs_input_grad = False
    x = rng.standard_normal((3, 5))
    dout = rng.standard_normal((3, 4))
    layer.forward(x, training=True)
    assert layer.backward(dout) is None
    np.testing.assert_allclose(layer.grads["W"], x.T @ dout, rtol=1e-12)
    np.testing.assert_allclose(layer.grads["b"], dout.sum(axis=0), rtol=1e-12)


def away_from_zero(x: np.ndarray, margin: float = 0.01) -> np.ndarray:
    """Move entries with |x| < margin to +-margin-ish so a kink is never within h of any input."""
    x = x.copy()
    small = np.abs(x) < margin
    x[small] = np.where(x[small] >= 0, margin, -margin) + 2 * x[small]
    assert np.all(np.abs(x) >= margin - 1e-12)
    return x


@pytest.mark.parametrize("layer_cls", [ReLU, Tanh, Sigmoid], ids=["relu", "tanh", "sigmoid"])
def test_activation_gradients_match_finite_differences(layer_cls):
    """ReLU/Tanh/Sigmoid backward agrees with finite differences (inputs kept away from ReLU's kink)."""
    rng = np.random.default_rng(2)
    layer = layer_cls()
    x = away_from_zero(rng.standard_normal((4, 6)) * 2)
    dout = rng.standard_normal((4, 6))
    layer.forward(x, training=True)
    dx = layer.backward(dout)
    numeric = numerical_gradient_of_output(lambda: layer.forward(x, training=True), x, dout, H)
    assert rel_error(dx, numeric) < TOL


def test_relu_derivative_is_zero_at_zero_and_for_negatives():
    """ReLU passes the gradient only where the input is strictly positive (0 at x == 0)."""
    layer = ReLU()
    x = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(layer.forward(x), [[0.0, 0.0, 3.0]])
    np.testing.assert_array_equal(layer.backward(np.array([[5.0, 5.0, 5.0]])), [[0.0, 0.0, 5.0]])


def test_tanh_and_sigmoid_exact_derivatives():
    """Tanh' = 1 - tanh^2 and sigmoid' = s(1-s), compared to closed forms at a few points."""
    x = np.array([[-1.5, 0.0, 0.7]])
    ones = np.ones_like(x)
    tanh, sig = Tanh(), Sigmoid()
    tanh.forward(x)
    np.testing.assert_allclose(tanh.backward(ones), 1 / np.cosh(x) ** 2, rtol=1e-12)
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(sig.forward(x), s, rtol=1e-12)
    np.testing.assert_allclose(sig.backward(ones), s * (1 - s), rtol=1e-12)


class ReplayRng:
    """Stands in for a Generator: every ``random`` call returns the same draws (a fixed mask)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def random(self, shape, dtype=np.float64):
        return np.random.default_rng(self.seed).random(shape, dtype=dtype)


def test_dropout_backward_uses_the_forward_mask():
    """Dropout backward equals dout * mask, and matches finite differences with the mask held fixed."""
    rng = np.random.default_rng(3)
    layer = Dropout(0.4, ReplayRng(7))
    x = rng.standard_normal((5, 8))
    dout = rng.standard_normal((5, 8))
    out = layer.forward(x, training=True)
    mask = layer._mask.copy()
    np.testing.assert_array_equal(out, x * mask)
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dx, dout * mask)
    numeric = numerical_gradient_of_output(lambda: layer.forward(x, training=True), x, dout, H)
    assert rel_error(dx, numeric) < TOL
    assert 0 < np.count_nonzero(mask == 0) < mask.size  # the mask really drops something


def test_dropout_scaling_and_expectation():
    """Kept units are scaled by exactly 1/(1-rate), dropped are 0; drop fraction ~ rate, E[mask] ~ 1."""
    rate = 0.25
    layer = Dropout(rate, np.random.default_rng(4))
    x = np.ones((200, 250))
    out = layer.forward(x, training=True)
    kept = out != 0
    np.testing.assert_array_equal(out[kept], 1.0 / (1.0 - rate))
    # 50,000 Bernoulli draws: std of the drop fraction is ~0.002
    assert abs(1 - kept.mean() - rate) < 0.01
    assert abs(out.mean() - 1.0) < 0.015


def test_dropout_is_identity_when_not_training():
    """At test time dropout returns its input unchanged and backward passes dout through."""
    layer = Dropout(0.5, np.random.default_rng(5))
    x = np.random.default_rng(6).standard_normal((3, 4))
    assert layer.forward(x, training=False) is x
    dout = np.ones((3, 4))
    assert layer.backward(dout) is dout


def test_dropout_rejects_bad_rate():
    """A rate outside [0, 1) is refused."""
    with pytest.raises(ValueError):
        Dropout(1.0, np.random.default_rng(0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_extreme_inputs_no_overflow(dtype):
    """Sigmoid of +-1000 is exactly 1/0 in float32 and float64, same dtype, with no warning."""
    x = np.array([[-1000.0, 1000.0, 0.0]], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        out = Sigmoid().forward(x)
        direct = stable_sigmoid(x)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.array([[0.0, 1.0, 0.5]], dtype=dtype))
    np.testing.assert_array_equal(direct, out)
