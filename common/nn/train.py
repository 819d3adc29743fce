"""The one training loop: any network, any optimizer, full-batch or shuffled mini-batches.

``train`` returns the per-epoch history; it stops with :class:`DivergenceError` (one line,
naming the epoch) as soon as the loss is NaN or infinite, or its epoch mean is more than
``BLOWUP_FACTOR`` times the starting loss, instead of training on garbage.
``train_step`` is one step: forward, loss, backward, update (Textbook: ``reference`` has each part).
"""
from __future__ import annotations

import math
import sys
import time
from typing import Callable, Mapping

import numpy as np

from common.nn.errors import DivergenceError, UserError
from common.nn.loss import softmax_cross_entropy
from common.nn.metrics import accuracy
from common.nn.network import Network
from common.nn.optimizers import Optimizer, ParamGroup
from common.nn.schedules import Schedule

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]  # (B, 784) -> (B, 784)
Loss = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]  # (logits, labels) -> (loss, dlogits)

# A run whose mean epoch loss exceeds this multiple of its starting loss has blown up, even if
# every number is still finite (a learning rate far too large can send the loss to 1e20 and
# leave a network that answers one class). Normal training does let the loss rise now and then
# (a step can overshoot, a noisy mini-batch can point the wrong way), but by a few per cent, not
# a hundredfold.
BLOWUP_FACTOR = 100.0

# The starting loss (for the blow-up check) is measured on this many training examples.
STARTING_LOSS_ROWS = 4096


def iterate_minibatches(num_examples: int, batch_size: int, rng: np.random.Generator):
    """Yield index arrays covering ``range(num_examples)`` once, in a fresh random order.

    Sampling is without replacement; the last, smaller batch is kept. ``batch_size >= N`` yields
    one batch of all examples in their original order (full-batch gradient descent).
    """
    if batch_size >= num_examples:
        yield slice(None)
        return
    order = rng.permutation(num_examples)
    for start in range(0, num_examples, batch_size):
        yield order[start:start + batch_size]


def loss_and_gradient(network: Network, x_batch: np.ndarray, y_batch: np.ndarray,
                      loss: Loss = softmax_cross_entropy) -> float:
    """Mean loss of the batch ``x_batch (B, D)``, ``y_batch (B,)``; leaves its gradient in the
    network's ``grads`` (``flat_grads``)."""
    logits = network.forward(x_batch, training=True)
    value, dlogits = loss(logits, y_batch)
    network.backward(dlogits)
    return value


def train_step(network: Network, optimizer: Optimizer, groups: list[ParamGroup], x_batch: np.ndarray,
               y_batch: np.ndarray, loss: Loss = softmax_cross_entropy) -> float:
    """One step of (mini-batch) gradient descent: forward, loss, backward, then the optimizer's update
    of every parameter in ``groups``. Returns the batch's mean loss (before the update)."""
    value = loss_and_gradient(network, x_batch, y_batch, loss)
    if not math.isfinite(value):
        raise FloatingPointError(f"loss {value}")
    optimizer.step(groups)
    return value


def train(network: Network, optimizer: Optimizer, x_train: np.ndarray, y_train: np.ndarray, *,
          epochs: int, rng: np.random.Generator, batch_size: int | None = None,
          eval_sets: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
          eval_every: int = 1, lr_schedule: Schedule | None = None, augment: Augment | None = None,
          loss: Loss = softmax_cross_entropy, progress: bool = True, progress_label: str = "epoch") -> list[dict]:
    """Train ``network`` in place and return its history, one dict per epoch.

    ``x_train (N, D)`` in the network's dtype, ``y_train (N,)`` ints. ``batch_size=None`` means
    full batch. ``eval_sets`` maps a name (``"train"``, ``"test"``, ``"val"``) to ``(X, y)``;
    their accuracies are measured every ``eval_every`` epochs and at the last one (other epochs
    record ``None``). Each history entry has ``epoch`` (1-based), ``loss`` (mean training loss
    over the epoch's examples), ``lr``, ``<name>_accuracy`` for each eval set, ``train_seconds``
    (cumulative time spent training) and ``seconds`` (cumulative wall-clock, evaluation included).
    ``loss``: the loss and its gradient (softmax cross-entropy; the textbook's or a learner's can
    stand in).
    """
    if epochs < 1:
        raise UserError(f"epochs must be at least 1, got {epochs}")
    if eval_every < 1:
        raise UserError(f"eval_every must be at least 1, got {eval_every}")
    num_examples = len(x_train)
    if num_examples == 0 or len(y_train) != num_examples:
        raise UserError(f"need a non-empty training set with one label per image, got "
                        f"{num_examples} images and {len(y_train)} labels")
    batch_size = num_examples if batch_size is None else batch_size
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    eval_sets = dict(eval_sets or {})
    groups = network.parameter_groups(decay_weights=optimizer.weight_decay > 0)
    history: list[dict] = []
    started = time.perf_counter()
    train_seconds = 0.0
    limit = BLOWUP_FACTOR * starting_loss(network, x_train, y_train)

    for epoch in range(1, epochs + 1):
        if lr_schedule is not None:
            optimizer.lr = float(lr_schedule(epoch - 1))
        epoch_start = time.perf_counter()
        loss_sum = train_one_epoch(network, optimizer, groups, x_train, y_train, batch_size, rng, augment,
                                   f"{progress_label} {epoch}", loss)
        train_seconds += time.perf_counter() - epoch_start
        if loss_sum / num_examples > limit:
            raise DivergenceError(
                f"training blew up at {progress_label} {epoch}: mean loss {loss_sum / num_examples:.3g} is over "
                f"{BLOWUP_FACTOR:g}x the starting loss {limit / BLOWUP_FACTOR:.3g} with learning rate "
                f"{optimizer.lr:g}; try a lower learning rate")

        record: dict = {"epoch": epoch, "loss": loss_sum / num_examples, "lr": optimizer.lr}
        evaluate_now = epoch % eval_every == 0 or epoch == epochs
        for name, (x_eval, y_eval) in eval_sets.items():
            record[f"{name}_accuracy"] = accuracy(network.predict(x_eval), y_eval) if evaluate_now else None
        record["train_seconds"] = train_seconds
        record["seconds"] = time.perf_counter() - started
        history.append(record)
        if progress and evaluate_now:
            print(format_progress(record, epochs, progress_label), flush=True, file=sys.stdout)
    return history


def starting_loss(network: Network, x_train: np.ndarray, y_train: np.ndarray, rows: int = STARTING_LOSS_ROWS) -> float:
    """The loss of the untrained network on the first ``rows`` training examples (no update, no
    randomness consumed), floored at ``log(K)``, the loss of a uniform guess over ``K`` classes.
    Infinite if the untrained network already overflows (then no blow-up check is possible)."""
    with np.errstate(all="ignore"):
        logits = network.forward(x_train[:rows], training=False)
        loss, _ = softmax_cross_entropy(logits, y_train[:rows])
    return max(loss, math.log(logits.shape[1])) if math.isfinite(loss) else math.inf


def train_one_epoch(network: Network, optimizer: Optimizer, groups: list[ParamGroup], x_train: np.ndarray,
                    y_train: np.ndarray, batch_size: int, rng: np.random.Generator, augment: Augment | None,
                    where: str, loss: Loss = softmax_cross_entropy) -> float:
    """One pass over the training set in shuffled mini-batches; returns the summed (not mean) batch loss.

    Overflow or NaN anywhere in a step means the run has diverged: :class:`DivergenceError`, naming
    ``where`` (e.g. ``"epoch 3"``) and the batch, is raised at once instead of training on garbage.
    """
    loss_sum = 0.0
    for batch, indices in enumerate(iterate_minibatches(len(x_train), batch_size, rng), start=1):
        x_batch, y_batch = x_train[indices], y_train[indices]
        if augment is not None:
            x_batch = augment(x_batch, rng)
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            try:
                value = train_step(network, optimizer, groups, x_batch, y_batch, loss)
            except FloatingPointError as error:
                raise DivergenceError(
                    f"training diverged at {where} (batch {batch}): {error} with learning "
                    f"rate {optimizer.lr:g}; try a lower learning rate") from None
        loss_sum += value * len(y_batch)
    return loss_sum


def format_progress(record: dict, epochs: int, label: str = "epoch") -> str:
    """One line such as ``epoch  3/20  loss 0.1234  train 97.10 %  test 96.80 %  4.1 s``."""
    width = len(str(epochs))
    parts = [f"{label} {record['epoch']:>{width}}/{epochs}", f"loss {record['loss']:.4f}"]
    for key, value in record.items():
        if key.endswith("_accuracy") and value is not None:
            parts.append(f"{key[:-len('_accuracy')]} {100 * value:6.2f} %")
    parts.append(f"{record['seconds']:6.1f} s")
    return "  ".join(parts)
