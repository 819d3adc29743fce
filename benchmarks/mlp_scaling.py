"""How our epoch's cost grows: seconds per epoch of ours and PyTorch against hidden width and batch size.

Two axes, Adam (lr 1e-3, betas 0.9 / 0.999, eps 1e-8), softmax cross-entropy, float32, the real
60,000 MNIST training images in [0, 1]:

* width: ``[784, w, w, 10]`` for w = 128, 256, 512, 1024, 2048, batch 128;
* batch: the suite's ``[784, 128, 64, 10]`` at batch 32, 128, 512, 2048.

Contenders: ``ours`` (``common.nn``, the clocked training step of ``profile_epoch.timed_epoch``,
which is ``train``'s step with a clock around each part) and ``pytorch_fused`` (``nn.Linear`` /
``nn.ReLU``, ``torch.optim.Adam(fused=True)``, subnormals flushed, eager mode: not ``torch.compile``, whose compile
costs tens of seconds a process and a shape). Every library, configuration and round runs in a
fresh process of this script (``--worker``), rounds interleaved (ours, PyTorch, next
configuration, ...). A process takes real shuffled batches (full batches only, a new permutation
every epoch), runs a few warm-up steps twice, then times enough steps for ``--seconds``; seconds
per epoch = seconds per step x ceil(60,000 / batch). For ours the clocked parts give where the
epoch goes: the dense layers (their matrix products, with the bias add and sum), the optimizer,
and the rest (gather, activations, loss, loop); and the fraction of the matmul peak that its
matrix-product work (``core_speed.network_gflop``) reaches.

Also the PyTorch twin of a perceptron, its Adam and training step, which ``compare_libraries.py``
uses too (worker processes, threads and the rest are ``harness.py``'s).

``compare_libraries.py`` runs this as part of the full benchmark and writes its table, figure
(``results/benchmark_scaling.png``) and ``scaling`` record. Run alone it only prints the table:

Run: python benchmarks/mlp_scaling.py [--rounds 3] [--seconds 2] [--threads N] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from common import blas
from common.cli import positive_float, positive_int, run_cli
from common.torch_twin import torch_optimizer

from core_speed import SIZES, matmul_peak, network_gflop
from harness import (
    Parser,
    add_worker_options,
    blas_threads,
    ensure_blas_threads,
    installed,
    load_training_data,
    run_worker,
)
from profile_epoch import timed_epoch

LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8
WIDTHS = (128, 256, 512, 1024, 2048)
BATCHES = (32, 128, 512, 2048)
WIDTH_BATCH = 128
LIBRARIES = ("ours", "pytorch_fused")
LABELS = {"ours": "ours (NumPy core)", "pytorch_fused": "PyTorch, Adam(fused=True)"}
WARMUP_STEPS = 3   # run twice, untimed; the second run estimates how many steps fill --seconds
MIN_STEPS = 5
QUICK_SECONDS, QUICK_MIN_STEPS = 0.05, 2
TARGET_WIDTH = 1024


def configurations() -> list[dict]:
    """Every point of both axes: ``{"axis", "sizes", "batch_size"}``."""
    width = [{"axis": "width", "sizes": [SIZES[0], w, w, SIZES[-1]], "batch_size": WIDTH_BATCH} for w in WIDTHS]
    batch = [{"axis": "batch", "sizes": list(SIZES), "batch_size": b} for b in BATCHES]
    return width + batch


# --------------------------------------------------------------------------- PyTorch twin (shared)

def torch_mlp(sizes: Sequence[int]):
    """``nn.Sequential`` of ``nn.Linear`` with ReLU between, PyTorch's default initialisation."""
    from torch import nn

    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def torch_adam(model, fused: bool):
    """``(optimizer, description)``: PyTorch's default Adam, or the fused one (``foreach`` where
    fused does not run on the CPU), with our lr, betas and eps.

    With ``fused`` (PyTorch at its best) the process also flushes subnormal numbers to zero
    (``torch.set_flush_denormal(True)``), as our optimizer flushes its tiny state entries
    (``common/nn/optimizers.py``): without it Adam's first moment fills with subnormals after
    an epoch or two, and PyTorch's later epochs were measured up to 10 % (small network) and
    30 % (width 1024) slower. The default row keeps PyTorch's default."""
    import torch

    if not fused:
        return torch.optim.Adam(model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS), "Adam (default)"
    torch.set_flush_denormal(True)
    optimizer, described = torch_optimizer(model, types.SimpleNamespace(lr=LR, weight_decay=0.0))
    return optimizer, f"{described}, subnormals flushed"


def torch_step_function(model, optimizer, x, y) -> Callable:
    """``step(indices)``: one training step on the rows ``indices`` of tensors ``x``, ``y``; returns the loss."""
    import torch.nn.functional as F

    def step(indices):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[indices]), y[indices])
        loss.backward()
        optimizer.step()
        return loss

    return step


# --------------------------------------------------------------------------- one configuration, timed

def timed_steps(run: Callable[[int], tuple[float, dict]], seconds: float, min_steps: int) -> dict:
    """Warm up with ``run(WARMUP_STEPS)`` twice, then time enough steps for ``seconds``.

    ``run(n)`` takes ``n`` steps and returns ``(wall seconds, parts)``; the result holds the timed
    block's steps, seconds, seconds per step and parts."""
    run(WARMUP_STEPS)
    warm_seconds, _ = run(WARMUP_STEPS)
    steps = max(min_steps, math.ceil(seconds * WARMUP_STEPS / max(warm_seconds, 1e-9)))
    wall, parts = run(steps)
    return {"steps": steps, "seconds": wall, "seconds_per_step": wall / steps, "parts": parts}


def measure_ours(x: np.ndarray, y: np.ndarray, config: dict, seconds: float, min_steps: int, seed: int) -> dict:
    """Our network of ``config`` trained for timed steps; the parts: dense layers, optimizer, rest."""
    from common.nn.network import Network
    from common.nn.optimizers import Adam

    rng = np.random.default_rng(seed)
    network = Network.from_sizes(config["sizes"], rng)
    optimizer = Adam(lr=LR, beta1=BETA1, beta2=BETA2, eps=EPS)
    groups = network.parameter_groups(decay_weights=optimizer.weight_decay > 0)  # as train() does
    batch = config["batch_size"]
    full_batches = len(x) // batch

    def run(steps: int) -> tuple[float, dict]:
        start, done, parts = time.perf_counter(), 0, {"matmul": 0.0, "optimizer": 0.0}
        while done < steps:  # one shuffled pass per call, full batches only
            clocked = timed_epoch(network, optimizer, groups, x, y, rng, batch, min(steps - done, full_batches))
            parts["matmul"] += sum(t for name, t in clocked.items() if name.endswith(" Dense"))
            parts["optimizer"] += clocked["optimizer"]
            done += min(steps - done, full_batches)
        wall = time.perf_counter() - start
        return wall, {**parts, "rest": wall - parts["matmul"] - parts["optimizer"]}

    return {**timed_steps(run, seconds, min_steps), "optimizer": "ours Adam", "threads": blas_threads()}


def measure_pytorch(x_np: np.ndarray, y_np: np.ndarray, config: dict, seconds: float, min_steps: int,
                    seed: int, threads: int) -> dict:
    """PyTorch's twin of ``config`` with fused Adam, timed the same way (full shuffled batches)."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = torch_mlp(config["sizes"])
    optimizer, described = torch_adam(model, fused=True)
    step = torch_step_function(model, optimizer, torch.from_numpy(x_np), torch.from_numpy(y_np.astype(np.int64)))
    generator = torch.Generator().manual_seed(seed)
    batch, num_examples = config["batch_size"], len(x_np)
    state = {"order": torch.randperm(num_examples, generator=generator), "next": 0}

    def run(steps: int) -> tuple[float, dict]:
        start = time.perf_counter()
        for _ in range(steps):
            if state["next"] + batch > num_examples:  # a new epoch: a new order, full batches only
                state["order"], state["next"] = torch.randperm(num_examples, generator=generator), 0
            step(state["order"][state["next"]:state["next"] + batch])
            state["next"] += batch
        return time.perf_counter() - start, {}

    return {**timed_steps(run, seconds, min_steps), "optimizer": described, "threads": torch.get_num_threads()}


def worker(args: argparse.Namespace) -> int:
    """The ``--worker`` process: one library, one round, the configurations in ``--configs``."""
    from common.files import atomic_write_json

    blas.configure()
    x, y, _, _ = load_training_data(args.data_dir)
    results = []
    for config in json.loads(args.configs):
        if args.worker == "ours":
            result = measure_ours(x, y, config, args.seconds, args.min_steps, args.seed)
        else:
            result = measure_pytorch(x, y, config, args.seconds, args.min_steps, args.seed, args.worker_threads)
        results.append({**config, **result, "train_images": len(y)})
    atomic_write_json(args.worker_result, {"results": results})
    return 0


# --------------------------------------------------------------------------- the rounds

def run_scaling(rounds: int, seconds: float, threads: int, env_threads: int | None, seed: int = 0,
                data_dir: str | None = None, quick: bool = False, active: Sequence[str] = LIBRARIES) -> list[dict]:
    """Every configuration of both axes, ``rounds`` times, each library in its own process,
    interleaved; one record per (round, library, configuration). ``quick``: few steps, and one
    process per library and round for all configurations (a smoke run, not a measurement)."""
    configs = configurations()
    groups = [configs] if quick else [[config] for config in configs]
    min_steps = QUICK_MIN_STEPS if quick else MIN_STEPS
    records = []
    for round_index in range(rounds):
        for group in groups:
            for library in active:
                arguments = ["--worker", library, "--worker-threads", str(threads), "--configs", json.dumps(group),
                             "--seconds", str(QUICK_SECONDS if quick else seconds),
                             "--min-steps", str(min_steps), "--seed", str(seed + round_index)]
                if data_dir:
                    arguments += ["--data-dir", data_dir]
                done = run_worker(__file__, arguments, env_threads, f"scaling {library}")
                for result in done["results"]:
                    records.append({"library": library, "round": round_index + 1, "seed": seed + round_index,
                                    **result})
                    print(f"scaling round {round_index + 1}: {library:13s} {describe(result):26s} "
                          f"{epoch_seconds(result):8.3f} s/epoch ({result['steps']} steps)", flush=True)
    return records


def describe(config: dict) -> str:
    return f"{config['sizes']} b{config['batch_size']}".replace(" ", "")


def epoch_seconds(result: dict) -> float:
    """Seconds per epoch of one timed block: seconds per step x ceil(training images / batch)."""
    return result["seconds_per_step"] * math.ceil(result["train_images"] / result["batch_size"])


# --------------------------------------------------------------------------- figures

def summarize_scaling(records: list[dict], peak_gflops: float) -> list[dict]:
    """One record per configuration and library: median seconds per epoch over the rounds, every
    round, and for ours the fraction of ``peak_gflops``, where the epoch goes and ours / PyTorch."""
    summary = []
    for config in configurations():
        medians = {}
        for library in LIBRARIES:
            mine = [r for r in records if r["library"] == library and r["sizes"] == config["sizes"]
                    and r["batch_size"] == config["batch_size"]]
            if not mine:
                continue
            per_epoch = [epoch_seconds(r) for r in mine]
            medians[library] = statistics.median(per_epoch)
            entry = {**config, "library": library, "seconds_per_epoch": medians[library],
                     "seconds_per_epoch_range": [min(per_epoch), max(per_epoch)], "optimizer": mine[0]["optimizer"],
                     "rounds": [{key: r[key] for key in ("round", "seed", "steps", "seconds", "threads", "parts",
                                                         "process_seconds") if key in r}
                                | {"seconds_per_epoch": s} for r, s in zip(mine, per_epoch)]}
            if library == "ours":
                entry.update(ours_figures(mine, medians["ours"], peak_gflops))
            summary.append(entry)
        if len(medians) == len(LIBRARIES):
            summary[-2]["ratio_vs_pytorch"] = medians["ours"] / medians["pytorch_fused"]
    return summary


def ours_figures(rounds: list[dict], median_epoch: float, peak_gflops: float) -> dict:
    """Our GFLOP/s and fraction of the peak, and the epoch split into matrix products, optimizer
    and the rest (the medians over rounds of the first two; the rest is what is left)."""
    first = rounds[0]
    gflop = network_gflop(first["sizes"], first["train_images"])
    steps = math.ceil(first["train_images"] / first["batch_size"])
    matmul = statistics.median(r["parts"]["matmul"] / r["steps"] for r in rounds) * steps
    optimizer = statistics.median(r["parts"]["optimizer"] / r["steps"] for r in rounds) * steps
    return {"gflop_per_epoch": gflop, "gflops": gflop / median_epoch, "peak_fraction": gflop / median_epoch / peak_gflops,
            "breakdown": {"matmul": matmul, "optimizer": optimizer, "rest": median_epoch - matmul - optimizer}}


def find(scaling: list[dict], axis: str, library: str, sizes: Sequence[int] | None = None,
         batch_size: int | None = None) -> dict | None:
    """The record of ``library`` on ``axis`` at ``sizes`` / ``batch_size`` (None: any), or None."""
    for entry in scaling:
        if (entry["axis"] == axis and entry["library"] == library and (sizes is None or entry["sizes"] == list(sizes))
                and (batch_size is None or entry["batch_size"] == batch_size)):
            return entry
    return None


def width_ratio(scaling: list[dict], width: int = TARGET_WIDTH) -> float | None:
    """Ours / PyTorch (fused) seconds per epoch at ``[784, width, width, 10]``, or None."""
    ours = find(scaling, "width", "ours", [SIZES[0], width, width, SIZES[-1]])
    return None if ours is None else ours.get("ratio_vs_pytorch")


def scaling_table(scaling: list[dict]) -> str:
    """One row per configuration: both libraries' seconds per epoch, the ratio, and ours in detail."""
    from tabulate import tabulate

    rows = []
    for entry in (e for e in scaling if e["library"] == "ours"):
        theirs = find(scaling, entry["axis"], "pytorch_fused", entry["sizes"], entry["batch_size"])
        split = entry["breakdown"]
        shares = " / ".join(f"{100 * split[key] / entry['seconds_per_epoch']:.0f}" for key in ("matmul", "optimizer",
                                                                                                 "rest"))
        rows.append([entry["axis"], str(entry["sizes"]), entry["batch_size"], f"{entry['seconds_per_epoch']:.3f}",
                     "skipped" if theirs is None else f"{theirs['seconds_per_epoch']:.3f}",
                     "n/a" if theirs is None else f"{entry['ratio_vs_pytorch']:.2f}",
                     f"{entry['gflops']:.1f}", f"{100 * entry['peak_fraction']:.1f} %", shares])
    return tabulate(rows, headers=["axis", "network", "batch", "ours s/epoch", "PyTorch fused s/epoch",
                                   "ours / PyTorch", "ours GFLOP/s", "ours of peak",
                                   "ours: matmul / optimizer / rest %"], tablefmt="github", disable_numparse=True)


def scaling_sentences(scaling: list[dict]) -> list[str]:
    """What the table says, every number taken from it."""
    lines = []
    ours_w = [e for e in scaling if e["axis"] == "width" and e["library"] == "ours"]
    theirs_w = [e for e in scaling if e["axis"] == "width" and e["library"] == "pytorch_fused"]
    if len(ours_w) > 1:
        low, high = ours_w[0], ours_w[-1]
        text = (f"From width {low['sizes'][1]:,} to {high['sizes'][1]:,} the matrix-product work of an epoch grows "
                f"{high['gflop_per_epoch'] / low['gflop_per_epoch']:.0f}x; our epoch grows "
                f"{high['seconds_per_epoch'] / low['seconds_per_epoch']:.0f}x")
        if len(theirs_w) == len(ours_w):
            text += f" and PyTorch's {theirs_w[-1]['seconds_per_epoch'] / theirs_w[0]['seconds_per_epoch']:.0f}x"
        lines.append(f"- {text}.")
    target = find(scaling, "width", "ours", [SIZES[0], TARGET_WIDTH, TARGET_WIDTH, SIZES[-1]])
    if target is not None:
        split, total = target["breakdown"], target["seconds_per_epoch"]
        ratio = target.get("ratio_vs_pytorch")
        lines.append(f"- At width {TARGET_WIDTH:,} ours / PyTorch is {'n/a' if ratio is None else format(ratio, '.2f')}; "
                     f"of our {total:.2f} s epoch the dense layers' matrix products take "
                     f"{100 * split['matmul'] / total:.0f} %, Adam {100 * split['optimizer'] / total:.0f} % and the "
                     f"rest {100 * split['rest'] / total:.0f} %, and the epoch reaches "
                     f"{100 * target['peak_fraction']:.0f} % of the matmul peak.")
    lines += bound_sentences(scaling)
    ours_b = [e for e in scaling if e["axis"] == "batch" and e["library"] == "ours"]
    if len(ours_b) > 1:
        first, last = ours_b[0], ours_b[-1]
        lines.append(f"- Across batch sizes, our epoch takes {first['seconds_per_epoch']:.2f} s at batch "
                     f"{first['batch_size']:,} and {last['seconds_per_epoch']:.2f} s at {last['batch_size']:,}; "
                     f"Adam's share of it falls from "
                     f"{100 * first['breakdown']['optimizer'] / first['seconds_per_epoch']:.0f} % to "
                     f"{100 * last['breakdown']['optimizer'] / last['seconds_per_epoch']:.0f} % (one pass over "
                     f"the parameters per step, and fewer steps per epoch), and our fraction of the peak goes from "
                     f"{100 * first['peak_fraction']:.0f} % to {100 * last['peak_fraction']:.0f} %.")
    return lines


def bounds(scaling: list[dict]) -> dict[str, dict]:
    """What bounds ours / PyTorch, at the suite's network (key ``"suite"``) and at width 1,024
    (``"width"``), batch 128: ``without_adam``, the ratio if Adam cost us nothing, and
    ``matmul_only``, if the matrix products were all we did (each against PyTorch's whole epoch);
    with ``matmul_seconds``, ``matmul_gflops`` and ``pytorch_seconds``. Missing records: left out."""
    found = {}
    for key, axis, sizes in (("suite", "batch", list(SIZES)),
                             ("width", "width", [SIZES[0], TARGET_WIDTH, TARGET_WIDTH, SIZES[-1]])):
        ours = find(scaling, axis, "ours", sizes, WIDTH_BATCH)
        theirs = find(scaling, axis, "pytorch_fused", sizes, WIDTH_BATCH)
        if ours is None or theirs is None:
            continue
        split, pytorch = ours["breakdown"], theirs["seconds_per_epoch"]
        found[key] = {"without_adam": (ours["seconds_per_epoch"] - split["optimizer"]) / pytorch,
                      "matmul_only": split["matmul"] / pytorch, "matmul_seconds": split["matmul"],
                      "matmul_gflops": ours["gflop_per_epoch"] / split["matmul"], "pytorch_seconds": pytorch}
    return found


def bound_sentences(scaling: list[dict]) -> list[str]:
    """:func:`bounds` in words."""
    names = {"suite": f"the suite's {list(SIZES)}", "width": f"width {TARGET_WIDTH:,}"}
    return [f"- What bounds the ratio at {names[key]} (batch {WIDTH_BATCH}): without Adam our epoch would still be "
            f"{bound['without_adam']:.2f}x PyTorch's whole epoch; our matrix products alone take "
            f"{bound['matmul_seconds']:.2f} s ({bound['matmul_gflops']:.0f} GFLOP/s in NumPy's BLAS), "
            f"{bound['matmul_only']:.2f}x PyTorch's whole epoch of {bound['pytorch_seconds']:.2f} s."
            for key, bound in bounds(scaling).items()]


def plot_scaling(scaling: list[dict], path: str | Path) -> Path:
    """Log-log seconds per epoch against width and against batch size, both libraries (median and range)."""
    from common.plots import save_figure, subplots

    fig, axes = subplots(1, 2, figsize=(10, 4))
    for ax, axis, label in ((axes[0], "width", "hidden width w of [784, w, w, 10] (batch 128)"),
                            (axes[1], "batch", f"batch size ({list(SIZES)})")):
        for library, marker in zip(LIBRARIES, ("o", "s")):
            entries = [e for e in scaling if e["axis"] == axis and e["library"] == library]
            if not entries:
                continue
            xs = [e["sizes"][1] if axis == "width" else e["batch_size"] for e in entries]
            ys = [e["seconds_per_epoch"] for e in entries]
            low = [y - e["seconds_per_epoch_range"][0] for y, e in zip(ys, entries)]
            high = [e["seconds_per_epoch_range"][1] - y for y, e in zip(ys, entries)]
            ax.errorbar(xs, ys, yerr=[low, high], marker=marker, capsize=3, label=LABELS[library])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("seconds per epoch (60,000 images)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Seconds per epoch, median over rounds (bars: range)")
    return save_figure(fig, path)


# --------------------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(description="Seconds per epoch of ours and PyTorch (fused Adam) against width and batch size.")
    parser.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--seconds", type=positive_float, default=2.0,
                        help="timed seconds per library, configuration and round, after warm-up (default 2)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads for both libraries (default: the BLAS's current count)")
    parser.add_argument("--data-dir", default=None, help="MNIST directory (default: data/mnist)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; round r uses seed + r (default 0)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, a few steps each")
    add_worker_options(parser, LIBRARIES)
    parser.add_argument("--configs", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--min-steps", type=positive_int, default=MIN_STEPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker and not (args.worker_result and args.configs):
        parser.error("--worker needs --worker-result and --configs")
    if args.quick:
        args.rounds = 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run alone: measure and print the table (``compare_libraries.py`` writes the results)."""
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    ensure_blas_threads(args.threads)  # this process measures the peak: the same threads as the workers
    blas.configure()
    threads = args.threads or blas_threads()
    active = [lib for lib in LIBRARIES if lib == "ours" or installed("torch")]
    records = run_scaling(args.rounds, args.seconds, threads, args.threads, args.seed, args.data_dir, args.quick,
                          active)
    scaling = summarize_scaling(records, matmul_peak(repeats=3)["gflops"])
    print()
    print(scaling_table(scaling))
    print("\n".join(scaling_sentences(scaling)))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
