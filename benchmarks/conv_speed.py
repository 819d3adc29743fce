"""Seconds per training epoch of a convolutional stage's network: our NumPy core vs PyTorch CPU.

``--stage 06`` (the default) times stage 06's convolutional network; ``--stage 07`` stage 07's, the
same network with batch normalization after each pooling and after the dense layer. The network is
whatever ``stages/06_conv.py`` (or ``stages/07_batchnorm.py``) says: its ``SPEC.layers`` (read every
run, never copied here), batch ``SPEC.batch_size``, Adam at ``SPEC.lr`` (betas 0.9 / 0.999, eps 1e-8,
both libraries' defaults), ``SPEC.init``; softmax cross-entropy; the 60,000 real MNIST training
images in [0, 1], reshuffled every epoch; no augmentation in either library's timed epochs and a
constant rate (stage 06 trains with random shifts, stage 07 with random affine distortions, and
both with a cosine schedule: the distortions are extra work outside the network, the schedule
changes the rate's value, not the work). Batch normalization runs in training mode in both
libraries: the batch's statistics, and the running averages updated every step.

* ``ours``: ``Network.from_architecture(SPEC.architecture(), rng, SPEC.init)`` (NHWC layers of
  ``common/nn/conv.py``), stepped by ``common.nn.train.train_one_epoch``, the loop ``train`` runs.
* ``pytorch``: the same layers as ``nn.Conv2d`` / ``nn.MaxPool2d`` / ``nn.Linear`` (and
  ``nn.BatchNorm2d`` / ``nn.BatchNorm1d``: ``common.torch_twin``; ``tests/test_torch_twin.py`` checks
  that with our weights it computes our logits, gradients and running averages) in PyTorch's
  native NCHW layout, the same shapes and parameter count, float32, He-normal weights and zero
  biases when ``SPEC.init`` is "he" (else PyTorch's defaults), ``F.cross_entropy``,
  ``torch.optim.Adam(fused=True)`` when it runs on the CPU (else ``foreach=True``), the data as
  two pre-made tensors (images already NCHW) indexed with a new ``torch.randperm`` every epoch (no
  ``DataLoader``: measured 1.6x slower), ``torch.set_num_threads`` equal to our thread count.
  PyTorch has two ways to store the images and conv weights: contiguous NCHW, and channels-last
  (NHWC in memory, still NCHW in shape; oneDNN's preferred format), and which is faster depends on
  the CPU and the network (the committed records show both: within a few per cent of each other
  here, a different one faster for each network). So every round trains PyTorch in both, each in
  its own process, and the faster one (median over all its epochs) is PyTorch's time: PyTorch at
  its best, as the other benchmarks measure it. ``--torch-memory-format nchw`` or
  ``channels-last`` measures one only.

Each library and each round runs in its own process (this script again, with an internal
``--worker`` flag), so neither inherits the other's thread pools, caches or allocator state; the
rounds are interleaved (ours, PyTorch NCHW, PyTorch channels-last, ours, ...) so that load from
other processes hits all alike. A process trains one warm-up epoch (not counted) and then ``--epochs`` timed epochs,
each timed on its own; every round is recorded. Reported: the median over all timed epochs of
all rounds per library, its range, and ``conv_ratio_vs_pytorch`` (stage 07:
``bn_conv_ratio_vs_pytorch``) = ours / PyTorch (medians). Target: ours at most 2.0x PyTorch CPU's
epoch (stretch: 1.5x).

Writes its section into ``results/benchmark.json`` and ``results/benchmark.md``, atomically, other
keys and the rest of the file kept: stage 06 as key ``conv`` and the top-level
``conv_ratio_vs_pytorch``, between ``<!-- conv:start -->`` and ``<!-- conv:end -->``; stage 07 as
key ``bn_conv`` and the top-level ``bn_conv_ratio_vs_pytorch`` and ``bn_conv_seconds_per_epoch``
(per library), between ``<!-- bn_conv:start -->`` and ``<!-- bn_conv:end -->``. Each stage's run
leaves the other's record and section as they are. ``compare_libraries.py``, which rewrites both
files whole, carries both records over and renders their sections again from them
(``harness.carry_over_conv``): the JSON is the source of truth.
Without PyTorch installed, ours is still measured and PyTorch is reported as skipped. A ``--quick``
run, or one without PyTorch (which the committed results include), merges into ``results/local/benchmarks/``
instead, so the committed figures stay as they are; ``--out DIR`` chooses the folder.

Run: python benchmarks/conv_speed.py [--stage 06|07] [--epochs 2] [--repeats 3] [--threads N] [--out results]
         [--torch-memory-format best|nchw|channels-last] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from common import blas
from common.cli import positive_int, run_cli
from common.compute import training_gflop
from common.files import atomic_write_json
from common.nn.architecture import Architecture
from common.nn.errors import UserError
from common.torch_twin import torch_model, torch_optimizer

from harness import (
    BN_CONV_SECTION,
    CONV_SECTION,
    JSON_NAME,
    MARKDOWN_NAME,
    Parser,
    add_run_options,
    add_worker_options,
    blas_threads,
    environment_lines,
    installed,
    load_average,
    load_training_data,
    markers,
    merge_section,
    run_environment,
    run_worker,
)
from harness import prepare_output as harness_prepare_output

STAGE = "06"  # the default --stage
STAGES = ("06", "07")
LIBRARIES = ("ours", "pytorch")
LABELS = {"ours": "ours (NumPy core)", "pytorch": "PyTorch CPU"}
LAYOUTS = {"ours": "NHWC, im2col + BLAS", "pytorch": "NCHW (native), oneDNN / ATen"}
# PyTorch's two ways to store images and conv weights (its name for each, and how the pages say it)
MEMORY_FORMATS = {"contiguous": "contiguous NCHW memory", "channels_last": "channels-last memory"}
FORMAT_CHOICES = {"best": ("contiguous", "channels_last"), "nchw": ("contiguous",), "channels-last": ("channels_last",)}
FORMAT_OPTION = {formats[0]: option for option, formats in FORMAT_CHOICES.items() if len(formats) == 1}  # a worker trains in one
TARGET, STRETCH = 2.0, 1.5
QUICK_TRAIN_SIZE = 2048
SECTION = CONV_SECTION  # stage 06's
SECTIONS = {"06": CONV_SECTION, "07": BN_CONV_SECTION}  # each stage's record, section and top-level keys
TITLES = {"06": "Convolutional network (stage 06)",
          "07": "Convolutional network with batch normalization (stage 07)"}


# --------------------------------------------------------------------------- the network, from SPEC

def load_conv_spec(stage: str = STAGE):
    """Stage ``stage``'s ``SPEC`` (06 by default), loaded from ``stages/`` (checked: layers, mini-batches, Adam)."""
    from common.stages import load_specs

    spec = load_specs([stage])[stage]
    if not spec.layers or spec.batch_size is None:
        raise UserError(f"stage {stage} must describe its network as layers and train in mini-batches")
    if spec.optimizer != "adam":
        raise UserError(f"conv_speed.py compares Adam; stage {stage} now uses {spec.optimizer!r}")
    return spec


def record_stage(conv: dict) -> str:
    """The stage a ``conv`` / ``bn_conv`` record measured (records written before ``--stage``: 06)."""
    return conv["settings"].get("stage", STAGE)


def conv_gflop(spec, num_examples: int) -> float:
    """Matrix-product GFLOP of one epoch over ``num_examples``, counted as ``core_speed.py`` does
    (``common.compute``: forward, weight gradients, input gradients but the first layer's)."""
    return training_gflop(Architecture(tuple(spec.sizes), layers=tuple(spec.layers)), num_examples)


# --------------------------------------------------------------------------- one round, in a worker process

def train_ours(spec, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> dict:
    """One warm-up and ``epochs`` timed epochs of our network; seconds and mean loss of each."""
    from common.nn.network import Network
    from common.nn.optimizers import make_optimizer
    from common.nn.train import train_one_epoch
    from common.protocol import spawn_generators

    init_rng, train_rng = spawn_generators(seed, 2)
    network = Network.from_architecture(spec.architecture(), init_rng, spec.init, spec.init_scale)
    optimizer = make_optimizer(spec.optimizer, spec.lr, spec.weight_decay)
    groups = network.parameter_groups(decay_weights=optimizer.weight_decay > 0)  # as train() does
    seconds, losses = [], []
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        loss_sum = train_one_epoch(network, optimizer, groups, x, y, spec.batch_size, train_rng, None,
                                   f"epoch {epoch}")
        seconds.append(time.perf_counter() - start)
        losses.append(loss_sum / len(y))
        _progress("ours", epoch, seconds[-1], losses[-1])
    return {"warmup_seconds": seconds[0], "epoch_seconds": seconds[1:], "losses": losses,
            "threads": blas_threads(), "num_parameters": network.num_parameters, "optimizer": "ours Adam"}


def train_pytorch(spec, x_np: np.ndarray, y_np: np.ndarray, epochs: int, seed: int, threads: int,
                  channels_last: bool = False, flush_subnormals: bool = False) -> dict:
    """The same for PyTorch: one warm-up and ``epochs`` timed epochs. ``flush_subnormals``: as
    ``mlp_scaling.torch_adam`` does for PyTorch at its best (``torch.set_flush_denormal``)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    if flush_subnormals:
        torch.set_flush_denormal(True)
    torch.manual_seed(seed)
    model, input_shape = torch_model(spec)
    model.train()
    if channels_last:  # before the optimizer is built: its fused state follows the weights' strides
        model = model.to(memory_format=torch.channels_last)
    optimizer, described = torch_optimizer(model, spec)
    if len(input_shape) == 3:  # NHWC rows -> NCHW images, once, outside the clock (a view when C == 1)
        channels, height, width = input_shape
        x = torch.from_numpy(x_np).reshape(len(x_np), height, width, channels).permute(0, 3, 1, 2).contiguous()
    else:
        x = torch.from_numpy(x_np)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(y_np.astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    num_examples, batch_size = len(x), spec.batch_size
    seconds, losses = [], []
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64)
        order = torch.randperm(num_examples, generator=generator)
        for first in range(0, num_examples, batch_size):
            indices = order[first:first + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[indices]), y[indices])
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(indices)  # ours sums its loss every step too
        seconds.append(time.perf_counter() - start)
        losses.append(float(loss_sum) / num_examples)
        _progress("pytorch", epoch, seconds[-1], losses[-1])
    return {"warmup_seconds": seconds[0], "epoch_seconds": seconds[1:], "losses": losses,
            "threads": torch.get_num_threads(), "num_parameters": sum(p.numel() for p in model.parameters()),
            "optimizer": described, "torch_version": torch.__version__,
            "memory_format": "channels_last" if channels_last else "contiguous (NCHW)"}


def _progress(library: str, epoch: int, seconds: float, loss: float) -> None:
    what = "warm-up epoch" if epoch == 0 else f"epoch {epoch}"
    print(f"  {library:8s} {what:14s} {seconds:8.2f} s  loss {loss:.4f}", flush=True)


def worker(args: argparse.Namespace) -> int:
    """The ``--worker`` process: one library, one round; its record goes to ``--worker-result``."""
    blas.configure()
    spec = load_conv_spec(args.stage)
    x, y, _, _ = load_training_data(args.data_dir)
    if args.train_size:
        x, y = x[:args.train_size], y[:args.train_size]
    if args.worker == "ours":
        result = train_ours(spec, x, y, args.epochs, args.seed)
    else:
        formats = FORMAT_CHOICES[args.torch_memory_format]
        if len(formats) != 1:
            raise UserError("a PyTorch worker trains in one memory format: --torch-memory-format nchw or channels-last")
        result = train_pytorch(spec, x, y, args.epochs, args.seed, args.worker_threads,
                               channels_last=formats[0] == "channels_last")
        result["torch_memory_format"] = formats[0]
    result["train_images"] = len(y)
    atomic_write_json(args.worker_result, result)
    return 0


def run_round(library: str, args: argparse.Namespace, seed: int, threads: int,
              memory_format: str = "contiguous") -> dict:
    """Run one round of ``library`` (PyTorch: in ``memory_format``) in a fresh process of this script;
    its record, plus the process's wall time."""
    arguments = ["--worker", library, "--worker-threads", str(threads), "--epochs", str(args.epochs),
                 "--seed", str(seed), "--stage", args.stage]
    if args.train_size:
        arguments += ["--train-size", str(args.train_size)]
    if args.data_dir:
        arguments += ["--data-dir", args.data_dir]
    if library == "pytorch":
        arguments += ["--torch-memory-format", FORMAT_OPTION[memory_format]]
    return run_worker(__file__, arguments, args.threads, f"{library} round")


# --------------------------------------------------------------------------- figures

def round_format(result: dict) -> str:
    """The memory format a PyTorch round trained in (records written before the formats were compared: NCHW)."""
    return result.get("torch_memory_format", "contiguous")


def pytorch_formats(rounds: list[dict]) -> dict:
    """``{format: {"median": s, "range": [low, high]}}`` over all timed epochs of PyTorch's rounds in
    each memory format, fastest first."""
    epochs: dict[str, list[float]] = {}
    for result in rounds:
        if result["library"] == "pytorch":
            epochs.setdefault(round_format(result), []).extend(result["epoch_seconds"])
    measured = {fmt: {"median": statistics.median(times), "range": [min(times), max(times)]}
                for fmt, times in epochs.items()}
    return dict(sorted(measured.items(), key=lambda item: item[1]["median"]))


def summarize(rounds: list[dict], skipped: dict) -> dict:
    """Medians, ranges, the ratio and the targets from the per-round records (``library`` in each).

    PyTorch's time is that of its faster memory format (:func:`pytorch_formats`); the other format's
    rounds stay in the record, under ``pytorch_memory_formats`` and ``rounds``."""
    formats = pytorch_formats(rounds)
    best_format = next(iter(formats), None)
    by_lib = {lib: [r for r in rounds if r["library"] == lib and (lib != "pytorch" or round_format(r) == best_format)]
              for lib in LIBRARIES}
    seconds, spread, round_medians = {}, {}, {}
    for lib, runs in by_lib.items():
        epochs = [t for run in runs for t in run["epoch_seconds"]]
        seconds[lib] = statistics.median(epochs) if epochs else None
        spread[lib] = [min(epochs), max(epochs)] if epochs else None
        round_medians[lib] = [statistics.median(run["epoch_seconds"]) for run in runs]
    ratio = seconds["ours"] / seconds["pytorch"] if seconds["ours"] and seconds["pytorch"] else None
    per_round = ([a / b for a, b in zip(round_medians["ours"], round_medians["pytorch"])]
                 if seconds["pytorch"] else [])
    targets = {
        "target": {"what": "ours / PyTorch CPU, s/epoch (medians)", "threshold": TARGET, "value": ratio,
                   "met": None if ratio is None else ratio <= TARGET},
        "stretch": {"what": "stretch goal", "threshold": STRETCH, "value": ratio,
                    "met": None if ratio is None else ratio <= STRETCH},
    }
    return {"seconds_per_epoch": seconds, "seconds_per_epoch_range": spread, "round_medians": round_medians,
            "ratio_vs_pytorch": ratio, "ratio_per_round": per_round, "targets": targets, "skipped": dict(skipped),
            "pytorch_memory_format": best_format, "pytorch_memory_formats": formats}


def library_table(conv: dict) -> str:
    """One row per library: layout, seconds per epoch (median, range), GFLOP/s, ours / this."""
    from tabulate import tabulate

    settings, skipped = conv["settings"], conv.get("skipped", {})
    ours = conv["seconds_per_epoch"]["ours"]
    formats = conv.get("pytorch_memory_formats") or {}
    rows = []

    def row(label: str, layout: str, median: float, low: float, high: float) -> list[str]:
        return [label, layout, f"{median:.2f}", f"{low:.2f}-{high:.2f}",
                f"{settings['gflop_per_epoch'] / median:.1f}", f"{ours / median:.2f}"]

    for lib in LIBRARIES:
        if lib in skipped:
            rows.append([LABELS[lib], LAYOUTS[lib], f"skipped ({skipped[lib]})", "", "", ""])
        elif lib == "pytorch" and len(formats) > 1:  # both memory formats measured: a row each, the faster counted
            for fmt, measured in formats.items():
                counted = " (the faster: counted)" if fmt == conv["pytorch_memory_format"] else ""
                rows.append(row(LABELS[lib] + counted, f"{LAYOUTS[lib]}, {MEMORY_FORMATS[fmt]}",
                                measured["median"], *measured["range"]))
        else:
            layout = LAYOUTS[lib]
            if lib == "pytorch" and settings.get("torch_memory_format") == "channels_last":
                layout += ", channels-last memory"
            rows.append(row(LABELS[lib], layout, conv["seconds_per_epoch"][lib], *conv["seconds_per_epoch_range"][lib]))
    return tabulate(rows, headers=["library", "layout", "s/epoch (median)", "s/epoch range", "GFLOP/s",
                                   "ours / this"], tablefmt="github", disable_numparse=True)


def targets_table(conv: dict) -> str:
    from tabulate import tabulate

    rows = []
    for target in conv["targets"].values():
        met = "n/a" if target["met"] is None else ("yes" if target["met"] else "no")
        shown = "not measured (PyTorch skipped)" if target["value"] is None else f"{target['value']:.2f}"
        rows.append([target["what"], f"<= {target['threshold']:.1f}", shown, met])
    return tabulate(rows, headers=["target", "threshold", "measured", "met"], tablefmt="github",
                    disable_numparse=True)


def render_section(conv: dict) -> str:
    """The markdown section, markers included, from the ``conv`` record alone (so that
    ``compare_libraries.py`` can render it again from ``benchmark.json``)."""
    settings = conv["settings"]
    stage = record_stage(conv)
    section = SECTIONS[stage]
    per_round = ", ".join(f"{r:.2f}" for r in conv["ratio_per_round"]) or "n/a"
    images = settings["train_images"]
    formats = conv.get("pytorch_memory_formats") or {}
    if len(formats) > 1:
        memory = (", in each of its two memory formats, contiguous NCHW and channels-last, in every round (the "
                  f"faster here, {MEMORY_FORMATS[conv['pytorch_memory_format']]}, is PyTorch's time: PyTorch at its best)")
    elif settings.get("torch_memory_format") == "channels_last":
        memory = " stored channels-last (`--torch-memory-format channels-last`)"
    else:
        memory = ""
    if stage == "06":  # the words of the stage-06 section as it has always been written
        augmentation, ours_layers, torch_layers, twin = "no augmentation", "`common/nn/conv.py`", \
            "`Conv2d` / `MaxPool2d` / `Linear`", ""
    else:
        augmentation = ("no augmentation in either library's timed epochs (the stage trains with random "
                        "affine distortions: work outside the network, left out of both)")
        ours_layers = "`common/nn/conv.py` and `common/nn/batchnorm.py`"
        torch_layers = "`Conv2d` / `MaxPool2d` / `BatchNorm2d` / `Linear` / `BatchNorm1d`"
        twin = (" Batch normalization in training mode in both (the batch's statistics, running averages "
                "updated every step); with our weights copied in, the PyTorch network computes our logits, "
                "gradients and running averages (`tests/test_torch_twin.py`).")
    start, end = markers(section)
    lines = [start, f"## {TITLES[stage]}: our NumPy core vs PyTorch CPU", ""]
    if settings.get("quick"):
        lines += [f"**Smoke run (`--quick`, {images:,} images): not a measurement.**", ""]
    lines += [
        f"`{settings['architecture']}` (stage {stage}'s `SPEC.layers`: {', '.join(settings['layers'])}), "
        f"{settings['num_parameters']:,} parameters in both libraries; softmax cross-entropy; Adam "
        f"(lr {settings['lr']:g}, betas 0.9/0.999, eps 1e-08, constant rate), batch {settings['batch_size']} "
        f"reshuffled every epoch, {augmentation}, {images:,} MNIST training images in [0, 1], float32. "
        f"Ours: NHWC layers of {ours_layers} stepped by `common.nn.train.train_one_epoch`. "
        f"PyTorch {conv['environment'].get('torch', '')}: NCHW {torch_layers} of the "
        f"same shapes{memory}, `F.cross_entropy`, `{settings.get('torch_optimizer') or 'n/a'}`, the data as "
        f"pre-made tensors indexed per batch (no `DataLoader`).{twin} {settings['threads']} thread(s) for both. "
        f"Each library{' (and format)' if len(formats) > 1 else ''} and round ran in its own process, rounds "
        f"interleaved (ours, PyTorch, ours, ...): "
        f"{settings['repeats']} round(s) x {settings['epochs']} timed epoch(s), each process's first "
        f"(warm-up) epoch not counted. Seconds per epoch: median (and range) of all timed epochs; "
        f"GFLOP/s counts matrix-product work only ({settings['gflop_per_epoch']:.0f} GFLOP per epoch, "
        f"as `core_speed.py` counts it).",
        "",
        library_table(conv),
        "",
        f"Ours / PyTorch within each round (medians of that round's epochs): {per_round}. Every "
        f"epoch of every round is in `benchmark.json` under `{section}.rounds`.",
        "",
        targets_table(conv),
        "",
        "Environment:",
        "",
        *environment_lines(conv["environment"]),
        end,
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- merging into the result files

def top_keys(conv: dict) -> dict:
    """The top-level keys of ``benchmark.json`` that go with the record (``harness.CONV_TOP_KEYS``, which
    ``compare_libraries.py`` carries over with it)."""
    stage = record_stage(conv)
    if stage == "06":
        return {"conv_ratio_vs_pytorch": conv["ratio_vs_pytorch"]}
    return {"bn_conv_ratio_vs_pytorch": conv["ratio_vs_pytorch"],
            "bn_conv_seconds_per_epoch": dict(conv["seconds_per_epoch"])}


def write_results(out: Path, conv: dict) -> None:
    """Merge ``conv`` into ``out/benchmark.json`` (as ``conv``, or ``bn_conv`` for stage 07, with its
    top-level keys) and its section into ``out/benchmark.md``; the other stage's are kept."""
    merge_section(out, SECTIONS[record_stage(conv)], conv, top_keys(conv), render_section(conv))


# --------------------------------------------------------------------------- command line

def torch_installed() -> bool:
    return installed("torch")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(description="Seconds per epoch of a conv stage's network: our NumPy core vs PyTorch CPU.")
    parser.add_argument("--stage", choices=STAGES, default=STAGE,
                        help="06: stage 06's conv network (default); 07: stage 07's, with batch normalization "
                             "(its own section and keys: bn_conv, bn_conv_ratio_vs_pytorch)")
    parser.add_argument("--epochs", type=positive_int, default=2,
                        help="timed epochs per round, after one warm-up epoch (default 2)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="interleaved rounds (default 3)")
    add_run_options(parser, "folder of benchmark.json / benchmark.md to merge into (default results/; "
                            "results/local/benchmarks/ for --quick or without PyTorch)")
    parser.add_argument("--torch-memory-format", choices=tuple(FORMAT_CHOICES), default="best",
                        help="how PyTorch stores images and conv weights: best (the default) trains it in both "
                             "contiguous NCHW and channels-last every round and counts the faster; nchw or "
                             "channels-last measures one only")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_TRAIN_SIZE:,} images, 1 timed epoch, 1 round; writes to results/local/benchmarks/")
    add_worker_options(parser, LIBRARIES)  # internal: one library's round in a worker process
    parser.add_argument("--train-size", type=positive_int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        if not args.worker_result:
            parser.error("--worker needs --worker-result")
        return args
    if args.quick:
        args.epochs, args.repeats, args.train_size = 1, 1, args.train_size or QUICK_TRAIN_SIZE
    return args


def prepare_output(args: argparse.Namespace, skipped: dict) -> Path:
    """The folder this run merges into, checked before minutes of measuring (:func:`harness.prepare_output`)."""
    return harness_prepare_output(args.out, args.quick, skipped, SECTIONS[args.stage])


def run_rounds(args: argparse.Namespace, active: list[str], threads: int) -> list[dict]:
    """``--repeats`` interleaved rounds of every library in ``active``, each in its own process."""
    rounds: list[dict] = []
    for round_index in range(args.repeats):
        seed = args.seed + round_index
        for lib in active:
            for memory_format in FORMAT_CHOICES[args.torch_memory_format] if lib == "pytorch" else ("contiguous",):
                name = f"{lib} ({MEMORY_FORMATS[memory_format]})" if lib == "pytorch" else lib
                print(f"round {round_index + 1}: {name}", flush=True)
                result = {"library": lib, "round": round_index + 1, "seed": seed,
                          **run_round(lib, args, seed, threads, memory_format)}
                if result["threads"] != threads:
                    print(f"warning: {name} ran with {result['threads']} thread(s), not {threads}", file=sys.stderr)
                rounds.append(result)
                print(f"round {round_index + 1}: {name} {statistics.median(result['epoch_seconds']):8.2f} s/epoch "
                      f"(median of {len(result['epoch_seconds'])})", flush=True)
    return rounds


def run_settings(spec, args: argparse.Namespace, rounds: list[dict], threads: int, memory_format: str | None) -> dict:
    """The ``settings`` record: the network as measured (both libraries' parameter counts checked), the budget."""
    num_parameters = spec.architecture().num_parameters
    for result in rounds:
        if result["num_parameters"] != num_parameters:
            raise UserError(f"{result['library']} has {result['num_parameters']:,} parameters, "
                            f"stage {args.stage} {num_parameters:,}: not the same network")
    train_images = rounds[0]["train_images"]
    torch_rounds = [r for r in rounds if r["library"] == "pytorch"]
    return {
        "stage": args.stage, "architecture": spec.architecture().describe(), "layers": list(spec.layers),
        "num_parameters": num_parameters, "batch_size": spec.batch_size, "optimizer": spec.optimizer,
        "lr": spec.lr, "weight_decay": spec.weight_decay, "init": spec.init, "epochs": args.epochs,
        "repeats": args.repeats, "warmup_epochs": 1, "threads": threads, "train_images": train_images,
        "gflop_per_epoch": conv_gflop(spec, train_images), "seed": args.seed, "quick": args.quick,
        "torch_optimizer": torch_rounds[0]["optimizer"] if torch_rounds else None,
        "torch_layout": "NCHW", "ours_layout": "NHWC",
        "torch_memory_format": memory_format,  # PyTorch's counted format (the faster, with best)
        "torch_memory_formats": list(FORMAT_CHOICES[args.torch_memory_format]) if torch_rounds else [],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    blas.configure()
    spec = load_conv_spec(args.stage)
    skipped = {} if torch_installed() else {"pytorch": "not installed"}
    out = prepare_output(args, skipped)
    threads = args.threads or blas_threads()
    load_start = load_average()
    if skipped:
        print("pytorch: skipped (not installed; pip install -r benchmarks/requirements-bench.txt)", flush=True)
    active = [lib for lib in LIBRARIES if lib not in skipped]
    print(f"stage {args.stage} {spec.architecture().describe()}: {args.epochs} timed epoch(s) after a warm-up x "
          f"{args.repeats} round(s), {threads} thread(s), each in its own process: {', '.join(active)}", flush=True)
    rounds = run_rounds(args, active, threads)
    environment = run_environment(threads, load_start, argv, script=__file__, env_threads=args.threads)
    summary = summarize(rounds, skipped)
    conv = {**summary, "settings": run_settings(spec, args, rounds, threads, summary["pytorch_memory_format"]),
            "environment": environment, "rounds": rounds}
    write_results(out, conv)
    print()
    print(render_section(conv))
    print(f"wrote the {SECTIONS[args.stage]} section of {out / MARKDOWN_NAME} and {out / JSON_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
