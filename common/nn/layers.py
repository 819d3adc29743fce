"""Layers: a fully connected layer, the activations and dropout, each with forward and backward.

Conventions (as in CS231n's ``layers.py``, and the same for every layer):

* a batch is a matrix with one example per row: ``x`` has shape ``(B, fan_in)``;
* ``forward(x, training=False, keep_for_backward=False)`` returns the output. ``training``: the
  network is being trained, so dropout drops and the layer keeps what ``backward`` needs;
  ``keep_for_backward``: keep that outside training too (for the gradient of the network as it
  predicts). A layer whose keeping costs nothing (a reference to its input) keeps it always;
* ``backward(dout)`` takes dLoss/dOutput (same shape as the output), fills ``self.grads`` and
  returns dLoss/dInput (same shape as ``x``);
* ``params`` and ``grads`` are dicts with matching keys (``"W"``, ``"b"``); activations have none.

Each layer computes what its ``Textbook:`` function in ``common.nn.reference`` computes (the tests
check that they agree); the maths of each backward pass is in ``docs/math.md``.
"""
from __future__ import annotations

import numpy as np

from common.nn import parallel


class Layer:
    """Base class: a differentiable map of a batch, ``(B, ...) -> (B, ...)``."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, training: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError


class Dense(Layer):
    """Fully connected layer ``z = x @ W + b``.

    ``W`` has shape ``(fan_in, fan_out)`` and ``b`` shape ``(fan_out,)``. The first layer of a
    network sets ``needs_input_grad = False``: nobody needs dLoss/dPixels, and skipping it saves
    half of that layer's backward work.
    """

    def __init__(self, weights: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        if weights.ndim != 2 or bias.shape != (weights.shape[1],):
            raise ValueError(f"Dense: weights {weights.shape} and bias {bias.shape} do not match")
        self.params = {"W": weights, "b": bias}
        self.grads = {"W": np.zeros_like(weights), "b": np.zeros_like(bias)}
        self.needs_input_grad = True
        self._x: np.ndarray | None = None
        self._ones: np.ndarray | None = None  # (B,) ones: db = ones @ dout is a fast BLAS call

    def forward(self, x: np.ndarray, training: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        """``x (B, fan_in)`` -> ``z (B, fan_out)``. Textbook: ``reference.dense_forward``."""
        self._x = x
        z = x @ self.params["W"]
        z += self.params["b"]  # in place: no second (B, fan_out) temporary
        return z

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """``dout (B, fan_out)`` -> ``dx (B, fan_in)``; fills ``grads["W"]`` and ``grads["b"]``.

        Textbook: ``reference.dense_backward``. Here ``dW`` is written straight into its slot of the
        network's gradient buffer (``out=``), and ``db`` is computed as ``ones(B) @ dout``: the same
        column sums as one BLAS call, about 3x faster than ``dout.sum(axis=0)``.
        """
        np.matmul(self._x.T, dout, out=self.grads["W"])
        if self._ones is None or self._ones.shape[0] != len(dout):
            self._ones = np.ones(len(dout), dtype=dout.dtype)
        np.matmul(self._ones, dout, out=self.grads["b"])
        if not self.needs_input_grad:
            return None
        return dout @ self.params["W"].T


class ReLU(Layer):
    """``max(0, x)``; its derivative is 1 where the output is positive, else 0.

    Textbook: ``reference.relu_forward`` and ``reference.relu_backward``, on every core
    (``parallel.elementwise``). It gates on its output: ``out > 0`` exactly where ``x > 0``.
    """

    def forward(self, x: np.ndarray, training: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        self._out = parallel.elementwise(np.maximum, x, 0)
        return self._out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return parallel.elementwise(gate, dout, self._out)


def gate(dout: np.ndarray, relu_out: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``dout * (relu_out > 0)`` into ``out``: ReLU's backward, as one element-wise step for the threads."""
    return np.multiply(dout, relu_out > 0, out=out)


class Tanh(Layer):
    """``tanh(x)``; derivative ``1 - tanh(x)**2`` (the first source design wrote ``np.tan``: a bug).

    Textbook: ``reference.tanh_forward`` and ``reference.tanh_backward``, the same lines.
    """

    def forward(self, x: np.ndarray, training: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        self._out = np.tanh(x)
        return self._out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * (1 - self._out * self._out)


def stable_sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow: ``exp`` only ever sees ``-|x| <= 0``."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


class Sigmoid(Layer):
    """Logistic sigmoid, computed stably; derivative ``s * (1 - s)``.

    Textbook: ``reference.sigmoid_forward`` and ``reference.sigmoid_backward``, the same lines.
    """

    def forward(self, x: np.ndarray, training: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        self._out = stable_sigmoid(x)
        return self._out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * (self._out * (1 - self._out))


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``rate`` and scale the
    survivors by ``1 / (1 - rate)`` so the expected activation is unchanged; otherwise the
    identity. The mask comes from the ``numpy.random.Generator`` given at construction.

    Textbook: ``reference.dropout_forward`` and ``reference.dropout_backward``, the same numbers.
    """

    def __init__(self, rate: float, rng: np.random.Generator) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.rng = rng
        self._mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, training: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.rate
        self._mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        return x * self._mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout if self._mask is None else dout * self._mask


ACTIVATIONS: dict[str, type[Layer]] = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}
