"""A network is an ordered stack of layers, built from an :class:`Architecture`: a list of sizes such
as ``[784, 128, 64, 10]`` for a perceptron, or a list of layers (``common.nn.architecture``).

All parameters live in one contiguous buffer (weights first, then biases) and every layer's
``params`` / ``grads`` entries are views into it. The layers do not know or care; the optimizer
gets one or two long vectors instead of six small arrays, which makes its update a handful of
NumPy calls per step instead of dozens (see ``benchmarks/``).

Which classes the layers are is a :class:`LayerKit`: the fast ones by default (``FAST_LAYERS``),
or the textbook's (``common.nn.textbook``), which compute the same numbers the plain way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import numpy as np

from common.nn.architecture import Architecture
from common.nn.batchnorm import BatchNorm
from common.nn.conv import Conv2D, Flatten, MaxPool2D, Reshape
from common.nn.init import init_weights
from common.nn.layers import ACTIVATIONS, Dense, Dropout, Layer
from common.nn.loss import softmax
from common.nn.optimizers import ParamGroup

__all__ = ["Architecture", "FAST_LAYERS", "LayerKit", "Network"]

# Rows per inference chunk for a convolutional network, whose patch matrices are far larger per
# image than a perceptron's activations (a 5x5 convolution over 32 channels: 200 KB per image).
CONV_CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class LayerKit:
    """The classes a network's layers are made of, by layer kind (``Reshape`` and ``Flatten``, which
    do no arithmetic, are shared)."""

    name: str
    dense: Callable[[np.ndarray, np.ndarray], Layer]
    conv: Callable[[np.ndarray, np.ndarray, str], Layer]
    maxpool: Callable[[], Layer]
    dropout: Callable[[float, np.random.Generator], Layer]
    activations: Mapping[str, Callable[[], Layer]]
    batchnorm: Callable[[int, np.dtype], Layer] = BatchNorm  # features, dtype


FAST_LAYERS = LayerKit("fast", Dense, Conv2D, MaxPool2D, Dropout, ACTIVATIONS)


def build_layers(architecture: Architecture, rng: np.random.Generator, init: str = "he",
                 init_scale: float | None = None, kit: LayerKit = FAST_LAYERS) -> list[Layer]:
    """The layers ``architecture`` describes (``architecture.walk``), weights drawn from ``rng`` in order.

    Every layer with weights draws a ``(fan_in, fan_out)`` matrix from the initialiser called
    ``init`` (in float64, then cast, so a seed gives the same start in float32 and float64), with
    ``fan_in`` the inputs one output sees (``K*K*C_in`` for a ``conv F KxK`` layer, reshaped to
    ``(K, K, C_in, F)``); biases start at 0. Dropout layers draw their masks from ``rng`` too.
    """
    dtype = np.dtype(architecture.dtype)
    layers: list[Layer] = []
    for shape in architecture.walk:
        if shape.kind == "batchnorm":
            layers.append(kit.batchnorm(shape.out_shape[-1], dtype))
            continue
        if shape.param_shapes:
            w_shape, (fan_out,) = shape.param_shapes["W"], shape.param_shapes["b"]
            weights = init_weights(init, math.prod(w_shape[:-1]), fan_out, rng, init_scale)
            weights, bias = weights.reshape(w_shape).astype(dtype), np.zeros(fan_out, dtype=dtype)
            layers.append(kit.dense(weights, bias) if shape.kind == "dense" else kit.conv(weights, bias, shape.args[2]))
        elif shape.kind == "reshape":
            layers.append(Reshape(shape.args))
        elif shape.kind == "flatten":
            layers.append(Flatten())
        elif shape.kind == "maxpool":
            layers.append(kit.maxpool())
        elif shape.kind == "dropout":
            layers.append(kit.dropout(shape.args[0], rng))
        else:
            layers.append(kit.activations[shape.kind]())
    return layers


class Network:
    """An ordered stack of layers whose parameters share one contiguous buffer."""

    def __init__(self, layers: list[Layer], architecture: Architecture | None = None) -> None:
        self.layers = layers
        self.architecture = architecture
        weighted = list(self.weighted_layers())
        if any(getattr(layer, "batchnorm", False) for layer in layers):  # they keep gamma and beta apart
            weighted = [layer for layer in weighted if "W" in layer.params]
        if not weighted:
            raise ValueError("a network needs at least one layer with weights")
        self._first = weighted[0]
        self._first.needs_input_grad = False
        self.dtype = self._first.params["W"].dtype
        self.num_classes = weighted[-1].params["b"].size
        self._pack(weighted)
        self.chunk_rows = self._chunk_rows()

    @classmethod
    def from_architecture(cls, architecture: Architecture, rng: np.random.Generator, init: str = "he",
                          init_scale: float | None = None, kit: LayerKit = FAST_LAYERS) -> "Network":
        """The network ``architecture`` describes, freshly initialised (:func:`build_layers`)."""
        return cls(build_layers(architecture, rng, init, init_scale, kit), architecture)

    @classmethod
    def from_sizes(cls, sizes: list[int], rng: np.random.Generator, activation: str = "relu",
                   init: str = "he", init_scale: float | None = None, dtype: str = "float32",
                   input_dropout: float = 0.0, hidden_dropout: float = 0.0) -> "Network":
        """Shortcut: ``Network.from_sizes([784, 128, 64, 10], rng)``."""
        architecture = Architecture(tuple(int(n) for n in sizes), activation, input_dropout,
                                    hidden_dropout, dtype)
        return cls.from_architecture(architecture, rng, init, init_scale)

    def _chunk_rows(self) -> int:
        """Rows per inference chunk: 8,192 for a perceptron; for a convolutional network as many
        as keep its largest patch matrix (``K*K*C_in`` numbers per output pixel) under
        ``CONV_CHUNK_BYTES``."""
        walk = self.architecture.walk if self.architecture is not None else ()
        per_row = [math.prod(layer.param_shapes["W"][:-1]) * layer.out_shape[0] * layer.out_shape[1]
                   for layer in walk if layer.kind == "conv"]
        if not per_row:
            return 256 if any(isinstance(layer, Conv2D) for layer in self.layers) else 8192
        return int(max(1, min(8192, CONV_CHUNK_BYTES // (max(per_row) * self.dtype.itemsize))))

    def _pack(self, weighted: list[Layer]) -> None:
        """Move every parameter into one buffer (weights, then biases) and rebind views.

        Textbook: each layer owns its own ``W`` and ``b`` arrays. Here ``layer.params["W"]`` is a
        view into ``flat_params`` (and ``layer.grads["W"]`` into ``flat_grads``): the layers compute
        exactly as before, but an optimizer can update every weight with one NumPy call per line of
        its rule instead of one per layer.
        """
        arrays = [(layer, "W") for layer in weighted] + [(layer, "b") for layer in weighted]
        if any(getattr(layer, "batchnorm", False) for layer in self.layers):  # last, with the biases: no decay
            arrays += [(layer, key) for layer in self.layers if "gamma" in layer.params for key in ("gamma", "beta")]
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
        self._num_weights = sum(layer.params["W"].size for layer in weighted)

    # -- the two passes -------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        """``x (B, sizes[0])`` -> logits ``(B, sizes[-1])``. Input is cast to the network's dtype.

        ``training``: dropout drops units, and every layer keeps what ``backward`` needs.
        ``keep_for_backward``: keep that without training, for the gradient of the network as it
        predicts (input gradients: adversarial examples, saliency maps).
        """
        out = np.asarray(x, dtype=self.dtype)
        for layer in self.layers:
            out = layer.forward(out, training, keep_for_backward)
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

    def activations(self, x: np.ndarray) -> list[tuple[Layer, np.ndarray]]:
        """Every layer with its output for ``x (B, sizes[0])``, first to last, as at prediction time
        (for figures of what the layers see)."""
        out, outputs = np.asarray(x, dtype=self.dtype), []
        for layer in self.layers:
            out = layer.forward(out)
            outputs.append((layer, out))
        return outputs

    # -- parameters -----------------------------------------------------------------------
    def parameter_groups(self, decay_weights: bool = True) -> list[ParamGroup]:
        """What an optimizer updates: views of the one parameter buffer and its gradient.

        ``decay_weights``: two groups, ``"weights"`` (every ``W``, with weight decay) and
        ``"biases"`` (every ``b``, without); otherwise one group ``"parameters"`` of everything. The
        rules are element-wise, so either way gives the same numbers without decay; one group is
        one NumPy call per line of the rule instead of two.
        """
        if not decay_weights:
            return [ParamGroup("parameters", self.flat_params, self.flat_grads, decay=False)]
        n = self._num_weights
        return [ParamGroup("weights", self.flat_params[:n], self.flat_grads[:n], decay=True),
                ParamGroup("biases", self.flat_params[n:], self.flat_grads[n:], decay=False)]

    def named_parameters(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``[("0.W", W, dW), ("0.b", b, db), ("1.W", ...), ...]``: every layer's arrays, by layer
        (views of the same buffers; for gradient checks and inspection)."""
        if any(getattr(layer, "batchnorm", False) for layer in self.layers):
            return [(f"{index}.{key}", layer.params[key], layer.grads[key])
                    for index, layer in enumerate(self.weighted_layers()) for key in layer.params]
        return [(f"{index}.{key}", layer.params[key], layer.grads[key])
                for index, layer in enumerate(self.weighted_layers()) for key in ("W", "b")]

    def weighted_layers(self) -> Iterator[Layer]:
        """The layers with parameters (dense and convolutional), first to last."""
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
        return np.concatenate(chunks) if chunks else np.empty((0, self.num_classes), self.dtype)

    def predict(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Predicted labels ``(N,)`` (argmax of the logits; softmax does not change the order)."""
        batch_size = batch_size or self.chunk_rows
        labels = [self.forward(x[start:start + batch_size]).argmax(axis=1)
                  for start in range(0, len(x), batch_size)]
        return np.concatenate(labels) if labels else np.empty(0, dtype=np.int64)
