"""Checks for stage 05's regularisers: dropout (training and inference) and random shifts.

Randomness comes from the ``rng`` argument only, so the checks draw twice from equal generators
and expect equal answers. Dropout is judged by what it must do on average (the fraction dropped,
the scale of the survivors); a shift must move each image by whole pixels with zeros coming in,
and by the offsets the reference draws, so that a learner's run reproduces the reference's.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from common.exercises.grading import Wrong, call, expect_array, expect_close, random_arrays, unpack
from common.nn import reference

F32 = np.float32


def draw_dropout(f: Callable, x: np.ndarray, rate: float, seed: int, training: bool | None = None) -> tuple:
    """``(out, mask)`` from the learner's ``dropout_forward`` (or ``dropout_layer_forward`` with ``training``)."""
    args = dict(x=x, rate=rate, rng=np.random.default_rng(seed))
    if training is not None:
        args["training"] = training
    return unpack(call(f, args), ("out", "mask"))


def expect_dropout(f: Callable, training: bool | None = None) -> None:
    """What dropout must do while training: the fraction dropped, the scale, the mask from ``rng``."""
    x = np.abs(random_arrays(30, F32, (200, 300))[0]) + F32(0.5)  # no zeros of its own
    out, mask = draw_dropout(f, x, 0.4, 1, training)
    expect_array(out, "out", x.shape, F32)
    mask = expect_array(mask, "mask", x.shape)
    if mask.dtype == bool:
        raise Wrong("mask is boolean: it should hold the scale too, 0 or 1 / (1 - rate), so that the backward "
                    "pass is dout * mask")
    dropped = float(np.mean(mask == 0))
    if abs(dropped - 0.6) < 0.02:
        raise Wrong("it drops 60 % of the entries for rate 0.4: rate is the probability to drop an entry, not to "
                    "keep it")
    if abs(dropped - 0.4) > 0.02:
        raise Wrong(f"it drops {dropped:.0%} of the entries for rate 0.4, expected about 40 %")
    kept = np.unique(mask[mask != 0])
    if np.allclose(kept, 1.0):
        raise Wrong("the kept entries are not scaled up: inverted dropout multiplies them by 1 / (1 - rate) "
                    "(1.667 for rate 0.4), so that at inference, with dropout off, the next layer sees inputs "
                    "of the same size as in training")
    if not np.allclose(kept, 1 / 0.6, rtol=1e-6):
        raise Wrong(f"the mask holds {kept[:3].tolist()} for the kept entries, expected 1 / (1 - rate) = 1.667")
    expect_close(out, x * mask, "out", "x * mask", rtol=1e-6)
    if not np.array_equal(draw_dropout(f, x, 0.4, 1, training)[1], mask):
        raise Wrong("two calls with generators of the same seed give different masks: draw only from the rng "
                    "given (rng.random), never from np.random")
    if np.array_equal(draw_dropout(f, x, 0.4, 2, training)[1], mask):
        raise Wrong("generators of different seeds give the same mask: draw the mask from the rng given")
    out, mask = draw_dropout(f, x, 0.0, 3, training)
    if not np.array_equal(out, x):
        raise Wrong("with rate 0 nothing may be dropped or scaled: out must equal x")


def check_dropout_forward(f: Callable) -> None:
    expect_dropout(f)


def check_dropout_backward(f: Callable) -> None:
    (dout,) = random_arrays(31, F32, (6, 8))
    mask = (np.random.default_rng(32).random((6, 8)) >= 0.6).astype(F32) / F32(0.4)
    dx = expect_array(call(f, dict(dout=dout, mask=mask)), "dx", dout.shape, F32)
    expect_close(dx, dout * mask, "dx", "dout * mask", rtol=1e-6,
                 mistakes={"the kept entries are not scaled: multiply by the mask itself, which holds 1 / (1 - rate) "
                           "for them (the forward pass scaled them too)": dout * (mask > 0)})


def check_dropout_layer_forward(f: Callable) -> None:
    x = np.abs(random_arrays(33, F32, (50, 40))[0]) + F32(0.5)
    rng = np.random.default_rng(4)
    state = rng.bit_generator.state
    out, mask = unpack(call(f, dict(x=x, rate=0.4, rng=rng, training=False)), ("out", "mask"))
    out = expect_array(out, "out at inference", x.shape, F32)
    if np.any((out == 0) & (x != 0)):
        raise Wrong("at inference (training=False) it drops entries: dropout is on only while training; at inference "
                    "return x unchanged")
    expect_close(out, x, "out at inference (training=False)", "x itself",
                 mistakes={"at inference it scales x by 1 - rate: with inverted dropout the scaling happens while "
                           "training (1 / (1 - rate)), and inference returns x unchanged": 0.6 * x,
                           "at inference it scales x by 1 / (1 - rate): that scaling belongs to training; "
                           "inference returns x unchanged": x / 0.6})
    if mask is not None and not np.all(np.asarray(mask) == 1):
        raise Wrong("at inference return (x, None): there is no mask")
    if rng.bit_generator.state != state:
        raise Wrong("it draws from rng at inference: nothing is random there, and a draw would shift the "
                    "training's later masks")
    expect_dropout(f, training=True)


def shift_images(images: np.ndarray, dy: int, dx: int, wrap: bool = False) -> np.ndarray:
    """``images (B, S, S)`` moved down by ``dy`` and right by ``dx``: ``out[r, c] = image[r - dy, c - dx]``,
    0 where that falls outside (or, with ``wrap``, what ``np.roll`` brings round)."""
    if wrap:
        return np.roll(images, (dy, dx), axis=(1, 2))
    side = images.shape[1]
    out = np.zeros_like(images)
    out[:, max(dy, 0):side + min(dy, 0), max(dx, 0):side + min(dx, 0)] = \
        images[:, max(-dy, 0):side + min(-dy, 0), max(-dx, 0):side + min(-dx, 0)]
    return out


def find_offsets(images: np.ndarray, out: np.ndarray, reach: int, wrap: bool = False) -> np.ndarray:
    """``(B, 2)``: the ``(dy, dx)`` within ``reach`` that turns each image into its output, or
    ``reach + 1`` in both where none does."""
    found = np.full((len(images), 2), reach + 1)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            match = np.all(shift_images(images, dy, dx, wrap) == out, axis=(1, 2))
            found[match & (found[:, 0] > reach)] = (dy, dx)
    return found


def shift_offsets(f: Callable, images: np.ndarray, seed: int, max_shift: int) -> np.ndarray:
    """The learner's shift of ``images (B, S*S)`` as each image's ``(dy, dx)``, or :class:`Wrong`."""
    batch, side = len(images), int(round(images.shape[1] ** 0.5))
    out = call(f, dict(images=images, rng=np.random.default_rng(seed), max_shift=max_shift))
    out = expect_array(out, "the shifted images", images.shape, F32).reshape(batch, side, side)
    squares = images.reshape(batch, side, side)
    offsets = find_offsets(squares, out, max_shift + 1)
    lost = np.flatnonzero(offsets[:, 0] > max_shift + 1)
    if lost.size:
        i = int(lost[0])
        if np.all(find_offsets(squares[i:i + 1], out[i:i + 1], max_shift + 1, wrap=True) <= max_shift + 1):
            raise Wrong(f"image {i} wraps around: pixels pushed out on one side come back in on the other "
                        "(np.roll); the pixels that come in must be 0")
        raise Wrong(f"image {i} is not image {i} moved by whole pixels with zeros coming in")
    too_far = np.flatnonzero(np.abs(offsets).max(axis=1) > max_shift)
    if too_far.size:
        i = int(too_far[0])
        raise Wrong(f"image {i} moved by ({offsets[i, 0]}, {offsets[i, 1]}) pixels, more than max_shift = {max_shift}")
    return offsets


def check_random_shift(f: Callable) -> None:
    images = (np.random.default_rng(34).random((300, 36)) + 0.5).astype(F32)  # 6x6 images, no zeros of their own
    offsets = shift_offsets(f, images, 5, 2)
    for axis, word in ((0, "vertical"), (1, "horizontal")):
        missing = sorted(set(range(-2, 3)) - set(offsets[:, axis].tolist()))
        if missing:
            raise Wrong(f"{word} shifts never reach {missing}: draw each offset from -max_shift to max_shift, "
                        "both included")
    top, left = np.random.default_rng(5).integers(0, 5, size=(2, len(images)))
    want = np.stack([2 - top, 2 - left], axis=1)  # output pixel (r, c) reads padded (r + top, c + left)
    if np.array_equal(offsets, -want):
        raise Wrong("each image moves the opposite way to the draw: output pixel (r, c) reads the padded image at "
                    "(r + top, c + left), which moves the image by (max_shift - top, max_shift - left); the wrong sign")
    if not np.array_equal(offsets, want):
        raise Wrong("the shifts are fair, but not the ones the reference draws: draw top, left = "
                    "rng.integers(0, 2 * max_shift + 1, size=(2, B)) and read output pixel (r, c) from the image "
                    "padded with max_shift zeros at (r + top, c + left)")
    shift_offsets(f, images[:50], 6, 1)
    expect_close(call(f, dict(images=images[:8], rng=np.random.default_rng(7), max_shift=3)),
                 reference.random_shift(images[:8], np.random.default_rng(7), 3), "the images shifted by up to 3",
                 "the reference answer")
