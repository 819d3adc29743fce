"""Data augmentation: small random translations of the training digits (``docs/math.md#data-augmentation``)."""
from __future__ import annotations

import math

import numpy as np


def random_shift(images: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    """Shift each image of ``images (B, S*S)`` (square S x S images, rows flattened: 784 for MNIST) by its own
    random ``(dy, dx)`` in ``[-max_shift, max_shift]``.

    Pixels moved in from outside are 0 (background). Returns a new ``(B, S*S)`` array, same dtype.
    """
    batch, num_pixels = images.shape
    side = math.isqrt(num_pixels)
    if side * side != num_pixels:
        raise ValueError(f"random_shift needs square images, got rows of {num_pixels} pixels")
    pad = max_shift
    padded = np.zeros((batch, side + 2 * pad, side + 2 * pad), dtype=images.dtype)
    padded[:, pad:pad + side, pad:pad + side] = images.reshape(batch, side, side)
    offsets = rng.integers(0, 2 * max_shift + 1, size=(2, batch))
    shifted = np.empty((batch, side, side), dtype=images.dtype)
    # One slice copy per distinct offset (at most 25) instead of a per-pixel gather.
    codes = offsets[0] * (2 * max_shift + 1) + offsets[1]
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        dy, dx = divmod(int(code), 2 * max_shift + 1)
        shifted[rows] = padded[rows, dy:dy + side, dx:dx + side]
    return shifted.reshape(batch, side * side)
