"""Softmax fused with categorical cross-entropy on integer labels (``docs/math.md#softmax-and-cross-entropy``)."""
from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``logits (B, K)`` -> probabilities ``(B, K)``, max-shifted so it never overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``softmax(logits)`` against integer ``labels``, and its gradient.

    ``logits (B, K)`` float, ``labels (B,)`` ints in ``0..K-1``. Returns ``(loss, dlogits)`` with
    ``loss = -mean(log p[i, labels[i]])`` (a Python float, via log-sum-exp: finite for any finite
    logits) and ``dlogits = (p - onehot(labels)) / B`` of shape ``(B, K)``, in the logits' dtype.

    Textbook: ``reference.softmax_cross_entropy``, the same numbers; here the exponentials are
    computed once and reused, in place, for the loss and the gradient, and no one-hot matrix is
    built (subtracting 1 at each ``(i, labels[i])`` is subtracting it).
    """
    batch = logits.shape[0]
    rows = np.arange(batch)
    shifted = logits - logits.max(axis=1, keepdims=True)
    picked = shifted[rows, labels]
    exp = np.exp(shifted, out=shifted)
    sums = exp.sum(axis=1, keepdims=True)
    # log p[i, y_i] = shifted[i, y_i] - log(sum_j exp(shifted[i, j])); sums >= 1, so no log(0)
    loss = float(np.log(sums).sum(dtype=np.float64) - picked.sum(dtype=np.float64)) / batch
    probabilities = exp
    probabilities /= sums
    probabilities[rows, labels] -= 1
    probabilities /= batch
    return loss, probabilities
