"""Numerical gradients by centered finite differences, and the relative error to compare them.

Used by the tests to check every backward pass in float64 (``docs/math.md#checking-gradients``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """d f() / d x by ``(f(x + h) - f(x - h)) / 2h`` per element; ``x`` is perturbed in place and restored."""
    grad = np.zeros_like(x, dtype=np.float64)
    flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
    for i in range(flat_x.size):
        original = flat_x[i]
        flat_x[i] = original + h
        f_plus = f()
        flat_x[i] = original - h
        f_minus = f()
        flat_x[i] = original
        flat_grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def numerical_gradient_of_output(forward: Callable[[], np.ndarray], x: np.ndarray, dout: np.ndarray,
                                 h: float = 1e-5) -> np.ndarray:
    """Gradient of ``sum(forward() * dout)`` with respect to ``x``: checks a layer's backward for a given ``dout``."""
    return numerical_gradient(lambda: float(np.sum(forward() * dout)), x, h)


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest element-wise ``|a - b| / max(|a| + |b|, 1e-8)``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), 1e-8)))
