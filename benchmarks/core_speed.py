"""How fast is our core? Seconds per epoch and achieved GFLOP/s against this machine's matmul peak.

Three measurements, each printed as seconds, GFLOP/s and fraction of the peak:

(a) the float32 matrix-multiply peak: the median time of several large square products
    (2048^3 and 4096^3, ``np.matmul(a, b, out=c)``), 2 n^3 flops each; the best of the two
    medians is "the peak";
(b) our Adam, batch-128 epoch of ``[784, 128, 64, 10]`` over the 60,000 real MNIST training
    images (``common.nn.train.train``): median seconds per epoch over ``--epochs`` epochs after one
    warm-up epoch;
(c) one full-batch forward + backward pass (no optimizer step) of stage 02's network, the same
    ``[784, 128, 64, 10]``, on all 60,000 images: median of ``--repeats`` passes after a warm-up.
    The pass is ``common.nn.train.loss_and_gradient``, the one stage 02 trains with: all 60,000 rows
    in one pass.

Flops of one pass over N examples (both (b) and (c); only the matrix products are counted,
so everything else, Adam, softmax, ReLU, batch gathering, counts as overhead)::

    GFLOP = N * 2 * (forward MACs + weight-gradient MACs + input-gradient MACs except layer 1) / 1e9
          = 60,000 * 2 * (109,184 + 109,184 + 8,832) / 1e9 = 27.26

with forward MACs = weight-gradient MACs = 784*128 + 128*64 + 64*10 and input-gradient MACs
= 128*64 + 64*10 (nobody needs dLoss/dPixels).

Threads: ``--threads N`` sets OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS and
re-executes the interpreter so the BLAS starts with them; without it the environment is left as
it is and the thread count the BLAS uses is reported.

Run: python benchmarks/core_speed.py [--threads N] [--epochs 5] [--repeats 7] [--json PATH] [--quick]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from common import blas
from common.cli import positive_int, run_cli, writable_folder
from common.compute import training_gflop
from common.nn.architecture import Architecture

from harness import Parser, blas_threads, ensure_blas_threads, load_training_data, per_epoch_seconds

SIZES = (784, 128, 64, 10)
BATCH_SIZE = 128
PEAK_SIZES = (2048, 4096)


# --------------------------------------------------------------------------- flops

def network_gflop(sizes: Sequence[int] = SIZES, num_examples: int = 60_000) -> float:
    """Matmul GFLOP of one forward + backward pass over ``num_examples`` (``common.compute``)."""
    return training_gflop(Architecture(tuple(sizes)), num_examples)


# --------------------------------------------------------------------------- measurements

def matmul_peak(sizes: Sequence[int] = PEAK_SIZES, repeats: int = 5) -> dict:
    """Median seconds and GFLOP/s of ``repeats`` float32 ``n x n`` products for each ``n``.

    Returns ``{"gflops": best median GFLOP/s, "by_size": {n: {"seconds", "gflops"}}}``.
    """
    rng = np.random.default_rng(0)
    by_size = {}
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), dtype=np.float32)
        np.matmul(a, b, out=c)  # warm-up: threads started, pages touched
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            np.matmul(a, b, out=c)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        by_size[n] = {"seconds": seconds, "gflops": 2 * n ** 3 / seconds / 1e9}
    return {"gflops": max(entry["gflops"] for entry in by_size.values()), "by_size": by_size}


def epoch_times(x: np.ndarray, y: np.ndarray, epochs: int = 5, warmup: int = 1, seed: int = 0) -> list[float]:
    """Seconds of each of ``epochs`` Adam, batch-128 epochs of our core after ``warmup`` epochs."""
    from common.nn.network import Network
    from common.nn.optimizers import Adam
    from common.nn.train import train

    rng = np.random.default_rng(seed)
    network = Network.from_sizes(list(SIZES), rng)
    history = train(network, Adam(lr=1e-3), x, y, epochs=warmup + epochs, rng=rng,
                    batch_size=BATCH_SIZE, progress=False)
    return per_epoch_seconds(history)[warmup:]


def fullbatch_times(x: np.ndarray, y: np.ndarray, repeats: int = 7, seed: int = 0) -> list[float]:
    """Seconds of ``repeats`` full-batch forward + loss + backward passes over ``x (N, 784)``, ``y (N,)``
    (after one warm-up): ``common.nn.train.loss_and_gradient``, the pass stage 02 trains with."""
    from common.nn.network import Network
    from common.nn.train import loss_and_gradient

    network = Network.from_sizes(list(SIZES), np.random.default_rng(seed))

    def one_pass() -> float:
        start = time.perf_counter()
        loss_and_gradient(network, x, y)
        return time.perf_counter() - start

    one_pass()
    return [one_pass() for _ in range(repeats)]


def summarize(seconds: float, gflop: float, peak_gflops: float) -> dict:
    gflops = gflop / seconds
    return {"seconds": seconds, "gflop": gflop, "gflops": gflops, "peak_fraction": gflops / peak_gflops}


# --------------------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(description="Seconds per epoch and GFLOP/s of our core vs this machine's matmul peak.")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="BLAS threads (sets OPENBLAS/OMP/MKL_NUM_THREADS and re-executes); "
                             "default: leave the environment as it is")
    parser.add_argument("--epochs", type=positive_int, default=5,
                        help="measured Adam epochs after one warm-up epoch (default 5)")
    parser.add_argument("--repeats", type=positive_int, default=7,
                        help="full-batch passes and matmul products timed (default 7)")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the figures as JSON")
    parser.add_argument("--data-dir", default=None, help="MNIST directory (default: data/mnist)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, 2 repeats, 2048^3 only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.json:
        writable_folder(Path(args.json).parent, "--json")
    ensure_blas_threads(args.threads)
    blas.configure()
    from common.environment import describe_environment
    from common.files import atomic_write_json

    epochs, repeats, sizes = (1, 2, PEAK_SIZES[:1]) if args.quick else (args.epochs, args.repeats, PEAK_SIZES)
    threads = blas_threads()
    env = describe_environment()
    print(f"NumPy {np.__version__}, {env['blas']}, {threads} BLAS thread(s), {os.cpu_count()} CPU(s)")

    peak = matmul_peak(sizes, repeats=max(3, repeats // 2 + 1))
    for n, entry in peak["by_size"].items():
        print(f"matmul float32 {n}^3: {entry['seconds'] * 1e3:8.1f} ms  {entry['gflops']:6.1f} GFLOP/s")
    peak_gflops = peak["gflops"]

    x, y, _, _ = load_training_data(args.data_dir)
    gflop = network_gflop(SIZES, len(x))
    epochs_s = epoch_times(x, y, epochs=epochs)
    full_s = fullbatch_times(x, y, repeats=repeats)
    epoch = summarize(statistics.median(epochs_s), gflop, peak_gflops)
    full = summarize(statistics.median(full_s), gflop, peak_gflops)

    print(f"GFLOP per pass over {len(x):,} images = {len(x):,} * 2 * (forward + weight-gradient + "
          f"input-gradient MACs except layer 1) / 1e9 = {gflop:.2f}")
    rows = [("matmul peak (best median)", None, peak_gflops, 1.0),
            (f"Adam batch-{BATCH_SIZE} epoch (median of {epochs})", epoch["seconds"], epoch["gflops"],
             epoch["peak_fraction"]),
            (f"full-batch fwd+bwd, one pass (median of {repeats})", full["seconds"], full["gflops"],
             full["peak_fraction"])]
    print(f"{'what':42s} {'seconds':>9s} {'GFLOP/s':>9s} {'of peak':>8s}")
    for name, seconds, gflops, fraction in rows:
        shown = "" if seconds is None else f"{seconds:9.3f}"
        print(f"{name:42s} {shown:>9s} {gflops:9.1f} {100 * fraction:7.1f}%")
    print(f"epoch seconds: {', '.join(f'{s:.3f}' for s in epochs_s)}")

    if args.json:
        record = {
            "threads": threads,
            "matmul_peak_gflops": peak_gflops,
            "matmul_by_size": {str(n): entry for n, entry in peak["by_size"].items()},
            "gflop_per_epoch": gflop,
            "epoch": {**epoch, "all_seconds": epochs_s},
            "fullbatch": {**full, "all_seconds": full_s},
            "environment": {**env, "threads": threads},
        }
        atomic_write_json(args.json, record)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
