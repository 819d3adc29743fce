"""Random affine distortions of the training digits: rotation, scale, shear and shift, each image its own.

Each image gets its own random affine map about the image centre (:func:`affine_matrices`); :func:`warp`
then reads every output pixel from where the inverse map sends it, by bilinear interpolation from its 4
neighbours, with 0 (background) outside the image. This is the augmentation of LeCun-style and Simard et
al. (2003) style MNIST papers, affine part only: their elastic distortions are not implemented here.

Coordinates are ``(x, y)`` in pixels, ``x`` the column and ``y`` the row (rows go *down* the screen),
with the origin of a map's linear part at the image centre ``c = ((S-1)/2, (S-1)/2)``.
"""
from __future__ import annotations

import math

import numpy as np


def affine_matrices(rng: np.random.Generator, batch: int, rotation: float = 0.0, scale: float = 0.0,
                    shear: float = 0.0, shift: float = 0.0) -> np.ndarray:
    """``batch`` random forward maps ``[A | t]``, float64 ``(batch, 2, 3)``, acting on ``(x, y)`` = (column, row).

    A map sends pixel ``p`` to ``A @ (p - c) + c + t`` (``c`` the image centre, added by :func:`warp`, so the
    matrices do not depend on the image size), with ``A = R(theta) @ Sh(phi) @ diag(s, s)``:

    * ``theta`` uniform in ``[-rotation, rotation]`` degrees; positive ``theta`` turns the image
      **counter-clockwise on screen**: ``R = [[cos, sin], [-sin, cos]]`` (rows go down), so
      ``theta = 90`` is ``np.rot90(image)``;
    * ``s`` uniform in ``[1 - scale, 1 + scale]``;
    * ``phi`` uniform in ``[-shear, shear]`` degrees, a shear along x: ``Sh = [[1, tan(phi)], [0, 1]]``;
    * ``t = (tx, ty)`` uniform in ``[-shift, shift]`` pixels, each axis on its own.

    Draw order, one vectorised call each: ``theta (batch,)``, ``s (batch,)``, ``phi (batch,)``, ``t (batch, 2)``.
    """
    if not 0 <= rotation <= 180:
        raise ValueError(f"rotation must be between 0 and 180 degrees, got {rotation}")
    if not 0 <= scale < 1:
        raise ValueError(f"scale must be at least 0 and below 1 (the factor is 1 +- scale), got {scale}")
    if not 0 <= shear < 80:
        raise ValueError(f"shear must be at least 0 and below 80 degrees, got {shear}")
    if not shift >= 0:
        raise ValueError(f"shift must be at least 0 pixels, got {shift}")
    theta = np.radians(rng.uniform(-rotation, rotation, batch))
    s = rng.uniform(1 - scale, 1 + scale, batch)
    tan_phi = np.tan(np.radians(rng.uniform(-shear, shear, batch)))
    t = rng.uniform(-shift, shift, (batch, 2))
    cos, sin = np.cos(theta), np.sin(theta)
    matrices = np.empty((batch, 2, 3))
    # R @ [[1, tan], [0, 1]] @ diag(s, s), multiplied out.
    matrices[:, 0, 0] = s * cos
    matrices[:, 0, 1] = s * (cos * tan_phi + sin)
    matrices[:, 1, 0] = -s * sin
    matrices[:, 1, 1] = s * (cos - sin * tan_phi)
    matrices[:, :, 2] = t
    return matrices


def warp(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Apply forward map ``matrices[b]`` (``(B, 2, 3)``, see :func:`affine_matrices`) to image ``images[b]``.

    ``images (B, S*S)``: square S x S images, rows flattened (784 for MNIST), any float dtype. Output pixel
    ``q`` is the input at ``M^-1(q)``, bilinearly interpolated, neighbours outside the image counting as 0.
    Returns a new ``(B, S*S)`` array of the dtype of ``images``; float32 images are warped in float32.
    """
    if images.ndim != 2:
        raise ValueError(f"warp needs images of shape (B, S*S), got shape {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"warp needs floating-point images, got dtype {images.dtype}")
    batch, num_pixels = images.shape
    side = math.isqrt(num_pixels)
    if side * side != num_pixels:
        raise ValueError(f"warp needs square images, got rows of {num_pixels} pixels")
    if matrices.shape != (batch, 2, 3):
        raise ValueError(f"warp needs matrices of shape ({batch}, 2, 3) for {batch} images, got {matrices.shape}")
    dtype = np.float32 if images.dtype.itemsize <= 4 else images.dtype.type
    width = side + 2  # the zero-padded frame: 1 pixel of background on each side

    # Inverse maps: source = inv @ (q - c) + c - inv @ t, inv = A^-1 in closed form (det = s^2 > 0).
    matrices = np.asarray(matrices, dtype=np.float64)
    a, b = matrices[:, 0, 0], matrices[:, 0, 1]
    c, d = matrices[:, 1, 0], matrices[:, 1, 1]
    det = a * d - b * c
    inv = np.stack([d, -b, -c, a], axis=1).reshape(batch, 2, 2) / det[:, None, None]
    centre = (side - 1) / 2
    offset = centre - np.einsum("bij,bj->bi", inv, matrices[:, :, 2])
    inv, offset = inv.astype(dtype), offset.astype(dtype)
    grid = np.arange(side, dtype=dtype) - dtype(centre)
    # (B, 1, S) + (B, S, 1): only the final sum is image-sized.
    xs = inv[:, 0, 0, None, None] * grid + (inv[:, 0, 1, None, None] * grid[:, None] + offset[:, 0, None, None])
    ys = inv[:, 1, 0, None, None] * grid + (inv[:, 1, 1, None, None] * grid[:, None] + offset[:, 1, None, None])

    # Clipped into [-1, S] and the top-left neighbour capped at S-1, every read stays in the padded frame
    # and a source at or beyond the border line reads only its zeros.
    np.clip(xs, -1, side, out=xs)
    np.clip(ys, -1, side, out=ys)
    x0 = np.minimum(np.floor(xs), side - 1)
    y0 = np.minimum(np.floor(ys), side - 1)
    fx = xs - x0
    fy = ys - y0
    index = (y0 * width + x0).astype(np.intp)
    index += (np.arange(batch, dtype=np.intp) * (width * width) + width + 1)[:, None, None]

    padded = np.zeros((batch, width, width), dtype=images.dtype)
    padded[:, 1:-1, 1:-1] = images.reshape(batch, side, side)
    flat = padded.reshape(-1)
    top_left, top_right = flat[index], flat[1:][index]
    bottom_left, bottom_right = flat[width:][index], flat[width + 1:][index]
    top = top_left + fx * (top_right - top_left)
    bottom = bottom_left + fx * (bottom_right - bottom_left)
    out = top + fy * (bottom - top)
    return out.reshape(batch, num_pixels).astype(images.dtype, copy=False)


def random_affine(images: np.ndarray, rng: np.random.Generator, rotation: float = 0.0, scale: float = 0.0,
                  shear: float = 0.0, shift: float = 0.0) -> np.ndarray:
    """Distort each image of ``images (B, S*S)`` by its own random affine map (:func:`affine_matrices`).

    Returns a new ``(B, S*S)`` array, same dtype. Training calls this on each mini-batch.
    """
    return warp(images, affine_matrices(rng, len(images), rotation, scale, shear, shift))
