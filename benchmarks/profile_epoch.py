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
parts sum to slightly more than an untimed epoch.

A second section does the same for stage 06's convolutional network, built from its ``SPEC``
(``Network.from_architecture(SPEC.architecture(), rng, SPEC.init)``, Adam at ``SPEC.lr``, batch
``SPEC.batch_size``, no augmentation): the same clocked step (``Reshape``, each ``Conv2D``,
``ReLU``, ``MaxPool2D``, ``Flatten``, ``Dense``, loss, optimizer, gather) over ``--conv-steps``
real shuffled batches, three times after a few warm-up steps, the median per part scaled to an
epoch (a conv epoch is minutes long, so it is sampled rather than run whole). A third section does
the same for stage 07's network, stage 06's with batch normalization: its ``BatchNorm`` layers get
their forward and backward rows like every other layer (no augmentation either: the stage's random
affine distortions are work outside the network).

Writes ``results/epoch_profile.md`` unless ``--out -``: the perceptron section, then the conv
section between ``<!-- conv:start -->`` and ``<!-- conv:end -->``, then the batch-norm one between
``<!-- bn_conv:start -->`` and ``<!-- bn_conv:end -->``. ``--only mlp``, ``--only conv`` or ``--only bn``
measures one of them and keeps the other sections of the existing file. ``--quick`` (a smoke run:
one epoch, two conv steps per block) writes ``results/local/benchmarks/epoch_profile.md`` instead, so the
committed profile stays as it is; ``--out PATH`` chooses.

Run: python benchmarks/profile_epoch.py [--epochs 15] [--conv-steps 40] [--only mlp|conv|bn] [--threads N] [--out results/epoch_profile.md] [--quick]
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from common import blas
from common.cli import positive_int, run_cli, writable_folder
from common.files import atomic_write_text
from common.paths import RESULTS_DIR, shown

from conv_speed import SECTIONS, conv_gflop, load_conv_spec
from core_speed import BATCH_SIZE, SIZES, matmul_peak, network_gflop
from harness import (
    QUICK_DIR,
    Parser,
    blas_threads,
    ensure_blas_threads,
    extract_section,
    load_training_data,
    markers,
    replace_section,
)

PROFILE_NAME = "epoch_profile.md"
QUICK_EPOCHS, QUICK_CONV_STEPS = 1, 2  # --quick: a smoke run, not a measurement
CONV_BLOCKS = 3        # the conv profile's timed blocks of --conv-steps steps (median per part)
CONV_WARMUP_STEPS = 5  # untimed steps first: buffers allocated, threads started
CONV_STAGES = {"conv": "06", "bn": "07"}  # --only conv / bn: the stage whose network is profiled


def timed_epoch(network, optimizer, groups, x, y, rng, batch_size: int = BATCH_SIZE,
                max_batches: int | None = None) -> dict[str, float]:
    """One epoch of ``train``'s step (``common.nn.train.train_step``) with a clock around each part;
    seconds per part. ``groups``: ``network.parameter_groups(...)``, as ``train`` hands the optimizer.

    ``max_batches``: stop after that many steps (the first batches of the epoch's shuffled order).
    """
    from common.nn.loss import softmax_cross_entropy
    from common.nn.train import iterate_minibatches

    clock = time.perf_counter
    names = [f"{index} {type(layer).__name__}" for index, layer in enumerate(network.layers)]
    parts = {"gather": 0.0, **{f"forward {n}": 0.0 for n in names}, "loss": 0.0,
             **{f"backward {n}": 0.0 for n in reversed(names)}, "optimizer": 0.0}
    for step, indices in enumerate(iterate_minibatches(len(x), batch_size, rng)):
        if max_batches is not None and step >= max_batches:
            break
        start = clock()
        x_batch, y_batch = x[indices], y[indices]
        parts["gather"] += clock() - start
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            out = x_batch
            for name, layer in zip(names, network.layers):
                start = clock()
                out = layer.forward(out, True, True)  # training, keeping what backward needs
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
            optimizer.step(groups)
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
    groups = network.parameter_groups(decay_weights=optimizer.weight_decay > 0)  # as train() does
    runs = [timed_epoch(network, optimizer, groups, x, y, rng) for _ in range(epochs + 1)][1:]
    floors = [matmul_only_epoch(network, x, y, rng) for _ in range(epochs + 1)][1:]
    parts = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    return {"parts": parts, "total": statistics.median(sum(run.values()) for run in runs),
            "matmul_floor": statistics.median(floors)}


def profile_conv(x, y, spec, steps: int, blocks: int = CONV_BLOCKS, warmup: int = CONV_WARMUP_STEPS,
                 seed: int = 0) -> dict:
    """Seconds per part of one training step of ``spec``'s network (median over ``blocks`` blocks
    of ``steps`` clocked steps, after ``warmup`` unclocked ones); backward rows of the layers before
    the first weighted one are left out (training never runs them: that layer skips dLoss/dInput)."""
    from common.nn.network import Network
    from common.nn.optimizers import make_optimizer
    from common.protocol import spawn_generators

    init_rng, rng = spawn_generators(seed, 2)
    network = Network.from_architecture(spec.architecture(), init_rng, spec.init, spec.init_scale)
    optimizer = make_optimizer(spec.optimizer, spec.lr, spec.weight_decay)
    groups = network.parameter_groups(decay_weights=optimizer.weight_decay > 0)  # as train() does
    batch_size = spec.batch_size
    if warmup:
        timed_epoch(network, optimizer, groups, x, y, rng, batch_size, max_batches=warmup)
    runs = [timed_epoch(network, optimizer, groups, x, y, rng, batch_size, max_batches=steps)
            for _ in range(blocks)]
    first_weighted = next(index for index, layer in enumerate(network.layers) if layer.params)
    never_run = {f"backward {index} {type(layer).__name__}" for index, layer in enumerate(network.layers)
                 if index < first_weighted}
    timed_steps = min(steps, math.ceil(len(x) / batch_size))
    parts = {name: statistics.median(run[name] for run in runs) / timed_steps
             for name in runs[0] if name not in never_run}
    return {"parts": parts, "total": statistics.median(sum(run.values()) for run in runs) / timed_steps,
            "never_run": sorted(never_run), "steps": timed_steps, "blocks": blocks,
            "num_parameters": network.num_parameters}


LAYER_KINDS = (  # the bullet per kind of layer under a conv profile's table, when the network has that kind
    ("Conv2D", "patch-matrix (im2col) copy and the product, bias included; backward: dW and db in one product, "
               "the k*k slice-adds of dX"),
    ("MaxPool2D", "element-wise maxima, recording each window's winner; backward: one mask per window element"),
    ("ReLU", "element-wise"),
    ("Dense", "matrix products, bias"),
    ("BatchNorm", "per-channel (images) or per-feature (vectors) batch mean and variance, normalise, scale and "
                  "shift, running averages; backward: dgamma and dbeta as column sums, the compact dX"),
)


def layer_kind_lines(parts: dict[str, float], total: float) -> list[str]:
    """One line per kind of layer in ``parts`` (``LAYER_KINDS``): its forward and backward ms per step, its share."""
    lines = []
    for kind, what in LAYER_KINDS:
        names = [name for name in parts if name.endswith(f" {kind}")]
        if not names:  # stage 06 has no BatchNorm
            continue
        forward = sum(parts[name] for name in names if name.startswith("forward"))
        backward = sum(parts[name] for name in names if name.startswith("backward"))
        lines.append(f"- {kind} layers ({what}): forward {1e3 * forward:.1f} ms + backward "
                     f"{1e3 * backward:.1f} ms per step, {100 * (forward + backward) / total:.0f} % of the step.")
    return lines


def render_conv(result: dict, spec, peak: float, threads: int, num_examples: int) -> str:
    """The conv section of ``epoch_profile.md`` for ``spec``'s stage (06: ``conv``, 07: ``bn_conv``), markers included."""
    from tabulate import tabulate

    batch_size = spec.batch_size
    per_epoch = math.ceil(num_examples / batch_size)
    parts, total = result["parts"], result["total"]
    rows = [[name, f"{1e3 * seconds:.2f}", f"{seconds * per_epoch:.2f}", f"{100 * seconds / total:.1f} %"]
            for name, seconds in parts.items()]
    rows.append(["**sum of the parts**", f"{1e3 * total:.2f}", f"{total * per_epoch:.2f}", "100 %"])
    table = tabulate(rows, headers=["part of the step", "ms per step", f"s per epoch (x {per_epoch})", "share"],
                     tablefmt="github", disable_numparse=True)

    gflop_step = conv_gflop(spec, batch_size)
    start, end = markers(SECTIONS[spec.name[:2]])
    augmentation = "no augmentation"
    if any(getattr(spec, f"affine_{what}", 0) for what in ("rotation", "scale", "shear")):
        augmentation += " (the stage's random affine distortions are work outside the network: not profiled)"
    lines = [
        start,
        f"# Where a stage-{spec.name[:2]} convolutional epoch goes",
        "",
        f"`{spec.architecture().describe()}` (stage {spec.name}'s `SPEC.layers`: {', '.join(spec.layers)}), "
        f"{result['num_parameters']:,} parameters, softmax cross-entropy, Adam lr {spec.lr:g}, batch "
        f"{batch_size}, {augmentation}, real shuffled MNIST training batches. The step of `train`, "
        f"with a clock around each part, for {result['steps']} steps, {result['blocks']} times after "
        f"{CONV_WARMUP_STEPS} unclocked ones; each part's median per step, and that times {per_epoch} "
        f"steps for an epoch of {num_examples:,} images. {threads} BLAS thread(s). Generated by "
        f"`python benchmarks/profile_epoch.py`; do not edit.",
        "",
        table,
        "",
        *layer_kind_lines(parts, total),
        f"- Optimizer {1e3 * parts['optimizer']:.1f} ms (Adam over {result['num_parameters']:,} parameters), "
        f"loss {1e3 * parts['loss']:.2f} ms, gather {1e3 * parts['gather']:.2f} ms per step.",
        f"- Matrix-product work: {gflop_step:.2f} GFLOP per step (as `conv_speed.py` counts it), so the "
        f"step runs at {gflop_step / total:.0f} GFLOP/s, {100 * gflop_step / total / peak:.0f} % of this "
        f"run's matmul peak of {peak:.0f} GFLOP/s.",
    ]
    if result["never_run"]:
        lines.append("- Not listed: " + ", ".join(f"`{name}`" for name in result["never_run"])
                     + " (the first weighted layer does not compute dLoss/dInput, so training never calls it).")
    lines += ["- The clocks add a little overhead of their own: the parts sum to slightly more than an "
              "unclocked step.", end]
    return "\n".join(lines)


def compose(existing: str, mlp: str | None, conv: str | None, bn: str | None = None) -> str:
    """The whole ``epoch_profile.md``: the perceptron part (new, or the existing file's, which is
    everything outside the marked sections), the stage-06 conv section and the stage-07 batch-norm
    one (each new, or the existing one; a section in neither is left out)."""
    text = existing if mlp is None else mlp
    for name, new in ((SECTIONS["06"], conv), (SECTIONS["07"], bn)):
        section = new if new is not None else extract_section(existing, name)
        if section:
            text = replace_section(text, name, section)
    return text


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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(description="Per-part time of our batch-128 Adam epoch and its matmul floor.")
    parser.add_argument("--epochs", type=positive_int, default=15, help="measured epochs after a warm-up (default 15)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="BLAS threads (sets the env and re-executes); default: leave as is")
    parser.add_argument("--out", default=None,
                        help=f"markdown report path, or - for stdout only (default results/{PROFILE_NAME}; "
                             f"results/local/benchmarks/{PROFILE_NAME} with --quick)")
    parser.add_argument("--data-dir", default=None, help="MNIST directory (default: data/mnist)")
    parser.add_argument("--conv-steps", type=positive_int, default=40,
                        help="clocked steps per block of the conv profiles, stage 06's and stage 07's "
                             "(3 blocks; default 40)")
    parser.add_argument("--only", choices=("mlp", "conv", "bn"), default=None,
                        help="profile only the perceptron, stage 06's conv network or stage 07's (with batch "
                             "normalization); the other sections of the existing file are kept (default: all three)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_EPOCHS} epoch, {QUICK_CONV_STEPS} conv steps per block; "
                             f"writes to results/local/benchmarks/")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.conv_steps = QUICK_EPOCHS, QUICK_CONV_STEPS
    return args


def report_path(args: argparse.Namespace) -> tuple[Path | None, str]:
    """``(path, why)``: ``--out`` (None for ``-``), else ``results/local/benchmarks/`` for ``--quick`` (the committed
    profile stays as it is), else ``results/``; checked before minutes of measuring, not after."""
    if args.out == "-":
        return None, "--out -"
    if args.out:
        out, why = Path(args.out), "--out"
    elif args.quick:
        out, why = QUICK_DIR / PROFILE_NAME, "a --quick run: the committed profile stays as it is"
    else:
        out, why = RESULTS_DIR / PROFILE_NAME, "the default"
    writable_folder(out.parent, "--out")
    return out, why


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out, why = report_path(args)
    existing = out.read_text(encoding="utf-8") if out is not None and out.exists() else ""
    for section in SECTIONS.values():  # broken markers: one line now, not after the measurement
        extract_section(existing, section)
    ensure_blas_threads(args.threads)
    blas.configure()
    if out is not None:
        print(f"the report goes to {shown(out)} ({why}; --out PATH chooses)", flush=True)

    x, y, _, _ = load_training_data(args.data_dir)
    peak = matmul_peak(repeats=3)["gflops"]
    mlp = None
    convs: dict[str, str | None] = {"conv": None, "bn": None}
    if args.only in (None, "mlp"):
        result = profile(x, y, args.epochs)
        mlp = render(result, peak, network_gflop(SIZES, len(x)), blas_threads(), args.epochs, x.nbytes / 1e6)
    for which, stage in CONV_STAGES.items():
        if args.only in (None, which):
            spec = load_conv_spec(stage)
            convs[which] = render_conv(profile_conv(x, y, spec, args.conv_steps), spec, peak, blas_threads(), len(x))
    report = compose(existing, mlp, convs["conv"], convs["bn"])
    print(report)
    if out is not None:
        atomic_write_text(out, report)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
