"""Typical wrong answers to the exercises (mutants of ``common.nn.reference``), each with words its
check's message must contain: ``tests/test_exercises.py`` proves the checker tells them apart.

``MUTANTS`` maps a mutant's id to ``(exercise name, function, words)``.
"""
from __future__ import annotations

import math

import numpy as np

from common.nn import reference

# -- stage 01 -----------------------------------------------------------------------------------

def dense_forward_without_bias(x, W, b):
    return x @ W


def dense_backward_divided_by_batch(dz, x, W):
    dx, dW, db = reference.dense_backward(dz, x, W)
    return dx, dW / len(dz), db / len(dz)


def dense_backward_transposed_dW(dz, x, W):
    return dz @ W.T, dz.T @ x, dz.sum(axis=0)


def dense_backward_db_over_wrong_axis(dz, x, W):
    return dz @ W.T, x.T @ dz, dz.sum(axis=1)


def dense_backward_crashes(dz, x, W):
    return dz @ W, x.T @ dz, dz.sum(axis=0)  # dz @ W: the shapes do not line up


def relu_forward_in_place(z):
    z[z < 0] = 0
    return z


def relu_backward_at_zero(da, z):
    return da * (z >= 0)


def relu_backward_times_relu(da, z):
    return da * np.maximum(z, 0)


def softmax_without_max_shift(logits, labels):
    e = np.exp(logits)
    p = e / e.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    onehot = np.zeros_like(logits)
    onehot[rows, labels] = 1
    return float(np.mean(-np.log(p[rows, labels]))), (p - onehot) / len(labels)


def softmax_gradient_not_divided_by_batch(logits, labels):
    loss, dlogits = reference.softmax_cross_entropy(logits, labels)
    return loss, dlogits * len(labels)


def softmax_loss_summed(logits, labels):
    loss, dlogits = reference.softmax_cross_entropy(logits, labels)
    return loss * len(labels), dlogits


def softmax_gradient_wrong_sign(logits, labels):
    loss, dlogits = reference.softmax_cross_entropy(logits, labels)
    return loss, -dlogits


def softmax_float64_onehot(logits, labels):
    loss, _ = reference.softmax_cross_entropy(logits, labels)
    onehot = np.zeros(logits.shape)  # float64 whatever the logits
    onehot[np.arange(len(labels)), labels] = 1
    return loss, (reference.softmax(logits) - onehot) / len(labels)


def sgd_step_rebinds(param, grad, lr):
    param = param - lr * grad  # the mistake: a new array, lost on return


def sgd_step_uphill(param, grad, lr):
    param += lr * grad


# -- stage 02 -----------------------------------------------------------------------------------

def tanh_backward_tanh_again(da, a):
    return da * (1 - np.tanh(a) ** 2)


def sigmoid_forward_naive(z):
    return 1 / (1 + np.exp(-z))


def sigmoid_backward_sigmoid_again(da, a):
    s = reference.sigmoid_forward(a)
    return da * s * (1 - s)


# -- stage 03 -----------------------------------------------------------------------------------

def minibatches_without_last(num_examples, batch_size, rng):
    order = rng.permutation(num_examples)
    for start in range(0, num_examples - batch_size + 1, batch_size):
        yield order[start:start + batch_size]


def minibatches_unshuffled(num_examples, batch_size, rng):
    for start in range(0, num_examples, batch_size):
        yield np.arange(start, min(start + batch_size, num_examples))


def minibatches_fixed_seed(num_examples, batch_size, rng):
    yield from reference.minibatches(num_examples, batch_size, np.random.default_rng(0))


def minibatches_with_replacement(num_examples, batch_size, rng):
    order = rng.integers(0, num_examples, num_examples)
    for start in range(0, num_examples, batch_size):
        yield order[start:start + batch_size]


# -- stage 04 -----------------------------------------------------------------------------------

def momentum_lr_in_velocity(param, grad, velocity, lr, momentum=0.9):
    velocity[...] = momentum * velocity + lr * grad
    param -= velocity


def momentum_velocity_rebound(param, grad, velocity, lr, momentum=0.9):
    velocity = momentum * velocity + grad
    param -= lr * velocity


def rmsprop_eps_inside(param, grad, square_avg, lr, rho=0.9, eps=1e-8):
    square_avg[...] = rho * square_avg + (1 - rho) * grad**2
    param -= lr * grad / np.sqrt(square_avg + eps)


def adam_variant(power_shift: int = 0, correct: bool = True, keep_hat: bool = False):
    """Adam with the correction's power shifted, or left out, or with m_hat stored as m."""

    def adam_step(param, grad, m, v, t, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        m[...] = beta1 * m + (1 - beta1) * grad
        v[...] = beta2 * v + (1 - beta2) * grad**2
        m_hat = m / (1 - beta1 ** (t + power_shift)) if correct else m
        v_hat = v / (1 - beta2 ** (t + power_shift)) if correct else v
        if keep_hat:
            m[...] = m_hat
        param -= lr * m_hat / (np.sqrt(v_hat) + eps)

    return adam_step


# -- stage 05 -----------------------------------------------------------------------------------

def dropout_without_rescaling(x, rate, rng):
    mask = (rng.random(x.shape, dtype=np.float32) >= rate).astype(x.dtype)
    return x * mask, mask


def dropout_keeps_with_rate(x, rate, rng):
    mask = ((rng.random(x.shape, dtype=np.float32) < rate) / (1 - rate)).astype(x.dtype)
    return x * mask, mask


def dropout_unseeded(x, rate, rng):
    return reference.dropout_forward(x, rate, np.random.default_rng())


def dropout_backward_unscaled(dout, mask):
    return dout * (mask > 0)


def dropout_layer_always_on(x, rate, rng, training):
    return reference.dropout_forward(x, rate, rng) if rate else (x, None)


def dropout_layer_old_style(x, rate, rng, training):
    if not training:
        return x * (1 - rate), None
    return reference.dropout_forward(x, rate, rng)


def shift_wraps_around(images, rng, max_shift=2):
    batch, side = len(images), math.isqrt(images.shape[1])
    top, left = rng.integers(0, 2 * max_shift + 1, size=(2, batch))
    squares = images.reshape(batch, side, side)
    out = [np.roll(square, (max_shift - dy, max_shift - dx), axis=(0, 1)) for square, dy, dx in zip(squares, top, left)]
    return np.stack(out).reshape(batch, -1)


def shift_wrong_sign(images, rng, max_shift=2):
    batch, side = len(images), math.isqrt(images.shape[1])
    padded = np.pad(images.reshape(batch, side, side), ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    top, left = 2 * max_shift - rng.integers(0, 2 * max_shift + 1, size=(2, batch))
    rows = top[:, None, None] + np.arange(side)[None, :, None]
    cols = left[:, None, None] + np.arange(side)[None, None, :]
    return padded[np.arange(batch)[:, None, None], rows, cols].reshape(batch, -1)


def shift_never_reaches_the_top(images, rng, max_shift=2):
    batch = len(images)
    top = rng.integers(0, 2 * max_shift, size=batch)  # one offset short
    side = math.isqrt(images.shape[1])
    padded = np.pad(images.reshape(batch, side, side), ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    left = np.full(batch, max_shift)
    rows = top[:, None, None] + np.arange(side)[None, :, None]
    cols = left[:, None, None] + np.arange(side)[None, None, :]
    return padded[np.arange(batch)[:, None, None], rows, cols].reshape(batch, -1)


def decay_without_lr(param, lr, weight_decay):
    param -= weight_decay * param


# -- stage 06 -----------------------------------------------------------------------------------

def conv_true_convolution(x, W, b, pad=0):
    return reference.conv_forward(x, W[::-1, ::-1], b, pad)


def conv_without_bias(x, W, b, pad=0):
    return reference.conv_forward(x, W, np.zeros_like(b), pad)


def conv_backward_dx_unflipped(dout, x, W, pad=0):
    _, dW, db = reference.conv_backward(dout, x, W, pad)
    k = W.shape[0]
    full = reference.conv_forward(dout, W.transpose(0, 1, 3, 2), np.zeros(W.shape[2], dout.dtype), pad=k - 1)
    return full[:, pad:full.shape[1] - pad, pad:full.shape[2] - pad], dW, db


def maxpool_average(x):
    batch, height, width, channels = x.shape
    windows = x[:, :height // 2 * 2, :width // 2 * 2].reshape(batch, height // 2, 2, width // 2, 2, channels)
    return windows.mean(axis=(2, 4))


def maxpool_backward_spreads_ties(dout, x):
    out = reference.maxpool_forward(x)
    up = np.repeat(np.repeat(out, 2, axis=1), 2, axis=2)
    grad = np.repeat(np.repeat(dout, 2, axis=1), 2, axis=2)
    dx = np.zeros_like(x)
    rows, cols = up.shape[1:3]
    dx[:, :rows, :cols] = grad * (x[:, :rows, :cols] == up)
    return dx


def maxpool_backward_last_maximum(dout, x):
    batch, rows, cols, channels = dout.shape
    windows = x[:, :2 * rows, :2 * cols].reshape(batch, rows, 2, cols, 2, channels).transpose(0, 1, 3, 5, 2, 4)
    windows = windows.reshape(batch, rows, cols, channels, 4)
    winner = 3 - windows[..., ::-1].argmax(axis=-1)  # the last maximum in row-major order
    routed = (np.arange(4) == winner[..., None]) * dout[..., None]
    dx = np.zeros_like(x)
    dx[:, :2 * rows, :2 * cols] = (routed.reshape(batch, rows, cols, channels, 2, 2)
                                   .transpose(0, 1, 4, 2, 5, 3).reshape(batch, 2 * rows, 2 * cols, channels))
    return dx


# -- batch normalization (stage 07 uses it) ---------------------------------------------------

def batchnorm_variant(ddof: int = 0, eps_outside: bool = False, axis: int | None = None, refuse: bool = True):
    """Batch normalization's forward pass with the variance divided by B - ddof, eps outside the square
    root, the statistics over ``axis`` of x as it is (no reshape to rows), or a batch of one accepted."""

    def batchnorm_forward(x, gamma, beta, eps=1e-5):
        rows = x.reshape(-1, x.shape[-1]) if axis is None else x
        if refuse and len(rows) < 2:
            raise ValueError("a batch of one")
        mean = rows.mean(axis=axis or 0, keepdims=True)
        var = rows.var(axis=axis or 0, ddof=ddof, keepdims=True)
        std = np.sqrt(var) + eps if eps_outside else np.sqrt(var + eps)
        xhat = (rows - mean) / std
        squeeze = (lambda a: a.reshape(-1)) if axis in (None, 0) else (lambda a: a)
        return (gamma * xhat + beta).reshape(x.shape), (xhat, gamma, squeeze(std), squeeze(mean), squeeze(var))

    return batchnorm_forward


def batchnorm_backward_variant(slip: str):
    """Batch normalization's backward pass with one of its usual slips."""

    def batchnorm_backward(dout, cache):
        xhat, gamma, std, _, _ = cache
        rows = dout.reshape(xhat.shape)
        count = len(dout) if slip == "count B for images" else len(rows)
        dbeta, dgamma = rows.sum(axis=0), (rows * xhat).sum(axis=0)
        if slip == "no xhat term":
            dx = gamma / (count * std) * (count * rows - dbeta)
        elif slip == "constant statistics":
            dx = gamma * rows / std
        else:
            dx = gamma / (count * std) * (count * rows - dbeta - xhat * dgamma)
        if slip == "dgamma without xhat":
            dgamma = dbeta
        return dx.reshape(dout.shape), dgamma, dbeta

    return batchnorm_backward


MUTANTS = {
    "dense forward without the bias": ("dense_forward", dense_forward_without_bias, ["bias"]),
    "dense backward divides by the batch size": ("dense_backward", dense_backward_divided_by_batch,
                                                 ["factor of the batch size (7)", "too small"]),
    "transposed weight gradient": ("dense_backward", dense_backward_transposed_dW,
                                   ["dW has shape (3, 5), expected (5, 3)", "transposed"]),
    "bias gradient over the wrong axis": ("dense_backward", dense_backward_db_over_wrong_axis, ["wrong axis"]),
    "dense backward crashes": ("dense_backward", dense_backward_crashes, ["raised ValueError", "line"]),
    "relu forward changes its input": ("relu_forward", relu_forward_in_place, ["in place", "z"]),
    "relu backward at zero (>= 0)": ("relu_backward", relu_backward_at_zero, ["z = 0", "z > 0"]),
    "relu backward multiplies by relu": ("relu_backward", relu_backward_times_relu, ["max(0, z)"]),
    "softmax without the max shift": ("softmax_cross_entropy", softmax_without_max_shift,
                                      ["overflow", "maximum"]),
    "loss gradient not divided by the batch size": ("softmax_cross_entropy", softmax_gradient_not_divided_by_batch,
                                                    ["factor of the batch size (7)"]),
    "loss summed, not averaged": ("softmax_cross_entropy", softmax_loss_summed, ["sum", "mean"]),
    "loss gradient with the wrong sign": ("softmax_cross_entropy", softmax_gradient_wrong_sign, ["wrong sign"]),
    "loss gradient in float64 for float32 logits": ("softmax_cross_entropy", softmax_float64_onehot,
                                                    ["float64", "float32"]),
    "sgd step not in place": ("sgd_step", sgd_step_rebinds, ["did not change", "in place"]),
    "sgd step uphill": ("sgd_step", sgd_step_uphill, ["up the gradient"]),
    "tanh backward applies tanh again": ("tanh_backward", tanh_backward_tanh_again, ["tanh again"]),
    "sigmoid overflows": ("sigmoid_forward", sigmoid_forward_naive, ["overflow", "-1000"]),
    "sigmoid backward applies sigmoid again": ("sigmoid_backward", sigmoid_backward_sigmoid_again,
                                               ["sigmoid again"]),
    "mini-batches drop the last batch": ("minibatches", minibatches_without_last, ["last", "missing"]),
    "mini-batches never shuffled": ("minibatches", minibatches_unshuffled, ["original order", "shuffle"]),
    "mini-batches from a fixed seed": ("minibatches", minibatches_fixed_seed, ["same order"]),
    "mini-batches with replacement": ("minibatches", minibatches_with_replacement, ["without replacement"]),
    "momentum with lr inside the velocity": ("momentum_step", momentum_lr_in_velocity, ["velocity holds", "lr * grad"]),
    "momentum velocity not kept": ("momentum_step", momentum_velocity_rebound, ["velocity did not change"]),
    "rmsprop with eps inside the root": ("rmsprop_step", rmsprop_eps_inside, ["outside the square root"]),
    "adam without bias correction": ("adam_step", adam_variant(correct=False), ["bias correction is missing"]),
    "adam correction with power t + 1": ("adam_step", adam_variant(power_shift=1), ["t + 1"]),
    "adam correction with power t - 1": ("adam_step", adam_variant(power_shift=-1), ["t - 1", "t = 1"]),
    "adam keeps m_hat as m": ("adam_step", adam_variant(keep_hat=True), ["m_hat", "uncorrected"]),
    "dropout without rescaling": ("dropout_forward", dropout_without_rescaling, ["not scaled up", "1 / (1 - rate)"]),
    "dropout keeps with probability rate": ("dropout_forward", dropout_keeps_with_rate, ["probability to drop"]),
    "dropout ignores its rng": ("dropout_forward", dropout_unseeded, ["same seed", "rng"]),
    "dropout backward unscaled": ("dropout_backward", dropout_backward_unscaled, ["not scaled"]),
    "dropout active at inference": ("dropout_layer_forward", dropout_layer_always_on, ["inference", "drops"]),
    "dropout scaled at inference": ("dropout_layer_forward", dropout_layer_old_style, ["inference", "1 - rate"]),
    "shift wraps around": ("random_shift", shift_wraps_around, ["wraps around"]),
    "shift with the wrong sign": ("random_shift", shift_wrong_sign, ["wrong sign"]),
    "shift one offset short": ("random_shift", shift_never_reaches_the_top, ["never reach"]),
    "weight decay without lr": ("decay_weights", decay_without_lr, ["leaves out lr"]),
    "a true convolution (kernel flipped)": ("conv_forward", conv_true_convolution,
                                            ["true convolution", "cross-correlation"]),
    "convolution without the bias": ("conv_forward", conv_without_bias, ["bias"]),
    "conv backward dx without the flip": ("conv_backward", conv_backward_dx_unflipped, ["dx", "flip"]),
    "average pooling": ("maxpool_forward", maxpool_average, ["averages"]),
    "max-pool backward spreads over ties": ("maxpool_backward", maxpool_backward_spreads_ties,
                                            ["tie", "every maximum"]),
    "max-pool backward to the last maximum": ("maxpool_backward", maxpool_backward_last_maximum,
                                              ["tie", "last maximum"]),
    "batchnorm normalises with the unbiased variance": ("batchnorm_forward", batchnorm_variant(ddof=1),
                                                        ["unbiased variance", "divided by B"]),
    "batchnorm with eps outside the square root": ("batchnorm_forward", batchnorm_variant(eps_outside=True),
                                                   ["outside the square root", "sqrt(var + eps)"]),
    "batchnorm over each example's features": ("batchnorm_forward", batchnorm_variant(axis=1),
                                               ["each example", "axis 0"]),
    "batchnorm of images per pixel": ("batchnorm_forward", batchnorm_variant(axis=0),
                                      ["each channel is one feature", "every pixel", "x.reshape(-1, C)"]),
    "batchnorm accepts a batch of one": ("batchnorm_forward", batchnorm_variant(refuse=False),
                                         ["batch of one example", "ValueError"]),
    "batchnorm backward without the xhat term": ("batchnorm_backward", batchnorm_backward_variant("no xhat term"),
                                                 ["dx leaves out", "xhat * sum(dout * xhat)"]),
    "batchnorm backward with constant statistics": ("batchnorm_backward",
                                                    batchnorm_backward_variant("constant statistics"),
                                                    ["as constants", "depend on every x"]),
    "batchnorm dgamma without xhat": ("batchnorm_backward", batchnorm_backward_variant("dgamma without xhat"),
                                      ["dgamma", "dout * xhat"]),
    "batchnorm backward counts only the batch for images": ("batchnorm_backward",
                                                            batchnorm_backward_variant("count B for images"),
                                                            ["for images", "B*H*W"]),
}
