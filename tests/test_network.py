"""Tests for common.nn.network (and common.nn.init): whole-network gradient check, parameter count and
layout, dtypes, initialisation scales, inference helpers, dropout at test time, bad options."""
from __future__ import annotations

import math

import numpy as np
import pytest

from common.nn.errors import UserError
from common.nn.gradcheck import numerical_gradient, rel_error
from common.nn.init import init_weights
from common.nn.layers import Dense, Dropout
from common.nn.loss import softmax, softmax_cross_entropy
from common.nn.network import Network


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_network_gradients_match_finite_differences(activation):
    """Backprop through a 7-6-5-4 float64 network: every W and b gradient agrees with finite differences of the loss."""
    rng = np.random.default_rng(10)
    net = Network.from_sizes([7, 6, 5, 4], rng, activation=activation, dtype="float64")
    for layer in net.weighted_layers():  # non-zero biases so their gradients are exercised too
        layer.params["b"][...] = rng.standard_normal(layer.params["b"].shape) * 0.1
    x = rng.standard_normal((5, 7))
    y = rng.integers(0, 4, 5)
    loss = lambda: softmax_cross_entropy(net.forward(x, training=False), y)[0]  # noqa: E731
    _, dlogits = softmax_cross_entropy(net.forward(x, training=False), y)
    net.backward(dlogits)
    params = net.named_parameters()
    assert [name for name, _, _ in params] == ["0.W", "0.b", "1.W", "1.b", "2.W", "2.b"]
    analytic = {name: grad.copy() for name, _, grad in params}
    for name, param, _ in params:
        numeric = numerical_gradient(loss, param)
        assert rel_error(analytic[name], numeric) < 1e-6, name


def test_mnist_sized_network_layout():
    """784-128-64-10: 109,386 parameters, float32 everywhere, first layer skips dLoss/dInput."""
    net = Network.from_sizes([784, 128, 64, 10], np.random.default_rng(0))
    assert net.num_parameters == 109_386
    assert net.architecture.num_parameters == 109_386
    assert net.flat_params.dtype == np.float32 and net.flat_grads.dtype == np.float32
    for _, param, grad in net.named_parameters():
        assert param.dtype == np.float32 and grad.dtype == np.float32
    dense = list(net.weighted_layers())
    assert [layer.params["W"].shape for layer in dense] == [(784, 128), (128, 64), (64, 10)]
    assert dense[0].needs_input_grad is False and dense[1].needs_input_grad is True
    for layer in dense:
        assert np.all(layer.params["b"] == 0)


def test_parameters_are_views_into_flat_buffers():
    """Writing into a layer's W or b changes flat_params; grads alias flat_grads; fused views cover all."""
    net = Network.from_sizes([5, 4, 3], np.random.default_rng(1))
    dense = list(net.weighted_layers())
    dense[1].params["W"][0, 0] = 123.0
    dense[0].params["b"][2] = -7.0
    assert 123.0 in net.flat_params and -7.0 in net.flat_params
    for _, param, grad in net.named_parameters():
        assert np.shares_memory(param, net.flat_params)
        assert np.shares_memory(grad, net.flat_grads)
    (_, w, gw, _), (_, b, gb, _) = net.parameter_groups()
    assert w.size == 5 * 4 + 4 * 3 and b.size == 4 + 3
    assert w.size + b.size == net.flat_params.size
    net.flat_params[:] = 0.5
    assert np.all(dense[0].params["W"] == 0.5) and np.all(dense[1].params["b"] == 0.5)


def test_he_init_std():
    """He init: std of a large layer's weights is close to sqrt(2 / fan_in), mean close to 0."""
    net = Network.from_sizes([784, 256, 10], np.random.default_rng(2), init="he")
    w = next(net.weighted_layers()).params["W"]  # 200,704 draws: the std estimate is good to ~0.2 %
    assert w.std() == pytest.approx(math.sqrt(2 / 784), rel=0.02)
    assert abs(w.mean()) < 0.01 * math.sqrt(2 / 784)


def test_xavier_and_normal_init_std():
    """Xavier: std sqrt(2 / (fan_in + fan_out)); normal with scale 0.001: std 0.001 (default 0.01)."""
    rng = np.random.default_rng(3)
    net = Network.from_sizes([600, 300, 10], rng, init="xavier")
    w = next(net.weighted_layers()).params["W"]
    assert w.std() == pytest.approx(math.sqrt(2 / 900), rel=0.02)
    net = Network.from_sizes([600, 300, 10], rng, init="normal", init_scale=0.001)
    w = next(net.weighted_layers()).params["W"]
    assert w.std() == pytest.approx(0.001, rel=0.02)
    assert init_weights("normal", 400, 300, rng).std() == pytest.approx(0.01, rel=0.02)


def test_same_seed_same_weights_in_both_dtypes():
    """The same seed gives the same starting weights in float32 and float64 (drawn in float64, then cast)."""
    a = Network.from_sizes([6, 5, 3], np.random.default_rng(4), dtype="float32")
    b = Network.from_sizes([6, 5, 3], np.random.default_rng(4), dtype="float64")
    assert b.flat_params.dtype == np.float64
    np.testing.assert_array_equal(a.flat_params, b.flat_params.astype(np.float32))


def test_float64_input_gives_float32_logits():
    """A float32 network casts float64 input: logits and probabilities stay float32."""
    net = Network.from_sizes([6, 5, 3], np.random.default_rng(5))
    x = np.random.default_rng(6).standard_normal((4, 6))
    assert net.forward(x).dtype == np.float32
    assert net.predict_proba(x).dtype == np.float32


def test_predict_and_predict_proba():
    """Shapes (N,) and (N, K), rows sum to 1, predict == argmax(predict_proba), also across chunks."""
    rng = np.random.default_rng(7)
    net = Network.from_sizes([6, 8, 4], rng, dtype="float64")
    x = rng.standard_normal((11, 6))
    proba = net.predict_proba(x, batch_size=3)
    labels = net.predict(x, batch_size=4)
    assert proba.shape == (11, 4) and labels.shape == (11,)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(labels, proba.argmax(axis=1))
    np.testing.assert_allclose(proba, softmax(net.forward(x)), rtol=1e-12)
    assert net.predict(x[:0]).shape == (0,)
    assert net.predict_proba(x[:0]).shape == (0, 4)


def test_forward_matches_manual_computation():
    """Network forward equals relu(x W0 + b0) W1 + b1 computed directly."""
    rng = np.random.default_rng(8)
    net = Network.from_sizes([5, 4, 3], rng, dtype="float64")
    net.flat_params[:] = rng.standard_normal(net.flat_params.size)
    (w0, b0), (w1, b1) = [(layer.params["W"], layer.params["b"]) for layer in net.weighted_layers()]
    x = rng.standard_normal((2, 5))
    np.testing.assert_allclose(net.forward(x), np.maximum(x @ w0 + b0, 0) @ w1 + b1, rtol=1e-12)


@pytest.mark.parametrize("kwargs", [{"activation": "softplus"}, {"init": "orthogonal"},
                                    {"input_dropout": 1.0}, {"dtype": "float16"}],
                         ids=["activation", "init", "dropout", "dtype"])
def test_bad_options_raise_user_error(kwargs):
    """Unknown activation, init, an impossible dropout rate or dtype: UserError naming the bad value."""
    with pytest.raises(UserError):
        Network.from_sizes([4, 3, 2], np.random.default_rng(0), **kwargs)


def test_bad_sizes_raise_user_error():
    """Fewer than two sizes or a non-positive size is a UserError."""
    for sizes in ([10], [4, 0, 2]):
        with pytest.raises(UserError):
            Network.from_sizes(sizes, np.random.default_rng(0))


def test_dropout_layers_are_identity_at_test_time():
    """With dropout, forward(training=False) is deterministic and equals the same network without
    dropout; forward(training=True) differs."""
    with_dropout = Network.from_sizes([6, 8, 8, 3], np.random.default_rng(9), input_dropout=0.2,
                                      hidden_dropout=0.5)
    assert sum(isinstance(layer, Dropout) for layer in with_dropout.layers) == 3
    assert isinstance(with_dropout.layers[0], Dropout)
    plain = Network.from_sizes([6, 8, 8, 3], np.random.default_rng(9))
    plain.flat_params[:] = with_dropout.flat_params
    x = np.random.default_rng(10).standard_normal((5, 6)).astype(np.float32)
    np.testing.assert_array_equal(with_dropout.forward(x, training=False), plain.forward(x))
    np.testing.assert_array_equal(with_dropout.forward(x, training=False),
                                  with_dropout.forward(x, training=False))
    assert not np.array_equal(with_dropout.forward(x, training=True), plain.forward(x))


def test_backward_with_input_dropout_fills_grads():
    """Backward through a network whose first layer is Dropout stops at the first Dense and fills all grads."""
    net = Network.from_sizes([6, 5, 3], np.random.default_rng(11), input_dropout=0.3, dtype="float64")
    x = np.random.default_rng(12).standard_normal((4, 6))
    _, dlogits = softmax_cross_entropy(net.forward(x, training=True), np.array([0, 1, 2, 0]))
    net.flat_grads[:] = np.nan
    net.backward(dlogits)
    assert np.all(np.isfinite(net.flat_grads))
    assert isinstance(net.layers[1], Dense)
