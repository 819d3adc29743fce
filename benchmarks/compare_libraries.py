"""Our NumPy core against scikit-learn and PyTorch (at its best) on the same network, data, optimizer
and budget, and how the cost grows with width and batch size.

Network ``[784, 128, 64, 10]``, ReLU, softmax + cross-entropy, Adam (lr 1e-3, betas 0.9 / 0.999,
eps 1e-8), batch 128, shuffled every epoch, no weight decay / L2 (scikit-learn ``alpha=0``),
the real 60,000 / 10,000 MNIST scaled to [0, 1], the same number of epochs for everyone. Each
library initialises its weights as it does by default (ours: He normal, std sqrt(2 / fan_in),
zero biases; scikit-learn: Glorot uniform, +-sqrt(6 / (fan_in + fan_out)) for ReLU; PyTorch
``nn.Linear``: uniform +-1/sqrt(fan_in) for weights and biases).

Contenders, each library and round in its own process (this script again, ``--worker``), rounds
interleaved (ours, sklearn, sklearn float32, PyTorch x 3, then again) for ``--repeats`` rounds:

* ``ours``: ``common.nn.train.train`` on float32 (``Network.from_sizes``, ``Adam``);
* ``sklearn``: ``MLPClassifier`` on float64 input (its default), timed around one
  ``fit(max_iter=EPOCHS)`` with ``tol=0`` and ``n_iter_no_change`` huge so it runs every epoch
  (not ``partial_fit``: with an integer ``random_state`` it reshuffles identically every call, and
  ``warm_start`` resets Adam's moments);
* ``sklearn_float32``: the same on float32 input (a separate row, not the reference);
* ``pytorch``: an equivalent ``nn.Sequential`` on CPU, float32, ``torch.optim.Adam`` (its CPU
  default implementation), batches gathered by indexing one tensor with a shuffled index tensor;
* ``pytorch_fused``: the same with ``torch.optim.Adam(fused=True)`` and subnormal numbers flushed to
  zero (``torch.set_flush_denormal(True)``, as our optimizer flushes its tiny state entries);
* ``pytorch_compile``: the same with ``torch.compile(model, dynamic=False)`` on top of fused Adam;
  it compiles on four untimed steps (a full and the last, smaller batch, twice), timed apart as
  the compile time; then 20 compiled and 20 eager steps are timed, and if compiled steps are more
  than 3x slower (seen on this machine while other processes ran) the row is skipped with those
  figures; its first epoch is left out like everyone's. Not run with ``--quick`` or
  ``--no-compile``; a compile that fails here is reported as skipped with its reason.

Seconds per epoch: the mean of each run's epochs after the first (scikit-learn, which trains in
one ``fit``: the whole budget / epochs), median over rounds; ``ratio_vs_pytorch_best`` is ours over
the fastest PyTorch configuration. Our epoch's fraction of the matmul peak uses the median of our
individual epochs after the first; it is reported, with no target. Each round also measures, in
this process, the matmul peak and the full-batch forward + backward over all 60,000 rows in one
pass, the pass stage 02 trains with (``core_speed.py``). Then ``mlp_scaling.py`` measures
seconds per epoch against width and batch size (ours vs PyTorch fused, own processes, interleaved).
Threads: the same count for all (BLAS variables + ``torch.set_num_threads``).

Writes ``results/benchmark.md``, ``results/benchmark.json`` and ``results/benchmark_scaling.png``
(atomically), keeping the sections ``conv_speed.py`` merged into them (its ``conv`` and ``bn_conv``
records, from which the sections are rendered again). A ``--quick`` run, or one without a library that the
committed ``results/benchmark.json`` measured (not installed here), writes them to ``results/local/benchmarks/``
instead, so the committed figures stay as they are; ``--out DIR`` chooses the folder.

Run: python benchmarks/compare_libraries.py [--epochs 10] [--repeats 5] [--scaling-rounds 3] [--threads N] [--quick]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from common import blas
from common.cli import positive_float, positive_int, run_cli, writable_folder
from common.files import atomic_write_json, atomic_write_text
from common.paths import RESULTS_DIR

from conv_speed import render_section
from core_speed import BATCH_SIZE, PEAK_SIZES, SIZES, fullbatch_times, matmul_peak, network_gflop
from harness import (
    JSON_NAME,
    MARKDOWN_NAME,
    Parser,
    add_run_options,
    add_worker_options,
    announce_output,
    blas_threads,
    carry_over_conv,
    carry_over_section,
    committed_libraries,
    ensure_blas_threads,
    environment_lines,
    installed,
    load_average,
    load_training_data,
    median_or_none,
    output_folder,
    per_epoch_seconds,
    run_environment,
    run_worker,
)
from mlp_scaling import (
    BETA1,
    BETA2,
    EPS,
    LR,
    TARGET_WIDTH,
    plot_scaling,
    run_scaling,
    scaling_sentences,
    scaling_table,
    summarize_scaling,
    torch_adam,
    torch_mlp,
    torch_step_function,
    width_ratio,
)
from under_load import SECTION as UNDER_LOAD_SECTION
from under_load import TOP_KEYS as UNDER_LOAD_TOP_KEYS
from under_load import render_section as render_under_load

LIBRARIES = ("ours", "sklearn", "sklearn_float32", "pytorch", "pytorch_fused", "pytorch_compile")
TORCH_CONFIGS = ("pytorch", "pytorch_fused", "pytorch_compile")
LABELS = {
    "ours": "ours (NumPy core)",
    "sklearn": "scikit-learn MLPClassifier",
    "sklearn_float32": "scikit-learn MLPClassifier",
    "pytorch": "PyTorch CPU, Adam (default)",
    "pytorch_fused": "PyTorch CPU, Adam(fused=True)",
    "pytorch_compile": "PyTorch CPU, torch.compile + Adam(fused=True)",
}
TORCH_INIT = "uniform +-1/sqrt(fan_in) (W and b)"
GLOROT_INIT = "Glorot uniform +-sqrt(6/(fan_in+fan_out)) (W and b)"
DTYPES = {"ours": "float32", "sklearn": "float64 (default)", "sklearn_float32": "float32",
          **{lib: "float32" for lib in TORCH_CONFIGS}}
INITS = {"ours": "He normal, std sqrt(2/fan_in); b = 0", "sklearn": GLOROT_INIT, "sklearn_float32": GLOROT_INIT,
         **{lib: TORCH_INIT for lib in TORCH_CONFIGS}}
REQUIRES = {"ours": None, "sklearn": "sklearn", "sklearn_float32": "sklearn", **{lib: "torch" for lib in TORCH_CONFIGS}}
SCALING_FIGURE = "benchmark_scaling.png"
PROBE_STEPS = 20              # compiled and eager steps timed after the compile, to catch a slow compile
COMPILE_SLOWDOWN_LIMIT = 3.0  # compiled steps slower than this many eager ones: reported, not timed

# Targets: (name, key of the measured value, description, threshold text, test on the value).
TARGETS = (
    ("ratio_vs_sklearn", "ratio_vs_sklearn", "ours / scikit-learn (float64 default), s/epoch", "<= 0.40",
     lambda v: v <= 0.40),
    ("ratio_vs_pytorch_best", "ratio_vs_pytorch_best", "ours / fastest PyTorch configuration, s/epoch",
     "<= 0.75", lambda v: v <= 0.75),
    ("ratio_width_1024", "ratio_width_1024", f"ours / PyTorch fused at [784, {TARGET_WIDTH}, {TARGET_WIDTH}, 10], "
     "s/epoch", "<= 1.0", lambda v: v <= 1.0),
    ("ratio_width_1024_stretch", "ratio_width_1024", "the same, stretch goal", "<= 0.85", lambda v: v <= 0.85),
    ("peak_fraction_fullbatch", "peak_fraction_fullbatch", "full-batch forward+backward, fraction of matmul peak",
     ">= 70 %", lambda v: v >= 0.70),
    ("accuracy_gap_vs_pytorch", "accuracy_gap_vs_pytorch", "test accuracy, ours minus PyTorch (default), absolute, "
     "points", "<= 0.3", lambda v: v <= 0.3),
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


def train_torch(data: dict, epochs: int, seed: int, threads: int, config: str) -> dict:
    """``epochs`` epochs of the PyTorch twin in ``config`` (see :data:`TORCH_CONFIGS`), each timed.

    ``pytorch_compile`` first compiles and probes (:func:`compile_and_probe`); a compile that fails
    or runs far slower than eager returns ``{"skipped": reason}``."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = torch_mlp(SIZES)
    optimizer, described = torch_adam(model, fused=config != "pytorch")
    compiled = config == "pytorch_compile"
    stepped = torch.compile(model, dynamic=False) if compiled else model
    step = torch_step_function(stepped, optimizer, torch.from_numpy(data["x_train"]),
                               torch.from_numpy(data["y_train"].astype(np.int64)))
    generator = torch.Generator().manual_seed(seed)
    num_examples = len(data["x_train"])
    result: dict = {"optimizer": f"torch.compile + {described}" if compiled else described}
    if compiled:
        eager = torch_step_function(model, optimizer, torch.from_numpy(data["x_train"]),
                                    torch.from_numpy(data["y_train"].astype(np.int64)))
        result.update(compile_and_probe(step, eager, num_examples, generator))
        if "skipped" in result:
            return {"skipped": result["skipped"]}
    epoch_seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(num_examples, generator=generator)
        for first in range(0, num_examples, BATCH_SIZE):
            step(order[first:first + BATCH_SIZE])
        epoch_seconds.append(time.perf_counter() - start)
    with torch.inference_mode():
        predicted = model(torch.from_numpy(data["x_test"])).argmax(dim=1).numpy()
    return {**result, "seconds": sum(epoch_seconds), "epoch_seconds": epoch_seconds,
            "test_accuracy": float(np.mean(predicted == data["y_test"])), "threads": torch.get_num_threads()}


def compile_and_probe(step: Callable, eager: Callable, num_examples: int, generator) -> dict:
    """Compile ``step`` (the compiled model's) on both batch shapes of an epoch, twice, outside the
    timed epochs; then time :data:`PROBE_STEPS` steps of it and of ``eager`` (the same model, uncompiled).

    Returns ``compile_seconds`` and the probe, or ``{"skipped": reason}`` when the compile fails or
    its steps run more than :data:`COMPILE_SLOWDOWN_LIMIT` x slower than eager ones (timing its
    epochs would then cost many minutes and say only that)."""
    import torch

    order = torch.randperm(num_examples, generator=generator)
    start = time.perf_counter()
    try:
        for size in (BATCH_SIZE, num_examples % BATCH_SIZE or BATCH_SIZE) * 2:
            step(order[:size])
    except Exception as error:  # any compiler failure is a skipped row, with its reason
        return {"skipped": f"torch.compile failed here: {type(error).__name__}: "
                           f"{(str(error).strip().splitlines() or [''])[0]}"}
    compile_seconds = time.perf_counter() - start
    per_step = {}
    for name, function in (("compiled", step), ("eager", eager)):
        start = time.perf_counter()
        for first in range(0, PROBE_STEPS * BATCH_SIZE, BATCH_SIZE):
            function(order[first:first + BATCH_SIZE])
        per_step[name] = (time.perf_counter() - start) / PROBE_STEPS
    probe = {"compile_seconds": compile_seconds, "probe_ms_per_step": {k: 1e3 * v for k, v in per_step.items()}}
    if per_step["compiled"] > COMPILE_SLOWDOWN_LIMIT * per_step["eager"]:
        return {**probe, "skipped": f"torch.compile ran {per_step['compiled'] / per_step['eager']:.0f}x slower than "
                                    f"eager here ({1e3 * per_step['compiled']:.1f} vs {1e3 * per_step['eager']:.2f} "
                                    f"ms a step over {PROBE_STEPS} steps), so its epochs were not timed"}
    return probe


def run_pytorch(data: dict, epochs: int, seed: int, threads: int) -> dict:
    return train_torch(data, epochs, seed, threads, "pytorch")


def run_pytorch_fused(data: dict, epochs: int, seed: int, threads: int) -> dict:
    return train_torch(data, epochs, seed, threads, "pytorch_fused")


def run_pytorch_compile(data: dict, epochs: int, seed: int, threads: int) -> dict:
    return train_torch(data, epochs, seed, threads, "pytorch_compile")


RUNNERS: dict[str, Callable[[dict, int, int, int], dict]] = {
    "ours": run_ours, "sklearn": run_sklearn, "sklearn_float32": run_sklearn_float32, "pytorch": run_pytorch,
    "pytorch_fused": run_pytorch_fused, "pytorch_compile": run_pytorch_compile,
}


def worker(args: argparse.Namespace) -> int:
    """The ``--worker`` process: one library's training budget; its record goes to ``--worker-result``."""
    blas.configure()
    x_train, y_train, x_test, y_test = load_training_data(args.data_dir)
    data = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    if args.worker == "sklearn":
        data["x_train64"] = x_train.astype(np.float64)
    result = RUNNERS[args.worker](data, args.epochs, args.seed, args.worker_threads)
    result.setdefault("threads", blas_threads())
    atomic_write_json(args.worker_result, result)
    return 0


# --------------------------------------------------------------------------- report

def steady_epochs(run: dict) -> list[float]:
    """Seconds of each epoch of one run, the first (warm-up) left out when there are more."""
    epochs = run["epoch_seconds"]
    return epochs[1:] if len(epochs) > 1 else epochs


def run_epoch_seconds(run: dict, epochs: int) -> float:
    """One run's seconds per epoch: the mean of its epochs after the first, or (scikit-learn, a
    single ``fit``, or a single epoch) its whole budget / epochs."""
    if "epoch_seconds" in run and len(run["epoch_seconds"]) > 1:
        return statistics.fmean(steady_epochs(run))
    return run["seconds"] / epochs


def library_figures(runs: dict, epochs: int) -> dict:
    """Seconds per epoch and accuracy per library, and ours over each other library (medians over
    rounds), the fastest PyTorch configuration, and the same ratios within each round."""
    seconds = {lib: median_or_none([run_epoch_seconds(r, epochs) for r in runs[lib]]) for lib in LIBRARIES}
    accuracy = {lib: median_or_none([r["test_accuracy"] for r in runs[lib]]) for lib in LIBRARIES}
    ours = seconds["ours"]

    def ratio(other: str) -> float | None:
        return ours / seconds[other] if ours and seconds[other] else None

    measured = [lib for lib in TORCH_CONFIGS if seconds[lib]]
    best = min(measured, key=lambda lib: seconds[lib]) if measured else None
    gap = abs(accuracy["ours"] - accuracy["pytorch"]) * 100 if accuracy["pytorch"] is not None else None
    compile_seconds = [r["compile_seconds"] for r in runs["pytorch_compile"] if r.get("compile_seconds") is not None]
    return {
        "seconds_per_epoch": seconds, "test_accuracy": accuracy,
        "ratio_vs_sklearn": ratio("sklearn"), "ratio_vs_sklearn_float32": ratio("sklearn_float32"),
        "ratio_vs_pytorch": ratio("pytorch"), "ratio_vs_pytorch_fused": ratio("pytorch_fused"),
        "ratio_vs_pytorch_compile": ratio("pytorch_compile"),
        "pytorch_best": best, "ratio_vs_pytorch_best": ratio(best) if best else None,
        # the same ratios within each round (every library timed in the same round, back to back)
        "ratio_per_round": {other: [run_epoch_seconds(a, epochs) / run_epoch_seconds(b, epochs)
                                    for a, b in zip(runs["ours"], runs[other])]
                            for other in LIBRARIES[1:] if runs[other]},
        "compile_seconds": median_or_none(compile_seconds),
        "accuracy_gap_vs_pytorch": gap,
    }


def summarize(runs: dict, epochs: int, peaks: list[float], fullbatch: list[float], gflop: float,
              skipped: dict, scaling: list[dict] | None = None) -> dict:
    """Every figure of the report from the rounds (``runs`` per library), the peaks, the full-batch
    passes (``fullbatch``: seconds, the same number from every round) and the scaling records; medians
    throughout, as the targets ask."""
    # the peak is the median over rounds of each round's best square product, our epoch the median of our epochs
    peak = statistics.median(peaks)
    epoch_seconds = statistics.median([t for run in runs["ours"] for t in steady_epochs(run)])
    per_round = len(fullbatch) // len(peaks)
    full_by_round = [fullbatch[i * per_round:(i + 1) * per_round] for i in range(len(peaks))]
    full_seconds = statistics.median(fullbatch)
    summary = {
        **library_figures(runs, epochs),
        "ratio_width_1024": width_ratio(scaling or []),
        "peak_fraction_epoch": gflop / epoch_seconds / peak,
        "peak_fraction_fullbatch": gflop / full_seconds / peak,
        # each round's figures against the peak measured in that same round, to show the spread
        "peak_fraction_epoch_per_round": [gflop / statistics.median(steady_epochs(run)) / round_peak
                                          for run, round_peak in zip(runs["ours"], peaks)],
        "peak_fraction_fullbatch_per_round": [gflop / statistics.median(times) / round_peak
                                              for times, round_peak in zip(full_by_round, peaks) if times],
        "matmul_peak_gflops": peak,
        "matmul_peaks_per_round": list(peaks),
        "gflop_per_epoch": gflop,
        "epoch_seconds": epoch_seconds,
        "epoch_gflops": gflop / epoch_seconds,
        "fullbatch_seconds": full_seconds,
        "fullbatch_gflops": gflop / full_seconds,
        "skipped": skipped,
    }
    summary["targets"] = {
        name: {"what": what, "threshold": threshold, "value": summary[key],
               "met": None if summary[key] is None else bool(test(summary[key]))}
        for name, key, what, threshold, test in TARGETS}
    return summary


def library_label(lib: str, runs: dict) -> str:
    """The row's name: PyTorch's names the optimizer its runs actually used (fused may fall back)."""
    if lib in TORCH_CONFIGS and runs[lib]:
        return f"PyTorch CPU, {runs[lib][0]['optimizer']}"
    return LABELS[lib]


def library_table(summary: dict, runs: dict, epochs: int) -> str:
    """One row per library: dtype, init, seconds per epoch (median and range), accuracy, our ratio."""
    from tabulate import tabulate

    rows = []
    for lib in LIBRARIES:
        if lib in summary["skipped"]:
            rows.append([library_label(lib, runs), DTYPES[lib], INITS[lib], f"skipped ({summary['skipped'][lib]})",
                         "", "", ""])
            continue
        per_epoch = [run_epoch_seconds(r, epochs) for r in runs[lib]]
        spe = summary["seconds_per_epoch"][lib]
        rows.append([library_label(lib, runs), DTYPES[lib], INITS[lib], f"{spe:.3f}",
                     f"{min(per_epoch):.3f}-{max(per_epoch):.3f}",
                     f"{100 * summary['test_accuracy'][lib]:.2f}",
                     f"{summary['seconds_per_epoch']['ours'] / spe:.2f}"])
    return tabulate(rows, headers=["library", "dtype", "default init", "s/epoch (median)", "s/epoch range",
                                   "test acc % (median)", "ours / this"], tablefmt="github", disable_numparse=True)


def headline(summary: dict, runs: dict) -> str:
    """The sentence under the library table: ours against PyTorch at its best and at its default."""
    best = summary["pytorch_best"]
    if best is None:
        return "PyTorch was not measured (see the table), so there is no PyTorch ratio."
    text = (f"Ours / the fastest PyTorch configuration ({library_label(best, runs)}): "
            f"**{summary['ratio_vs_pytorch_best']:.2f}** (`ratio_vs_pytorch_best`)")
    if summary["ratio_vs_pytorch"] is not None:
        text += f"; against PyTorch's default Adam: {summary['ratio_vs_pytorch']:.2f} (`ratio_vs_pytorch`)"
    if summary["compile_seconds"] is not None:
        text += (f". torch.compile took {summary['compile_seconds']:.1f} s to compile in each process (median; "
                 f"untimed steps on both batch shapes before its epochs, whose first is also left out)")
    return text + "."


def speed_table(summary: dict, runs: dict) -> str:
    """Our epoch and the full-batch pass in seconds, GFLOP/s and fraction of the matmul peak."""
    from tabulate import tabulate

    peak = summary["matmul_peak_gflops"]
    steady = sum(len(steady_epochs(run)) for run in runs["ours"])
    speed_rows = [
        ["float32 matmul peak (2048^3 / 4096^3, median over rounds)", "", f"{peak:.1f}", "100 %"],
        [f"ours: Adam batch-{BATCH_SIZE} epoch (median of {steady} epoch(s))", f"{summary['epoch_seconds']:.3f}",
         f"{summary['epoch_gflops']:.1f}", f"{100 * summary['peak_fraction_epoch']:.1f} %"],
        ["ours: full-batch forward+backward, 60,000 images in one pass (median)",
         f"{summary['fullbatch_seconds']:.3f}", f"{summary['fullbatch_gflops']:.1f}",
         f"{100 * summary['peak_fraction_fullbatch']:.1f} %"],
    ]
    return tabulate(speed_rows, headers=["what", "seconds", "GFLOP/s", "of peak"], tablefmt="github",
                    disable_numparse=True)


def targets_table(summary: dict) -> str:
    from tabulate import tabulate

    target_rows = []
    for target in summary["targets"].values():
        value = target["value"]
        if value is None:
            shown, met = "not measured (library skipped)", "n/a"
        elif target["threshold"].endswith("%"):
            shown, met = f"{100 * value:.1f} %", "yes" if target["met"] else "no"
        else:
            shown, met = f"{value:.2f}", "yes" if target["met"] else "no"
        target_rows.append([target["what"], target["threshold"], shown, met])
    return tabulate(target_rows, headers=["target", "threshold", "measured", "met"], tablefmt="github",
                    disable_numparse=True)


def render_markdown(summary: dict, runs: dict, settings: dict, environment: dict,
                    scaling: list[dict] | None = None) -> str:
    """The whole ``benchmark.md`` (before ``conv_speed.py``'s section is added)."""
    order = ", ".join(lib.replace("_", " ") for lib in LIBRARIES)
    lines = [
        "# Library benchmark: our NumPy core vs scikit-learn and PyTorch",
        "",
        *(["**Smoke run (`--quick`): not a measurement.**", ""] if settings.get("quick") else []),
        f"`{list(SIZES)}` ReLU + softmax cross-entropy, Adam (lr {LR:g}, betas {BETA1}/{BETA2}, "
        f"eps {EPS:g}), batch {BATCH_SIZE}, reshuffled every epoch, no L2 (scikit-learn `alpha=0`), "
        f"{settings['epochs']} epoch(s) on the real 60,000 MNIST training images in [0, 1], test accuracy on the "
        f"10,000 test images; {settings['repeats']} interleaved round(s) ({order}, then again), every library and "
        f"round in its own process, medians reported. Seconds per epoch = the mean of a run's epochs after the "
        f"first (scikit-learn, one `fit`: the whole budget / epochs); data loading and evaluation excluded. "
        f"Each library uses its own default weight initialisation.",
        "",
        library_table(summary, runs, settings["epochs"]),
        "",
        headline(summary, runs),
        "",
        *speed_lines(summary, runs),
        *scaling_lines(scaling or [], summary),
        "## Targets",
        "",
        targets_table(summary),
        "",
        "## Environment",
        "",
        *environment_lines(environment),
        f"- wall time of this benchmark: {settings['wall_seconds'] / 60:.1f} min" if settings.get("wall_seconds")
        else "- wall time of this benchmark: not recorded",
        "",
        "The machine may be shared with other processes; rounds are interleaved so that noise hits "
        "every library alike, but absolute seconds vary from run to run. Per-round figures are in "
        "`benchmark.json` (`runs`, `scaling`).",
        "",
    ]
    return "\n".join(lines)


def speed_lines(summary: dict, runs: dict) -> list[str]:
    """The section on our epoch and the full-batch pass against the matmul peak (reported, no target)."""
    return [
        "## Speed against this machine's matrix-multiply peak",
        "",
        f"GFLOP per epoch = 60,000 x 2 x (forward + weight-gradient + input-gradient multiply-adds, "
        f"the last except for layer 1) / 1e9 = {summary['gflop_per_epoch']:.2f}. The peak is measured "
        f"in every round as the faster of the two square products (median of 3 each); the table uses "
        f"the median over rounds, like every other figure here (the best round was "
        f"{max(summary['matmul_peaks_per_round']):.1f}). Our epoch is the median of our individual "
        f"epochs, each run's first (warm-up) epoch left out; its fraction of the peak is reported, with no "
        f"target (what keeps it from the peak: `results/epoch_profile.md`). The "
        f"full-batch pass is `common.nn.train.loss_and_gradient`, the one stage 02 trains with: one "
        f"forward and backward pass over all 60,000 rows, no optimizer step. Full-batch figures are "
        f"medians over all rounds.",
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
    ]


def scaling_lines(scaling: list[dict], summary: dict) -> list[str]:
    """The section on how the epoch grows with width and batch size: table, sentences, figure."""
    if not scaling:
        return []
    rounds = max(r["round"] for entry in scaling for r in entry["rounds"])
    steps = [r["steps"] for entry in scaling for r in entry["rounds"]]
    return [
        "## How the cost grows: width and batch size",
        "",
        f"Ours against PyTorch with `Adam(fused=True)` and subnormals flushed, in eager mode (PyTorch's fastest configuration "
        f"without a compile; torch.compile is left out here because each process, width and batch size would "
        f"compile again), Adam as above, the real training images in shuffled full batches. Every library, "
        f"configuration and round ran in its own process, {rounds} interleaved round(s); each process ran a few "
        f"warm-up steps, then {min(steps):,}-{max(steps):,} timed steps. Seconds per epoch = seconds per step x "
        f"ceil(60,000 / batch), median over rounds. Ours is split by the clocked step of `profile_epoch.py`: the "
        f"dense layers (their matrix products, with the bias add and sum), Adam, and the rest (gather, "
        f"activations, loss, loop); its fraction of the peak uses this run's median peak of "
        f"{summary['matmul_peak_gflops']:.1f} GFLOP/s.",
        "",
        scaling_table(scaling),
        "",
        *scaling_sentences(scaling),
        "",
        f"![Seconds per epoch against width and batch size]({SCALING_FIGURE})",
        "",
    ]


def write_results(out: Path, record: dict, markdown: str) -> str:
    """Write ``benchmark.json`` and ``benchmark.md`` whole (atomically), carrying over what
    ``conv_speed.py`` merged into the previous ones: its ``conv`` record and its section, rendered
    again from that record. Returns the markdown written."""
    record, markdown = carry_over_conv(out, record, markdown, render_section)
    record, markdown = carry_over_section(out, record, markdown, render_under_load, UNDER_LOAD_SECTION,
                                          UNDER_LOAD_TOP_KEYS)
    atomic_write_text(out / JSON_NAME, json.dumps(record, indent=2) + "\n")
    atomic_write_text(out / MARKDOWN_NAME, markdown)
    return markdown


# --------------------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(description="Compare our NumPy core with scikit-learn and PyTorch on MNIST, and how "
                                "the cost grows with width and batch size.")
    parser.add_argument("--epochs", type=positive_int, default=10, help="epochs per training budget (default 10)")
    parser.add_argument("--repeats", type=positive_int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--scaling-rounds", type=positive_int, default=3,
                        help="interleaved rounds of the width / batch-size scaling (default 3)")
    parser.add_argument("--scaling-seconds", type=positive_float, default=2.0,
                        help="timed seconds per library, configuration and scaling round (default 2)")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out torch.compile (it compiles for tens of seconds in every round)")
    add_run_options(parser, "directory for benchmark.md / benchmark.json (default results/; results/local/benchmarks/ "
                            "for --quick or without a library the committed results include)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 epochs, 1 round, no torch.compile, a few scaling steps; "
                             "writes to results/local/benchmarks/")
    add_worker_options(parser, LIBRARIES)
    args = parser.parse_args(argv)
    if args.worker:
        if not args.worker_result:
            parser.error("--worker needs --worker-result")
        return args
    if args.quick:
        args.epochs, args.repeats, args.scaling_rounds = 2, 1, 1
    return args


def run_library(args: argparse.Namespace, lib: str, seed: int, threads: int) -> dict:
    """One training budget of ``lib`` in a fresh process of this script."""
    arguments = ["--worker", lib, "--worker-threads", str(threads), "--epochs", str(args.epochs), "--seed", str(seed)]
    if args.data_dir:
        arguments += ["--data-dir", args.data_dir]
    return run_worker(__file__, arguments, args.threads, lib)


def run_rounds(args: argparse.Namespace, x_train: np.ndarray, y_train: np.ndarray, active: list[str],
               threads: int, skipped: dict) -> tuple[dict[str, list[dict]], list[float], list[float]]:
    """The interleaved rounds: each measures the matmul peak and the full-batch pass here, then every
    library in its own process. A library whose worker reports ``skipped`` joins ``skipped``.

    Returns ``(runs per library, peak GFLOP/s per round, full-batch seconds: 3 per round)``.
    """
    peak_sizes = PEAK_SIZES[:1] if args.quick else PEAK_SIZES
    runs: dict[str, list[dict]] = {lib: [] for lib in LIBRARIES}
    peaks: list[float] = []
    fullbatch: list[float] = []
    for round_index in range(args.repeats):
        seed = args.seed + round_index
        peak = matmul_peak(peak_sizes, repeats=3)
        peaks.append(peak["gflops"])
        fullbatch.extend(fullbatch_times(x_train, y_train, repeats=3, seed=seed))
        print(f"round {round_index + 1}: matmul peak {peak['gflops']:.1f} GFLOP/s, full-batch "
              f"fwd+bwd {statistics.median(fullbatch[-3:]):.3f} s", flush=True)
        for lib in [lib for lib in active if lib not in skipped]:
            result = run_library(args, lib, seed, threads)
            if "skipped" in result:
                skipped[lib] = result["skipped"]
                print(f"round {round_index + 1}: {lib:16s} skipped: {result['skipped']}", flush=True)
                continue
            runs[lib].append({**result, "seed": seed, "round": round_index + 1})
            print(f"round {round_index + 1}: {lib:16s} {run_epoch_seconds(result, args.epochs):7.3f} s/epoch  "
                  f"test {100 * result['test_accuracy']:.2f} %", flush=True)
    return runs, peaks, fullbatch


def not_run(args: argparse.Namespace) -> dict:
    """The libraries this run leaves out, with the reason: not installed, or torch.compile not asked for."""
    skipped = {lib: "not installed" for lib in LIBRARIES if not installed(REQUIRES[lib])}
    if "pytorch_compile" not in skipped and (args.quick or args.no_compile):
        skipped["pytorch_compile"] = "not run with --quick" if args.quick else "not run (--no-compile)"
    return skipped


def results_folder(args: argparse.Namespace, skipped: dict) -> Path:
    """Where this run writes (:func:`harness.output_folder`): ``results/local/benchmarks/`` for a ``--quick`` run or
    one without a library the committed ``results/benchmark.json`` measured; checked and announced."""
    missing = [lib for lib, reason in skipped.items() if reason == "not installed"]
    out, why = output_folder(args.out, args.quick, missing, committed_libraries(RESULTS_DIR / JSON_NAME))
    writable_folder(out)
    announce_output(out, why)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    ensure_blas_threads(args.threads)  # re-executes with the env set if needed
    blas.configure()
    started = time.perf_counter()
    threads = args.threads or blas_threads()
    load_start = load_average()
    skipped = not_run(args)
    out = results_folder(args, skipped)
    active = [lib for lib in LIBRARIES if lib not in skipped]
    for lib, reason in skipped.items():
        print(f"{lib}: skipped ({reason})", flush=True)
    x_train, y_train, _, _ = load_training_data(args.data_dir)
    gflop = network_gflop(SIZES, len(x_train))

    print(f"{args.epochs} epoch(s) x {args.repeats} round(s), {threads} thread(s), each library in its own "
          f"process: {', '.join(active)}", flush=True)
    runs, peaks, fullbatch = run_rounds(args, x_train, y_train, active, threads, skipped)
    records = run_scaling(args.scaling_rounds, args.scaling_seconds, threads, args.threads, args.seed, args.data_dir,
                          args.quick, [lib for lib in ("ours", "pytorch_fused") if lib not in skipped])
    scaling = summarize_scaling(records, statistics.median(peaks))
    summary = summarize(runs, args.epochs, peaks, fullbatch, gflop, skipped, scaling)
    environment = run_environment(threads, load_start, env_threads=args.threads)
    settings = {"epochs": args.epochs, "repeats": args.repeats, "batch_size": BATCH_SIZE, "sizes": list(SIZES),
                "lr": LR, "betas": [BETA1, BETA2], "eps": EPS, "seed": args.seed, "quick": args.quick,
                "scaling_rounds": args.scaling_rounds, "scaling_seconds": args.scaling_seconds,
                "wall_seconds": time.perf_counter() - started}
    record = {**summary, "scaling": scaling, "settings": settings, "environment": environment,
              "runs": {lib: runs[lib] for lib in LIBRARIES}, "fullbatch_seconds_all": fullbatch,
              "initialisation": INITS}
    if scaling:
        plot_scaling(scaling, out / SCALING_FIGURE)
    markdown = write_results(out, record, render_markdown(summary, runs, settings, environment, scaling))
    print()
    print(markdown)
    print(f"wrote {out / MARKDOWN_NAME}, {out / JSON_NAME} and {out / SCALING_FIGURE}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
