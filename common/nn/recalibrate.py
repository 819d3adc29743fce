"""After training, re-estimate every batch-normalization layer's running statistics on clean training digits.

During training a batch-norm layer keeps running averages of its batches' mean and variance, each step
moving them 10 % of the way to the new batch's values (``batchnorm.MOMENTUM``): at the end the last 22
batches carry 90 % of their weight, batches of *distorted* digits (rotated, zoomed, sheared, shifted) seen
while the weights were still moving. Prediction uses those averages on clean, centred test digits. Here one
more pass over the training images, undistorted and with the final weights, replaces them by the plain
average of every batch's statistics (the "precise batch norm" of Wu and Johnson, 2021, "Rethinking 'Batch'
in BatchNorm"), with clean digits because those are what the network will be asked about. No parameter
changes, no test or validation image is used; the pass is a forward pass alone, a fraction of an epoch.
"""
from __future__ import annotations

import time

import numpy as np

from common.nn.metrics import accuracy
from common.nn.network import Network
from common.nn.train import format_progress


def recalibrate_statistics(network: Network, x_train: np.ndarray, batch_size: int) -> int:
    """Set the running mean and variance of every batch-norm layer of ``network`` to the average, over the
    full batches of ``x_train (N, 784)`` in their stored order (the last partial one left out; all ``N`` in
    one batch if ``N < batch_size``), of the statistics each batch has in a training-mode forward pass: the
    layers then normalise with those batches' own statistics, as in training. Returns the number of batches.

    The average is computed the way the layers already update their averages: batch ``i`` (1-based) with
    momentum ``1 / i`` gives ``running = (1 - 1/i) running + (1/i) batch``, the mean of the first ``i``."""
    layers = [layer for layer in network.layers if getattr(layer, "batchnorm", False)]
    if not layers:
        raise ValueError("the network has no batch-normalization layer to recalibrate")
    batches = max(1, len(x_train) // batch_size)
    size = min(batch_size, len(x_train))
    saved_momenta = [layer.momentum for layer in layers]
    try:
        for index in range(batches):
            for layer in layers:
                layer.momentum = 1.0 / (index + 1)
            network.forward(x_train[index * size:(index + 1) * size], training=True)
    finally:
        for layer, momentum in zip(layers, saved_momenta):
            layer.momentum = momentum
    return batches


def recalibrated_record(network: Network, x_train: np.ndarray, batch_size: int,
                        eval_sets: dict[str, tuple[np.ndarray, np.ndarray]], record: dict,
                        progress: bool = False) -> dict:
    """:func:`recalibrate_statistics`, then the last epoch's history ``record`` with every eval set's accuracy
    measured again, the pass's time added to its ``train_seconds`` and ``seconds`` (the evaluation's to
    ``seconds``), and ``recalibrated_batches`` (how many batches the statistics now average). ``progress``: print the accuracies."""
    started = time.perf_counter()
    batches = recalibrate_statistics(network, x_train, batch_size)
    pass_seconds = time.perf_counter() - started
    updated = dict(record)
    for name, (x_eval, y_eval) in eval_sets.items():
        updated[f"{name}_accuracy"] = accuracy(network.predict(x_eval), y_eval)
    updated["recalibrated_batches"] = batches
    updated["train_seconds"] = record["train_seconds"] + pass_seconds
    updated["seconds"] = record["seconds"] + time.perf_counter() - started
    if progress:
        print(f"batch-norm statistics averaged over {batches} clean training batches:", flush=True)
        print(format_progress(updated, record["epoch"]), flush=True)
    return updated
