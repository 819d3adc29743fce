"""Checks for batch normalization in training mode, forward and backward, on features ``(B, D)`` and
per channel on images ``(B, H, W, C)``; stage 07 trains with it.

The forward pass is checked by hand on two columns, then against the reference with an ``eps`` large
enough to show where it goes, and so is its cache, which the backward check takes from the reference
(so each exercise is graded on its own). The backward pass is checked against finite differences in
float64, which recompute the batch's statistics at every step: exactly the paths the compact ``dx``
must count.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from common.exercises.grading import Wrong, call, expect_array, expect_close, random_arrays, unpack
from common.nn import reference
from common.nn.gradcheck import numerical_gradient_of_output

F32 = np.float32
CACHE = ("xhat", "gamma", "std", "mean", "var")
HAND_CASE = "x = [[1, 10], [3, 30]], gamma = [2, 1], beta = [0.5, -1] and eps = 0"
UNBIASED = ("it normalises with the unbiased variance (divided by B - 1): training normalises each feature with "
            "its batch's own variance, the mean of (x - mean)**2, divided by B (np.var's default, ddof=0)")
EPS_OUTSIDE = "eps is added outside the square root: divide by std = sqrt(var + eps), not by sqrt(var) + eps"
EPS_LEFT_OUT = "eps is left out: std = sqrt(var + eps)"
PER_EXAMPLE = ("it normalises each example over its features (axis 1): batch normalization normalises each "
               "feature over the batch (axis 0)")
NO_AFFINE = "gamma and beta are not applied: out = gamma * xhat + beta"
PER_PIXEL = ("for images it normalises each pixel's channels over the batch only: each channel is one feature, "
             "normalised over the batch and every pixel, the B*H*W rows of x.reshape(-1, C)")
PER_IMAGE = ("for images it normalises each image on its own: each channel is one feature, normalised over the "
             "batch and every pixel, the B*H*W rows of x.reshape(-1, C)")


def normalised(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, axes: tuple[int, ...],
               ddof: int = 0, eps_outside: bool = False) -> np.ndarray:
    """``gamma * xhat + beta`` with the statistics over ``axes``: the right answer and its usual slips."""
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, ddof=ddof, keepdims=True)
    std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
    return gamma * (x - mean) / std + beta


def forward_slips(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """The usual wrong ``out`` of the forward pass, each under the words that name it."""
    rows = tuple(range(x.ndim - 1))
    slips = {UNBIASED: normalised(x, gamma, beta, eps, rows, ddof=1),
             EPS_OUTSIDE: normalised(x, gamma, beta, eps, rows, eps_outside=True),
             EPS_LEFT_OUT: normalised(x, gamma, beta, 0.0, rows),
             PER_EXAMPLE: normalised(x, gamma, beta, eps, tuple(range(1, x.ndim))),
             NO_AFFINE: normalised(x, np.ones_like(gamma), np.zeros_like(beta), eps, rows)}
    if x.ndim == 4:
        slips.update({PER_PIXEL: normalised(x, gamma, beta, eps, (0,)), PER_IMAGE: normalised(x, gamma, beta, eps, (1, 2))})
    return slips


def forward_parts(f: Callable, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                  eps: float | None = None) -> tuple[np.ndarray, tuple]:
    """The learner's ``(out, cache)`` (``eps`` left to its default when None), the cache's form checked."""
    args = dict(x=x, gamma=gamma, beta=beta) | ({} if eps is None else dict(eps=eps))
    out, cache = unpack(call(f, args), ("out", "cache"))
    if not isinstance(cache, (tuple, list)) or len(cache) != len(CACHE):
        got = f"{len(cache)} values" if isinstance(cache, (tuple, list)) else f"a {type(cache).__name__}"
        raise Wrong(f"cache is {got}, expected the tuple ({', '.join(CACHE)}) that batchnorm_backward is given")
    return expect_array(out, "out", x.shape, x.dtype), tuple(cache)


def expect_cache(cache: tuple, want: tuple, images: bool) -> None:
    """The learner's cache against the reference's: ``xhat`` as the rows normalised, each entry by name."""
    xhat = cache[0]
    if images and isinstance(xhat, np.ndarray) and xhat.ndim == 4:
        raise Wrong(f"cache's xhat has the images' shape {xhat.shape}: keep it as the rows you normalised, "
                    f"x.reshape(-1, C), of shape {want[0].shape}")
    rows = len(want[0])
    slips = {"var": {"cache's var is the unbiased variance (divided by B - 1): keep the biased one, the one you "
                     "normalised with": want[4] * rows / (rows - 1)}}
    for name, got, right in zip(CACHE, cache, want):
        expect_close(got, right, f"cache's {name}", "the reference answer", mistakes=slips.get(name))


def expect_refuses_one_example(f: Callable) -> None:
    """A batch of one example in training: a ValueError, since there is nothing to normalise."""
    x = np.array([[0.5, -1.0, 2.0]])
    try:
        call(f, dict(x=x, gamma=np.ones(3), beta=np.zeros(3)))
    except Wrong as error:
        if str(error).startswith("raised ValueError"):
            return
        raise Wrong(f"for a batch of one example it {error}; raise a ValueError there: the variance of one value "
                    "is 0, so there is nothing to normalise") from None
    raise Wrong("for a batch of one example (x of shape (1, 3)) it returns an answer: raise a ValueError, since "
                "the variance of one value is 0 and there is nothing to normalise")


def check_batchnorm_forward(f: Callable) -> None:
    x, gamma, beta = np.array([[1.0, 10.0], [3.0, 30.0]]), np.array([2.0, 1.0]), np.array([0.5, -1.0])
    out, _ = forward_parts(f, x, gamma, beta, eps=0.0)
    expect_close(out, np.array([[-1.5, -2.0], [2.5, 0.0]]), "out", "the hand-made answer", case=HAND_CASE,
                 mistakes=forward_slips(x, gamma, beta, 0.0))
    x, gamma, beta = random_arrays(50, F32, (8, 5), (5,), (5,))
    forward_parts(f, x, gamma, beta)  # float32 in, float32 out
    for seed, shape in ((51, (7, 4)), (52, (2, 3, 4, 3))):
        x, gamma, beta = random_arrays(seed, np.float64, shape, shape[-1:], shape[-1:])
        x = 1.5 + 2.0 * x
        for eps in (None, 0.5):
            out, cache = forward_parts(f, x, gamma, beta, eps)
            want, want_cache = reference.batchnorm_forward(x, gamma, beta, 1e-5 if eps is None else eps)
            expect_close(out, want, "out", "the reference answer",
                         mistakes=forward_slips(x, gamma, beta, 1e-5 if eps is None else eps))
            expect_cache(cache, want_cache, images=len(shape) == 4)
    expect_refuses_one_example(f)


DX_SLIPS = (
    ("dx treats the batch's mean and variance as constants (gamma * dout / std): both depend on every x of the "
     "batch, which adds the terms - sum(dout) and - xhat * sum(dout * xhat)",
     lambda g, B, std, d, xhat: g * d / std),
    ("dx leaves out the term - xhat * sum(dout * xhat), the path through the batch's variance",
     lambda g, B, std, d, xhat: g / (B * std) * (B * d - d.sum(axis=0))),
    ("dx leaves out the term - sum(dout), the path through the batch's mean",
     lambda g, B, std, d, xhat: g / (B * std) * (B * d - xhat * (d * xhat).sum(axis=0))),
    ("dx is missing the factor gamma: out = gamma * xhat + beta, so the gradient reaching xhat is gamma * dout",
     lambda g, B, std, d, xhat: 1 / (B * std) * (B * d - d.sum(axis=0) - xhat * (d * xhat).sum(axis=0))),
)
IMAGES_COUNT = ("for images dx counts B values per channel: the statistics were taken over all B*H*W rows of "
                "x.reshape(-1, C), so M = B*H*W in dx = gamma / (M std) * (M dout - ...)")


def dx_slips(dout: np.ndarray, cache: tuple) -> dict[str, np.ndarray]:
    """The usual wrong ``dx``, from the reference's cache, each under the words that name it."""
    xhat, gamma, std, _, _ = cache
    rows = dout.reshape(xhat.shape)
    slips = {message: slip(gamma, len(rows), std, rows, xhat).reshape(dout.shape) for message, slip in DX_SLIPS}
    if dout.ndim == 4:
        B = len(dout)
        slips[IMAGES_COUNT] = (gamma / (B * std) * (B * rows - rows.sum(axis=0) - xhat * (rows * xhat).sum(axis=0))
                               ).reshape(dout.shape)
    return slips


def check_batchnorm_backward(f: Callable) -> None:
    x, gamma, beta, dout = random_arrays(53, F32, (8, 5), (5,), (5,), (8, 5))
    _, cache = reference.batchnorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = unpack(call(f, dict(dout=dout, cache=cache)), ("dx", "dgamma", "dbeta"))
    for value, what, shape in ((dx, "dx", x.shape), (dgamma, "dgamma", (5,)), (dbeta, "dbeta", (5,))):
        expect_array(value, what, shape, F32)
    for seed, shape in ((54, (6, 4)), (55, (2, 3, 3, 2))):
        x, gamma, beta, dout = random_arrays(seed, np.float64, shape, shape[-1:], shape[-1:], shape)
        x, gamma = 1.5 + 2.0 * x, 1.0 + 0.5 * gamma
        _, cache = reference.batchnorm_forward(x, gamma, beta)
        dx, dgamma, dbeta = unpack(call(f, dict(dout=dout, cache=cache)), ("dx", "dgamma", "dbeta"))
        slips = {"dx": dx_slips(dout, cache),
                 "dgamma": {"dgamma is the sum of dout alone: out = gamma * xhat + beta, so dgamma is the sum over "
                            "the batch of dout * xhat": dout.reshape(-1, shape[-1]).sum(axis=0)}}
        for value, what, wrt in ((dx, "dx", x), (dgamma, "dgamma", gamma), (dbeta, "dbeta", beta)):
            numeric = numerical_gradient_of_output(lambda x=x, gamma=gamma, beta=beta:
                                                   reference.batchnorm_forward(x, gamma, beta)[0], wrt, dout)
            kind = "images" if len(shape) == 4 else "features"
            expect_close(value, numeric, f"{what} ({kind} {shape})", "the numerical gradient", mistakes=slips.get(what))
