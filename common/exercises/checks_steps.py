"""Checks for the training steps (stages 01, 03, 04 and 05): gradient descent, mini-batches,
momentum, RMSprop, Adam and decoupled weight decay.

An optimizer step updates its parameter and state arrays in place and returns nothing; each check
takes a few steps by hand-made numbers (changing the learning rate between steps, as a schedule
does) and says which array went wrong first, and how.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from common.exercises.grading import Wrong, call, expect_close, expect_updated, random_arrays
from common.nn import reference

F32 = np.float32


def check_sgd_step(f: Callable) -> None:
    param, grad = np.array([1.0, 2.0, -3.0]), np.array([0.5, -1.0, 2.0])
    start = param.copy()
    call(f, dict(param=param, grad=grad, lr=0.1), may_change=("param",))
    want = start - 0.1 * grad
    expect_updated(param, start, want, "param", "param -= lr * grad")
    expect_close(param, want, "param", "the hand-made answer", case="param = [1, 2, -3], grad = [0.5, -1, 2], lr = 0.1",
                 mistakes={"it moves param up the gradient: subtract lr * grad": start + 0.1 * grad,
                           "it steps by grad, without lr: param -= lr * grad": start - grad})
    param, grad = random_arrays(20, F32, (5, 3), (5, 3))
    start = param.copy()
    call(f, dict(param=param, grad=grad, lr=0.05), may_change=("param",))
    expect_close(param, start - F32(0.05) * grad, "param", "the reference answer", rtol=1e-6)


def draw_batches(f: Callable, num_examples: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The learner's batches for one epoch, each checked to be an array of example indices."""

    def epoch(num_examples: int, batch_size: int, rng: np.random.Generator) -> list:
        batches = f(num_examples, batch_size, rng)
        if batches is None:
            raise Wrong("it returns None: yield the batches (or return a list of them)")
        return list(batches)

    batches = call(epoch, dict(num_examples=num_examples, batch_size=batch_size, rng=rng))
    out = []
    for i, batch in enumerate(batches):
        if isinstance(batch, slice) and batch == slice(None):
            batch = np.arange(num_examples)  # all of them, as the training loop's full batch
        batch = np.asarray(batch)
        if batch.ndim != 1 or batch.dtype.kind not in "iu":
            raise Wrong(f"batch {i} is not a 1-d array of example indices (integers): got {batch.dtype} of "
                        f"shape {batch.shape}")
        if batch.size and (batch.min() < 0 or batch.max() >= num_examples):
            raise Wrong(f"batch {i} holds an index outside 0 .. {num_examples - 1}")
        out.append(batch)
    return out


def expect_one_epoch(batches: list[np.ndarray], num_examples: int, batch_size: int) -> np.ndarray:
    """The batches are consecutive slices of one order of every example; returns that order."""
    sizes, want = [len(batch) for batch in batches], [batch_size] * (num_examples // batch_size)
    want += [num_examples % batch_size] if num_examples % batch_size else []
    if sizes == want[:-1] and len(want) > 1:
        raise Wrong(f"the last, short batch is missing: {num_examples} examples in batches of {batch_size} are "
                    f"{' + '.join(map(str, want))}; keep the last {want[-1]}, so every example is seen each epoch")
    if sizes != want:
        raise Wrong(f"{num_examples} examples in batches of {batch_size} came as batches of {sizes}, expected "
                    f"{want}: consecutive slices of one shuffled order, the last one shorter")
    order = np.concatenate(batches)
    counts = np.bincount(order, minlength=num_examples)
    if np.any(counts != 1):
        twice, never = int(np.argmax(counts > 1)), int(np.argmax(counts == 0))
        raise Wrong(f"example {twice} comes {counts[twice]} times and example {never} never: every example once "
                    "per epoch, so draw without replacement (a permutation)")
    return order


def check_minibatches(f: Callable) -> None:
    order = expect_one_epoch(draw_batches(f, 10, 4, np.random.default_rng(0)), 10, 4)
    if np.array_equal(order, np.arange(10)):
        raise Wrong("the examples come in their original order 0, 1, 2, ...: shuffle them at every epoch, "
                    "with rng.permutation(num_examples)")
    rng = np.random.default_rng(1)
    first = expect_one_epoch(draw_batches(f, 1000, 128, rng), 1000, 128)
    second = expect_one_epoch(draw_batches(f, 1000, 128, rng), 1000, 128)
    if np.array_equal(first, second):
        raise Wrong("two epochs drawn from the same rng come in the same order: draw a fresh order from the rng "
                    "given at each call, not from a new generator or a fixed seed")
    if not np.array_equal(first, np.concatenate(list(reference.minibatches(1000, 128, np.random.default_rng(1))))):
        raise Wrong("the batches are a fair shuffle, but not the one rng.permutation(num_examples) draws: draw the "
                    "order with that one call, as the training loop does, so your epochs are the reference's")
    full = draw_batches(f, 5, 8, np.random.default_rng(2))
    if len(full) != 1 or sorted(full[0].tolist()) != list(range(5)):
        raise Wrong("with batch_size >= num_examples (full batch), yield one batch of all the examples")


def check_momentum_step(f: Callable) -> None:
    param, grad, velocity = np.array([1.0, -2.0, 0.5]), np.array([0.5, 1.0, -2.0]), np.zeros(3)
    start = param.copy()
    call(f, dict(param=param, grad=grad, velocity=velocity, lr=0.05), may_change=("param", "velocity"))
    expect_updated(param, start, start - 0.05 * grad, "param", "param -= lr * velocity")
    expect_close(param, start - 0.05 * grad, "param after the first step", "the hand-made answer",
                 case="param = [1, -2, 0.5], grad = [0.5, 1, -2], lr = 0.05 and velocity 0")
    expect_updated(velocity, np.zeros(3), grad, "velocity", "velocity[...] = momentum * velocity + grad")
    other_form = ("velocity holds {}lr * grad: in this form the velocity sums the gradients, v = momentum * v + grad, "
                  "and the step is param -= lr * v, so that a new lr from a schedule acts at once")
    expect_close(velocity, grad, "velocity after the first step", "the hand-made answer",
                 case="grad = [0.5, 1, -2] and velocity 0",
                 mistakes={other_form.format(""): 0.05 * grad, other_form.format("-"): -0.05 * grad,
                           "velocity after one step is (1 - momentum) * grad: this form adds grad itself, "
                           "v = momentum * v + grad": 0.1 * grad})
    grad2, step1, velocity1 = np.array([1.0, -1.0, 0.5]), param.copy(), velocity.copy()
    call(f, dict(param=param, grad=grad2, velocity=velocity, lr=0.02, momentum=0.5), may_change=("param", "velocity"))
    expect_close(velocity, 0.5 * velocity1 + grad2, "velocity after a second step with momentum 0.5",
                 "the hand-made answer", mistakes={"it ignores the momentum argument (0.5 here) and uses 0.9":
                                                   0.9 * velocity1 + grad2})
    expect_close(param, step1 - 0.02 * (0.5 * velocity1 + grad2), "param after a second step with lr 0.02",
                 "the hand-made answer", mistakes={"it steps by the previous lr: use the lr given at each step, "
                                                   "a schedule changes it": step1 - 0.05 * (0.5 * velocity1 + grad2)})


def check_rmsprop_step(f: Callable) -> None:
    param, grad, square_avg = np.array([1.0, -2.0, 0.5]), np.array([0.5, -2.0, 1e-9]), np.zeros(3)
    start = param.copy()
    call(f, dict(param=param, grad=grad, square_avg=square_avg, lr=0.01), may_change=("param", "square_avg"))
    s = 0.1 * grad**2
    expect_updated(square_avg, np.zeros(3), s, "square_avg", "square_avg[...] = rho * square_avg + (1 - rho) * grad**2")
    expect_close(square_avg, s, "square_avg after the first step", "the hand-made answer",
                 mistakes={"square_avg after one step is grad**2: the running mean weighs the new square by "
                           "(1 - rho)": grad**2})
    want = start - 0.01 * grad / (np.sqrt(s) + 1e-8)
    expect_updated(param, start, want, "param", "param -= lr * grad / (np.sqrt(square_avg) + eps)")
    expect_close(param, want, "param after the first step", "the hand-made answer", rtol=1e-9,
                 mistakes={"eps goes outside the square root: grad / (sqrt(square_avg) + eps)":
                           start - 0.01 * grad / np.sqrt(s + 1e-8)})
    grad2, s1, step1 = np.array([1.0, 1.0, -1.0]), s.copy(), param.copy()
    call(f, dict(param=param, grad=grad2, square_avg=square_avg, lr=0.02, rho=0.5), may_change=("param", "square_avg"))
    s2 = 0.5 * s1 + 0.5 * grad2**2
    expect_close(square_avg, s2, "square_avg after a second step with rho 0.5", "the hand-made answer")
    expect_close(param, step1 - 0.02 * grad2 / (np.sqrt(s2) + 1e-8), "param after a second step with lr 0.02",
                 "the hand-made answer", rtol=1e-9)


def adam_params(start: np.ndarray, grads: list[np.ndarray], lr: float, shift: int = 0, correct_m: bool = True,
                correct_v: bool = True, eps_inside: bool = False) -> list[np.ndarray]:
    """The parameter after each of Adam's steps, right (the defaults) or with one of the usual slips:
    the correction's power off by ``shift``, a correction left out, eps inside the square root."""
    param, m, v, out = start.copy(), np.zeros_like(start), np.zeros_like(start), []
    with np.errstate(all="ignore"):
        for t, grad in enumerate(grads, start=1):
            m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad**2
            m_hat = m / (1 - 0.9 ** (t + shift)) if correct_m else m
            v_hat = v / (1 - 0.999 ** (t + shift)) if correct_v else v
            param = param - lr * m_hat / (np.sqrt(v_hat + 1e-8) if eps_inside else np.sqrt(v_hat) + 1e-8)
            out.append(param)
    return out


ADAM_MISTAKES = {
    "the bias correction is missing: divide m by 1 - beta1**t and v by 1 - beta2**t (without it the first "
    "step moves each weight by about 3.16 lr instead of lr)": dict(correct_m=False, correct_v=False),
    "the bias correction uses the power t + 1: step t (counted from 1) divides by 1 - beta1**t and "
    "1 - beta2**t": dict(shift=1),
    "the bias correction uses the power t - 1: step t (counted from 1) divides by 1 - beta1**t and "
    "1 - beta2**t": dict(shift=-1),
    "only m is bias-corrected: v_hat = v / (1 - beta2**t) too": dict(correct_v=False),
    "only v is bias-corrected: m_hat = m / (1 - beta1**t) too": dict(correct_m=False),
    "eps goes outside the square root: m_hat / (sqrt(v_hat) + eps)": dict(eps_inside=True),
}


def adam_division(error: FloatingPointError) -> str:
    return (f"NumPy reports {error} at step t = 1: is the correction 1 - beta1**(t - 1), which is 0 there? "
            "Step t (counted from 1) divides by 1 - beta1**t and 1 - beta2**t")


def check_adam_step(f: Callable) -> None:
    start = np.array([1.0, -1.0, 0.5, 2.0])
    grads = [np.array([0.1, -2.0, 1e-9, 3.0]), np.array([0.2, -1.0, 1e-9, -3.0]), np.array([-0.1, 0.5, 2e-9, 1.0])]
    right = adam_params(start, grads, 0.01)
    wrong = {message: adam_params(start, grads, 0.01, **slip) for message, slip in ADAM_MISTAKES.items()}
    param, m, v = start.copy(), np.zeros(4), np.zeros(4)
    for t, grad in enumerate(grads, start=1):
        m_before, v_before, param_before = m.copy(), v.copy(), param.copy()
        call(f, dict(param=param, grad=grad, m=m, v=v, t=t, lr=0.01), may_change=("param", "m", "v"),
             float_error=adam_division if t == 1 else None)
        m_want, v_want = 0.9 * m_before + 0.1 * grad, 0.999 * v_before + 0.001 * grad**2
        for after, before, want, name, how in ((param, param_before, right[t - 1], "param", "param -= ..."),
                                               (m, m_before, m_want, "m", "m[...] = beta1 * m + (1 - beta1) * grad"),
                                               (v, v_before, v_want, "v", "v[...] = beta2 * v + (1 - beta2) * grad**2")):
            expect_updated(after, before, want, name, how)
        hat = {f"{name} holds the bias-corrected {name}_hat after the step: keep {name} itself uncorrected "
               f"({name}_hat is a new array, for this step only)": want / (1 - beta**t)
               for name, want, beta in (("m", m_want, 0.9), ("v", v_want, 0.999))}
        expect_close(m, m_want, f"m after step {t}", "the hand-made answer", rtol=1e-9, mistakes=hat)
        expect_close(v, v_want, f"v after step {t}", "the hand-made answer", rtol=1e-9, mistakes=hat)
        expect_close(param, right[t - 1], f"param after step {t}", "the hand-made answer", rtol=1e-9,
                     mistakes={message: params[t - 1] for message, params in wrong.items()})
    param, grad, m, v = random_arrays(21, F32, (6, 5), (6, 5), (6, 5), (6, 5))
    m, v, want = 0.1 * m, np.abs(v) * 0.01, param.copy()
    m_ref, v_ref = m.copy(), v.copy()
    reference.adam_step(want, grad, m_ref, v_ref, 7, 0.001, 0.8, 0.99, 1e-6)
    call(f, dict(param=param, grad=grad, m=m, v=v, t=7, lr=0.001, beta1=0.8, beta2=0.99, eps=1e-6),
         may_change=("param", "m", "v"))
    expect_close(param, want, "param after step 7 with beta1 0.8, beta2 0.99, eps 1e-6", "the reference answer",
                 rtol=1e-5)


def check_decay_weights(f: Callable) -> None:
    param = np.array([1.0, -2.0, 4.0])
    start = param.copy()
    call(f, dict(param=param, lr=0.1, weight_decay=0.5), may_change=("param",))
    want = start * (1 - 0.1 * 0.5)
    expect_updated(param, start, want, "param", "param -= lr * weight_decay * param")
    expect_close(param, want, "param", "the hand-made answer", case="param = [1, -2, 4], lr = 0.1, weight_decay = 0.5",
                 mistakes={"the decay leaves out lr: param -= lr * weight_decay * param (the decay follows the "
                           "schedule's lr)": start * (1 - 0.5),
                           "the decay grows the weights: param -= lr * weight_decay * param": start * (1 + 0.05)})
