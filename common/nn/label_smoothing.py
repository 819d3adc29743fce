"""Cross-entropy against smoothed targets (label smoothing; ``docs/math.md#label-smoothing``).

Plain cross-entropy asks the network for probability 1 on the label, which it can only approach by
growing its logits without end; label smoothing (Szegedy et al. 2016, "Rethinking the Inception
architecture") asks instead for ``1 - e`` on the label and spreads ``e`` evenly over all ``K`` classes:

    q[i, k] = (1 - e) [k == labels[i]] + e / K
    loss    = -mean_i sum_k q[i, k] log p[i, k]          p = softmax(logits)
    dlogits = (p - q) / B

The gradient keeps the form of plain cross-entropy's, ``(p - target) / B``, with the smoothed target:
it vanishes once ``p == q``, so the logits stop growing at a finite gap. ``e = 0`` is plain
cross-entropy (``loss.softmax_cross_entropy``), up to rounding.
"""
from __future__ import annotations

import numpy as np

from common.nn.train import Loss


def smoothed_targets(labels: np.ndarray, classes: int, smoothing: float, dtype: type = np.float32) -> np.ndarray:
    """Integer ``labels (B,)`` -> targets ``(B, classes)``: ``1 - smoothing + smoothing / classes`` on each
    label, ``smoothing / classes`` elsewhere; every row sums to 1."""
    targets = np.full((len(labels), classes), smoothing / classes, dtype=dtype)
    targets[np.arange(len(labels)), labels] += 1 - smoothing
    return targets


def label_smoothing_cross_entropy_textbook(logits: np.ndarray, labels: np.ndarray,
                                           smoothing: float) -> tuple[float, np.ndarray]:
    """``logits (B, K)``, integer ``labels (B,)`` -> ``(loss, dlogits (B, K))``, line by line as the
    module's equations: the targets ``q`` built in full, ``log p`` by log-sum-exp."""
    batch, classes = logits.shape
    targets = smoothed_targets(labels, classes, smoothing, logits.dtype)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-np.sum(targets * log_p, dtype=np.float64) / batch)
    return loss, (np.exp(log_p) - targets) / batch


def label_smoothing_cross_entropy(logits: np.ndarray, labels: np.ndarray,
                                  smoothing: float) -> tuple[float, np.ndarray]:
    """The same numbers as :func:`label_smoothing_cross_entropy_textbook`, without building ``q``.

    Since ``sum_k q[i, k] = 1`` and ``log p[i, k] = s[i, k] - log sum_j exp s[i, j]`` (``s``: the
    max-shifted logits), the loss of row ``i`` is ``log sum_j exp s[i, j] - (1 - e) s[i, y_i] - (e / K)
    sum_k s[i, k]``; the exponentials are computed once, in place, for the loss and the gradient, as in
    ``loss.softmax_cross_entropy``.
    """
    batch, classes = logits.shape
    rows = np.arange(batch)
    shifted = logits - logits.max(axis=1, keepdims=True)
    picked = shifted[rows, labels].sum(dtype=np.float64)
    spread = shifted.sum(dtype=np.float64)
    exp = np.exp(shifted, out=shifted)
    sums = exp.sum(axis=1, keepdims=True)
    loss = float(np.log(sums).sum(dtype=np.float64) - (1 - smoothing) * picked - smoothing / classes * spread) / batch
    probabilities = exp
    probabilities /= sums
    probabilities[rows, labels] -= 1 - smoothing
    probabilities -= smoothing / classes
    probabilities /= batch
    return loss, probabilities


def label_smoothing_loss(smoothing: float, textbook: bool = False) -> Loss:
    """The loss ``train`` takes, ``(logits, labels) -> (loss, dlogits)``, with this ``smoothing`` (``e``,
    ``0 <= e < 1``): the fast form, or with ``textbook`` the plain one."""
    if not 0 <= smoothing < 1:
        raise ValueError(f"label smoothing must be at least 0 and below 1, got {smoothing}")
    form = label_smoothing_cross_entropy_textbook if textbook else label_smoothing_cross_entropy
    return lambda logits, labels: form(logits, labels, smoothing)
