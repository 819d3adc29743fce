"""A network that runs on the textbook: ``common.nn.reference``'s functions as layers and an optimizer.

Each class here is a thin shell: it keeps its parameters and what its backward pass needs, and
calls one function of a :class:`Textbook` for the maths. ``Textbook()`` holds the reference
functions; a learner's own functions can stand in for any of them (``common.exercises.load_learner_book``
builds such a book from a learner's worksheet), so the same stages train on the learner's code. :func:`textbook_parts` gives what a training run needs:

    layers, loss, optimizer = textbook_parts(Textbook())
    network = Network.from_architecture(architecture, rng, kit=layers)
    train(network, optimizer("adam", 0.001, 0.0), x, y, epochs=1, rng=rng, loss=loss)

Nothing here is threaded or fused: it is the plain version, slower than the fast layers (a few
times for a perceptron, far more for convolutions, which loop over pixels).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from common.nn import reference
from common.nn.errors import UserError
from common.nn.layers import Layer
from common.nn.network import LayerKit
from common.nn.optimizers import OPTIMIZERS, ParamGroup


@dataclass(frozen=True)
class Textbook:
    """The functions a textbook network computes with: ``common.nn.reference``'s unless replaced.

    ``dataclasses.replace(Textbook(), dense_backward=my_dense_backward)`` runs everything on the
    reference except that one function.
    """

    dense_forward: Callable = reference.dense_forward
    dense_backward: Callable = reference.dense_backward
    relu_forward: Callable = reference.relu_forward
    relu_backward: Callable = reference.relu_backward
    tanh_forward: Callable = reference.tanh_forward
    tanh_backward: Callable = reference.tanh_backward
    sigmoid_forward: Callable = reference.sigmoid_forward
    sigmoid_backward: Callable = reference.sigmoid_backward
    softmax_cross_entropy: Callable = reference.softmax_cross_entropy
    dropout_forward: Callable = reference.dropout_forward
    dropout_backward: Callable = reference.dropout_backward
    conv_forward: Callable = reference.conv_forward
    conv_backward: Callable = reference.conv_backward
    maxpool_forward: Callable = reference.maxpool_forward
    maxpool_backward: Callable = reference.maxpool_backward
    batchnorm_forward: Callable = reference.batchnorm_forward
    batchnorm_backward: Callable = reference.batchnorm_backward
    batchnorm_inference: Callable = reference.batchnorm_inference
    update_running_stats: Callable = reference.update_running_stats
    random_shift: Callable = reference.random_shift
    sgd_step: Callable = reference.sgd_step
    momentum_step: Callable = reference.momentum_step
    rmsprop_step: Callable = reference.rmsprop_step
    adam_step: Callable = reference.adam_step
    decay_weights: Callable = reference.decay_weights

    def replaced(self) -> list[str]:
        """The names of the functions that are not the reference's."""
        default = Textbook()
        return [field.name for field in dataclasses.fields(self)
                if getattr(self, field.name) is not getattr(default, field.name)]


class TextbookLayer(Layer):
    """A layer that calls its textbook's functions (``book``)."""

    def __init__(self, book: Textbook) -> None:
        super().__init__()
        self.book = book


class TextbookDense(TextbookLayer):
    """``z = x W + b`` by ``book.dense_forward``; gradients by ``book.dense_backward``."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, book: Textbook) -> None:
        super().__init__(book)
        self.params = {"W": weights, "b": bias}
        self.grads = {"W": np.zeros_like(weights), "b": np.zeros_like(bias)}
        self.needs_input_grad = True

    def forward(self, x, training=False, keep_for_backward=False):
        self._x = x
        return self.book.dense_forward(x, self.params["W"], self.params["b"])

    def backward(self, dout):
        dx, dW, db = self.book.dense_backward(dout, self._x, self.params["W"])
        self.grads["W"][...] = dW  # in place: the network's gradient buffer holds them
        self.grads["b"][...] = db
        return dx if self.needs_input_grad else None


class TextbookConv(TextbookLayer):
    """A convolution by ``book.conv_forward`` and ``book.conv_backward`` (loops over pixels and offsets)."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, padding: str, book: Textbook) -> None:
        super().__init__(book)
        self.params = {"W": weights, "b": bias}
        self.grads = {"W": np.zeros_like(weights), "b": np.zeros_like(bias)}
        self.pad = (weights.shape[0] - 1) // 2 if padding == "same" else 0
        self.needs_input_grad = True

    def forward(self, x, training=False, keep_for_backward=False):
        self._x = x
        return self.book.conv_forward(x, self.params["W"], self.params["b"], self.pad)

    def backward(self, dout):
        dx, dW, db = self.book.conv_backward(dout, self._x, self.params["W"], self.pad)
        self.grads["W"][...] = dW
        self.grads["b"][...] = db
        return dx if self.needs_input_grad else None


class TextbookMaxPool(TextbookLayer):
    def forward(self, x, training=False, keep_for_backward=False):
        self._x = x
        return self.book.maxpool_forward(x)

    def backward(self, dout):
        return self.book.maxpool_backward(dout, self._x)


class TextbookActivation(TextbookLayer):
    """ReLU by its input; tanh and sigmoid by their output (what each backward function takes)."""

    def __init__(self, name: str, book: Textbook) -> None:
        super().__init__(book)
        self.name = name
        self._forward = getattr(book, f"{name}_forward")
        self._backward = getattr(book, f"{name}_backward")

    def forward(self, x, training=False, keep_for_backward=False):
        out = self._forward(x)
        self._kept = x if self.name == "relu" else out
        return out

    def backward(self, dout):
        return self._backward(dout, self._kept)


class TextbookDropout(TextbookLayer):
    """``book.dropout_forward`` while training, the identity otherwise."""

    def __init__(self, rate: float, rng: np.random.Generator, book: Textbook) -> None:
        super().__init__(book)
        self.rate, self.rng = rate, rng
        self._mask: np.ndarray | None = None

    def forward(self, x, training=False, keep_for_backward=False):
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        out, self._mask = self.book.dropout_forward(x, self.rate, self.rng)
        return out

    def backward(self, dout):
        return dout if self._mask is None else self.book.dropout_backward(dout, self._mask)


class TextbookBatchNorm(TextbookLayer):
    """``book.batchnorm_forward`` / ``book.batchnorm_backward`` while training, updating the running
    averages with ``book.update_running_stats``; ``book.batchnorm_inference`` otherwise."""

    batchnorm = True

    def __init__(self, num_features: int, dtype: np.dtype, book: Textbook, momentum: float = 0.1,
                 eps: float = 1e-5) -> None:
        super().__init__(book)
        self.params = {"gamma": np.ones(num_features, dtype=dtype), "beta": np.zeros(num_features, dtype=dtype)}
        self.grads = {key: np.zeros_like(value) for key, value in self.params.items()}
        self.running_mean = np.zeros(num_features, dtype=dtype)
        self.running_var = np.ones(num_features, dtype=dtype)
        self.momentum, self.eps = momentum, eps
        self._cache: tuple | None = None
        self._x: np.ndarray | None = None

    def forward(self, x, training=False, keep_for_backward=False):
        gamma, beta = self.params["gamma"], self.params["beta"]
        if not training:
            self._cache, self._x = None, x
            return self.book.batchnorm_inference(x, gamma, beta, self.running_mean, self.running_var, self.eps)
        out, self._cache = self.book.batchnorm_forward(x, gamma, beta, self.eps)
        _, _, _, mean, var = self._cache
        count = x.size // x.shape[-1]
        self.book.update_running_stats(self.running_mean, self.running_var, mean, var * count / (count - 1),
                                       self.momentum)
        return out

    def backward(self, dout):
        if self._cache is not None:
            dx, dgamma, dbeta = self.book.batchnorm_backward(dout, self._cache)
        else:  # after a prediction: the running averages are constants, so each feature is scaled
            std = np.sqrt(self.running_var + self.eps)
            xhat = (self._x - self.running_mean) / std
            rows = dout.reshape(-1, dout.shape[-1])
            dgamma, dbeta = (rows * xhat.reshape(rows.shape)).sum(axis=0), rows.sum(axis=0)
            dx = dout * self.params["gamma"] / std
        self.grads["gamma"][...] = dgamma
        self.grads["beta"][...] = dbeta
        return dx


class TextbookOptimizer:
    """An optimizer whose step is the textbook's (``book.<rule>_step``), with the same interface as
    ``common.nn.optimizers.Optimizer``: ``lr`` (schedules change it), ``weight_decay``, ``t`` and
    ``step(groups)``. State is kept per group, as there."""

    STATE = {"gd": (), "momentum": ("velocity",), "rmsprop": ("square_avg",), "adam": ("m", "v")}

    def __init__(self, rule: str, lr: float, weight_decay: float, book: Textbook) -> None:
        if rule not in self.STATE:
            raise UserError(f"unknown optimizer {rule!r}; choose one of {', '.join(OPTIMIZERS)}")
        self.rule, self.lr, self.weight_decay, self.book = rule, float(lr), float(weight_decay), book
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def step(self, groups: Sequence[ParamGroup]) -> None:
        self.t += 1
        for group in groups:
            state = self.state.setdefault(group.name, {key: np.zeros_like(group.param) for key in self.STATE[self.rule]})
            if group.decay and self.weight_decay:
                self.book.decay_weights(group.param, self.lr, self.weight_decay)
            if self.rule == "gd":
                self.book.sgd_step(group.param, group.grad, self.lr)
            elif self.rule == "momentum":
                self.book.momentum_step(group.param, group.grad, state["velocity"], self.lr)
            elif self.rule == "rmsprop":
                self.book.rmsprop_step(group.param, group.grad, state["square_avg"], self.lr)
            else:
                self.book.adam_step(group.param, group.grad, state["m"], state["v"], self.t, self.lr)


def textbook_layers(book: Textbook) -> LayerKit:
    """The layer classes of a textbook network computing with ``book``."""
    return LayerKit(
        name="textbook",
        dense=lambda weights, bias: TextbookDense(weights, bias, book),
        conv=lambda weights, bias, padding: TextbookConv(weights, bias, padding, book),
        maxpool=lambda: TextbookMaxPool(book),
        dropout=lambda rate, rng: TextbookDropout(rate, rng, book),
        activations={name: (lambda name=name: TextbookActivation(name, book)) for name in ("relu", "tanh", "sigmoid")},
        batchnorm=lambda features, dtype: TextbookBatchNorm(features, dtype, book),
    )


def textbook_parts(book: Textbook) -> tuple[LayerKit, Callable, Callable[[str, float, float], TextbookOptimizer]]:
    """``(layers, loss, make_optimizer)`` for training on ``book``: the layer kit for
    ``Network.from_architecture``, the loss for ``train``, and ``make_optimizer(name, lr, weight_decay)``."""
    return (textbook_layers(book), book.softmax_cross_entropy,
            lambda name, lr, weight_decay: TextbookOptimizer(name, lr, weight_decay, book))
