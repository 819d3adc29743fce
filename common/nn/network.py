"""A network is an ordered stack of layers, built from an :class:`Architecture`: a list of sizes such
as ``[784, 128, 64, 10]`` for a perceptron, or a list of layers (``common.nn.architecture``).

All parameters live in one contiguous buffer (weights first, then biases) and every layer's
``params`` / ``grads`` entries are views into it. The layers do not know or care; the optimizer
gets two long vectors instead of six small arrays, which makes its update a handful of NumPy
calls per step instead of dozens (see ``benchmarks/``).
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from common.nn.architecture import Architecture, walk_layers
from common.nn.conv import Conv2D, Flatten, MaxPool2D, Reshape
from common.nn.init import init_weights
from common.nn.layers import ACTIVATIONS, Dense, Dropout, Layer
from common.nn.loss import softmax
from common.nn.optimizers import Parameter

__all__ = ["Architecture", "Network"]

# Rows per inference chunk for a convolutional network, whose patch matrices are far larger per
# image than a perceptron's activations (stage 06's second layer: 200 KB per image).
CONV_CHUNK_BYTES = 64 * 2**20


class Network:
    """An ordered stack of layers whose parameters share one contiguous buffer."""

    def __init__(self, layers: list[Layer], architecture: Architecture | None = None) -> None:
        self.layers = layers
        self.architecture = architecture
        if not any(isinstance(layer, Dense) for layer in layers):
            raise ValueError("a network needs at least one Dense layer")
        weighted = list(self.weighted_layers())
        self._first = weighted[0]
        self._first.needs_input_grad = False
        self.dtype = self._first.params["W"].dtype
        self._pack(weighted)
        self.chunk_rows = self._chunk_rows()

    def _chunk_rows(self) -> int:
        """Rows per inference chunk: 8,192 for a perceptron; for a convolutional network as many
        as keep its largest patch matrix (``K*K*C_in`` numbers per output pixel) under
        ``CONV_CHUNK_BYTES``."""
        if not any(isinstance(layer, Conv2D) for layer in self.layers):
            return 8192
        if self.architecture is None or not self.architecture.layers:
            return 256
        per_row = max(math.prod(layer.params["W"][:-1]) * layer.out_shape[0] * layer.out_shape[1]
                      for layer in walk_layers(self.architecture.sizes[0], self.architecture.layers)
                      if layer.kind == "conv")
        return int(max(1, min(8192, CONV_CHUNK_BYTES // (per_row * self.dtype.itemsize))))

    def _pack(self, dense: list[Layer]) -> None:
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
        if architecture.layers:
            return cls(_build_layers(architecture, rng, init, init_scale), architecture)
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

    def backward(self, dlogits: np.ndarray, input_grad: bool = False) -> np.ndarray | None:
        """Backpropagate ``dlogits (B, sizes[-1])``; fills every layer's ``grads``.

        Training needs no dLoss/dInput, so by default the first layer with weights skips it and
        this returns None. ``input_grad=True`` returns it, ``(B, sizes[0])``: how the loss moves
        with each pixel (for adversarial examples and saliency maps).
        """
        self._first.needs_input_grad = input_grad
        try:
            grad: np.ndarray | None = dlogits
            for layer in reversed(self.layers):
                grad = layer.backward(grad)
                if grad is None:  # the first layer with weights did not compute dLoss/dInput
                    return None
            return grad
        finally:
            self._first.needs_input_grad = False

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
                for index, layer in enumerate(self.weighted_layers()) for key in ("W", "b")]

    def dense_layers(self) -> Iterator[Dense]:
        return (layer for layer in self.layers if isinstance(layer, Dense))

    def weighted_layers(self) -> Iterator[Layer]:
        """The layers with parameters (``Dense`` and ``Conv2D``), first to last."""
        return (layer for layer in self.layers if layer.params)

    @property
    def num_parameters(self) -> int:
        return int(self.flat_params.size)

    # -- inference ------------------------------------------------------------------------
    def predict_proba(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities ``(N, K)`` for ``x (N, sizes[0])``, in chunks (``chunk_rows`` by
        default) to bound memory."""
        batch_size = batch_size or self.chunk_rows
        chunks = [softmax(self.forward(x[start:start + batch_size]))
                  for start in range(0, len(x), batch_size)]
        num_classes = list(self.dense_layers())[-1].params["b"].size
        return np.concatenate(chunks) if chunks else np.empty((0, num_classes), self.dtype)

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Predicted labels ``(N,)`` (argmax of the logits; softmax does not change the order)."""
        batch_size = batch_size or self.chunk_rows
        labels = [self.forward(x[start:start + batch_size]).argmax(axis=1)
                  for start in range(0, len(x), batch_size)]
        return np.concatenate(labels) if labels else np.empty(0, dtype=np.int64)


def _build_layers(architecture: Architecture, rng: np.random.Generator, init: str,
                  init_scale: float | None) -> list[Layer]:
    """The layers an ``Architecture`` given as layer strings describes, weights drawn in order.

    A ``conv F KxK`` layer's weights come from the same initialisers as a dense layer's, drawn
    as a ``(K*K*C_in, F)`` matrix (``fan_in`` = the K*K*C_in inputs one output pixel sees) and
    reshaped to ``(K, K, C_in, F)``, the shape ``Conv2D`` multiplies patches by.
    """
    dtype = np.dtype(architecture.dtype)
    layers: list[Layer] = []
    for layer in walk_layers(architecture.sizes[0], architecture.layers):
        if layer.params:
            w_shape, fan_out = layer.params["W"], layer.params["b"][0]
            weights = init_weights(init, int(np.prod(w_shape[:-1])), fan_out, rng, init_scale)
            weights = weights.reshape(w_shape).astype(dtype)
            bias = np.zeros(fan_out, dtype=dtype)
            layers.append(Dense(weights, bias) if layer.kind == "dense"
                          else Conv2D(weights, bias, layer.args[2]))
        elif layer.kind == "reshape":
            layers.append(Reshape(layer.args))
        elif layer.kind == "maxpool":
            layers.append(MaxPool2D())
        elif layer.kind == "flatten":
            layers.append(Flatten())
        elif layer.kind == "dropout":
            layers.append(Dropout(layer.args[0], rng))
        else:
            layers.append(ACTIVATIONS[layer.kind]())
    return layers
