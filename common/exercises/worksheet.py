"""Learn by doing: the network's maths, one function at a time, in the order of the ladder.

Start:  python -m common.exercises start            copies this blank file to my_exercises/worksheet.py
Check:  python -m common.exercises check            every exercise: pass, not yet written, or the first
                                                    thing that is wrong and the section to read
        python -m common.exercises check adam_step  one exercise (or several, or a stage: check 04;
                                                    check bn for batch normalization, stage 07's)
Train:  python stages/04_adam.py --exercises my_exercises --quick
                                                    the stage trains on your functions where you have
                                                    written them, and on the reference where not yet
        python stages/07_batchnorm.py --exercises my_exercises --quick
                                                    the same, your batchnorm_forward and
                                                    batchnorm_backward included; its digits are
                                                    distorted by common.nn.affine (no exercise), not
                                                    by your random_shift (stages 05 and 06 use that)

How: replace each ``raise NotImplementedError`` with your code, in this file (edit the copy in
my_exercises/, not the blank in common/exercises/). Keep every name and argument: the checker and
the network call your functions exactly as they call the reference ones.

Rules the checker holds you to:
* Arrays in, new arrays out: never change an input in place, and keep its dtype (float32 in,
  float32 out). The exceptions are the optimizer steps, which update their parameter and state
  arrays in place (``param -= ...``, ``velocity[...] = ...``) and return nothing.
* Randomness comes only from the ``rng`` argument (a numpy.random.Generator), never np.random.
* No division by the batch size except in the loss: the 1/B of the mean travels back in dlogits.
* Shapes: one example per row, ``x (B, D)``; images ``(B, H, W, C)``, channels last. ``d<name>``
  is the gradient of the loss with respect to ``<name>`` and has its shape.

The maths is in docs/math.md; each exercise names its section. The answers are in
common/nn/reference.py, under the same names: try first, then compare.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Import what else you need (math, for example); write helper functions of your own as you like.


# ============================================================================================
# Stage 01: one hidden layer, trained by gradient descent
# ============================================================================================


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A dense layer: ``z = x W + b``, the bias added to every row.

    ``x (B, D_in)``, ``W (D_in, D_out)``, ``b (D_out,)`` -> ``z (B, D_out)``.
    docs/math.md#forward-pass
    """
    raise NotImplementedError


def dense_backward(dz: np.ndarray, x: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The dense layer's gradients, given ``dz (B, D_out)``, the gradient of the loss with respect to its output.

    Returns ``dx (B, D_in)``, ``dW (D_in, D_out)``, ``db (D_out,)``: each the shape of what it
    differentiates. No division by B here: the 1/B of the mean loss is already in ``dz``.
    docs/math.md#backpropagation-through-a-dense-layer
    """
    raise NotImplementedError


def relu_forward(z: np.ndarray) -> np.ndarray:
    """``max(0, z)`` element by element; ``z`` of any shape. Return a new array.

    docs/math.md#activations
    """
    raise NotImplementedError


def relu_backward(da: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``dz = da * relu'(z)``, given the layer's input ``z`` (not its output); any shape.

    The derivative is 1 where z > 0 and 0 elsewhere, 0 at z = 0 included.
    docs/math.md#activations
    """
    raise NotImplementedError


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """``logits (B, K)``, integer ``labels (B,)`` -> ``(loss, dlogits (B, K))``.

    ``loss`` is one number, the mean over the batch of ``-log p[i, labels[i]]``, where ``p`` is the
    softmax of each row. It must stay finite for logits as large as 1000 (the max-shift and the
    log-sum-exp). ``dlogits = (p - onehot(labels)) / B``.
    docs/math.md#softmax-and-cross-entropy
    """
    raise NotImplementedError


def sgd_step(param: np.ndarray, grad: np.ndarray, lr: float) -> None:
    """One step of gradient descent on one parameter array, in place: ``param <- param - lr * grad``.

    docs/math.md#gradient-descent-and-mini-batches
    """
    raise NotImplementedError


# ============================================================================================
# Stage 02: tanh and sigmoid (the activation ablation)
# ============================================================================================


def tanh_backward(da: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``dz = da * tanh'(z)``, given the forward *output* ``a = tanh(z)``; any shape.

    docs/math.md#activations
    """
    raise NotImplementedError


def sigmoid_forward(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` element by element, without ever overflowing: at z = -1000, exp(-z)
    is inf, and training stops on an overflow. Any shape; keep the dtype.

    docs/math.md#activations
    """
    raise NotImplementedError


def sigmoid_backward(da: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``dz = da * sigmoid'(z)``, given the forward *output* ``a = sigmoid(z)``; any shape.

    docs/math.md#activations
    """
    raise NotImplementedError


# ============================================================================================
# Stage 03: mini-batches
# ============================================================================================


def minibatches(num_examples: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch's batches: yield arrays of example indices that cover ``0 .. num_examples - 1``
    once each, in a fresh random order drawn with ``rng.permutation(num_examples)``, cut into
    consecutive batches of ``batch_size``; keep the last, smaller batch. If ``batch_size >=
    num_examples``, yield one batch of every example (full-batch gradient descent).

    (The training loop cuts its batches with common.nn.train.iterate_minibatches, the same way.)
    docs/math.md#gradient-descent-and-mini-batches
    """
    raise NotImplementedError


# ============================================================================================
# Stage 04: momentum, RMSprop, Adam. Each updates param and its state arrays in place.
# ============================================================================================


def momentum_step(param: np.ndarray, grad: np.ndarray, velocity: np.ndarray, lr: float,
                  momentum: float = 0.9) -> None:
    """``velocity <- momentum * velocity + grad``, then ``param <- param - lr * velocity``.

    ``velocity`` starts at 0 and has the shape of ``param``. lr can change from step to step.
    docs/math.md#momentum
    """
    raise NotImplementedError


def rmsprop_step(param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray, lr: float,
                 rho: float = 0.9, eps: float = 1e-8) -> None:
    """``square_avg <- rho * square_avg + (1 - rho) * grad**2``, then
    ``param <- param - lr * grad / (sqrt(square_avg) + eps)``. ``square_avg`` starts at 0.

    docs/math.md#rmsprop
    """
    raise NotImplementedError


def adam_step(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, t: int, lr: float,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> None:
    """Adam's step number ``t`` (counted from 1), with bias correction. ``m`` and ``v`` start at 0
    and keep the running averages themselves (uncorrected) from step to step.

    docs/math.md#adam
    """
    raise NotImplementedError


# ============================================================================================
# Stage 05: dropout, shifted digits, decoupled weight decay
# ============================================================================================


def dropout_forward(x: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Inverted dropout while training: ``x`` (any shape) -> ``(out, mask)``, both of x's shape and dtype.

    Drop each entry with probability ``rate``; scale the kept ones by ``1 / (1 - rate)``, so that
    at inference dropout is simply off. ``mask`` holds 0 or ``1 / (1 - rate)``; ``out = x * mask``.
    Draw from ``rng``; ``rng.random(x.shape, dtype=np.float32) >= rate`` gives the reference's masks.
    docs/math.md#dropout
    """
    raise NotImplementedError


def dropout_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The gradient through dropout, given the forward pass's ``mask``: ``dx``, the shape of ``dout``.

    docs/math.md#dropout
    """
    raise NotImplementedError


def dropout_layer_forward(x: np.ndarray, rate: float, rng: np.random.Generator,
                          training: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """What a dropout layer does, training or not: ``(out, mask)``.

    While training (with rate > 0), dropout_forward's answer. At inference, or with rate 0:
    ``(x, None)``, drawing nothing from ``rng``.
    docs/math.md#dropout
    """
    raise NotImplementedError


def random_shift(images: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    """Move each image of ``images (B, S*S)`` (S*S pixels in rows: S is math.isqrt of the row's
    length) by its own random whole number of pixels, up and down and sideways, each between
    ``-max_shift`` and ``max_shift``; pixels that come in are 0. Returns ``(B, S*S)``.

    To draw what the reference draws: ``top, left = rng.integers(0, 2 * max_shift + 1, size=(2, B))``,
    and pixel (r, c) of image n's output is pixel (r + top[n], c + left[n]) of image n padded with
    ``max_shift`` zeros on every side.
    docs/math.md#data-augmentation
    """
    raise NotImplementedError


def decay_weights(param: np.ndarray, lr: float, weight_decay: float) -> None:
    """Decoupled weight decay (AdamW), in place, before the optimizer's step: shrink ``param`` by
    ``lr * weight_decay`` of itself.

    docs/math.md#weight-decay
    """
    raise NotImplementedError


# ============================================================================================
# Stage 06: convolution and 2x2 max-pooling, images (B, H, W, C). Loops are fine.
# ============================================================================================


def conv_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray, pad: int = 0) -> np.ndarray:
    """``x (B, H, W, C_in)``, ``W (k, k, C_in, C_out)``, ``b (C_out,)`` -> ``out (B, H', W', C_out)``.

    Pad each image with ``pad`` zeros on every side, then slide the kernel with stride 1:
    ``out[n, h, w, f] = b[f] + sum over i, j, c of x_pad[n, h + i, w + j, c] * W[i, j, c, f]``, a
    cross-correlation (no kernel flip), as the layers compute it. ``H' = H + 2 pad - k + 1``.
    docs/math.md#convolution-and-max-pooling
    """
    raise NotImplementedError


def conv_backward(dout: np.ndarray, x: np.ndarray, W: np.ndarray,
                  pad: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The convolution's gradients, given ``dout (B, H', W', C_out)``:
    ``dx (B, H, W, C_in)``, ``dW (k, k, C_in, C_out)``, ``db (C_out,)``.

    docs/math.md#convolution-and-max-pooling
    """
    raise NotImplementedError


def maxpool_forward(x: np.ndarray) -> np.ndarray:
    """2x2 max-pooling with stride 2: ``x (B, H, W, C)`` -> ``(B, H // 2, W // 2, C)``, each
    window's largest value; an odd last row or column is dropped.

    docs/math.md#convolution-and-max-pooling
    """
    raise NotImplementedError


def maxpool_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``dout (B, H // 2, W // 2, C)`` -> ``dx (B, H, W, C)``.

    Each window's gradient goes whole to one element, its maximum; at a tie, to the first maximum
    in row-major order (top-left, top-right, bottom-left, bottom-right), never to all of them.
    Everything else, an odd last row or column included, gets 0.
    docs/math.md#convolution-and-max-pooling
    """
    raise NotImplementedError


# ============================================================================================
# Batch normalization (check bn), used by stage 07. Training mode, features last:
# x (B, D), one feature per column, or images (B, H, W, C), one feature per channel.
# (Stage 07's predictions normalise with running averages: that is the reference's batchnorm_inference.)
# ============================================================================================


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                      eps: float = 1e-5) -> tuple[np.ndarray, tuple]:
    """Batch normalization while training: ``x (B, D)``, ``gamma (D,)``, ``beta (D,)`` -> ``(out, cache)``.

    Normalise each feature (column) with its batch's mean and variance, the variance divided by B
    (np.var's default): ``std = sqrt(var + eps)``, ``xhat = (x - mean) / std``; then
    ``out = gamma * xhat + beta``, of x's shape and dtype. Images ``x (B, H, W, C)`` with
    ``gamma, beta (C,)``: one feature per channel, over the batch and every pixel, which is the same
    on the B*H*W rows of ``x.reshape(-1, C)``; ``out`` has the images' shape again.
    ``cache = (xhat, gamma, std, mean, var)``: ``xhat`` as the rows you normalised, ``(B, D)`` or
    ``(B*H*W, C)``, the rest one value per feature. batchnorm_backward is given it, and a training
    run updates its running averages from its mean and var.
    With fewer than 2 values per feature (a batch of one example) raise a ValueError.
    docs/math.md#batch-normalization
    """
    raise NotImplementedError


def batchnorm_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch normalization's gradients, given ``dout`` (the shape of ``out``) and the forward pass's
    ``cache = (xhat, gamma, std, mean, var)``: ``dx`` (the shape of ``dout``), ``dgamma (D,)``, ``dbeta (D,)``.

    The batch's mean and variance depend on every x: the maths page derives the compact ``dx``.
    docs/math.md#batch-normalization
    """
    raise NotImplementedError
