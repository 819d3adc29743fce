"""Learning-rate schedules: the learning rate to use in each epoch (``docs/math.md#learning-rate-schedules``)."""
from __future__ import annotations

import math
from typing import Callable

from common.nn.errors import UserError

Schedule = Callable[[int], float]  # 0-based epoch -> learning rate


def constant(lr: float) -> Schedule:
    return lambda epoch: lr


def cosine(lr: float, epochs: int, warmup: int = 0, lr_min: float = 0.0) -> Schedule:
    """Linear warm-up over ``warmup`` epochs, then cosine decay from ``lr`` to ``lr_min`` at the end.

    Warm-up epoch ``e < W`` (0-based) gets ``lr * (e + 1) / (W + 1)``: every warm-up epoch is below
    the peak, which the first decay epoch reaches (one warm-up epoch runs at ``lr / 2``). Epoch ``e``
    of the decay phase of length ``E`` gets ``lr_min + (lr - lr_min) * (1 + cos(pi * e / E)) / 2``.
    """
    decay_epochs = max(epochs - warmup, 1)

    def schedule(epoch: int) -> float:
        if epoch < warmup:
            return lr * (epoch + 1) / (warmup + 1)
        progress = (epoch - warmup) / decay_epochs
        return lr_min + (lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return schedule


def make_schedule(name: str, lr: float, epochs: int, warmup: int = 0) -> Schedule:
    if name == "constant":
        return constant(lr)
    if name == "cosine":
        return cosine(lr, epochs, warmup)
    raise UserError(f"unknown learning-rate schedule {name!r}; choose constant or cosine")
