"""The one training loop: any network, any optimizer, full-batch or shuffled mini-batches.

``train`` returns the per-epoch history; it stops with :class:`DivergenceError` (one line,
naming the epoch) as soon as the loss is NaN or infinite, or its epoch mean is more than
``BLOWUP_FACTOR`` times the starting loss, instead of training on garbage.
``loss_and_gradient`` is one step's forward and backward pass, done in cache-sized blocks of
rows when the batch is large (full-batch gradient descent).
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
from common.nn.optimizers import Optimizer
from common.nn.schedules import Schedule

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]  # (B, 784) -> (B, 784)

# Rows per forward/backward block. At 4,096 rows every activation of [784, 128, 64, 10] is at
# most 2 MB and stays in the CPU cache; one pass over all 60,000 rows at once builds 30 MB
# arrays that go through main memory several times (results/benchmark.md measures both ways).
BLOCK_ROWS = 4096

# A run whose mean epoch loss exceeds this multiple of its starting loss has blown up, even if
# every number is still finite (a learning rate far too large can send the loss to 1e20 and
# leave a network that answers one class). Normal training only ever lowers the loss.
BLOWUP_FACTOR = 100.0


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
                      block_rows: int = BLOCK_ROWS) -> float:
    """Mean loss of the batch; leaves its gradient in the network's ``grads`` (``flat_grads``).

    ``x_batch (B, D)``, ``y_batch (B,)``. A batch larger than ``block_rows`` is processed in
    blocks: the mean over B rows is the sum over blocks of (block rows / B) x the block's mean,
    so the loss and the gradient are the batch's, up to float rounding
    (``docs/math.md#gradient-descent-and-mini-batches``).
    """
    num_rows = len(y_batch)
    if num_rows <= block_rows:
        logits = network.forward(x_batch, training=True)
        loss, dlogits = softmax_cross_entropy(logits, y_batch)
        network.backward(dlogits)
        return loss
    gradient_sum = np.zeros_like(network.flat_grads)
    loss_sum = 0.0
    for start in range(0, num_rows, block_rows):
        x_block, y_block = x_batch[start:start + block_rows], y_batch[start:start + block_rows]
        weight = len(y_block) / num_rows
        logits = network.forward(x_block, training=True)
        loss, dlogits = softmax_cross_entropy(logits, y_block)
        dlogits *= dlogits.dtype.type(weight)
        network.backward(dlogits)
        gradient_sum += network.flat_grads
        loss_sum += loss * weight
    network.flat_grads[...] = gradient_sum
    return loss_sum


def train(network: Network, optimizer: Optimizer, x_train: np.ndarray, y_train: np.ndarray, *,
          epochs: int, rng: np.random.Generator, batch_size: int | None = None,
          eval_sets: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
          eval_every: int = 1, lr_schedule: Schedule | None = None, augment: Augment | None = None,
          progress: bool = True, progress_label: str = "epoch") -> list[dict]:
    """Train ``network`` in place and return its history, one dict per epoch.

    ``x_train (N, D)`` in the network's dtype, ``y_train (N,)`` ints. ``batch_size=None`` means
    full batch. ``eval_sets`` maps a name (``"train"``, ``"test"``, ``"val"``) to ``(X, y)``;
    their accuracies are measured every ``eval_every`` epochs and at the last one (other epochs
    record ``None``). Each history entry has ``epoch`` (1-based), ``loss`` (mean training loss
    over the epoch's examples), ``lr``, ``<name>_accuracy`` for each eval set, ``train_seconds``
    (cumulative time spent training) and ``seconds`` (cumulative wall-clock, evaluation included).
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
    # Without weight decay every parameter is treated alike: hand the optimizer one long vector.
    parameters = network.parameters(fused="all" if not optimizer.weight_decay else True)
    history: list[dict] = []
    started = time.perf_counter()
    train_seconds = 0.0
    limit = BLOWUP_FACTOR * starting_loss(network, x_train, y_train)

    for epoch in range(1, epochs + 1):
        if lr_schedule is not None:
            optimizer.lr = float(lr_schedule(epoch - 1))
        epoch_start = time.perf_counter()
        loss_sum = train_one_epoch(network, optimizer, parameters, x_train, y_train, batch_size, rng, augment,
                                   f"{progress_label} {epoch}")
        train_seconds += time.perf_counter() - epoch_start
        if loss_sum / num_examples > limit:
            raise DivergenceError(
                f"training blew up at {progress_label} {epoch}: mean loss {loss_sum / num_examples:.3g} is over "
                f"{BLOWUP_FACTOR:g}x the starting loss {limit / BLOWUP_FACTOR:.3g} with learning rate "
                f"{optimizer.lr:g}; try a lower learning rate (--lr)")

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


def starting_loss(network: Network, x_train: np.ndarray, y_train: np.ndarray, rows: int = BLOCK_ROWS) -> float:
    """The loss of the untrained network on the first ``rows`` training examples (no update, no
    randomness consumed), floored at ``log(K)``, the loss of a uniform guess over ``K`` classes.
    Infinite if the untrained network already overflows (then no blow-up check is possible)."""
    with np.errstate(all="ignore"):
        logits = network.forward(x_train[:rows], training=False)
        loss, _ = softmax_cross_entropy(logits, y_train[:rows])
    return max(loss, math.log(logits.shape[1])) if math.isfinite(loss) else math.inf


def train_one_epoch(network: Network, optimizer: Optimizer, parameters: list, x_train: np.ndarray,
                    y_train: np.ndarray, batch_size: int, rng: np.random.Generator, augment: Augment | None,
                    where: str) -> float:
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
                loss = loss_and_gradient(network, x_batch, y_batch)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss {loss}")
                optimizer.step(parameters)
            except FloatingPointError as error:
                raise DivergenceError(
                    f"training diverged at {where} (batch {batch}): {error} with learning "
                    f"rate {optimizer.lr:g}; try a lower learning rate (--lr)") from None
        loss_sum += loss * len(y_batch)
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
