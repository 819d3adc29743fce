"""Tests for common.nn.augment.random_shift and common.nn.schedules (cosine with warm-up, constant)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from common.nn.augment import random_shift
from common.nn.errors import UserError
from common.nn.schedules import constant, cosine, make_schedule


def translate(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[i, j] = image[i + dy, j + dx]`` with zeros outside: reference shift, written plainly."""
    out = np.zeros_like(image)
    rows = np.arange(28)
    src_r, src_c = rows + dy, rows + dx
    ok_r, ok_c = (src_r >= 0) & (src_r < 28), (src_c >= 0) & (src_c < 28)
    out[np.ix_(ok_r, ok_c)] = image[np.ix_(src_r[ok_r], src_c[ok_c])]
    return out


def test_zero_shift_is_identity():
    """max_shift=0 returns the images unchanged (as a new array)."""
    images = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    out = random_shift(images, np.random.default_rng(1), max_shift=0)
    assert np.array_equal(out, images) and out is not images


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_each_image_is_a_translation(dtype):
    """max_shift=2: each output equals its input translated by some (dy, dx) in [-2, 2]^2 with zero
    fill; dtype and shape kept; over 40 images several different shifts occur."""
    rng = np.random.default_rng(2)
    images = (rng.random((40, 784)) * 200 + 1).astype(dtype)  # no zero pixels: every shift is distinguishable
    out = random_shift(images, np.random.default_rng(3), max_shift=2)
    assert out.dtype == images.dtype and out.shape == images.shape
    found = set()
    for image, shifted in zip(images.reshape(-1, 28, 28), out.reshape(-1, 28, 28)):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(shifted, translate(image, dy, dx))]
        assert len(matches) == 1
        found.add(matches[0])
    assert len(found) >= 10


def test_shift_is_deterministic_for_a_seed():
    """Same seed, same output; different seed, different output; input untouched."""
    images = np.random.default_rng(4).random((6, 784))
    copy = images.copy()
    a = random_shift(images, np.random.default_rng(5))
    b = random_shift(images, np.random.default_rng(5))
    c = random_shift(images, np.random.default_rng(6))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.array_equal(images, copy)


def test_cosine_exact_values():
    """Cosine over E=10 epochs from 0.1 to 0.01: start lr, midpoint at e=5, formula at e=E-1, lr_min at e=E."""
    schedule = cosine(0.1, 10, lr_min=0.01)
    assert schedule(0) == pytest.approx(0.1, rel=1e-15)
    assert schedule(5) == pytest.approx(0.055, rel=1e-14)
    assert schedule(9) == pytest.approx(0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * 0.9)), rel=1e-14)
    assert 0.01 < schedule(9) < 0.0125
    assert schedule(10) == pytest.approx(0.01, rel=1e-14)
    values = [schedule(e) for e in range(10)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_cosine_with_warmup():
    """Warm-up over 3 epochs: lr/4, 2lr/4, 3lr/4, all below the peak; then cosine over the remaining 8 of 11."""
    schedule = cosine(0.3, 11, warmup=3)
    assert [schedule(e) for e in range(3)] == pytest.approx([0.075, 0.15, 0.225], rel=1e-15)
    assert schedule(3) == pytest.approx(0.3, rel=1e-15)          # cosine epoch 0
    assert schedule(7) == pytest.approx(0.15, rel=1e-14)         # cosine epoch 4 of 8: midpoint
    assert schedule(10) == pytest.approx(0.15 * (1 + math.cos(math.pi * 7 / 8)), rel=1e-14)
    assert schedule(11) == pytest.approx(0.0, abs=1e-16)


def test_one_warmup_epoch_is_not_a_no_op():
    """Stage 05's single warm-up epoch runs at half the peak rate; the peak comes in the next epoch."""
    schedule = cosine(1e-3, 30, warmup=1)
    assert schedule(0) == pytest.approx(5e-4, rel=1e-15)
    assert schedule(1) == pytest.approx(1e-3, rel=1e-15)
    assert schedule(0) < schedule(1)


def test_make_schedule():
    """make_schedule: constant is constant, cosine matches cosine(), anything else is a UserError."""
    assert [make_schedule("constant", 0.2, 5)(e) for e in range(5)] == [0.2] * 5
    assert constant(0.3)(100) == 0.3
    assert make_schedule("cosine", 0.2, 5, warmup=1)(3) == cosine(0.2, 5, 1)(3)
    with pytest.raises(UserError):
        make_schedule("step", 0.1, 5)
