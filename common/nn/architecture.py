"""What a network is made of, as plain data: layer sizes for a perceptron, or a list of layers.

Two ways to describe a network, both saved as they are in a model file's header:

* a multilayer perceptron is its layer sizes, ``Architecture(sizes=(784, 128, 64, 10))``: each
  hidden layer is ``Dense -> activation (-> Dropout)`` and the last ``Dense`` gives the logits;
* any other network is a list of layers, one short string each, with ``sizes`` giving only the
  input and output sizes. A small convolutional network, for example::

      Architecture(sizes=(784, 10), layers=("reshape 28x28x1", "conv 32 5x5 valid", "maxpool",
                   "relu", "conv 64 5x5 valid", "maxpool", "relu", "flatten",
                   "dense 256", "relu", "dense 10"))

The layer strings: ``reshape HxWxC`` (rows of pixels back into images), ``conv F KxK valid`` or
``same`` (F filters of K x K), ``maxpool`` (2x2, stride 2), ``flatten``, ``dense N``, ``relu``,
``tanh``, ``sigmoid``, ``dropout P`` and ``batchnorm`` (batch normalization of the features it
receives: a vector's entries, or an image's channels). A perceptron's sizes mean the same as the layer strings
:meth:`Architecture.layer_strings` spells out, so every network is built by one path. :func:`walk_layers`
follows the shape of one example through the layers, which both checks a description and gives
every parameter's shape; an ``Architecture`` walks its layers once and keeps the result (``walk``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from common.nn.errors import UserError

ACTIVATION_NAMES = ("relu", "tanh", "sigmoid")
LAYER_FORMS = "reshape HxWxC, conv F KxK valid|same, maxpool, flatten, dense N, dropout P, relu, tanh, sigmoid"
LAYER_FORMS += ", batchnorm"  # a statement of its own: runs without batch normalization keep their fingerprints


class LayerShape(NamedTuple):
    """One parsed layer: its kind, its arguments, the shape of one example before and after it,
    and the shapes of its parameters ``{"W": ..., "b": ...}`` (empty for layers without any)."""

    kind: str
    args: tuple
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    param_shapes: dict[str, tuple[int, ...]]


def _dims(text: str, count: int, layer: str) -> tuple[int, ...]:
    """``"28x28x1"`` -> ``(28, 28, 1)``, checking there are ``count`` positive integers."""
    parts = text.split("x")
    if len(parts) != count or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise UserError(f"layer {layer!r}: expected {count} positive integers joined by 'x', got {text!r}")
    return tuple(int(part) for part in parts)


def parse_layer(text: str) -> tuple[str, tuple]:
    """``"conv 32 5x5 same"`` -> ``("conv", (32, 5, "same"))``; one line of error for anything else."""
    words = text.split()
    kind, rest = (words[0], words[1:]) if words else ("", [])
    if kind == "batchnorm" and not rest:
        return kind, ()
    if kind in ("maxpool", "flatten", *ACTIVATION_NAMES) and not rest:
        return kind, ()
    if kind == "reshape" and len(rest) == 1:
        return kind, _dims(rest[0], 3, text)
    if kind == "dense" and len(rest) == 1 and rest[0].isdigit() and int(rest[0]) > 0:
        return kind, (int(rest[0]),)
    if kind == "conv" and len(rest) == 3 and rest[0].isdigit() and int(rest[0]) > 0 and rest[2] in ("valid", "same"):
        k, k2 = _dims(rest[1], 2, text)
        if k != k2 or k % 2 == 0:
            raise UserError(f"layer {text!r}: the kernel must be square with an odd side, like 3x3 or 5x5")
        return kind, (int(rest[0]), k, rest[2])
    if kind == "dropout" and len(rest) == 1:
        try:
            rate = float(rest[0])
        except ValueError:
            rate = -1.0
        if 0.0 <= rate < 1.0:
            return kind, (rate,)
    raise UserError(f"cannot read layer {text!r}; layers are: {LAYER_FORMS}")


def walk_layers(input_size: int, layers: tuple[str, ...]) -> list[LayerShape]:
    """Follow one example of ``input_size`` numbers through ``layers``; every layer, parsed and shaped.

    Raises :class:`UserError` for a layer that cannot take the shape it receives (a ``conv``
    before any ``reshape``, a ``dense`` before ``flatten``, a kernel larger than the image).
    """
    shape: tuple[int, ...] = (int(input_size),)
    walked = []
    for text in layers:
        kind, args = parse_layer(text)
        param_shapes: dict[str, tuple[int, ...]] = {}
        if kind == "reshape":
            if len(shape) != 1 or math.prod(args) != shape[0]:
                raise UserError(f"layer {text!r}: cannot reshape {shape} into {args}")
            out = args
        elif kind in ("conv", "maxpool") and len(shape) != 3:
            raise UserError(f"layer {text!r} needs images (H, W, C), but gets {shape}; start with 'reshape HxWxC'")
        elif kind == "conv":
            filters, k, padding = args
            height, width, channels = shape
            lost = 0 if padding == "same" else k - 1
            if height - lost < 1 or width - lost < 1:
                raise UserError(f"layer {text!r}: a {k}x{k} kernel does not fit in {height}x{width} images")
            out = (height - lost, width - lost, filters)
            param_shapes = {"W": (k, k, channels, filters), "b": (filters,)}
        elif kind == "maxpool":
            if shape[0] < 2 or shape[1] < 2:
                raise UserError(f"layer {text!r}: cannot pool {shape[0]}x{shape[1]} images")
            out = (shape[0] // 2, shape[1] // 2, shape[2])
        elif kind == "flatten":
            out = (math.prod(shape),)
        elif kind == "dense":
            if len(shape) != 1:
                raise UserError(f"layer {text!r} needs vectors, but gets {shape}; put 'flatten' before it")
            out = args
            param_shapes = {"W": (shape[0], args[0]), "b": (args[0],)}
        elif kind == "batchnorm":  # one scale and shift per feature: a vector's entries, an image's channels
            if not any(layer.param_shapes for layer in walked):
                raise UserError(f"layer {text!r}: put batch normalization after a 'dense' or 'conv' layer, "
                                "not before the first one")
            out = shape
            param_shapes = {"gamma": (shape[-1],), "beta": (shape[-1],)}
        else:  # activations and dropout keep the shape
            out = shape
        walked.append(LayerShape(kind, args, shape, out, param_shapes))
        shape = out
    return walked


@dataclass(frozen=True)
class Architecture:
    """What is needed to rebuild a network: layer sizes, hidden activation, dropout rates, or a
    list of layers (then ``sizes`` is just ``(inputs, outputs)`` and the other fields are unused)."""

    sizes: tuple[int, ...]
    activation: str = "relu"
    input_dropout: float = 0.0
    hidden_dropout: float = 0.0
    dtype: str = "float32"
    layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or any(int(n) < 1 for n in self.sizes):
            raise UserError(f"layer sizes must be at least two positive integers, got {list(self.sizes)}")
        if self.activation not in ACTIVATION_NAMES:
            raise UserError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATION_NAMES)}")
        for name, rate in (("input", self.input_dropout), ("hidden", self.hidden_dropout)):
            if not 0.0 <= rate < 1.0:
                raise UserError(f"{name} dropout must be in [0, 1), got {rate}")
        if self.dtype not in ("float32", "float64"):
            raise UserError(f"dtype must be float32 or float64, got {self.dtype!r}")
        if self.layers and len(self.sizes) != 2:
            raise UserError(f"a network given as layers takes sizes (inputs, outputs), got {list(self.sizes)}")
        walked = self.walk
        if walked[-1].kind != "dense" or walked[-1].out_shape != (self.sizes[-1],):
            raise UserError(f"the last layer must be 'dense {self.sizes[-1]}' (the logits), got {self.layers[-1]!r}")

    def layer_strings(self) -> tuple[str, ...]:
        """The layers, as strings: ``layers`` as given, or a perceptron's spelt out, e.g. ``(784, 128, 10)``
        with input dropout 0.2 -> ``("dropout 0.2", "dense 128", "relu", "dense 10")``."""
        if self.layers:
            return self.layers
        strings = [f"dropout {float(self.input_dropout)!r}"] if self.input_dropout else []
        for index, width in enumerate(self.sizes[1:], start=1):
            strings.append(f"dense {width}")
            if index < len(self.sizes) - 1:
                strings.append(self.activation)
                if self.hidden_dropout:
                    strings.append(f"dropout {float(self.hidden_dropout)!r}")
        return tuple(strings)

    @cached_property
    def walk(self) -> tuple[LayerShape, ...]:
        """Every layer, parsed and shaped (:func:`walk_layers`), computed once."""
        return tuple(walk_layers(self.sizes[0], self.layer_strings()))

    def param_shapes(self) -> list[dict[str, tuple[int, ...]]]:
        """The parameter shapes of every layer with parameters, first to last: ``[{"W": ..., "b": ...}, ...]``."""
        return [layer.param_shapes for layer in self.walk if layer.param_shapes]

    @property
    def num_parameters(self) -> int:
        return sum(math.prod(shape) for shapes in self.param_shapes() for shape in shapes.values())

    def describe(self) -> str:
        """E.g. ``784-128-64-10 relu`` (plus dropout rates when there are any), or for layers
        ``conv5x5x32, pool, conv5x5x64, pool, 1024-256-10 relu``."""
        if self.layers:
            return self._describe_layers()
        text = "-".join(str(n) for n in self.sizes) + f" {self.activation}"
        if self.input_dropout or self.hidden_dropout:
            text += f", dropout {self.input_dropout:g}/{self.hidden_dropout:g}"
        return text

    def _describe_layers(self) -> str:
        parts: list[str] = []
        chain: list[int] = []  # the sizes of a run of dense layers, flatten's output first
        activations: list[str] = []
        for layer in self.walk:
            if layer.kind == "conv":
                filters, k, padding = layer.args
                parts.append(f"conv{k}x{k}x{filters}" + (" same" if padding == "same" else ""))
            elif layer.kind == "maxpool":
                parts.append("pool")
            elif layer.kind == "flatten":
                chain = [layer.out_shape[0]]
            elif layer.kind == "dense":
                chain = (chain or [layer.in_shape[0]]) + [layer.args[0]]
            elif layer.kind == "dropout":
                parts.append(f"dropout {layer.args[0]:g}")
            elif layer.kind == "batchnorm" and "batch norm" not in activations:
                activations.append("batch norm")
            elif layer.kind in ACTIVATION_NAMES and layer.kind not in activations:
                activations.append(layer.kind)
        if chain:
            parts.append("-".join(str(n) for n in chain))
        return ", ".join(parts) + (" " + "/".join(activations) if activations else "")
