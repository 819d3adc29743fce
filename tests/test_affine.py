"""Tests for common.nn.affine: random affine distortions (rotation, scale, shear, shift) and the bilinear warp."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

from common.nn.affine import affine_matrices, random_affine, warp

SIDE = 28
CENTRE = (SIDE - 1) / 2


def matrix(a: list[list[float]], t: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """One forward map ``[A | t]`` as a ``(1, 2, 3)`` batch, acting on ``(x, y)`` = (column, row)."""
    return np.hstack([np.asarray(a, dtype=np.float64), np.asarray(t, dtype=np.float64)[:, None]])[None]


def rotation(degrees: float) -> list[list[float]]:
    """The documented rotation: positive = counter-clockwise on screen, rows going down."""
    theta = math.radians(degrees)
    return [[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]]


def one_pixel(row: int, col: int, dtype=np.float32) -> np.ndarray:
    """A ``(1, 784)`` image, 0 everywhere but 1 at ``(row, col)``."""
    image = np.zeros((SIDE, SIDE), dtype=dtype)
    image[row, col] = 1
    return image.reshape(1, -1)


def slice_shift(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``out[y, x] = image[y - dy, x - dx]`` with zero fill, by slicing: the content moves by ``(dx, dy)``."""
    out = np.zeros_like(image)
    h, w = image.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = image[max(-dy, 0):h - max(dy, 0),
                                                                     max(-dx, 0):w - max(dx, 0)]
    return out


def recover(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(theta, s, phi, t)`` (degrees, factor, degrees, pixels) of ``A = R(theta) @ Sh(phi) @ diag(s, s)``."""
    a = matrices[:, :, :2]
    s = np.hypot(a[:, 0, 0], a[:, 1, 0])  # the first column is s * (cos, -sin)
    theta = np.arctan2(-a[:, 1, 0], a[:, 0, 0])
    cos, sin = np.cos(theta), np.sin(theta)
    # R^T @ A = s * Sh: its top-right entry is s * tan(phi).
    tan_phi = (cos * a[:, 0, 1] - sin * a[:, 1, 1]) / s
    return np.degrees(theta), s, np.degrees(np.arctan(tan_phi)), matrices[:, :, 2]


def test_identity_returns_the_image_exactly():
    """A = I, t = 0: every output pixel reads its own input pixel, bit for bit (float32 stays float32)."""
    images = np.random.default_rng(0).random((3, SIDE * SIDE), dtype=np.float32)
    identity = np.repeat(matrix([[1, 0], [0, 1]]), 3, axis=0)
    out = warp(images, identity)
    assert out.dtype == np.float32 and out is not images
    assert np.array_equal(out, images)


@pytest.mark.parametrize("dx, dy", [(3, 0), (0, -2), (4, -5), (-7, 6), (-1, -1), (27, -27)])
def test_integer_translation_is_a_zero_filled_shift(dx, dy):
    """t = (dx, dy) with A = I moves the content dx columns right and dy rows down, zeros moved in."""
    image = np.random.default_rng(1).random((SIDE, SIDE), dtype=np.float32) + 0.5
    out = warp(image.reshape(1, -1), matrix([[1, 0], [0, 1]], (dx, dy)))
    assert np.array_equal(out.reshape(SIDE, SIDE), slice_shift(image, dx, dy))


def test_translation_past_the_edge_gives_background():
    """A shift of a whole image width or more (or less than one pixel short of it) leaves only zeros."""
    image = np.random.default_rng(1).random((1, SIDE * SIDE), dtype=np.float32) + 0.5
    for t in [(SIDE, 0), (0, -SIDE), (100, 3), (-SIDE - 0.5, 0)]:
        assert not warp(image, matrix([[1, 0], [0, 1]], t)).any()


@pytest.mark.parametrize("side", [28, 9])
def test_rotation_by_90_degrees_is_rot90(side):
    """theta = +90 is np.rot90 (counter-clockwise on screen), theta = -90 is np.rot90(k=-1): the sign convention."""
    image = np.random.default_rng(2).random((side, side))
    for degrees, k in [(90, 1), (-90, -1), (180, 2)]:
        out = warp(image.reshape(1, -1), matrix(rotation(degrees))).reshape(side, side)
        np.testing.assert_allclose(out, np.rot90(image, k), rtol=0, atol=1e-5)
    assert not np.allclose(np.rot90(image, 1), np.rot90(image, -1))  # the test can tell the two directions apart


def test_a_bright_pixel_lands_where_the_forward_map_sends_it():
    """The pixel at (row 5, col 20) under rotation 180 + scale 0.5 + shift (0.75, 0.25) lands on (row 18, col 11),
    exactly A @ (p - c) + c + t, and stays a single pixel of value 1 (the shrink samples every other input)."""
    forward = matrix([[-0.5, 0], [0, -0.5]], (0.75, 0.25))
    p = np.array([20.0, 5.0])  # (x, y) = (column, row)
    x, y = forward[0, :, :2] @ (p - CENTRE) + CENTRE + forward[0, :, 2]
    assert (x, y) == (11.0, 18.0)
    out = warp(one_pixel(5, 20), forward).reshape(SIDE, SIDE)
    assert np.unravel_index(np.argmax(out), out.shape) == (18, 11)
    assert out[18, 11] == 1 and out.sum() == 1


def test_rotation_scale_and_shift_move_a_pixel_to_the_forward_image():
    """A rotation by 90 with a 2-pixel shift, and a 180 with a (-3, 1) shift: argmax is the forward-mapped point."""
    for degrees, t in [(90, (2, 0)), (180, (-3, 1))]:
        forward = matrix(rotation(degrees), t)
        x, y = forward[0, :, :2] @ (np.array([20.0, 5.0]) - CENTRE) + CENTRE + forward[0, :, 2]
        out = warp(one_pixel(5, 20, np.float64), forward).reshape(SIDE, SIDE)
        assert np.unravel_index(np.argmax(out), out.shape) == (round(y), round(x))
        assert out.max() == pytest.approx(1, abs=1e-9)


def test_scale_2_spreads_a_centred_block_over_4x4():
    """Scale 2 about the centre: a centred 2x2 block of ones covers the centred 4x4 (values > 0.5), keeps its middle
    2x2 at 1, and its total grows by s^2 = 4 (bilinear profile 0.25, 0.75, 1, 1, 0.75, 0.25 on each axis)."""
    image = np.zeros((SIDE, SIDE), dtype=np.float32)
    image[13:15, 13:15] = 1
    out = warp(image.reshape(1, -1), matrix([[2, 0], [0, 2]])).reshape(SIDE, SIDE)
    covered = np.zeros((SIDE, SIDE), dtype=bool)
    covered[12:16, 12:16] = True
    assert np.array_equal(out > 0.5, covered)
    assert np.all(out[13:15, 13:15] == 1)
    profile = np.array([0.25, 0.75, 1, 1, 0.75, 0.25], dtype=np.float32)
    assert np.array_equal(out[11:17, 11:17], np.outer(profile, profile))
    assert out.sum() == pytest.approx(4 * image.sum())


def test_shear_moves_a_pixel_by_tan_phi_times_its_row_offset():
    """Sh = [[1, tan(phi)], [0, 1]] with tan(phi) = 2: the pixel at row 5 (offset -8.5) moves 17 columns left,
    the pixel at row 20 (offset +6.5) 13 columns right; rows do not change."""
    shear = matrix([[1, 2], [0, 1]])
    out = warp(one_pixel(5, 20), shear).reshape(SIDE, SIDE)
    assert out[5, 20 - 17] == 1 and out.sum() == 1
    out = warp(one_pixel(20, 5), shear).reshape(SIDE, SIDE)
    assert out[20, 5 + 13] == 1 and out.sum() == 1


def test_matrices_follow_the_documented_draw_order_and_product():
    """affine_matrices draws theta, s, phi (each (batch,)), then t (batch, 2), and returns [R @ Sh @ diag(s, s) | t]."""
    args = dict(rotation=30.0, scale=0.2, shear=15.0, shift=3.0)
    got = affine_matrices(np.random.default_rng(5), 7, **args)
    rng = np.random.default_rng(5)
    theta = rng.uniform(-30, 30, 7)
    s = rng.uniform(0.8, 1.2, 7)
    phi = rng.uniform(-15, 15, 7)
    t = rng.uniform(-3, 3, (7, 2))
    for i in range(7):
        sh = np.array([[1, math.tan(math.radians(phi[i]))], [0, 1]])
        a = np.array(rotation(theta[i])) @ sh @ np.diag([s[i], s[i]])
        np.testing.assert_allclose(got[i], np.hstack([a, t[i][:, None]]), rtol=0, atol=1e-12)
    assert got.dtype == np.float64 and got.shape == (7, 2, 3)


def test_matrix_draws_stay_in_bounds_and_differ_per_image():
    """Over 10,000 draws the recovered angle, factor, shear and shift stay within their ranges and reach near their
    ends; each image has its own numbers; the same seed gives the same matrices, another seed others."""
    n = 10_000
    matrices = affine_matrices(np.random.default_rng(6), n, rotation=10, scale=0.1, shear=20, shift=2)
    theta, s, phi, t = recover(matrices)
    eps = 1e-9
    assert np.all(np.abs(theta) <= 10 + eps) and np.abs(theta).max() > 9.9
    assert np.all((s >= 0.9 - eps) & (s <= 1.1 + eps)) and s.min() < 0.901 and s.max() > 1.099
    assert np.all(np.abs(phi) <= 20 + eps) and np.abs(phi).max() > 19.9
    assert np.all(np.abs(t) <= 2) and np.abs(t).max() > 1.99
    assert t[:, 0].min() < -1.99 and t[:, 1].max() > 1.99
    for values in (theta, s, phi, t[:, 0], t[:, 1]):
        assert len(np.unique(values)) == n
    assert not np.allclose(t[:, 0], t[:, 1])
    again = affine_matrices(np.random.default_rng(6), n, rotation=10, scale=0.1, shear=20, shift=2)
    other = affine_matrices(np.random.default_rng(7), n, rotation=10, scale=0.1, shear=20, shift=2)
    assert np.array_equal(matrices, again) and not np.allclose(matrices, other)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_kept_no_nan_values_within_input_range(dtype):
    """Strong random distortions keep the dtype, give no NaN and stay within [min(input, 0), max(input)]:
    bilinear interpolation is a convex combination of pixels and background zeros (up to rounding)."""
    rng = np.random.default_rng(8)
    images = (rng.random((64, SIDE * SIDE)) * 3 - 1).astype(dtype)  # in [-1, 2]
    before = images.copy()
    out = random_affine(images, rng, rotation=180, scale=0.9, shear=70, shift=10)
    assert out.dtype == dtype and out.shape == images.shape
    assert np.array_equal(images, before)  # input untouched
    assert not np.isnan(out).any()
    slack = 4 * np.finfo(dtype).eps * 2
    assert out.min() >= min(images.min(), 0) - slack and out.max() <= images.max() + slack


def test_zero_strengths_return_the_input():
    """random_affine with every strength 0 returns the images unchanged, as a new array."""
    images = np.random.default_rng(9).random((5, SIDE * SIDE), dtype=np.float32)
    out = random_affine(images, np.random.default_rng(10))
    assert np.array_equal(out, images) and out is not images


@pytest.mark.parametrize("kwargs", [dict(shift=-1), dict(rotation=200), dict(rotation=-5), dict(scale=1.5),
                                    dict(scale=1.0), dict(shear=80), dict(shift=float("nan"))])
def test_bad_strengths_raise(kwargs):
    """Out-of-range strengths raise ValueError."""
    with pytest.raises(ValueError):
        affine_matrices(np.random.default_rng(0), 4, **kwargs)


def test_bad_shapes_raise():
    """Non-square rows, a batch mismatch, a wrong matrix shape and integer images raise ValueError."""
    eye = np.repeat(matrix([[1, 0], [0, 1]]), 3, axis=0)
    with pytest.raises(ValueError, match="square"):
        warp(np.zeros((3, 783)), eye)
    with pytest.raises(ValueError, match="3 images"):
        warp(np.zeros((3, 784)), eye[:2])
    with pytest.raises(ValueError):
        warp(np.zeros((3, 784)), np.zeros((3, 3, 3)))
    with pytest.raises(ValueError):
        warp(np.zeros((3, 784), dtype=np.uint8), eye)
    with pytest.raises(ValueError, match="square"):
        random_affine(np.zeros((2, 10)), np.random.default_rng(0), rotation=5)


def test_a_large_batch_is_fast():
    """2,000 rows in well under a second: the warp is vectorised over the batch, no Python loop per image."""
    rng = np.random.default_rng(11)
    images = rng.random((2000, SIDE * SIDE), dtype=np.float32)
    start = time.perf_counter()
    out = random_affine(images, rng, rotation=10, scale=0.1, shear=10, shift=2)
    assert time.perf_counter() - start < 1.0
    assert out.shape == images.shape
