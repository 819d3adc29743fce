"""A network is an ordered stack of layers, built from a list of sizes such as ``[784, 128, 64, 10]``.

All parameters live in one contiguous buffer (weights first, then biases) and every layer's
``params`` / ``grads`` entries are views into it. The layers do not know or care; the optimizer
gets two long vectors instead of six small arrays, which makes its update a handful of NumPy
calls per step instead of dozens (see ``benchmarks/``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from common.nn.errors import UserError
from common.nn.init import init_weights
from common.nn.layers import ACTIVATIONS, Dense, Dropout, Layer
from common.nn.loss import softmax
from common.nn.optimizers import Parameter


@dataclass(frozen=True)
class Architecture:
    """What is needed to rebuild a network: layer sizes, hidden activation, dropout rates."""

    sizes: tuple[int, ...]
    activation: str = "relu"
    input_dropout: float = 0.0
    hidden_dropout: float = 0.0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or any(int(n) < 1 for n in self.sizes):
            raise UserError(f"layer sizes must be at least two positive integers, got {list(self.sizes)}")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        for name, rate in (("input", self.input_dropout), ("hidden", self.hidden_dropout)):
            if not 0.0 <= rate < 1.0:
                raise UserError(f"{name} dropout must be in [0, 1), got {rate}")
        if self.dtype not in ("float32", "float64"):
            raise UserError(f"dtype must be float32 or float64, got {self.dtype!r}")

    @property
    def num_parameters(self) -> int:
        return sum(n_in * n_out + n_out for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]))

    def describe(self) -> str:
        """E.g. ``784-128-64-10 relu``, plus dropout rates when there are any."""
        text = "-".join(str(n) for n in self.sizes) + f" {self.activation}"
        if self.input_dropout or self.hidden_dropout:
            text += f", dropout {self.input_dropout:g}/{self.hidden_dropout:g}"
        return text


class Network:
    """An ordered stack of layers whose parameters share one contiguous buffer."""

    def __init__(self, layers: list[Layer], architecture: Architecture | None = None) -> None:
        self.layers = layers
        self.architecture = architecture
        dense = [layer for layer in layers if isinstance(layer, Dense)]
        if not dense:
            raise ValueError("a network needs at least one Dense layer")
        dense[0].needs_input_grad = False
        self.dtype = dense[0].params["W"].dtype
        self._pack(dense)

    def _pack(self, dense: list[Dense]) -> None:
        """Move every parameter into one buffer (weights, then biases) and rebind views.

        Textbook: each layer owns its own ``W`` and ``b`` arrays. Here ``layer.params["W"]`` is a
        view into ``flat_params`` (and ``layer.grads["W"]`` into ``flat_grads``): the layers compute
        exactly as before, but an optimizer can update every weight with one NumPy call per line of
        its rule instead of one per layer.
        """
        arrays = [(layer, "W") for layer in dense] + [(layer, "b") for layer in dense]
        total = sum(layer.params[key].size for layer, key in arrays)
        self.flat_params = np.empty(total, dtype=self.dtype)
        self.flat_grads = np.zeros(total, dtype=self.dtype)
        offset = 0
        for layer, key in arrays:
            size = layer.params[key].size
            shape = layer.params[key].shape
            view = self.flat_params[offset:offset + size].reshape(shape)
            view[...] = layer.params[key]
            layer.params[key] = view
            layer.grads[key] = self.flat_grads[offset:offset + size].reshape(shape)
            offset += size
        self._num_weights = sum(layer.params["W"].size for layer in dense)

    @classmethod
    def from_architecture(cls, architecture: Architecture, rng: np.random.Generator,
                          init: str = "he", init_scale: float | None = None) -> "Network":
        """Build ``Dense -> activation (-> Dropout)`` blocks and a final ``Dense`` producing logits.

        Weights come from the initialiser called ``init`` (drawn in float64, then cast, so a seed
        gives the same starting point in float32 and float64); biases start at 0.
        """
        dtype = np.dtype(architecture.dtype)
        activation = ACTIVATIONS[architecture.activation]
        layers: list[Layer] = []
        if architecture.input_dropout:
            layers.append(Dropout(architecture.input_dropout, rng))
        pairs = list(zip(architecture.sizes[:-1], architecture.sizes[1:]))
        for index, (fan_in, fan_out) in enumerate(pairs):
            weights = init_weights(init, fan_in, fan_out, rng, init_scale).astype(dtype)
            layers.append(Dense(weights, np.zeros(fan_out, dtype=dtype)))
            if index < len(pairs) - 1:
                layers.append(activation())
                if architecture.hidden_dropout:
                    layers.append(Dropout(architecture.hidden_dropout, rng))
        return cls(layers, architecture)

    @classmethod
    def from_sizes(cls, sizes: list[int], rng: np.random.Generator, activation: str = "relu",
                   init: str = "he", init_scale: float | None = None, dtype: str = "float32",
                   input_dropout: float = 0.0, hidden_dropout: float = 0.0) -> "Network":
        """Shortcut: ``Network.from_sizes([784, 128, 64, 10], rng)``."""
        architecture = Architecture(tuple(int(n) for n in sizes), activation, input_dropout,
                                    hidden_dropout, dtype)
        return cls.from_architecture(architecture, rng, init, init_scale)

    # -- the two passes -------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """``x (B, sizes[0])`` -> logits ``(B, sizes[-1])``. Input is cast to the network's dtype."""
        out = np.asarray(x, dtype=self.dtype)
        for layer in self.layers:
            out = layer.forward(out, training)
        return out

    def backward(self, dlogits: np.ndarray) -> None:
        """Backpropagate ``dlogits (B, sizes[-1])``; fills every layer's ``grads``."""
        grad: np.ndarray | None = dlogits
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
            if grad is None:  # the first Dense layer does not compute dLoss/dInput
                break

    # -- parameters -----------------------------------------------------------------------
    def parameters(self, fused: bool | str = True) -> list[Parameter]:
        """The ``(name, parameter, gradient)`` triples an optimizer updates.

        ``fused=True``: two long vectors, ``("W", all weights, their grads)`` and ``("b", ...)``
        (weight decay applies to names ending in ``W``). ``fused="all"``: one vector of everything.
        ``fused=False``: one triple per layer and key, e.g. ``("0.W", W, dW)``. All alias the same
        memory, so an element-wise optimizer gives identical results whichever is used.
        """
        if fused == "all":
            return [("all", self.flat_params, self.flat_grads)]
        if fused:
            n = self._num_weights
            return [("W", self.flat_params[:n], self.flat_grads[:n]),
                    ("b", self.flat_params[n:], self.flat_grads[n:])]
        return [(f"{index}.{key}", layer.params[key], layer.grads[key])
                for index, layer in enumerate(self.dense_layers()) for key in ("W", "b")]

    def dense_layers(self) -> Iterator[Dense]:
        return (layer for layer in self.layers if isinstance(layer, Dense))

    @property
    def num_parameters(self) -> int:
        return int(self.flat_params.size)

    # -- inference ------------------------------------------------------------------------
    def predict_proba(self, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Class probabilities ``(N, K)`` for ``x (N, sizes[0])``, in chunks to bound memory."""
        chunks = [softmax(self.forward(x[start:start + batch_size]))
                  for start in range(0, len(x), batch_size)]
        num_classes = list(self.dense_layers())[-1].params["b"].size
        return np.concatenate(chunks) if chunks else np.empty((0, num_classes), self.dtype)

    def predict(self, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Predicted labels ``(N,)`` (argmax of the logits; softmax does not change the order)."""
        labels = [self.forward(x[start:start + batch_size]).argmax(axis=1)
                  for start in range(0, len(x), batch_size)]
        return np.concatenate(labels) if labels else np.empty(0, dtype=np.int64)
