"""Where does a batch-128 Adam epoch go? Per-part time of our training step, and its matmul floor.

Trains ``[784, 128, 64, 10]`` with Adam on the real 60,000 MNIST images, exactly as
``common.nn.train.train`` does (same calls, same order), but with a clock around each part:

* ``gather``: ``x_train[indices]``, ``y_train[indices]``;
* ``forward <layer>`` and ``backward <layer>`` for every layer (the matrix products are inside
  the Dense rows; ReLU rows are pure element-wise work);
* ``loss``: softmax + cross-entropy and its gradient;
* ``optimizer``: the Adam step over all 109,386 parameters.

It then times the same epoch with *only* the nine matrix products (on freshly gathered
batches, the gather itself not counted): the floor that no amount of element-wise tuning can
go below. Medians over
``--epochs`` epochs after a warm-up one; the clocks add a little overhead of their own, so the
parts sum to slightly more than an untimed epoch. Writes ``results/epoch_profile.md`` unless
``--out -``.

Run: python benchmarks/profile_epoch.py [--epochs 15] [--threads N] [--out results/epoch_profile.md]
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from common.cli import positive_int, run_cli, writable_folder
from common.files import atomic_write_text
from common.paths import REPO_ROOT

from core_speed import (
    BATCH_SIZE,
    SIZES,
    _Parser,
    blas_threads,
    ensure_blas_threads,
    load_training_data,
    matmul_peak,
    network_gflop,
)


def timed_epoch(network, optimizer, parameters, x, y, rng) -> dict[str, float]:
    """One epoch of ``train``'s step with a clock around each part; seconds per part."""
    from common.nn.loss import softmax_cross_entropy
    from common.nn.train import iterate_minibatches

    clock = time.perf_counter
    names = [f"{index} {type(layer).__name__}" for index, layer in enumerate(network.layers)]
    parts = {"gather": 0.0, **{f"forward {n}": 0.0 for n in names}, "loss": 0.0,
             **{f"backward {n}": 0.0 for n in reversed(names)}, "optimizer": 0.0}
    for indices in iterate_minibatches(len(x), BATCH_SIZE, rng):
        start = clock()
        x_batch, y_batch = x[indices], y[indices]
        parts["gather"] += clock() - start
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            out = x_batch
            for name, layer in zip(names, network.layers):
                start = clock()
                out = layer.forward(out, True)
                parts[f"forward {name}"] += clock() - start
            start = clock()
            _, grad = softmax_cross_entropy(out, y_batch)
            parts["loss"] += clock() - start
            for name, layer in zip(reversed(names), reversed(network.layers)):
                start = clock()
                grad = layer.backward(grad)
                parts[f"backward {name}"] += clock() - start
                if grad is None:  # the first Dense layer skips dLoss/dPixels
                    break
            start = clock()
            optimizer.step(parameters)
            parts["optimizer"] += clock() - start
    return parts


def matmul_only_epoch(network, x, y, rng) -> float:
    """Seconds of one epoch of just the step's nine matrix products (the batch gather not counted)."""
    from common.nn.layers import Dense
    from common.nn.train import iterate_minibatches

    weights = [layer.params["W"] for layer in network.layers if isinstance(layer, Dense)]
    grads = [np.empty_like(w) for w in weights]
    seconds = 0.0
    for indices in iterate_minibatches(len(x), BATCH_SIZE, rng):
        acts = [x[indices]]
        start = time.perf_counter()
        for w in weights:
            acts.append(acts[-1] @ w)
        delta = acts[-1]
        for layer in range(len(weights) - 1, -1, -1):
            np.matmul(acts[layer].T, delta, out=grads[layer])
            if layer:
                delta = delta @ weights[layer].T
        seconds += time.perf_counter() - start
    return seconds


def profile(x, y, epochs: int, seed: int = 0) -> dict:
    from common.nn.network import Network
    from common.nn.optimizers import Adam

    rng = np.random.default_rng(seed)
    network = Network.from_sizes(list(SIZES), rng)
    optimizer = Adam(lr=1e-3)
    parameters = network.parameters(fused="all")  # what train() hands Adam without weight decay
    runs = [timed_epoch(network, optimizer, parameters, x, y, rng) for _ in range(epochs + 1)][1:]
    floors = [matmul_only_epoch(network, x, y, rng) for _ in range(epochs + 1)][1:]
    parts = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    return {"parts": parts, "total": statistics.median(sum(run.values()) for run in runs),
            "matmul_floor": statistics.median(floors)}


def render(result: dict, peak: float, gflop: float, threads: int, epochs: int, x_megabytes: float) -> str:
    from tabulate import tabulate

    from common.environment import describe_environment

    env = describe_environment()

    total = result["total"]
    rows = [[name, f"{1e3 * seconds:.1f}", f"{100 * seconds / total:.1f} %"]
            for name, seconds in result["parts"].items()]
    rows.append(["**sum of the parts**", f"{1e3 * total:.1f}", "100 %"])
    table = tabulate(rows, headers=["part of the step (x 469 per epoch)", "ms per epoch", "share"],
                     tablefmt="github", disable_numparse=True)
    parts = result["parts"]
    dense = sum(s for n, s in parts.items() if "Dense" in n)
    elementwise = total - dense - parts["gather"]
    floor = result["matmul_floor"]
    lines = [
        "# Where a batch-128 Adam epoch goes",
        "",
        f"`[784, 128, 64, 10]` ReLU, softmax cross-entropy, Adam, batch {BATCH_SIZE}, the real 60,000 "
        f"MNIST training images; medians of {epochs} epochs after a warm-up one, {threads} BLAS "
        f"thread(s). Generated by `python benchmarks/profile_epoch.py`; do not edit.",
        "",
        table,
        "",
        f"- Dense layers (their matrix products, bias adds and bias sums): {1e3 * dense:.0f} ms; "
        f"the nine matrix products alone take {1e3 * floor:.0f} ms an epoch "
        f"({gflop / floor:.0f} GFLOP/s, {100 * gflop / floor / peak:.0f} % of this run's matmul peak "
        f"of {peak:.0f} GFLOP/s).",
        f"- The gather, {1e3 * parts['gather']:.0f} ms, copies 128 random rows of 3 KB each out of "
        f"the {x_megabytes:.0f} MB training array per step: main-memory traffic, on one core.",
        f"- Everything that is not a matrix product or the gather (optimizer, loss, activations): "
        f"{1e3 * elementwise:.0f} ms, {100 * elementwise / total:.0f} % of the epoch. NumPy runs it "
        f"on one core while the BLAS uses all of them, so it is what keeps the epoch from the peak.",
        f"- With nothing but the matrix products the epoch would reach {100 * gflop / floor / peak:.0f} % "
        f"of the peak; the whole step reaches {100 * gflop / total / peak:.0f} % (with the clocks' own "
        f"cost).",
        "",
        f"Environment: {env['date']}, commit {env['commit']}, Python {env['python']}, NumPy {env['numpy']} "
        f"({env['blas']}), {env['cpu_count']} CPU(s).",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(description="Per-part time of our batch-128 Adam epoch and its matmul floor.")
    parser.add_argument("--epochs", type=positive_int, default=15, help="measured epochs after a warm-up (default 15)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="BLAS threads (sets the env and re-executes); default: leave as is")
    parser.add_argument("--out", default=str(REPO_ROOT / "results" / "epoch_profile.md"),
                        help="markdown report path, or - for stdout only (default results/epoch_profile.md)")
    parser.add_argument("--data-dir", default=None, help="MNIST directory (default: data/mnist)")
    args = parser.parse_args(argv)
    if args.out != "-":
        writable_folder(Path(args.out).parent, "--out")
    ensure_blas_threads(args.threads)

    x, y, _, _ = load_training_data(args.data_dir)
    peak = matmul_peak(repeats=3)["gflops"]
    result = profile(x, y, args.epochs)
    report = render(result, peak, network_gflop(SIZES, len(x)), blas_threads(), args.epochs, x.nbytes / 1e6)
    print(report)
    if args.out != "-":
        atomic_write_text(args.out, report)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
