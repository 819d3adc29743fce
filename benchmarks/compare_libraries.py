"""Our NumPy core against scikit-learn and PyTorch on the same network, data, optimizer and budget.

Network ``[784, 128, 64, 10]``, ReLU, softmax + cross-entropy, Adam (lr 1e-3, betas 0.9 / 0.999,
eps 1e-8), batch 128, shuffled every epoch, no weight decay / L2 (scikit-learn ``alpha=0``),
the real 60,000 / 10,000 MNIST scaled to [0, 1], the same number of epochs for everyone. Each
library initialises its weights as it does by default (ours: He normal, std sqrt(2 / fan_in),
zero biases; scikit-learn: Glorot uniform, +-sqrt(6 / (fan_in + fan_out)) for ReLU; PyTorch
``nn.Linear``: uniform +-1/sqrt(fan_in) for weights and biases).

Contenders, run interleaved (ours, sklearn, sklearn float32, PyTorch, then again) for
``--repeats`` rounds so that noise from other processes hits them alike:

* ``ours``: ``common.nn.train.train`` on float32 (``Network.from_sizes``, ``Adam``);
* ``sklearn``: ``MLPClassifier`` on float64 input (its default), timed around one
  ``fit(max_iter=EPOCHS)`` with ``tol=0`` and ``n_iter_no_change`` huge so it runs every epoch
  (not ``partial_fit``: with an integer ``random_state`` it reshuffles identically every call, and
  ``warm_start`` resets Adam's moments);
* ``sklearn_float32``: the same on float32 input (a separate row, not the reference);
* ``pytorch``: an equivalent ``nn.Sequential`` on CPU, float32, ``torch.optim.Adam`` (its CPU
  default implementation), batches gathered by indexing one tensor with a shuffled index tensor.

Seconds per epoch = wall time of the whole training budget / epochs (data loading, conversion
and evaluation excluded); the library ratios use it. Our epoch's fraction of the matmul peak
uses the median of our individual epochs, each run's first (warm-up) epoch left out, as
``core_speed.py`` does. Each round also measures the matmul peak and the full-batch forward +
backward, in blocks (the pass stage 02 trains with) and in one 60,000-row pass (``core_speed.py``). Threads: the same count for all, set before any library is imported
(BLAS env + ``torch.set_num_threads``). A library that is not installed is reported as skipped.

Writes ``results/benchmark.md`` and ``results/benchmark.json`` (atomically), keeping the section
``conv_speed.py`` merged into them (its ``conv`` record, from which the section is rendered again).

Run: python benchmarks/compare_libraries.py [--epochs 10] [--repeats 7] [--threads N] [--out results] [--quick]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from common.cli import positive_int, run_cli, writable_folder
from common.files import atomic_write_text
from common.nn.train import BLOCK_ROWS
from common.paths import REPO_ROOT

from core_speed import (
    BATCH_SIZE,
    PEAK_SIZES,
    SIZES,
    _Parser,
    blas_threads,
    ensure_blas_threads,
    fullbatch_times,
    load_training_data,
    matmul_peak,
    network_gflop,
    per_epoch_seconds,
)

LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8

LIBRARIES = ("ours", "sklearn", "sklearn_float32", "pytorch")
LABELS = {
    "ours": "ours (NumPy core)",
    "sklearn": "scikit-learn MLPClassifier",
    "sklearn_float32": "scikit-learn MLPClassifier",
    "pytorch": "PyTorch CPU",
}
DTYPES = {"ours": "float32", "sklearn": "float64 (default)", "sklearn_float32": "float32", "pytorch": "float32"}
INITS = {
    "ours": "He normal, std sqrt(2/fan_in); b = 0",
    "sklearn": "Glorot uniform +-sqrt(6/(fan_in+fan_out)) (W and b)",
    "sklearn_float32": "Glorot uniform +-sqrt(6/(fan_in+fan_out)) (W and b)",
    "pytorch": "uniform +-1/sqrt(fan_in) (W and b)",
}
REQUIRES = {"ours": None, "sklearn": "sklearn", "sklearn_float32": "sklearn", "pytorch": "torch"}

# Targets: (key, description, threshold text, test on the measured value).
TARGETS = (
    ("ratio_vs_sklearn", "ours / scikit-learn (float64 default), s/epoch", "<= 0.40", lambda v: v <= 0.40),
    ("ratio_vs_pytorch", "ours / PyTorch, s/epoch", "<= 0.60", lambda v: v <= 0.60),
    ("peak_fraction_epoch", "our batch-128 Adam epoch, fraction of matmul peak", ">= 50 %", lambda v: v >= 0.50),
    ("peak_fraction_fullbatch", "full-batch forward+backward, fraction of matmul peak", ">= 70 %",
     lambda v: v >= 0.70),
    ("accuracy_gap_vs_pytorch", "test accuracy, ours minus PyTorch, absolute, points", "<= 0.3", lambda v: v <= 0.3),
)


# --------------------------------------------------------------------------- one training budget each

def run_ours(data: dict, epochs: int, seed: int, threads: int) -> dict:
    from common.nn.metrics import accuracy
    from common.nn.network import Network
    from common.nn.optimizers import Adam
    from common.nn.train import train

    rng = np.random.default_rng(seed)
    network = Network.from_sizes(list(SIZES), rng)
    optimizer = Adam(lr=LR, beta1=BETA1, beta2=BETA2, eps=EPS)
    start = time.perf_counter()
    history = train(network, optimizer, data["x_train"], data["y_train"], epochs=epochs, rng=rng,
                    batch_size=BATCH_SIZE, progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "test_accuracy": accuracy(network.predict(data["x_test"]), data["y_test"]),
            "epoch_seconds": per_epoch_seconds(history)}


def _run_sklearn(x_train: np.ndarray, data: dict, epochs: int, seed: int) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(hidden_layer_sizes=SIZES[1:-1], activation="relu", solver="adam",
                          alpha=0.0, batch_size=BATCH_SIZE, learning_rate_init=LR, beta_1=BETA1,
                          beta_2=BETA2, epsilon=EPS, max_iter=epochs, tol=0.0,
                          n_iter_no_change=10 ** 9, early_stopping=False, shuffle=True,
                          random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        model.fit(x_train, data["y_train"])
        seconds = time.perf_counter() - start
    if model.n_iter_ != epochs:
        raise RuntimeError(f"scikit-learn stopped after {model.n_iter_} of {epochs} epochs")
    x_test = data["x_test"].astype(x_train.dtype, copy=False)
    return {"seconds": seconds, "test_accuracy": float(np.mean(model.predict(x_test) == data["y_test"]))}


def run_sklearn(data: dict, epochs: int, seed: int, threads: int) -> dict:
    return _run_sklearn(data["x_train64"], data, epochs, seed)


def run_sklearn_float32(data: dict, epochs: int, seed: int, threads: int) -> dict:
    return _run_sklearn(data["x_train"], data, epochs, seed)


def run_pytorch(data: dict, epochs: int, seed: int, threads: int) -> dict:
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if index < len(SIZES) - 2:
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.from_numpy(data["x_train"])
    y = torch.from_numpy(data["y_train"])
    num_examples = len(x)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(num_examples, generator=generator)
        for first in range(0, num_examples, BATCH_SIZE):
            indices = order[first:first + BATCH_SIZE]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[indices]), y[indices])
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    with torch.inference_mode():
        predicted = model(torch.from_numpy(data["x_test"])).argmax(dim=1).numpy()
    return {"seconds": seconds, "test_accuracy": float(np.mean(predicted == data["y_test"]))}


RUNNERS: dict[str, Callable[[dict, int, int, int], dict]] = {
    "ours": run_ours, "sklearn": run_sklearn, "sklearn_float32": run_sklearn_float32, "pytorch": run_pytorch,
}


# --------------------------------------------------------------------------- environment

def installed(module: str | None) -> bool:
    return module is None or importlib.util.find_spec(module) is not None


def library_versions() -> dict:
    versions = {}
    for name, module in (("torch", "torch"), ("scikit-learn", "sklearn")):
        if installed(module):
            versions[name] = __import__(module).__version__
        else:
            versions[name] = "not installed"
    return versions


def short_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit.stdout.strip() if commit.returncode == 0 and commit.stdout.strip() else "none (no commit yet)"


def command_line(argv: Sequence[str] | None = None, script: str | Path | None = None) -> str:
    """The command that ran, e.g. ``python benchmarks/compare_libraries.py --quick`` (``argv`` and
    ``script`` default to this process's own)."""
    import shlex

    script = Path(sys.argv[0] if script is None else script)
    try:
        script = script.resolve().relative_to(REPO_ROOT)
    except ValueError:
        pass
    return shlex.join(["python", str(script), *(sys.argv[1:] if argv is None else argv)])


def load_average() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def run_environment(threads: int, load_start: float | None, argv: Sequence[str] | None = None,
                    script: str | Path | None = None) -> dict:
    """The ``environment`` record of a benchmark run (what :func:`environment_lines` prints): machine,
    versions, commit, threads, command, and the 1-minute load average at the start and now."""
    from common.environment import describe_environment

    return {**describe_environment(), **library_versions(), "commit": short_commit(), "threads": threads,
            "command": command_line(argv, script), "load_average_1min": [load_start, load_average()]}


# --------------------------------------------------------------------------- report

def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def steady_epochs(run: dict) -> list[float]:
    """Seconds of each of our epochs in one run, the first (warm-up) left out when there are more."""
    epochs = run["epoch_seconds"]
    return epochs[1:] if len(epochs) > 1 else epochs


def summarize(runs: dict, epochs: int, peaks: list[float], fullbatch: list[float], gflop: float,
              skipped: dict, fullbatch_one_pass: list[float] | None = None) -> dict:
    seconds_per_epoch = {lib: (_median([r["seconds"] / epochs for r in runs[lib]]) if runs[lib] else None)
                         for lib in LIBRARIES}
    test_accuracy = {lib: (_median([r["test_accuracy"] for r in runs[lib]]) if runs[lib] else None)
                     for lib in LIBRARIES}
    ours = seconds_per_epoch["ours"]

    def ratio(other: str) -> float | None:
        return ours / seconds_per_epoch[other] if ours and seconds_per_epoch[other] else None

    # Medians throughout, as the targets ask: the peak is the median over rounds of each round's
    # best square product, our epoch the median of our epochs.
    peak = statistics.median(peaks)
    epoch_seconds = statistics.median([t for run in runs["ours"] for t in steady_epochs(run)])
    per_round = len(fullbatch) // len(peaks)
    full_by_round = [fullbatch[i * per_round:(i + 1) * per_round] for i in range(len(peaks))]
    full_seconds = statistics.median(fullbatch)
    one_pass_seconds = _median(fullbatch_one_pass or [])
    gap = (abs(test_accuracy["ours"] - test_accuracy["pytorch"]) * 100
           if test_accuracy["pytorch"] is not None else None)
    summary = {
        "seconds_per_epoch": seconds_per_epoch,
        "test_accuracy": test_accuracy,
        "ratio_vs_sklearn": ratio("sklearn"),
        "ratio_vs_sklearn_float32": ratio("sklearn_float32"),
        "ratio_vs_pytorch": ratio("pytorch"),
        # the same ratios within each round (ours and theirs timed back to back)
        "ratio_per_round": {other: [a["seconds"] / b["seconds"] for a, b in zip(runs["ours"], runs[other])]
                            for other in LIBRARIES[1:] if runs[other]},
        "peak_fraction_epoch": gflop / epoch_seconds / peak,
        "peak_fraction_fullbatch": gflop / full_seconds / peak,
        # each round's figures against the peak measured in that same round, to show the spread
        "peak_fraction_epoch_per_round": [gflop / statistics.median(steady_epochs(run)) / round_peak
                                          for run, round_peak in zip(runs["ours"], peaks)],
        "peak_fraction_fullbatch_per_round": [gflop / statistics.median(times) / round_peak
                                              for times, round_peak in zip(full_by_round, peaks) if times],
        "accuracy_gap_vs_pytorch": gap,
        "matmul_peak_gflops": peak,
        "matmul_peaks_per_round": list(peaks),
        "gflop_per_epoch": gflop,
        "epoch_seconds": epoch_seconds,
        "epoch_gflops": gflop / epoch_seconds,
        "fullbatch_seconds": full_seconds,
        "fullbatch_gflops": gflop / full_seconds,
        "fullbatch_one_pass_seconds": one_pass_seconds,
        "fullbatch_one_pass_gflops": gflop / one_pass_seconds if one_pass_seconds else None,
        "skipped": skipped,
    }
    summary["targets"] = {
        key: {"what": what, "threshold": threshold,
              "value": summary[key], "met": None if summary[key] is None else bool(test(summary[key]))}
        for key, what, threshold, test in TARGETS}
    return summary


def _fmt(value: float | None, pattern: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, pattern)


def library_table(summary: dict, runs: dict, epochs: int) -> str:
    """One row per library: dtype, init, seconds per epoch (median and range), accuracy, our ratio."""
    from tabulate import tabulate

    rows = []
    for lib in LIBRARIES:
        if lib in summary["skipped"]:
            rows.append([LABELS[lib], DTYPES[lib], INITS[lib], f"skipped ({summary['skipped'][lib]})", "", "", ""])
            continue
        per_epoch = [r["seconds"] / epochs for r in runs[lib]]
        spe = summary["seconds_per_epoch"][lib]
        rows.append([LABELS[lib], DTYPES[lib], INITS[lib], f"{spe:.3f}",
                     f"{min(per_epoch):.3f}-{max(per_epoch):.3f}",
                     f"{100 * summary['test_accuracy'][lib]:.2f}",
                     f"{summary['seconds_per_epoch']['ours'] / spe:.2f}"])
    return tabulate(rows, headers=["library", "dtype", "default init", "s/epoch (median)", "s/epoch range",
                                   "test acc % (median)", "ours / this"], tablefmt="github", disable_numparse=True)


def speed_table(summary: dict, runs: dict) -> str:
    """Our epoch and the full-batch pass in seconds, GFLOP/s and fraction of the matmul peak."""
    from tabulate import tabulate

    peak = summary["matmul_peak_gflops"]
    steady = sum(len(steady_epochs(run)) for run in runs["ours"])
    speed_rows = [
        ["float32 matmul peak (2048^3 / 4096^3, median over rounds)", "", f"{peak:.1f}", "100 %"],
        [f"ours: Adam batch-{BATCH_SIZE} epoch (median of {steady} epoch(s))", f"{summary['epoch_seconds']:.3f}",
         f"{summary['epoch_gflops']:.1f}", f"{100 * summary['peak_fraction_epoch']:.1f} %"],
        ["ours: full-batch forward+backward, 60,000 images in blocks (median)", f"{summary['fullbatch_seconds']:.3f}",
         f"{summary['fullbatch_gflops']:.1f}", f"{100 * summary['peak_fraction_fullbatch']:.1f} %"],
    ]
    if summary.get("fullbatch_one_pass_seconds"):
        one_pass = summary["fullbatch_one_pass_seconds"]
        speed_rows.append(["same gradient in one 60,000-row pass, for comparison (median)", f"{one_pass:.3f}",
                           f"{summary['fullbatch_one_pass_gflops']:.1f}",
                           f"{100 * summary['fullbatch_one_pass_gflops'] / peak:.1f} %"])
    return tabulate(speed_rows, headers=["what", "seconds", "GFLOP/s", "of peak"], tablefmt="github",
                    disable_numparse=True)


def targets_table(summary: dict) -> str:
    from tabulate import tabulate

    target_rows = []
    for key, target in summary["targets"].items():
        value = target["value"]
        if value is None:
            shown, met = "not measured (library skipped)", "n/a"
        elif key.startswith("peak_fraction"):
            shown, met = f"{100 * value:.1f} %", "yes" if target["met"] else "no"
        else:
            shown, met = f"{value:.2f}", "yes" if target["met"] else "no"
        target_rows.append([target["what"], target["threshold"], shown, met])
    return tabulate(target_rows, headers=["target", "threshold", "measured", "met"], tablefmt="github",
                    disable_numparse=True)


def environment_lines(env: dict) -> list[str]:
    thread_env = ", ".join(f"{k}={v}" for k, v in env["thread_env"].items()) or "no thread variables set"
    return [
        f"- date: {env['date']}",
        f"- commit: {env['commit']}",
        f"- Python {env['python']}, NumPy {env['numpy']} ({env['blas']})",
        f"- torch {env['torch']}, scikit-learn {env['scikit-learn']}",
        f"- threads: {env['threads']} for every library (env: {thread_env}; "
        f"`torch.set_num_threads({env['threads']})`); CPUs: {env['cpu_count']}",
        f"- command: `{env['command']}`",
        f"- 1-minute load average at start / end: {_fmt(env['load_average_1min'][0], '.1f')} / "
        f"{_fmt(env['load_average_1min'][1], '.1f')} (above the CPU count means other processes "
        f"competed for the cores: expect slower, noisier figures, worst with several threads)",
    ]


def render_markdown(summary: dict, runs: dict, settings: dict, environment: dict) -> str:
    epochs = settings["epochs"]
    lines = [
        "# Library benchmark: our NumPy core vs scikit-learn and PyTorch",
        "",
        f"`[784, 128, 64, 10]` ReLU + softmax cross-entropy, Adam (lr {LR:g}, betas {BETA1}/{BETA2}, "
        f"eps {EPS:g}), batch {BATCH_SIZE}, reshuffled every epoch, no L2 (scikit-learn `alpha=0`), "
        f"{epochs} epoch(s) on the real 60,000 MNIST training images in [0, 1], test accuracy on the "
        f"10,000 test images; {settings['repeats']} interleaved round(s) "
        f"(ours, sklearn, sklearn float32, PyTorch, then again), medians reported. "
        f"Seconds per epoch = wall time of the whole training budget / epochs (data loading and "
        f"evaluation excluded). Each library uses its own default weight initialisation.",
        "",
        library_table(summary, runs, epochs),
        "",
        "## Speed against this machine's matrix-multiply peak",
        "",
        f"GFLOP per epoch = 60,000 x 2 x (forward + weight-gradient + input-gradient multiply-adds, "
        f"the last except for layer 1) / 1e9 = {summary['gflop_per_epoch']:.2f}. The peak is measured "
        f"in every round as the faster of the two square products (median of 3 each); the table uses "
        f"the median over rounds, like every other figure here (the best round was "
        f"{max(summary['matmul_peaks_per_round']):.1f}). Our epoch is the median of our individual "
        f"epochs, each run's first (warm-up) epoch left out. The "
        f"full-batch pass is `common.nn.train.loss_and_gradient`, the one stage 02 trains with: it "
        f"pushes the 60,000 rows through in blocks of {BLOCK_ROWS:,} so that every intermediate "
        f"array stays in the CPU cache; the same gradient in one pass is timed for comparison. "
        f"Full-batch figures are medians over all rounds.",
        "",
        speed_table(summary, runs),
        "",
        "Each round against its own peak (the spread shows how much the machine's load moved): epoch "
        + ", ".join(f"{100 * f:.1f} %" for f in summary["peak_fraction_epoch_per_round"])
        + "; full batch " + ", ".join(f"{100 * f:.1f} %" for f in summary["peak_fraction_fullbatch_per_round"])
        + ". Ours / other library within each round: "
        + "; ".join(f"{other} " + ", ".join(f"{r:.2f}" for r in ratios)
                    for other, ratios in summary["ratio_per_round"].items()) + ".",
        "",
        "## Targets",
        "",
        targets_table(summary),
        "",
        "## Environment",
        "",
        *environment_lines(environment),
        "",
        "The machine may be shared with other processes; rounds are interleaved so that noise hits "
        "every library alike, but absolute seconds vary from run to run. Per-round figures are in "
        "`benchmark.json` (`runs`).",
        "",
    ]
    return "\n".join(lines)


def write_results(out: Path, record: dict, markdown: str) -> str:
    """Write ``benchmark.json`` and ``benchmark.md`` whole (atomically), carrying over what
    ``conv_speed.py`` merged into the previous ones: its ``conv`` record and its section, rendered
    again from that record. Returns the markdown written."""
    from conv_speed import carry_over_conv  # imported here: conv_speed imports this module

    record, markdown = carry_over_conv(out, record, markdown)
    atomic_write_text(out / "benchmark.json", json.dumps(record, indent=2) + "\n")
    atomic_write_text(out / "benchmark.md", markdown)
    return markdown


# --------------------------------------------------------------------------- command line

def add_run_options(parser: argparse.ArgumentParser, out_help: str) -> None:
    """--threads, --out, --data-dir and --seed, the options every library benchmark shares."""
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="threads for every library (default: the BLAS's current count)")
    parser.add_argument("--out", default=str(REPO_ROOT / "results"), help=out_help)
    parser.add_argument("--data-dir", default=None, help="MNIST directory (default: data/mnist)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; round r uses seed + r (default 0)")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(description="Compare our NumPy core with scikit-learn and PyTorch on MNIST.")
    parser.add_argument("--epochs", type=positive_int, default=10, help="epochs per training budget (default 10)")
    parser.add_argument("--repeats", type=positive_int, default=7, help="interleaved rounds (default 7)")
    add_run_options(parser, "directory for benchmark.md / benchmark.json (default results/)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 epoch, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats = 1, 1
    writable_folder(Path(args.out))
    return args


def run_rounds(args: argparse.Namespace, data: dict, active: list[str], threads: int):
    """The interleaved rounds: each measures the matmul peak, the full-batch pass, then every library.

    Returns ``(runs per library, peaks, full-batch seconds in blocks, full-batch seconds in one pass)``.
    """
    x_train, y_train = data["x_train"], data["y_train"]
    peak_sizes = PEAK_SIZES[:1] if args.quick else PEAK_SIZES
    runs: dict[str, list[dict]] = {lib: [] for lib in LIBRARIES}
    peaks: list[float] = []
    fullbatch: list[float] = []
    fullbatch_one_pass: list[float] = []
    for round_index in range(args.repeats):
        seed = args.seed + round_index
        peak = matmul_peak(peak_sizes, repeats=3)
        peaks.append(peak["gflops"])
        fullbatch.extend(fullbatch_times(x_train, y_train, repeats=3, seed=seed))
        fullbatch_one_pass.extend(fullbatch_times(x_train, y_train, repeats=3, seed=seed, block_rows=len(x_train)))
        print(f"round {round_index + 1}: matmul peak {peak['gflops']:.1f} GFLOP/s, full-batch "
              f"fwd+bwd {statistics.median(fullbatch[-3:]):.3f} s in blocks, "
              f"{statistics.median(fullbatch_one_pass[-3:]):.3f} s in one pass", flush=True)
        for lib in active:
            result = RUNNERS[lib](data, args.epochs, seed, threads)
            result["seed"] = seed
            runs[lib].append(result)
            print(f"round {round_index + 1}: {lib:16s} {result['seconds'] / args.epochs:7.3f} s/epoch  "
                  f"test {100 * result['test_accuracy']:.2f} %", flush=True)

    return runs, peaks, fullbatch, fullbatch_one_pass


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_blas_threads(args.threads)  # re-executes with the env set if needed
    threads = args.threads or blas_threads()
    load_start = load_average()
    skipped = {lib: "not installed" for lib in LIBRARIES if not installed(REQUIRES[lib])}
    active = [lib for lib in LIBRARIES if lib not in skipped]
    for lib in skipped:
        print(f"{lib}: skipped (not installed)", flush=True)
    if "pytorch" in active:
        import torch  # imported once, before timing, with the thread count shared by all

        torch.set_num_threads(threads)

    x_train, y_train, x_test, y_test = load_training_data(args.data_dir)
    data = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    if "sklearn" in active:
        data["x_train64"] = x_train.astype(np.float64)
    gflop = network_gflop(SIZES, len(x_train))

    print(f"{args.epochs} epoch(s) x {args.repeats} round(s), {threads} thread(s): {', '.join(active)}", flush=True)
    runs, peaks, fullbatch, fullbatch_one_pass = run_rounds(args, data, active, threads)
    summary = summarize(runs, args.epochs, peaks, fullbatch, gflop, skipped, fullbatch_one_pass)
    environment = run_environment(threads, load_start)
    settings = {"epochs": args.epochs, "repeats": args.repeats, "batch_size": BATCH_SIZE, "sizes": list(SIZES),
                "lr": LR, "betas": [BETA1, BETA2], "eps": EPS, "seed": args.seed, "quick": args.quick}
    record = {**summary, "settings": settings, "environment": environment,
              "runs": {lib: runs[lib] for lib in LIBRARIES},
              "fullbatch_seconds_all": fullbatch, "fullbatch_one_pass_seconds_all": fullbatch_one_pass,
              "initialisation": INITS}
    out = Path(args.out)
    markdown = write_results(out, record, render_markdown(summary, runs, settings, environment))
    print()
    print(markdown)
    print(f"wrote {out / 'benchmark.md'} and {out / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
