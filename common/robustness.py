"""Beyond the test set: moved, turned, resized, noisy, hidden and attacked digits, and where a network looks.

Every function takes and returns images as float ``(N, 784)`` arrays in [0, 1] (rows of a 28x28
image, row-major, as everywhere in the suite), whatever pixel scale a model was trained on;
:func:`model_input` converts to that scale at the last moment. Every random choice comes from a
``numpy.random.Generator`` passed in, so the same seed gives the same transformed images, and
the same images can be shown to every model. ``experiments/robustness.py`` measures each stage
on them.

* :func:`random_direction_shift`: each digit moved by whole pixels up, down, left or right;
* :func:`rotate`, :func:`scale` (through :func:`affine_warp`): turned or resized about the image
  centre, by bilinear interpolation, the result kept 28x28;
* :func:`gaussian_noise`: every pixel disturbed, then clipped back to [0, 1];
* :func:`occlude`: a square patch of the image set to 0 (background);
* :func:`fgsm`: the fast gradient sign method (Goodfellow et al., 2015), a white-box attack: each
  pixel moved by ``epsilon`` in the direction that raises the model's own loss on the true label;
* :func:`saliency`: the gradient of the predicted class's score with respect to the pixels.

The last two need dLoss/dInput: ``Network.forward(x, keep_for_backward=True)`` (the network as it
predicts, each layer keeping what its backward needs), then ``Network.backward(dlogits, input_grad=True)``.
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from common.nn.network import Network

RAW_SCALE = 255.0
"""A "raw" model (stage 01) was trained on pixel values 0..255, a "unit" model on [0, 1]."""


def _side(images: np.ndarray) -> int:
    """The side S of the square images in ``images (N, S*S)``."""
    if images.ndim != 2:
        raise ValueError(f"expected images (N, S*S), got shape {images.shape}")
    side = math.isqrt(images.shape[1])
    if side * side != images.shape[1]:
        raise ValueError(f"expected square images, got rows of {images.shape[1]} pixels")
    return side


# -- moving digits ---------------------------------------------------------------------------

def _span(offset: int, side: int) -> tuple[slice, slice]:
    """Destination and source slices along one axis for a move by ``offset`` pixels (positive:
    down or right). Moves of ``side`` pixels or more leave nothing."""
    offset = int(np.clip(offset, -side, side))
    if offset >= 0:
        return slice(offset, side), slice(0, side - offset)
    return slice(0, side + offset), slice(-offset, side)


def shift_images(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move every image of ``images (N, S*S)`` by ``dy`` rows down and ``dx`` columns right
    (negative: up, left). Pixels that leave the image are lost; those that come in are 0.
    Returns a new ``(N, S*S)`` array, same dtype."""
    images = np.asarray(images)
    side = _side(images)
    square = images.reshape(len(images), side, side)
    out = np.zeros_like(square)
    (rows_to, rows_from), (cols_to, cols_from) = _span(dy, side), _span(dx, side)
    out[:, rows_to, cols_to] = square[:, rows_from, cols_from]
    return out.reshape(images.shape)


def random_direction_shift(images: np.ndarray, rng: np.random.Generator, distance: int) -> np.ndarray:
    """Move each image of ``images (N, S*S)`` by exactly ``distance`` pixels up, down, left or
    right, one of the four drawn per image from ``rng``. One slice copy per direction."""
    images = np.asarray(images)
    directions = rng.integers(0, 4, size=len(images))
    moves = ((-distance, 0), (distance, 0), (0, -distance), (0, distance))  # up, down, left, right
    out = np.empty_like(images)
    for direction, (dy, dx) in enumerate(moves):
        rows = directions == direction
        out[rows] = shift_images(images[rows], dy, dx)
    return out


# -- turning and resizing --------------------------------------------------------------------

def affine_warp(images: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Resample every image of ``images (N, S*S)`` through the 2x2 ``matrix``, about the centre.

    Output pixel ``(r, c)`` takes the input at ``centre + matrix @ (r - centre, c - centre)``
    (``centre = (S - 1) / 2``, index coordinates): ``matrix`` maps the output back to where it
    comes from. Between pixels, bilinear interpolation (a weighted mean of the 4 neighbours);
    outside the image, 0. All images share one set of source positions, so this is 4 gathers
    of ``(N, S*S)`` and no loop over images. Returns float32 ``(N, S*S)``.
    """
    images = np.asarray(images, dtype=np.float32)
    side = _side(images)
    centre = (side - 1) / 2
    grid = np.arange(side, dtype=np.float64) - centre
    rows, cols = np.meshgrid(grid, grid, indexing="ij")
    source = np.asarray(matrix, dtype=np.float64) @ np.stack([rows.ravel(), cols.ravel()]) + centre
    source = np.round(source, 9)  # cos(90 deg) is 6e-17, not 0: snap so a quarter turn stays exact
    top, left = np.floor(source[0]), np.floor(source[1])
    down, right = source[0] - top, source[1] - left
    out = np.zeros(images.shape, dtype=np.float32)
    for row, row_weight in ((top, 1 - down), (top + 1, down)):
        for col, col_weight in ((left, 1 - right), (left + 1, right)):
            inside = (row >= 0) & (row < side) & (col >= 0) & (col < side)
            weight = (row_weight * col_weight * inside).astype(np.float32)
            index = (np.clip(row, 0, side - 1) * side + np.clip(col, 0, side - 1)).astype(np.intp)
            out += images[:, index] * weight
    return out


def rotation_matrix(degrees: float) -> np.ndarray:
    """The ``(2, 2)`` matrix for :func:`affine_warp` that turns an image by ``degrees``
    counter-clockwise as displayed (rows pointing down): ``[[cos, sin], [-sin, cos]]`` in
    ``(row, column)`` coordinates, the inverse rotation, since it maps output to source."""
    angle = math.radians(degrees)
    return np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])


def rotate(images: np.ndarray, degrees: float | np.ndarray) -> np.ndarray:
    """Turn ``images (N, S*S)`` about their centre by ``degrees`` (one number, or one per image
    ``(N,)``), counter-clockwise for positive angles; bilinear, corners filled with 0. One
    :func:`affine_warp` per distinct angle. Returns float32 ``(N, S*S)``."""
    images = np.asarray(images, dtype=np.float32)
    degrees = np.broadcast_to(np.asarray(degrees, dtype=np.float64), (len(images),))
    out = np.empty_like(images)
    for angle in np.unique(degrees):
        rows = degrees == angle
        out[rows] = affine_warp(images[rows], rotation_matrix(float(angle)))
    return out


def random_rotation(images: np.ndarray, rng: np.random.Generator, degrees: float) -> np.ndarray:
    """Turn each image of ``images (N, S*S)`` by ``degrees`` one way or the other, the sign drawn
    per image from ``rng``. Returns float32 ``(N, S*S)``."""
    signs = rng.choice(np.array([-1.0, 1.0]), size=len(images))
    return rotate(images, signs * degrees)


def scale(images: np.ndarray, factor: float) -> np.ndarray:
    """Resize the content of ``images (N, S*S)`` by ``factor`` about the centre, the frame kept
    S x S (above 1 the digit grows and may lose its edges, below 1 it shrinks in a border of 0).
    ``factor=1`` returns the images unchanged. Returns float32 ``(N, S*S)``."""
    if not factor > 0:
        raise ValueError(f"scale factor must be positive, got {factor}")
    return affine_warp(images, np.eye(2) / factor)


# -- noise and occlusion ---------------------------------------------------------------------

def gaussian_noise(images: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    """``clip(images + std * z, 0, 1)`` with ``z`` standard normal per pixel, drawn from ``rng``;
    ``images (N, D)`` in [0, 1]. Returns float32 ``(N, D)``."""
    images = np.asarray(images, dtype=np.float32)
    noise = rng.standard_normal(images.shape, dtype=np.float32)
    noise *= np.float32(std)
    return np.clip(images + noise, 0.0, 1.0)


def occlude(images: np.ndarray, rng: np.random.Generator, size: int = 8) -> np.ndarray:
    """Set a ``size`` x ``size`` square of each image of ``images (N, S*S)`` to 0, at a place drawn
    per image from ``rng`` (uniform over the positions where the square fits inside the image).
    Returns a new ``(N, S*S)`` array, same dtype."""
    images = np.asarray(images)
    side = _side(images)
    if not 1 <= size <= side:
        raise ValueError(f"the patch side must be between 1 and {side}, got {size}")
    top, left = rng.integers(0, side - size + 1, size=(2, len(images)))
    lines = np.arange(side)
    in_rows = (lines >= top[:, None]) & (lines < top[:, None] + size)     # (N, S)
    in_cols = (lines >= left[:, None]) & (lines < left[:, None] + size)   # (N, S)
    hidden = in_rows[:, :, None] & in_cols[:, None, :]                     # (N, S, S)
    return np.where(hidden.reshape(images.shape), images.dtype.type(0), images)


# -- through the model: inputs, gradients, attacks -------------------------------------------

def model_input(images: np.ndarray, pixel_scale: str) -> np.ndarray:
    """``images (N, 784)`` in [0, 1] as the model was trained to see them: unchanged for "unit",
    times 255 for "raw". Returns float32 ``(N, 784)``."""
    images = np.asarray(images, dtype=np.float32)
    if pixel_scale == "unit":
        return images
    if pixel_scale == "raw":
        return images * np.float32(RAW_SCALE)
    raise ValueError(f"unknown pixel scale {pixel_scale!r}")


def _chunks(count: int, size: int) -> Iterator[slice]:
    return (slice(start, start + size) for start in range(0, count, size))


def loss_gradient_of_logits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The direction of dLoss/dlogits of each example, right for confident predictions too: ``(B, K)``.

    The textbook ``(p - onehot(y)) / B`` loses its true-class entry ``p_y - 1`` when ``p_y`` rounds
    to 1 (in float32 at a logit margin of about 16), leaving only the "raise the other classes" part: a
    numerical form of gradient masking that made an attack look weaker than it is. Here ``p`` is
    computed in float64 and the true-class entry as minus the sum of the others (the same number,
    without the cancellation); each row is then scaled to a largest entry of 1, a positive factor that
    changes no sign of the input gradient, so the float32 backward pass cannot underflow to 0.
    Why: docs/math.md#fgsm-and-saliency.
    """
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    p[rows, labels] = 0.0
    p[rows, labels] = -p.sum(axis=1)
    largest = np.abs(p).max(axis=1, keepdims=True)
    np.divide(p, largest, out=p, where=largest > 0)
    return p.astype(logits.dtype)


def fgsm_direction(network: Network, images: np.ndarray, labels: np.ndarray, pixel_scale: str) -> np.ndarray:
    """``sign(dLoss/dx)`` ``(N, 784)``, values -1, 0 or 1: the direction in which each pixel of
    ``images (N, 784)`` in [0, 1] raises the cross-entropy of ``network`` on the true ``labels (N,)``.

    The gradient is taken where the model works (times 255 for a "raw" model: a positive factor,
    so the same sign), in chunks of ``network.chunk_rows``, through :func:`loss_gradient_of_logits`
    (each example's own direction, right however confident the model is). It depends only on the
    clean image, so one call serves every epsilon of :func:`fgsm`.
    """
    images = np.asarray(images, dtype=np.float32)
    direction = np.empty(images.shape, dtype=np.float32)
    for rows in _chunks(len(images), network.chunk_rows):
        logits = network.forward(model_input(images[rows], pixel_scale), keep_for_backward=True)
        dlogits = loss_gradient_of_logits(logits, np.asarray(labels[rows]))
        direction[rows] = np.sign(network.backward(dlogits, input_grad=True))
    return direction


def fgsm(images: np.ndarray, direction: np.ndarray, epsilon: float) -> np.ndarray:
    """The fast gradient sign method: ``clip(images + epsilon * direction, 0, 1)``.

    ``images (N, 784)`` in [0, 1], ``direction`` from :func:`fgsm_direction`, ``epsilon`` in
    [0, 1] pixel units (0.1 is 25.5 of 255 grey levels). No pixel moves by more than
    ``epsilon``. Returns float32 ``(N, 784)``.
    """
    step = np.asarray(direction, dtype=np.float32) * np.float32(epsilon)
    return np.clip(np.asarray(images, dtype=np.float32) + step, 0.0, 1.0)


def saliency(network: Network, images: np.ndarray, pixel_scale: str) -> tuple[np.ndarray, np.ndarray]:
    """Where the model looks: ``d logit[predicted] / d pixel`` for each of ``images (N, 784)`` in [0, 1].

    Backpropagates a one-hot ``dlogits`` (1 at the predicted class) with ``input_grad=True``.
    Positive: more ink there raises the score of the class the model chose; negative: lowers it.
    The gradient is per [0, 1] pixel unit whatever the model's pixel scale (times 255 for a
    "raw" model). Returns ``(gradient (N, 784) float32, predicted labels (N,))``.
    """
    images = np.asarray(images, dtype=np.float32)
    gradient = np.empty(images.shape, dtype=np.float32)
    predicted = np.empty(len(images), dtype=np.int64)
    for rows in _chunks(len(images), network.chunk_rows):
        logits = network.forward(model_input(images[rows], pixel_scale), keep_for_backward=True)
        chosen = logits.argmax(axis=1)
        one_hot = np.zeros_like(logits)
        one_hot[np.arange(len(chosen)), chosen] = 1
        grad = network.backward(one_hot, input_grad=True)
        gradient[rows] = grad * (RAW_SCALE if pixel_scale == "raw" else 1.0)
        predicted[rows] = chosen
    return gradient, predicted


def accuracy_on(network: Network, images: np.ndarray, labels: np.ndarray, pixel_scale: str) -> float:
    """Fraction of ``images (N, 784)`` in [0, 1] that ``network`` classifies as ``labels (N,)``."""
    predicted = network.predict(model_input(images, pixel_scale))
    return float(np.mean(predicted == np.asarray(labels)))
