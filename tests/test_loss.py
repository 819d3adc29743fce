"""Tests for common.nn.loss: exact values, the gradient formula and finite differences, numerical stability."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from common.nn.gradcheck import numerical_gradient, rel_error
from common.nn.loss import softmax, softmax_cross_entropy


def test_hand_case_log2():
    """Two equal logits: p = 1/2, loss = log 2, gradient = (p - onehot) / B = [[-1/2, 1/2]]."""
    loss, dlogits = softmax_cross_entropy(np.array([[0.0, 0.0]]), np.array([0]))
    assert loss == pytest.approx(math.log(2), rel=1e-15)
    np.testing.assert_allclose(dlogits, [[-0.5, 0.5]], rtol=1e-15)


def test_hand_case_two_rows():
    """Mean over rows of -log p[label] on a small case computed by hand."""
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, math.log(2.0)]])
    labels = np.array([2, 0])
    z1 = math.exp(1) + math.exp(2) + math.exp(3)
    expected = (-(3 - math.log(z1)) - math.log(1 / 4)) / 2  # row 2: p = [1/4, 1/4, 1/2]
    loss, _ = softmax_cross_entropy(logits, labels)
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected, rel=1e-13)


def test_gradient_is_p_minus_onehot_over_batch():
    """dlogits == (softmax(logits) - onehot(labels)) / B, same shape and dtype as logits."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, 6)
    _, dlogits = softmax_cross_entropy(logits, labels)
    onehot = np.eye(4)[labels]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(dlogits, (p - onehot) / 6, rtol=1e-12, atol=1e-15)
    assert dlogits.dtype == np.float64
    _, d32 = softmax_cross_entropy(logits.astype(np.float32), labels)
    assert d32.dtype == np.float32


def test_gradient_matches_finite_differences():
    """The analytic gradient w.r.t. the logits agrees with centered finite differences (float64)."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 4)) * 2
    labels = rng.integers(0, 4, 5)
    _, dlogits = softmax_cross_entropy(logits, labels)
    numeric = numerical_gradient(lambda: softmax_cross_entropy(logits, labels)[0], logits)
    assert rel_error(dlogits, numeric) < 1e-6


def test_softmax_rows_sum_to_one():
    """Softmax gives positive rows summing to 1, including for huge logits."""
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((5, 7)) * 50
    logits[0] += 1e4
    p = softmax(logits)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)


def test_does_not_modify_logits():
    """The loss leaves its input untouched."""
    logits = np.array([[1.0, -2.0, 0.5]])
    copy = logits.copy()
    softmax_cross_entropy(logits, np.array([1]))
    np.testing.assert_array_equal(logits, copy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_extreme_logits_are_stable(dtype):
    """Logits of +-1e4: finite loss (= 2e4 where the label gets -1e4, ~0 where it gets +1e4) and gradient, no warnings."""
    logits = np.array([[1e4, -1e4], [1e4, -1e4]], dtype=dtype)
    labels = np.array([0, 1])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        loss, dlogits = softmax_cross_entropy(logits, labels)
        p = softmax(logits)
    assert math.isfinite(loss)
    assert loss == pytest.approx((0.0 + 2e4) / 2, rel=1e-12)
    assert np.all(np.isfinite(dlogits))
    np.testing.assert_allclose(dlogits, [[0.0, 0.0], [0.5, -0.5]], atol=1e-7)
    np.testing.assert_array_equal(p, [[1.0, 0.0], [1.0, 0.0]])
