"""Checks for stages 01 and 02: the dense layer, the activations, softmax with cross-entropy.

Each ``check_<name>(f)`` grades a learner's ``<name>`` (the signature of ``common.nn.reference.<name>``):
shapes and dtypes on float32 inputs, exact values on a small hand-made case, the gradient against
finite differences in float64 (``common.nn.gradcheck``), and the reference on random inputs. It
returns when all pass and raises ``Wrong`` with the first failure (``common.exercises.grading``).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from common.exercises.grading import Wrong, call, expect_array, expect_close, number, random_arrays, unpack
from common.nn import reference
from common.nn.gradcheck import numerical_gradient, numerical_gradient_of_output

F32 = np.float32
BATCH = 7  # rows of the random batches: a batch size no other dimension shares


def check_dense_forward(f: Callable) -> None:
    x, W, b = np.array([[1.0, 2.0]]), np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 3.0]]), np.array([10.0, 20.0, 30.0])
    z = call(f, dict(x=x, W=W, b=b))
    expect_close(z, np.array([[11.0, 22.0, 38.0]]), "z", "the hand-made answer",
                 case="x = [[1, 2]], W = [[1, 0, 2], [0, 1, 3]], b = [10, 20, 30]",
                 mistakes={"the bias b is not added: z = x @ W + b": x @ W})
    x, W, b = random_arrays(1, F32, (BATCH, 5), (5, 3), (3,))
    z = expect_array(call(f, dict(x=x, W=W, b=b)), "z", (BATCH, 3), F32)
    expect_close(z, reference.dense_forward(x, W, b), "z", "the reference answer", rtol=1e-5)


def check_dense_backward(f: Callable) -> None:
    x, W, dz = random_arrays(2, F32, (BATCH, 5), (5, 3), (BATCH, 3))
    dx, dW, db = unpack(call(f, dict(dz=dz, x=x, W=W)), ("dx", "dW", "db"))
    if np.ndim(db) == 0:
        raise Wrong("db is one number, the sum of all of dz; sum over the batch only (axis 0): one number per output unit")
    if np.shape(db) == (BATCH,):
        raise Wrong(f"db has shape ({BATCH},), expected (3,): it is summed over the wrong axis; sum dz over the "
                    "batch (axis 0), one number per output unit, like b")
    if np.shape(db) == (1, 3):
        raise Wrong("db has shape (1, 3), expected (3,), the shape of b: sum without keepdims=True")
    for value, what, shape in ((dx, "dx", x.shape), (dW, "dW", W.shape), (db, "db", (3,))):
        expect_array(value, what, shape, F32)
    x, W, b, dz = random_arrays(3, np.float64, (BATCH, 5), (5, 3), (3,), (BATCH, 3))
    dx, dW, db = unpack(call(f, dict(dz=dz, x=x, W=W)), ("dx", "dW", "db"))
    for value, what, wrt in ((dx, "dx", x), (dW, "dW", W), (db, "db", b)):
        numeric = numerical_gradient_of_output(lambda: reference.dense_forward(x, W, b), wrt, dz)
        expect_close(value, numeric, what, "the numerical gradient", batch=BATCH)


def check_relu_forward(f: Callable) -> None:
    z = np.array([-2.0, -0.0, 0.0, 0.5, 3.0])
    expect_close(call(f, dict(z=z)), np.array([0.0, 0.0, 0.0, 0.5, 3.0]), "max(0, z)", "the hand-made answer",
                 case="z = [-2, -0, 0, 0.5, 3]")
    (z,) = random_arrays(4, F32, (2, 3, 4, 5))  # any shape: feature maps (B, H, W, C) too
    out = expect_array(call(f, dict(z=z)), "max(0, z)", z.shape, F32)
    expect_close(out, reference.relu_forward(z), "max(0, z)", "the reference answer")


def check_relu_backward(f: Callable) -> None:
    z, da = np.array([-1.0, 0.0, 2.0, 1e-300, -1e-300]), np.array([5.0, 6.0, 7.0, 8.0, 9.0])
    dz = expect_array(call(f, dict(da=da, z=z)), "dz", z.shape)
    if dz[1] != 0.0 and np.all(dz[[0, 2, 3, 4]] == [0.0, 7.0, 8.0, 0.0]):
        raise Wrong(f"at z = 0 the gradient must be 0, got {dz[1]:g}: ReLU's derivative is taken as 0 at its kink, "
                    "so gate on z > 0, not z >= 0")
    expect_close(dz, np.array([0.0, 0.0, 7.0, 8.0, 0.0]), "dz", "the hand-made answer",
                 case="da = [5, 6, 7, 8, 9], z = [-1, 0, 2, 1e-300, -1e-300]",
                 mistakes={"it returns the 0/1 derivative without multiplying by da: dz = da * 1[z > 0]": z > 0,
                           "it multiplies da by max(0, z); multiply by the derivative instead, 1[z > 0]":
                           da * np.maximum(z, 0)})
    z, da = random_arrays(5, F32, (BATCH, 6), (BATCH, 6))
    dz = expect_array(call(f, dict(da=da, z=z)), "dz", z.shape, F32)
    expect_close(dz, reference.relu_backward(da, z), "dz", "the reference answer")
    z, da = random_arrays(6, np.float64, (BATCH, 6), (BATCH, 6))
    z[np.abs(z) < 1e-3] = 0.5  # away from the kink, where there is no derivative
    numeric = numerical_gradient_of_output(lambda: reference.relu_forward(z), z, da)
    expect_close(call(f, dict(da=da, z=z)), numeric, "dz", "the numerical gradient")


def check_tanh_backward(f: Callable) -> None:
    z, da = random_arrays(7, np.float64, (BATCH, 4), (BATCH, 4))
    a = np.tanh(z)
    numeric = numerical_gradient_of_output(lambda: np.tanh(z), z, da)
    expect_close(call(f, dict(da=da, a=a)), numeric, "dz", "the numerical gradient",
                 mistakes={"it applies tanh again: a is already tanh(z), the forward output, so tanh'(z) = 1 - a**2":
                           da * (1 - np.tanh(a) ** 2),
                           "it uses tan, not tanh (the first source design's bug)": da * (1 - np.tan(a) ** 2)})
    a32, da32 = a.astype(F32), da.astype(F32)
    expect_array(call(f, dict(da=da32, a=a32)), "dz", a.shape, F32)


def check_sigmoid_forward(f: Callable) -> None:
    z = np.array([-1000.0, -30.0, -1.0, 0.0, 1.0, 30.0, 1000.0])
    overflow = ("exp overflows for z = -1000 (exp(1000) is inf, and training stops on an overflow): "
                "compute u = exp(-|z|), at most 1, and use 1 / (1 + u) for z >= 0, u / (1 + u) for z < 0")
    out = call(f, dict(z=z), float_error=lambda error: overflow)
    expect_close(out, reference.sigmoid_forward(z), "sigmoid(z)", "the reference answer", rtol=1e-12,
                 case="z = [-1000, -30, -1, 0, 1, 30, 1000]")
    (z,) = random_arrays(8, F32, (BATCH, 5))
    out = expect_array(call(f, dict(z=z)), "sigmoid(z)", z.shape, F32)
    expect_close(out, reference.sigmoid_forward(z), "sigmoid(z)", "the reference answer", rtol=1e-6)


def check_sigmoid_backward(f: Callable) -> None:
    z, da = random_arrays(9, np.float64, (BATCH, 4), (BATCH, 4))
    a = reference.sigmoid_forward(z)
    numeric = numerical_gradient_of_output(lambda: reference.sigmoid_forward(z), z, da)
    again = reference.sigmoid_forward(a)
    expect_close(call(f, dict(da=da, a=a)), numeric, "dz", "the numerical gradient",
                 mistakes={"it applies the sigmoid again: a is already sigmoid(z), the forward output, so "
                           "sigmoid'(z) = a * (1 - a)": da * again * (1 - again)})
    expect_array(call(f, dict(da=da.astype(F32), a=a.astype(F32))), "dz", a.shape, F32)


def softmax_overflow(error: FloatingPointError) -> str:
    if "divide" in str(error):
        return ("log(0) for logits (1000, 0, -1000): a probability rounds to 0 before its log; compute the "
                "loss as log-sum-exp, m + log(sum exp(z - m)) - z_y")
    return ("exp overflows for logits as large as 1000: subtract each row's maximum before exp (the max-shift, "
            "which leaves the probabilities unchanged)")


def check_softmax_cross_entropy(f: Callable) -> None:
    logits, labels = random_arrays(10, F32, (BATCH, 4))[0], np.array([0, 3, 1, 1, 2, 0, 3])
    loss, dlogits = unpack(call(f, dict(logits=logits, labels=labels)), ("loss", "dlogits"))
    number(loss, "the loss")
    expect_array(dlogits, "dlogits", logits.shape, F32)
    logits = logits.astype(np.float64)
    loss, dlogits = unpack(call(f, dict(logits=logits, labels=labels)), ("loss", "dlogits"))
    loss, right = number(loss, "the loss"), reference.softmax_cross_entropy(logits, labels)[0]
    if abs(loss - BATCH * right) < 1e-9 * BATCH * right:
        raise Wrong(f"the loss is the sum over the batch ({BATCH} times the mean): the loss is the mean, divide by B")
    if not abs(loss - right) <= 1e-9 * right:
        raise Wrong(f"the loss is {loss:.6g}, expected {right:.6g} (the mean of -log p[i, label_i])")
    numeric = numerical_gradient(lambda: reference.softmax_cross_entropy(logits, labels)[0], logits)
    expect_close(dlogits, numeric, "dlogits", "the numerical gradient", batch=BATCH,
                 mistakes={"dlogits is onehot - p, the wrong sign: the gradient is (p - onehot) / B": -numeric})
    logits, labels = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]]), np.array([2, 1])
    loss, dlogits = unpack(call(f, dict(logits=logits, labels=labels), float_error=softmax_overflow),
                           ("loss", "dlogits"))
    loss = number(loss, "the loss")
    if not np.isfinite(loss):
        raise Wrong(f"the loss is {loss} for logits (1000, 0, -1000): " + softmax_overflow(FloatingPointError()))
    if not abs(loss - (2000.0 + np.log(3.0)) / 2) <= 1e-9:
        raise Wrong(f"the loss is {loss:.6g} for logits [[1000, 0, -1000], [0, 0, 0]] and labels [2, 1], "
                    f"expected (2000 + log 3) / 2 = {(2000.0 + np.log(3.0)) / 2:.6g}")
    expect_close(dlogits, np.array([[0.5, 0.0, -0.5], [1 / 6, -1 / 3, 1 / 6]]), "dlogits", "the hand-made answer",
                 batch=2, case="logits [[1000, 0, -1000], [0, 0, 0]] and labels [2, 1]")
