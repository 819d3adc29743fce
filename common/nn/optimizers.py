"""Optimizers behind one small interface: ``optimizer.step(groups)``.

``groups`` is a list of :class:`ParamGroup`: a name, a parameter array, its gradient, and whether
weight decay applies to it (``Network.parameter_groups()``). Each optimizer keeps its state per
group, keyed by the group's name, in buffers of the parameter's own shape and dtype, and updates
everything in place: no state is shared between parameters (a shared cache was a real Adam bug
in a well-known project) and no float64 temporaries are made for float32 parameters (every
scalar is a Python float). A step allocates nothing: each line of a rule writes into the state,
the parameter, or one scratch buffer per group kept beside the state.
The update rules, as the textbook writes them: ``common.nn.reference`` (``sgd_step``, ...), and
``docs/math.md#gradient-descent-and-mini-batches`` onwards.

One thing no textbook line shows: every state buffer (Adam's ``m`` and ``v``, a velocity, a
running square) shrinks by a constant factor at each step where its gradient is zero, and a
weight from a pixel that is almost always blank gets a zero gradient at most steps. Left alone,
such entries sink below the smallest normal float (1.2e-38 in float32) into *subnormal* numbers,
which the CPU handles in slow microcode: measured on MNIST, the small perceptron's Adam step took
3.8x as long after two epochs. So every ``FLUSH_EVERY`` steps the state entries smaller than
``flush_threshold(dtype)`` are set to exactly 0, before they can become subnormal; what they
would still have added to a weight is far below its float rounding (``docs/math.md#adam``).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from common.nn import parallel
from common.nn.errors import UserError


class ParamGroup(NamedTuple):
    """What an optimizer updates: ``param`` in place, from ``grad`` (same shape), with decoupled
    weight decay if ``decay`` (weights, not biases). ``name`` keys the optimizer's state."""

    name: str
    param: np.ndarray
    grad: np.ndarray
    decay: bool = False


# Flush tiny state entries to zero every this many steps (the module docstring says why).
FLUSH_EVERY = 16


def flush_threshold(dtype: np.dtype) -> float:
    """State entries below this (2**24 x the smallest normal number: 2e-31 in float32) become 0.

    An entry above it, shrinking by a factor above ``2**(-24 / FLUSH_EVERY)`` (0.35) per step (the
    suite's rates are 0.9 and 0.999), stays a normal number until the next flush.
    """
    return float(np.finfo(dtype).tiny) * 2.0**24


def flush_tiny(buffer: np.ndarray, scratch: np.ndarray) -> None:
    """Set the entries of ``buffer`` smaller than :func:`flush_threshold` in size to exactly 0.

    ``scratch``: a buffer of the same shape for ``|buffer|``. In place, nothing else allocated
    but the boolean mask."""
    np.abs(buffer, out=scratch)
    np.copyto(buffer, 0, where=scratch < flush_threshold(buffer.dtype))


class Optimizer:
    """Base class. ``lr`` may be changed between steps (learning-rate schedules do).

    A subclass gives its state (:meth:`init_state`) and its rule (:meth:`update`); :meth:`step`
    applies weight decay, the flush and the rule to every group, slice by slice across threads
    (``parallel.by_rows``): element-wise rules give the same numbers on every core as on one.
    """

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        if not (lr > 0 and math.isfinite(lr)):
            raise UserError(f"learning rate must be a positive number, got {lr}")
        if not (weight_decay >= 0 and math.isfinite(weight_decay)):
            raise UserError(f"weight decay must be a number >= 0, got {weight_decay}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.t = 0  # number of steps taken
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.scratch: dict[str, np.ndarray] = {}  # one work buffer per group, outside the rule's state

    def step(self, groups: Sequence[ParamGroup]) -> None:
        """Update every group's parameter in place from its gradient."""
        self.t += 1
        for group in groups:
            if group.name not in self.state:
                self.state[group.name] = self.init_state(group.param)
                self.scratch[group.name] = np.empty_like(group.param)
            elif self.scratch[group.name].shape != group.param.shape:
                raise ValueError(f"parameter group {group.name!r} changed shape between steps")
            parallel.by_rows(self.step_rows, group.param, group.grad, self.scratch[group.name],
                             group.decay, **self.state[group.name])

    def step_rows(self, param: np.ndarray, grad: np.ndarray, scratch: np.ndarray, decay: bool,
                  **state: np.ndarray) -> None:
        """One step on some rows of a group: decoupled weight decay (AdamW: the weights shrink
        outside the gradient step), every ``FLUSH_EVERY`` steps the flush, then :meth:`update`."""
        if decay and self.weight_decay:
            param *= 1.0 - self.lr * self.weight_decay
        if self.t % FLUSH_EVERY == 0:
            for buffer in state.values():
                flush_tiny(buffer, scratch)
        self.update(param, grad, scratch, **state)

    def init_state(self, param: np.ndarray) -> dict[str, np.ndarray]:
        """The rule's state for one parameter array, by name (e.g. Adam's ``m`` and ``v``)."""
        return {}

    def update(self, param: np.ndarray, grad: np.ndarray, scratch: np.ndarray, **state: np.ndarray) -> None:
        """The rule, in place: ``param`` and ``state`` updated from ``grad``; ``scratch`` is free memory."""
        raise NotImplementedError


class GradientDescent(Optimizer):
    """``theta -= lr * g`` (Textbook: ``reference.sgd_step``)."""

    def update(self, param, grad, scratch):
        np.multiply(grad, self.lr, out=scratch)
        param -= scratch


class Momentum(Optimizer):
    """Heavy ball: ``v = mu * v + g``; ``theta -= lr * v`` (Textbook: ``reference.momentum_step``)."""

    def __init__(self, lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.momentum = float(momentum)

    def init_state(self, param):
        return {"velocity": np.zeros_like(param)}

    def update(self, param, grad, scratch, velocity):
        velocity *= self.momentum
        velocity += grad
        np.multiply(velocity, self.lr, out=scratch)
        param -= scratch


class RMSprop(Optimizer):
    """``s = rho * s + (1 - rho) * g**2``; ``theta -= lr * g / (sqrt(s) + eps)`` (Textbook: ``reference.rmsprop_step``)."""

    def __init__(self, lr: float, rho: float = 0.9, eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.rho, self.eps = float(rho), float(eps)

    def init_state(self, param):
        return {"square_avg": np.zeros_like(param)}

    def update(self, param, grad, scratch, square_avg):
        np.multiply(grad, grad, out=scratch)
        scratch *= 1.0 - self.rho
        square_avg *= self.rho
        square_avg += scratch
        np.sqrt(square_avg, out=scratch)
        scratch += self.eps
        np.divide(grad, scratch, out=scratch)
        scratch *= self.lr
        param -= scratch


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba, 2015), optionally with decoupled weight decay (AdamW).

    Textbook: ``reference.adam_step``, for a gradient ``g`` at step ``t``::

        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        theta -= lr * m_hat / (sqrt(v_hat) + eps)

    :meth:`update` computes exactly this in the cheaper form ``theta -= lr_t * m / (sqrt(v) + eps_t)``
    with ``lr_t = lr * sqrt(1 - b2**t) / (1 - b1**t)`` and ``eps_t = eps * sqrt(1 - b2**t)``
    (``docs/math.md#adam``): no ``m_hat`` / ``v_hat`` arrays, and every product lands in one
    preallocated ``scratch`` buffer with ``out=`` or in place, so a step allocates nothing.
    """

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def init_state(self, param):
        return {"m": np.zeros_like(param), "v": np.zeros_like(param)}

    def update(self, param, grad, scratch, m, v):
        b1, b2 = self.beta1, self.beta2
        m *= b1
        np.multiply(grad, 1.0 - b1, out=scratch)
        m += scratch
        v *= b2
        np.multiply(grad, grad, out=scratch)
        scratch *= 1.0 - b2
        v += scratch
        # Python floats, so float32 arrays stay float32 (a NumPy float64 scalar would upcast).
        correction2 = math.sqrt(1.0 - b2 ** self.t)
        lr_t = self.lr * correction2 / (1.0 - b1 ** self.t)
        eps_t = self.eps * correction2
        np.sqrt(v, out=scratch)
        scratch += eps_t
        np.divide(m, scratch, out=scratch)
        scratch *= lr_t
        param -= scratch


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "gd": GradientDescent, "momentum": Momentum, "rmsprop": RMSprop, "adam": Adam,
}


def make_optimizer(name: str, lr: float, weight_decay: float = 0.0) -> Optimizer:
    """Build an optimizer by name (``gd``, ``momentum``, ``rmsprop``, ``adam``) with default betas."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}") from None
    return cls(lr=lr, weight_decay=weight_decay)
