"""Checks for stage 06: convolution (a cross-correlation, as the layers compute it) and 2x2
max-pooling, forward and backward, on images ``(B, H, W, C)``.

Loops are fine: the inputs are a few small images. The backward passes are checked against
finite differences in float64 (max-pooling away from ties, where it has a derivative) and, at
ties, against the rule the layers follow: each window's gradient goes to its first maximum.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from common.exercises.grading import Wrong, call, expect_array, expect_close, random_arrays, unpack
from common.nn import reference
from common.nn.gradcheck import numerical_gradient_of_output

F32 = np.float32
FLIPPED = ("this is a true convolution, with the kernel flipped: the layers compute the cross-correlation "
           "out[n, h, w, f] = b[f] + sum over i, j, c of x_pad[n, h + i, w + j, c] * W[i, j, c, f], no flip")


def conv_out(f: Callable, x: np.ndarray, W: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    """The learner's ``conv_forward(x, W, b, pad)``, checked for its shape and dtype."""
    out = call(f, dict(x=x, W=W, b=b, pad=pad))
    k, (batch, height, width, _) = W.shape[0], x.shape
    shape = (batch, height + 2 * pad - k + 1, width + 2 * pad - k + 1, W.shape[3])
    if isinstance(out, np.ndarray) and out.shape != shape:
        raise Wrong(f"out has shape {out.shape}, expected {shape} for {height}x{width} images, a {k}x{k} kernel "
                    f"and pad {pad}: H' = H + 2 pad - k + 1, and one channel per filter (W.shape[3])")
    return expect_array(out, "out", shape, x.dtype)


def check_conv_forward(f: Callable) -> None:
    x, W = np.arange(16.0).reshape(1, 4, 4, 1), np.zeros((3, 3, 1, 1))
    W[0, 0] = 1.0
    out = call(f, dict(x=x, W=W, b=np.zeros(1)))  # pad left to its default, 0
    expect_close(out, x[:, :2, :2], "out", "the hand-made answer", mistakes={FLIPPED: x[:, 2:, 2:]},
                 case="a 4x4 image of 0 .. 15 and a 3x3 kernel with a single 1 at offset (0, 0)")
    for seed, pad, k in ((40, 0, 3), (41, 1, 3), (42, 2, 5)):
        x, W, b = random_arrays(seed, F32, (2, 7, 6, 2), (k, k, 2, 4), (4,))
        out = conv_out(f, x, W, b, pad)
        expect_close(out, reference.conv_forward(x, W, b, pad), "out", "the reference answer", rtol=1e-5,
                     mistakes={FLIPPED: reference.conv_forward(x, W[::-1, ::-1], b, pad),
                               "the bias b is not added": reference.conv_forward(x, W, 0 * b, pad)})


def unflipped_dx(dout: np.ndarray, W: np.ndarray, pad: int) -> np.ndarray:
    """The usual slip in ``dx``: the full convolution of ``dout`` with the kernel's channels swapped but not flipped."""
    k = W.shape[0]
    full = reference.conv_forward(dout, W.transpose(0, 1, 3, 2), np.zeros(W.shape[2]), pad=k - 1)
    return full[:, pad:full.shape[1] - pad, pad:full.shape[2] - pad]


def check_conv_backward(f: Callable) -> None:
    x, W, dout = random_arrays(43, F32, (2, 6, 5, 2), (3, 3, 2, 3), (2, 6, 5, 3))
    dx, dW, db = unpack(call(f, dict(dout=dout, x=x, W=W, pad=1)), ("dx", "dW", "db"))
    for value, what, shape in ((dx, "dx", x.shape), (dW, "dW", W.shape), (db, "db", (3,))):
        expect_array(value, what, shape, F32)
    for seed, pad in ((44, 1), (45, 0)):
        x, W, b = random_arrays(seed, np.float64, (2, 6, 5, 2), (3, 3, 2, 3), (3,))
        (dout,) = random_arrays(seed + 10, np.float64, reference.conv_forward(x, W, b, pad).shape)
        dx, dW, db = unpack(call(f, dict(dout=dout, x=x, W=W, pad=pad)), ("dx", "dW", "db"))
        for value, what, wrt in ((dx, "dx", x), (dW, "dW", W), (db, "db", b)):
            numeric = numerical_gradient_of_output(lambda x=x, W=W, b=b, pad=pad: reference.conv_forward(x, W, b, pad),
                                                   wrt, dout)
            slips = {"dx is missing the flip: it is the full convolution of dout with the kernel flipped in both "
                     "spatial axes, W[::-1, ::-1], and its channels swapped": unflipped_dx(dout, W, pad)}
            expect_close(value, numeric, f"{what} (pad {pad})", "the numerical gradient",
                         mistakes=slips if what == "dx" else None)


POOL_CASE = "the windows [[1, 1], [0, 1]] and [[0, 2], [3, 1]] with dout [3, 5]"
POOL_SLIPS = {
    "at a tie (the window [[1, 1], [0, 1]]) it copies the gradient to every maximum: route each window's gradient "
    "to one element only, the first maximum in row-major order (what argmax picks), so each window passes on "
    "exactly its dout": [[3.0, 3.0, 0.0, 0.0], [0.0, 3.0, 5.0, 0.0]],
    "at a tie (the window [[1, 1], [0, 1]]) it splits the gradient among the maxima: route it whole to one "
    "element, the first maximum in row-major order (what argmax picks)": [[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 5.0, 0.0]],
    "at a tie (the window [[1, 1], [0, 1]]) it routes the gradient to the last maximum: the layers route it to the "
    "first in row-major order (what argmax picks)": [[0.0, 0.0, 0.0, 0.0], [0.0, 3.0, 5.0, 0.0]],
}


def check_maxpool_forward(f: Callable) -> None:
    x = np.array([[1.0, 1.0, 0.0, 2.0], [0.0, 1.0, 3.0, 1.0]]).reshape(1, 2, 4, 1)
    expect_close(call(f, dict(x=x)), np.array([1.0, 3.0]).reshape(1, 1, 2, 1), "out", "the hand-made answer",
                 case="the windows [[1, 1], [0, 1]] and [[0, 2], [3, 1]]",
                 mistakes={"it averages each window: max-pooling keeps each window's largest value":
                           np.array([0.75, 1.5]).reshape(1, 1, 2, 1)})
    (x,) = random_arrays(46, F32, (2, 5, 7, 3))
    out = call(f, dict(x=x))
    if isinstance(out, np.ndarray) and out.shape != (2, 2, 3, 3):
        raise Wrong(f"out has shape {out.shape} for images of 5x7, expected (2, 2, 3, 3): an odd last row or "
                    "column is dropped (H // 2, W // 2), and the channels stay")
    expect_array(out, "out", (2, 2, 3, 3), F32)
    expect_close(out, reference.maxpool_forward(x), "out", "the reference answer")


def check_maxpool_backward(f: Callable) -> None:
    x = np.array([[1.0, 1.0, 0.0, 2.0], [0.0, 1.0, 3.0, 1.0]]).reshape(1, 2, 4, 1)
    dout = np.array([3.0, 5.0]).reshape(1, 1, 2, 1)
    dx = expect_array(call(f, dict(dout=dout, x=x)), "dx", x.shape)
    expect_close(dx, np.array([[3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 5.0, 0.0]]).reshape(x.shape), "dx",
                 "the hand-made answer", case=POOL_CASE,
                 mistakes={message: np.array(value).reshape(x.shape) for message, value in POOL_SLIPS.items()})
    x = np.random.default_rng(47).integers(0, 3, (2, 5, 7, 3)).astype(F32)  # ties everywhere, odd sizes
    (dout,) = random_arrays(48, F32, (2, 2, 3, 3))
    dx = expect_array(call(f, dict(dout=dout, x=x)), "dx", x.shape, F32)
    expect_close(dx, reference.maxpool_backward(dout, x), "dx", "the reference answer (ties: the first maximum)")
    x, dout = random_arrays(49, np.float64, (2, 4, 6, 2), (2, 2, 3, 2))  # distinct values: a derivative exists
    numeric = numerical_gradient_of_output(lambda: reference.maxpool_forward(x), x, dout)
    expect_close(call(f, dict(dout=dout, x=x)), numeric, "dx", "the numerical gradient")
