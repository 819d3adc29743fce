"""The textbook, runnable: every formula the network computes, as plain NumPy to read beside ``docs/math.md``.

Start here. Each function is one idea of the maths page in a few lines, with the shapes it takes
and returns; nothing in this file is there for speed. The layers, the loss and the optimizers the
stages train with (``layers.py``, ``conv.py``, ``loss.py``, ``optimizers.py``) compute the same
numbers faster, and ``tests/test_reference.py`` checks each one against its function here (in
float64: exactly where the operations are the same, to 1e-12 otherwise). The fast versions say
``Textbook:`` in their docstrings and point back here.

A network can also train on these functions: ``common.nn.textbook`` wraps them as layers and an
optimizer. They are also the answers to the exercises (``python -m common.exercises``), which ask
for each of them under the same name and signature.

Conventions: one example per row. Vectors are ``x (B, D)``; images are ``x (B, H, W, C)``,
channels last. ``d<name>`` is the gradient of the loss with respect to ``<name>``, with its shape.
Optimizer steps update the parameter and their state arrays in place (``a[...] = ...``), as the
network's parameters live in shared memory.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

# -- a dense layer: z = x W + b  (docs/math.md#forward-pass, #backpropagation-through-a-dense-layer)


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``x (B, D_in)``, ``W (D_in, D_out)``, ``b (D_out,)`` -> ``z (B, D_out)``."""
    return x @ W + b


def dense_backward(dz: np.ndarray, x: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``dz (B, D_out)`` -> ``dx (B, D_in)``, ``dW (D_in, D_out)``, ``db (D_out,)``.

    No division by B here: the 1/B of the mean loss is already in ``dz``.
    """
    dx = dz @ W.T
    dW = x.T @ dz
    db = dz.sum(axis=0)
    return dx, dW, db


# -- activations: a = phi(z) element by element, so dz = da * phi'(z)  (docs/math.md#activations)


def relu_forward(z: np.ndarray) -> np.ndarray:
    """``max(0, z)``, any shape."""
    return np.maximum(z, 0)


def relu_backward(da: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``da * 1[z > 0]``: the derivative is taken as 0 at ``z = 0``."""
    return da * (z > 0)


def tanh_forward(z: np.ndarray) -> np.ndarray:
    return np.tanh(z)


def tanh_backward(da: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``da * tanh'(z)``, where ``tanh'(z) = 1 - a**2`` with ``a = tanh(z)``, the forward output."""
    return da * (1 - a * a)


def sigmoid_forward(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))``, written so that ``exp`` never overflows: for ``z < 0`` the equal
    ``exp(z) / (1 + exp(z))``; either way ``exp`` sees ``-|z| <= 0``."""
    u = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + u), u / (1 + u)).astype(z.dtype, copy=False)


def sigmoid_backward(da: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``da * sigmoid'(z)``, where ``sigmoid'(z) = a * (1 - a)`` with ``a = sigmoid(z)``, the forward output."""
    return da * (a * (1 - a))


# -- softmax and cross-entropy  (docs/math.md#softmax-and-cross-entropy)


def softmax(logits: np.ndarray) -> np.ndarray:
    """``logits (B, K)`` -> probabilities ``p (B, K)``, each row summing to 1 (max-shifted: no overflow)."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """``logits (B, K)``, integer ``labels (B,)`` -> ``(loss, dlogits (B, K))``.

    ``loss = mean_i -log p[i, labels[i]]``, taken as ``log sum_j exp(z_ij - m_i) - (z_iy - m_i)``
    (log-sum-exp, never ``log 0``), and ``dlogits = (p - onehot(labels)) / B``.
    """
    batch = len(labels)
    rows = np.arange(batch)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sums = np.log(np.exp(shifted).sum(axis=1))
    loss = float(np.mean(log_sums - shifted[rows, labels], dtype=np.float64))
    onehot = np.zeros_like(logits)
    onehot[rows, labels] = 1
    return loss, (softmax(logits) - onehot) / batch


# -- dropout  (docs/math.md#dropout)


def dropout_forward(x: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Training only: ``x`` any shape -> ``(out, mask)``. Each entry is kept with probability ``1 - rate``
    and scaled by ``1 / (1 - rate)`` (inverted dropout), so at test time dropout is the identity."""
    keep = rng.random(x.shape, dtype=np.float32) >= rate
    mask = keep / (1 - rate)
    mask = mask.astype(x.dtype)
    return x * mask, mask


def dropout_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``dout`` -> ``dout * mask``: the same mask, scale included, as the forward pass drew."""
    return dout * mask


def dropout_layer_forward(x: np.ndarray, rate: float, rng: np.random.Generator,
                          training: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """What a dropout layer does with ``x`` (any shape): ``(out, mask)``.

    Training (and ``rate > 0``): :func:`dropout_forward`. Inference, or ``rate == 0``: the identity,
    ``(x, None)``, with nothing drawn from ``rng``; inverted dropout did its scaling while training.
    ``common.nn.textbook.TextbookDropout`` and ``common.nn.layers.Dropout`` behave this way.
    """
    if not training or rate == 0.0:
        return x, None
    return dropout_forward(x, rate, rng)


# -- convolution and max-pooling, images (B, H, W, C)  (docs/math.md#convolution-and-max-pooling)


def conv_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray, pad: int = 0) -> np.ndarray:
    """``x (B, H, W, C_in)``, ``W (k, k, C_in, C_out)``, ``b (C_out,)`` -> ``out (B, H', W', C_out)``.

    ``out[n, h, w, f] = b[f] + sum_{i, j, c} x_pad[n, h + i, w + j, c] * W[i, j, c, f]`` (a
    cross-correlation, as in every deep-learning library), with ``pad`` zeros around each image and
    ``H' = H + 2 pad - k + 1``: a loop over the output pixels, each one window of every image.
    """
    k = W.shape[0]
    x_pad = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out_h, out_w = x_pad.shape[1] - k + 1, x_pad.shape[2] - k + 1
    out = np.empty((len(x), out_h, out_w, W.shape[3]), dtype=x.dtype)
    for h in range(out_h):
        for w in range(out_w):
            window = x_pad[:, h:h + k, w:w + k, :]              # (B, k, k, C_in)
            out[:, h, w, :] = np.tensordot(window, W, axes=3) + b
    return out


def conv_backward(dout: np.ndarray, x: np.ndarray, W: np.ndarray,
                  pad: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``dout (B, H', W', C_out)`` -> ``dx (B, H, W, C_in)``, ``dW (k, k, C_in, C_out)``, ``db (C_out,)``.

    ``dW[i, j] = sum_{n, h, w} x_pad[n, h + i, w + j, :] outer dout[n, h, w, :]``, a loop over the
    kernel offsets; ``db`` sums ``dout`` over images and pixels. ``dx`` is the "full" convolution
    of ``dout`` with the kernel flipped in both spatial axes and its channels swapped: every input
    pixel collects from every output window that covers it.
    """
    k, _, c_in, _ = W.shape
    x_pad = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out_h, out_w = dout.shape[1:3]
    dW = np.empty_like(W)
    for i in range(k):
        for j in range(k):
            dW[i, j] = np.tensordot(x_pad[:, i:i + out_h, j:j + out_w, :], dout, axes=([0, 1, 2], [0, 1, 2]))
    db = dout.sum(axis=(0, 1, 2))
    flipped = W[::-1, ::-1].transpose(0, 1, 3, 2)               # (k, k, C_out, C_in)
    dx_pad = conv_forward(dout, flipped, np.zeros(c_in, dtype=dout.dtype), pad=k - 1)
    dx = dx_pad[:, pad:dx_pad.shape[1] - pad, pad:dx_pad.shape[2] - pad, :]
    return dx, dW, db


def _pool_windows(x: np.ndarray) -> np.ndarray:
    """``x (B, H, W, C)`` -> ``(B, H // 2, W // 2, C, 4)``: each 2x2 window's elements in row-major
    order (top-left, top-right, bottom-left, bottom-right); an odd last row or column is dropped."""
    batch, height, width, channels = x.shape
    rows, cols = height // 2, width // 2
    windows = x[:, :2 * rows, :2 * cols].reshape(batch, rows, 2, cols, 2, channels)
    return windows.transpose(0, 1, 3, 5, 2, 4).reshape(batch, rows, cols, channels, 4)


def maxpool_forward(x: np.ndarray) -> np.ndarray:
    """2x2 max-pooling, stride 2: ``x (B, H, W, C)`` -> ``(B, H // 2, W // 2, C)``."""
    return _pool_windows(x).max(axis=-1)


def maxpool_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``dout (B, H // 2, W // 2, C)`` -> ``dx (B, H, W, C)``.

    Each window's gradient goes to one element, its maximum; at a tie, to the first maximum in
    row-major order (``argmax`` returns the first), never to all of them.
    """
    windows = _pool_windows(x)
    winner = windows.argmax(axis=-1)                             # (B, H // 2, W // 2, C)
    routed = (np.arange(4) == winner[..., None]) * dout[..., None]
    batch, rows, cols, channels = dout.shape
    dx = np.zeros_like(x)
    dx[:, :2 * rows, :2 * cols] = (routed.reshape(batch, rows, cols, channels, 2, 2)
                                   .transpose(0, 1, 4, 2, 5, 3).reshape(batch, 2 * rows, 2 * cols, channels))
    return dx


# -- batch normalization  (docs/math.md#batch-normalization)
#    Features are the last axis: x (B, D), one feature per column, or images x (B, H, W, C), one
#    feature per channel, normalised over the batch and every pixel. The formulas are written for the
#    M rows of x.reshape(-1, D) (M = B, or B*H*W for images), and the results take x's shape again.


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                      eps: float = 1e-5) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Training mode: ``x (B, D)``, ``gamma (D,)``, ``beta (D,)`` -> ``(out (B, D), cache)``.

    Each feature is normalised with its batch's own statistics: ``mean``, the biased variance
    ``var = mean((x - mean)**2)`` (divided by M, not M - 1, as PyTorch normalises), ``std =
    sqrt(var + eps)``, ``xhat = (x - mean) / std``; then ``out = gamma * xhat + beta``. Images
    ``x (B, H, W, C)`` with ``gamma, beta (C,)``: the same on ``x.reshape(-1, C)``, per channel over
    the batch and every pixel, and ``out (B, H, W, C)``.

    ``cache = (xhat (M, D), gamma (D,), std (D,), mean (D,), var (D,))``, what the backward pass and
    :func:`update_running_stats` need. Fewer than 2 rows (a batch of one example) raise a ValueError.
    """
    rows = x.reshape(-1, x.shape[-1])                            # (M, D)
    if len(rows) < 2:
        raise ValueError(f"batch normalization in training needs at least 2 values per feature, got {len(rows)} "
                         f"(x of shape {x.shape}): the variance of one value is 0, so there is nothing to normalise")
    mean = rows.mean(axis=0)
    var = ((rows - mean) ** 2).mean(axis=0)
    std = np.sqrt(var + eps)
    xhat = (rows - mean) / std
    out = gamma * xhat + beta
    return out.reshape(x.shape), (xhat, gamma, std, mean, var)


def batchnorm_backward(dout: np.ndarray,
                       cache: tuple[np.ndarray, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``dout`` (the shape of ``out``) -> ``dx`` (that shape), ``dgamma (D,)``, ``dbeta (D,)``.

    With sums over the M rows: ``dbeta = sum(dout)``, ``dgamma = sum(dout * xhat)``, and the compact
    ``dx = gamma / (M std) * (M dout - sum(dout) - xhat * sum(dout * xhat))``: the two sums are the
    paths through the batch's mean and variance, which depend on every row. Their 1/M is the
    layer's own; the loss's 1/B is already in ``dout``.
    """
    xhat, gamma, std, _, _ = cache
    rows = dout.reshape(xhat.shape)                              # (M, D)
    count = len(rows)
    dbeta = rows.sum(axis=0)
    dgamma = (rows * xhat).sum(axis=0)
    dx = gamma / (count * std) * (count * rows - dbeta - xhat * dgamma)
    return dx.reshape(dout.shape), dgamma, dbeta


def batchnorm_inference(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                        running_var: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Inference: ``x (B, D)`` or ``(B, H, W, C)`` -> ``out``, x's shape, normalised with the running
    averages instead of the batch's statistics: ``gamma * (x - running_mean) / sqrt(running_var + eps)
    + beta``. Each example on its own, so a batch of one is fine. With ``running_mean = mean`` and
    ``running_var = var`` (the cache's, the biased variance) it is :func:`batchnorm_forward`'s ``out``."""
    xhat = (x - running_mean) / np.sqrt(running_var + eps)
    return gamma * xhat + beta


def update_running_stats(running_mean: np.ndarray, running_var: np.ndarray, batch_mean: np.ndarray,
                         batch_var: np.ndarray, momentum: float = 0.1) -> None:
    """After a training step, in place: ``running <- (1 - momentum) * running + momentum * batch``,
    for the mean and for the variance (they start at 0 and 1).

    PyTorch's convention: ``momentum`` is the weight of the new batch (0.1 by default), and
    ``batch_var`` is the batch's *unbiased* variance, ``sum((x - mean)**2) / (M - 1)``, that is
    ``var * M / (M - 1)`` from the cache, while training normalises with the biased ``var`` itself.
    """
    running_mean[...] = (1 - momentum) * running_mean + momentum * batch_mean
    running_var[...] = (1 - momentum) * running_var + momentum * batch_var


# -- data augmentation  (docs/math.md#data-augmentation)


def random_shift(images: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    """Move each image of ``images (B, S*S)`` by its own random ``(dy, dx)``, each drawn from
    ``-max_shift .. max_shift``; pixels that come in are 0. Returns ``(B, S*S)``.

    The draw is ``rng.integers(0, 2 * max_shift + 1, size=(2, B))``: row 0 the vertical offsets
    into a copy padded with ``max_shift`` zeros on every side, row 1 the horizontal ones.
    """
    batch, num_pixels = images.shape
    side = math.isqrt(num_pixels)
    padded = np.pad(images.reshape(batch, side, side), ((0, 0), (max_shift, max_shift), (max_shift, max_shift)))
    top, left = rng.integers(0, 2 * max_shift + 1, size=(2, batch))
    rows = top[:, None, None] + np.arange(side)[None, :, None]   # (B, S, 1): the source row of each pixel
    cols = left[:, None, None] + np.arange(side)[None, None, :]  # (B, 1, S): its source column
    return padded[np.arange(batch)[:, None, None], rows, cols].reshape(batch, num_pixels)


# -- mini-batches  (docs/math.md#gradient-descent-and-mini-batches)


def minibatches(num_examples: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield index arrays that cover ``range(num_examples)`` once each, in a fresh random order.

    The order is ``rng.permutation(num_examples)``, cut into consecutive batches of ``batch_size``;
    the last, smaller batch is kept. ``batch_size >= num_examples`` yields one batch of every
    example in order, with nothing drawn (full-batch gradient descent). The batches and draws of
    ``common.nn.train.iterate_minibatches``, which yields ``slice(None)`` for that full batch.
    """
    if batch_size >= num_examples:
        yield np.arange(num_examples)
        return
    order = rng.permutation(num_examples)
    for start in range(0, num_examples, batch_size):
        yield order[start:start + batch_size]


# -- optimizers: one step for one parameter array, in place  (docs/math.md#gradient-descent-and-mini-batches on)


def sgd_step(param: np.ndarray, grad: np.ndarray, lr: float) -> None:
    """``theta -= lr * g``."""
    param -= lr * grad


def momentum_step(param: np.ndarray, grad: np.ndarray, velocity: np.ndarray, lr: float,
                  momentum: float = 0.9) -> None:
    """``v = mu v + g``; ``theta -= lr * v`` (``velocity`` starts at 0)."""
    velocity[...] = momentum * velocity + grad
    param -= lr * velocity


def rmsprop_step(param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray, lr: float,
                 rho: float = 0.9, eps: float = 1e-8) -> None:
    """``s = rho s + (1 - rho) g**2``; ``theta -= lr * g / (sqrt(s) + eps)`` (``s`` starts at 0)."""
    square_avg[...] = rho * square_avg + (1 - rho) * grad**2
    param -= lr * grad / (np.sqrt(square_avg) + eps)


def adam_step(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, t: int, lr: float,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
    """Adam's step ``t`` (counted from 1), with bias correction; ``m`` and ``v`` start at 0."""
    m[...] = beta1 * m + (1 - beta1) * grad
    v[...] = beta2 * v + (1 - beta2) * grad**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    param -= lr * m_hat / (np.sqrt(v_hat) + eps)


def decay_weights(param: np.ndarray, lr: float, weight_decay: float) -> None:
    """Decoupled weight decay (AdamW), before the optimizer's step: ``theta -= lr * lambda * theta``.
    Applied to weights only, never to biases (docs/math.md#weight-decay)."""
    param -= lr * weight_decay * param
