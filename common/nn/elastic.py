"""Random elastic distortions of the training digits (Simard, Steinkraus and Platt, 2003).

Each image gets its own smooth random displacement field: every pixel's two displacements are drawn
uniformly from ``[-1, 1]``, each field is smoothed with a Gaussian of width ``sigma`` pixels
(:func:`smooth_fields`) and scaled by ``alpha``; output pixel ``q`` then reads the input at
``q + alpha * smooth(u)(q)`` by bilinear interpolation (:func:`sample_bilinear`), 0 (background) outside
the image. A small ``sigma`` gives a random jitter of single pixels; a large one moves whole strokes
together, like a hand that wobbles: Simard et al. used ``sigma = 4`` and ``alpha = 34`` on 29 x 29
images, and reported 99.6 % with a small convolutional network on the distorted digits.

Everything is vectorised over the batch: the Gaussian smoothing is two matrix products per field
(``G @ U @ G``, ``G`` the ``(S, S)`` matrix of the truncated, normalised kernel, zeros outside the image),
and the sampling one fancy-indexing gather per neighbour.

Coordinates are ``(x, y)`` in pixels, ``x`` the column and ``y`` the row (rows go down the screen).
"""
from __future__ import annotations

import math

import numpy as np


def gaussian_matrix(side: int, sigma: float) -> np.ndarray:
    """``(side, side)`` float64 ``G`` with ``G[i, j] = g(i - j)``: ``g`` the Gaussian of std ``sigma`` pixels,
    cut at 4 sigma and normalised to sum 1 over its whole support. ``G @ u`` smooths a column ``u`` as a
    convolution with zeros outside the image (so rows near the border sum to less than 1)."""
    if not sigma > 0:
        raise ValueError(f"sigma must be above 0 pixels, got {sigma}")
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    distance = np.arange(side)[:, None] - np.arange(side)[None, :]
    return np.where(np.abs(distance) <= radius, kernel[np.clip(distance + radius, 0, 2 * radius)], 0.0)


def smooth_fields(raw: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth each ``(S, S)`` field of ``raw (..., S, S)`` with the Gaussian of std ``sigma`` along both axes:
    ``G @ raw @ G.T`` (``G`` of :func:`gaussian_matrix`, symmetric). Same shape and dtype as ``raw``."""
    matrix = gaussian_matrix(raw.shape[-1], sigma).astype(raw.dtype)
    return matrix @ raw @ matrix.T


def elastic_fields(rng: np.random.Generator, batch: int, side: int, alpha: float, sigma: float,
                   dtype: type = np.float32) -> np.ndarray:
    """``batch`` random displacement fields ``(batch, 2, side, side)``: ``[:, 0]`` the x (column) and ``[:, 1]``
    the y (row) displacement in pixels of every output pixel, ``alpha * smooth(uniform(-1, 1))``.

    One draw, ``rng.uniform(-1, 1, (batch, 2, side, side))``, in that order.
    """
    if not alpha >= 0:
        raise ValueError(f"alpha must be at least 0 pixels, got {alpha}")
    raw = rng.uniform(-1.0, 1.0, (batch, 2, side, side)).astype(dtype)
    return dtype(alpha) * smooth_fields(raw, sigma)


def sample_bilinear(images: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Read ``images (B, S*S)`` (square S x S images, rows flattened) at the points ``(xs, ys)``, each
    ``(B, S, S)``: output pixel ``[b, row, col]`` is image ``b`` at column ``xs[b, row, col]`` and row
    ``ys[b, row, col]``, interpolated bilinearly from its 4 neighbours, neighbours outside the image
    counting as 0. Returns ``(B, S*S)`` in the dtype of ``images``."""
    batch, num_pixels = images.shape
    side = math.isqrt(num_pixels)
    width = side + 2  # the zero-padded frame: 1 pixel of background on each side
    # Clipped into [-1, S] and the top-left neighbour capped at S-1, every read stays in the padded frame
    # and a point at or beyond the border line reads only its zeros.
    xs = np.clip(xs, -1, side)
    ys = np.clip(ys, -1, side)
    x0 = np.minimum(np.floor(xs), side - 1)
    y0 = np.minimum(np.floor(ys), side - 1)
    fx, fy = xs - x0, ys - y0
    index = (y0 * width + x0).astype(np.intp)
    index += (np.arange(batch, dtype=np.intp) * (width * width) + width + 1)[:, None, None]
    padded = np.zeros((batch, width, width), dtype=images.dtype)
    padded[:, 1:-1, 1:-1] = images.reshape(batch, side, side)
    flat = padded.reshape(-1)
    top_left, top_right = flat[index], flat[1:][index]
    bottom_left, bottom_right = flat[width:][index], flat[width + 1:][index]
    top = top_left + fx * (top_right - top_left)
    bottom = bottom_left + fx * (bottom_right - bottom_left)
    return (top + fy * (bottom - top)).reshape(batch, num_pixels).astype(images.dtype, copy=False)


def displace(images: np.ndarray, fields: np.ndarray) -> np.ndarray:
    """Output pixel ``(x, y)`` of image ``b`` reads ``images[b]`` at ``(x + fields[b, 0, y, x], y + fields[b, 1, y, x])``.

    ``images (B, S*S)`` float, ``fields (B, 2, S, S)`` in pixels. Returns a new ``(B, S*S)`` array, same dtype.
    """
    if images.ndim != 2 or not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"displace needs floating-point images of shape (B, S*S), got {images.dtype} {images.shape}")
    batch, num_pixels = images.shape
    side = math.isqrt(num_pixels)
    if side * side != num_pixels:
        raise ValueError(f"displace needs square images, got rows of {num_pixels} pixels")
    if fields.shape != (batch, 2, side, side):
        raise ValueError(f"displace needs fields of shape ({batch}, 2, {side}, {side}), got {fields.shape}")
    grid = np.arange(side, dtype=fields.dtype)
    return sample_bilinear(images, grid + fields[:, 0], grid[:, None] + fields[:, 1])


def random_elastic(images: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    """Distort each image of ``images (B, S*S)`` by its own random elastic field (:func:`elastic_fields`).

    Returns a new ``(B, S*S)`` array, same dtype. Training calls this on each mini-batch, after the stage's
    other distortions.
    """
    side = math.isqrt(images.shape[1])
    dtype = np.float32 if images.dtype.itemsize <= 4 else np.float64
    return displace(images, elastic_fields(rng, len(images), side, alpha, sigma, dtype))
