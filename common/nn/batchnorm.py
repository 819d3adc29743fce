"""Batch normalization (Ioffe and Szegedy, 2015): each feature normalised by its batch's statistics,
then scaled and shifted by two learned numbers (``docs/math.md#batch-normalization``).

One layer for both layouts: after a dense layer the features are the columns of ``x (B, D)``; after
a convolution they are the channels of ``x (B, H, W, C)``, normalised over the batch and every
pixel (one mean and variance per channel, as in PyTorch's ``BatchNorm2d``). Either way the maths is
done on the ``M`` rows of ``x.reshape(-1, D)``, as in the textbook (``reference.batchnorm_*``).

In training the layer uses the batch's mean and (biased) variance and updates running averages of
them; at prediction time it uses the running averages, so a prediction does not depend on what
else is in the batch. Its parameters ``gamma`` and ``beta`` live in the network's one parameter
buffer like every ``W`` and ``b`` (with no weight decay); the running averages are state, not
parameters: saved with the model, never touched by the optimizer.
"""
from __future__ import annotations

import numpy as np

from common.nn.layers import Layer

MOMENTUM = 0.1
"""The weight of a new batch in the running averages (PyTorch's default, and its convention)."""
EPS = 1e-5
"""Added to the variance before the square root, so a feature that never varies does not divide by 0."""


class BatchNorm(Layer):
    """``out = gamma * (x - mean) / sqrt(var + eps) + beta``, per feature (the last axis of ``x``).

    ``gamma (D,)`` starts at 1 and ``beta (D,)`` at 0, so a new layer only standardises. The running
    mean starts at 0 and the running variance at 1; after every training step each moves a fraction
    ``momentum`` of the way to the batch's value (the variance's unbiased form, as PyTorch keeps it).
    """

    batchnorm = True  # how a network tells these layers apart (the textbook's say it too)

    def __init__(self, num_features: int, dtype: np.dtype | str = np.float32, momentum: float = MOMENTUM,
                 eps: float = EPS) -> None:
        super().__init__()
        dtype = np.dtype(dtype)
        self.params = {"gamma": np.ones(num_features, dtype=dtype), "beta": np.zeros(num_features, dtype=dtype)}
        self.grads = {key: np.zeros_like(value) for key, value in self.params.items()}
        self.running_mean = np.zeros(num_features, dtype=dtype)
        self.running_var = np.ones(num_features, dtype=dtype)
        self.momentum, self.eps = momentum, eps
        self._xhat: np.ndarray | None = None   # (M, D) normalised rows, kept for backward
        self._inv_std: np.ndarray | None = None  # (D,) 1 / sqrt(var + eps) of the statistics used
        self._batch_stats = True               # whether the kept forward pass normalised with the batch's own
        self._ones: np.ndarray | None = None   # (M,) ones: column sums as one BLAS call, as in Dense

    def _column_sums(self, rows: np.ndarray) -> np.ndarray:
        """``rows (M, D)`` -> ``(D,)``: ``ones(M) @ rows``, the column sums as one matrix-vector product."""
        if self._ones is None or self._ones.shape[0] != len(rows):
            self._ones = np.ones(len(rows), dtype=rows.dtype)
        return self._ones @ rows

    def forward(self, x: np.ndarray, training: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        """``x (B, D)`` or ``(B, H, W, D)`` -> ``out``, the same shape.

        Textbook: ``reference.batchnorm_forward`` (training) and ``reference.batchnorm_inference``.
        """
        rows = x.reshape(-1, x.shape[-1])                        # (M, D)
        if training:
            count = len(rows)
            if count < 2:
                raise ValueError(f"batch normalization in training needs at least 2 values per feature, got "
                                 f"{count} (a batch of shape {x.shape}); train with batches of 2 or more")
            mean = self._column_sums(rows) / count
            centred = rows - mean
            var = self._column_sums(centred * centred) / count
            inv_std = 1.0 / np.sqrt(var + self.eps)
            xhat = centred
            xhat *= inv_std                                      # in place: centred is not needed again
            self.running_mean *= 1.0 - self.momentum
            self.running_mean += self.momentum * mean
            self.running_var *= 1.0 - self.momentum
            self.running_var += self.momentum * var * (count / (count - 1))
        else:
            inv_std = 1.0 / np.sqrt(self.running_var + self.eps)
            if not keep_for_backward:                            # prediction: one fused scale and shift
                scale = self.params["gamma"] * inv_std
                return (rows * scale + (self.params["beta"] - self.running_mean * scale)).reshape(x.shape)
            xhat = (rows - self.running_mean) * inv_std
        self._xhat, self._inv_std, self._batch_stats = xhat, inv_std, training
        return (xhat * self.params["gamma"] + self.params["beta"]).reshape(x.shape)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout`` (the shape of ``out``) -> ``dx`` (that shape); fills ``grads["gamma"]`` and ``grads["beta"]``.

        Textbook: ``reference.batchnorm_backward``, the compact form
        ``dx = gamma / (M std) * (M dout - sum(dout) - xhat * sum(dout * xhat))``. After a forward pass
        with the running averages (gradients of the network as it predicts) the statistics are
        constants, and ``dx = gamma / std * dout``.
        """
        rows = dout.reshape(self._xhat.shape)                    # (M, D)
        self.grads["beta"][...] = self._column_sums(rows)
        self.grads["gamma"][...] = self._column_sums(rows * self._xhat)
        scale = self.params["gamma"] * self._inv_std
        if not self._batch_stats:
            return (rows * scale).reshape(dout.shape)
        count = len(rows)
        dx = rows - self.grads["beta"] / count
        dx -= self._xhat * (self.grads["gamma"] / count)
        dx *= scale
        return dx.reshape(dout.shape)
