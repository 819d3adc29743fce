"""Data augmentation: small random translations of the training digits (``docs/math.md#data-augmentation``)."""
from __future__ import annotations

import numpy as np

SIDE = 28


def random_shift(images: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    """Shift each image of ``images (B, 784)`` by its own random ``(dy, dx)`` in ``[-max_shift, max_shift]``.

    Pixels moved in from outside are 0 (background). Returns a new ``(B, 784)`` array, same dtype.
    """
    batch = len(images)
    pad = max_shift
    padded = np.zeros((batch, SIDE + 2 * pad, SIDE + 2 * pad), dtype=images.dtype)
    padded[:, pad:pad + SIDE, pad:pad + SIDE] = images.reshape(batch, SIDE, SIDE)
    offsets = rng.integers(0, 2 * max_shift + 1, size=(2, batch))
    shifted = np.empty((batch, SIDE, SIDE), dtype=images.dtype)
    # One slice copy per distinct offset (at most 25) instead of a per-pixel gather.
    codes = offsets[0] * (2 * max_shift + 1) + offsets[1]
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        dy, dx = divmod(int(code), 2 * max_shift + 1)
        shifted[rows] = padded[rows, dy:dy + SIDE, dx:dx + SIDE]
    return shifted.reshape(batch, SIDE * SIDE)
