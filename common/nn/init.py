"""Weight initialisation, chosen by name: ``he``, ``xavier`` or ``normal`` (a fixed scale).

Each returns a ``(fan_in, fan_out)`` matrix drawn from the ``numpy.random.Generator`` passed in.
Why the scale matters in a deep network: ``docs/math.md#initialisation``.
"""
from __future__ import annotations

import math

import numpy as np

from common.nn.errors import UserError


def he(fan_in: int, fan_out: int, rng: np.random.Generator, scale: float | None = None) -> np.ndarray:
    """He et al. (2015): normal with std ``sqrt(2 / fan_in)``, for ReLU layers."""
    return rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)


def xavier(fan_in: int, fan_out: int, rng: np.random.Generator, scale: float | None = None) -> np.ndarray:
    """Glorot & Bengio (2010): normal with std ``sqrt(2 / (fan_in + fan_out))``, for tanh/sigmoid."""
    return rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / (fan_in + fan_out))


def normal(fan_in: int, fan_out: int, rng: np.random.Generator, scale: float | None = 0.01) -> np.ndarray:
    """A fixed scale, ``scale * randn`` (the first source design used ``0.001``)."""
    return rng.standard_normal((fan_in, fan_out)) * (0.01 if scale is None else scale)


INITIALIZERS = {"he": he, "xavier": xavier, "normal": normal}


def init_weights(name: str, fan_in: int, fan_out: int, rng: np.random.Generator,
                 scale: float | None = None) -> np.ndarray:
    """Draw a float64 ``(fan_in, fan_out)`` matrix with the initialiser called ``name``."""
    try:
        initializer = INITIALIZERS[name]
    except KeyError:
        raise UserError(f"unknown initialisation {name!r}; choose one of {', '.join(INITIALIZERS)}") from None
    return initializer(fan_in, fan_out, rng, scale)
