"""Seconds per epoch on a busy machine: ``--threads auto`` against every fixed thread count, and PyTorch.

A learner's laptop is rarely idle. When other programs keep cores busy, a thread of ours that shares
a core with them gets part of it, and every step waits for it. ``common/threads.py`` follows the cores
other programs leave free (``--threads auto``, every script's default). This benchmark measures it:

* loads: 0, 1 and 2 competing busy processes (each a Python loop that never sleeps, started before
  the load's rounds and stopped after them);
* networks: the ``[784, 128, 64, 10]`` perceptron (stage 04's network; whole 60,000-image epochs)
  and stage 06's convolutional network (a slice of ``CONV_IMAGES`` images, its time scaled to the
  60,000 images of an epoch);
* rivals, each in its own process, rounds interleaved (every rival once per round, in turn, so that
  a drift in the load hits all alike; each round starts one rival later, so none is always first): ours with ``--threads auto``, ours with each fixed count
  1..CPUs, and PyTorch CPU with each fixed count (``torch.set_num_threads``; fused Adam with
  subnormals flushed, as ``compare_libraries.py`` runs it at its best; PyTorch has no ``auto``).

Each process trains one warm-up pass (not timed, and time for ``auto`` to read the load) and then
``--mlp-epochs`` timed epochs of the perceptron or ``--epochs`` timed passes of the conv network; a
process's figure is the median of its passes, a rival's the median over its rounds. Reported for each
network and load with competing processes:

* ``under_load_ratio_vs_best_fixed``: ours ``auto`` / ours at the best fixed count for that load
  (target at most 1.3: ``auto`` has to find it without being told);
* ``under_load_ratio_vs_pytorch``: ours ``auto`` / PyTorch at its best fixed count for that load
  (target below 1.0);

and, idle, ``auto`` / ours at every core (today's default before ``auto``; target within 5 %).
The JSON keys hold the worst load of each network. Writes its section into
``results/benchmark.json`` (key ``under_load`` and the two top-level ratios) and ``results/benchmark.md``
(between ``<!-- under_load:start -->`` and ``<!-- under_load:end -->``), like ``conv_speed.py``; a
``--quick`` run, or one without PyTorch, goes to ``results/local/benchmarks/``.

Run: python benchmarks/under_load.py [--rounds 3] [--epochs 2] [--mlp-epochs 6] [--loads 0,1,2] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from common import blas, threads
from common.cli import positive_int, run_cli
from common.files import atomic_write_json
from common.nn.errors import UserError
from common.stages import load_specs

from conv_speed import train_ours, train_pytorch
from harness import (
    JSON_NAME,
    MARKDOWN_NAME,
    Parser,
    add_run_options,
    environment_lines,
    installed,
    load_average,
    load_training_data,
    markers,
    merge_section,
    prepare_output,
    run_environment,
    run_worker,
)

SECTION = "under_load"
TOP_KEYS = ("under_load_ratio_vs_best_fixed", "under_load_ratio_vs_pytorch")
NETWORKS = {"mlp": "04", "conv": "06"}
"""Each network, by the stage whose ``SPEC`` describes it (read every run, never copied here)."""
NETWORK_LABELS = {"mlp": "[784, 128, 64, 10] perceptron (stage 04)", "conv": "convolutional network (stage 06)"}
CONV_IMAGES = 7_680  # 60 steps of batch 128 per timed pass: a conv epoch under load would take minutes
EPOCH_IMAGES = 60_000
QUICK_IMAGES = 1_280
TARGET_VS_BEST_FIXED, TARGET_VS_PYTORCH, IDLE_TOLERANCE = 1.3, 1.0, 1.05
BUSY_LOOP = "while True:\n    pass\n"


# --------------------------------------------------------------------------- one rival, in a worker process

def worker(args: argparse.Namespace) -> int:
    """The ``--worker`` process: one rival, one network, one round; its record goes to ``--worker-result``."""
    library, setting = args.worker.split(":")
    blas.configure()
    if library == "ours":
        held = threads.configure(threads.threads_option(setting))
    spec = load_specs([NETWORKS[args.network]])[NETWORKS[args.network]]
    x, y, _, _ = load_training_data(args.data_dir)
    images = args.images or (EPOCH_IMAGES if args.network == "mlp" else CONV_IMAGES)
    x, y = x[:images], y[:images]
    if library == "ours":
        result = train_ours(spec, x, y, args.epochs, args.seed)
        result.update(held=held, changes=threads.changes())
        threads.stop()
    else:
        result = train_pytorch(spec, x, y, args.epochs, args.seed, int(setting), flush_subnormals=True)
    result.update(train_images=len(y), epoch_scale=EPOCH_IMAGES / len(y))
    atomic_write_json(args.worker_result, result)
    return 0


def rivals(cpus: int, with_torch: bool) -> list[str]:
    """``library:threads`` of every rival: ours auto and fixed 1..cpus, PyTorch fixed 1..cpus."""
    counts = [str(n) for n in range(1, cpus + 1)]
    return ["ours:auto", *(f"ours:{n}" for n in counts), *((f"pytorch:{n}" for n in counts) if with_torch else ())]


def start_busy(count: int) -> list[subprocess.Popen]:
    """``count`` processes that keep a core busy each, until stopped."""
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]


def stop_busy(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
    for process in processes:
        process.wait()


def run_load(load: int, args: argparse.Namespace, names: list[str]) -> list[dict]:
    """Every round of every rival on both networks with ``load`` competing busy processes running."""
    records = []
    busy = start_busy(load)
    try:
        time.sleep(0.5 if load else 0.0)
        for round_index in range(args.rounds):
            for network in args.networks:
                # each round starts with the next rival, so that none is always first after a change of network
                offset = round_index % len(names)
                for name in names[offset:] + names[:offset]:
                    epochs = args.mlp_epochs if network == "mlp" else args.epochs
                    arguments = ["--worker", name, "--network", network, "--epochs", str(epochs),
                                 "--seed", str(args.seed + round_index)]
                    if args.images:
                        arguments += ["--images", str(args.images)]
                    if args.data_dir:
                        arguments += ["--data-dir", args.data_dir]
                    result = run_worker(__file__, arguments, None, f"{name} {network}")
                    epoch = statistics.median(result["epoch_seconds"]) * result["epoch_scale"]
                    records.append({"load": load, "round": round_index + 1, "network": network, "rival": name,
                                    "seconds_per_epoch": epoch, **result})
                    chosen = f", auto chose {result['changes']}" if name == "ours:auto" else ""
                    print(f"load {load}, round {round_index + 1}, {network:4s} {name:10s} {epoch:7.2f} s/epoch"
                          f"{chosen}", flush=True)
    finally:
        stop_busy(busy)
    return records


# --------------------------------------------------------------------------- figures

def summarize(records: list[dict], loads: list[int], networks: list[str], names: list[str]) -> dict:
    """Medians per (network, load, rival) and the ratios of ``auto`` to the best fixed count and to PyTorch."""
    table: dict = {}
    for network in networks:
        table[network] = {}
        for load in loads:
            medians = {name: statistics.median(r["seconds_per_epoch"] for r in records
                                               if r["network"] == network and r["load"] == load and r["rival"] == name)
                       for name in names}
            fixed = {name: value for name, value in medians.items() if name.startswith("ours:") and name != "ours:auto"}
            torch = {name: value for name, value in medians.items() if name.startswith("pytorch:")}
            best_fixed = min(fixed, key=fixed.get)
            best_torch = min(torch, key=torch.get) if torch else None
            cpus = max(int(name.split(":")[1]) for name in fixed)
            table[network][str(load)] = {
                "seconds_per_epoch": medians, "best_fixed": best_fixed, "best_pytorch": best_torch,
                "ratio_vs_best_fixed": medians["ours:auto"] / fixed[best_fixed],
                "ratio_vs_pytorch": medians["ours:auto"] / torch[best_torch] if torch else None,
                "ratio_vs_all_cores": medians["ours:auto"] / fixed[f"ours:{cpus}"],
            }
    busy_loads = [str(load) for load in loads if load > 0]

    def worst(key: str) -> dict:
        return {network: max((table[network][load][key] for load in busy_loads
                              if table[network][load][key] is not None), default=None) for network in networks}

    idle = {network: table[network]["0"]["ratio_vs_all_cores"] for network in networks} if 0 in loads else {}
    return {"by_network": table, "under_load_ratio_vs_best_fixed": worst("ratio_vs_best_fixed"),
            "under_load_ratio_vs_pytorch": worst("ratio_vs_pytorch"), "idle_ratio_vs_all_cores": idle}


def check_mark(value: float | None, ok: bool) -> str:
    return "n/a" if value is None else ("yes" if ok else "no")


def render_section(record: dict) -> str:
    """The markdown section, markers included, from the ``under_load`` record alone."""
    from tabulate import tabulate

    settings, table = record["settings"], record["by_network"]
    start, end = markers(SECTION)
    lines = [start, "## Under load: `--threads auto` on a busy machine", ""]
    if settings.get("quick"):
        lines += [f"**Smoke run (`--quick`, {settings['images']:,} images): not a measurement.**", ""]
    lines += [
        f"Seconds per epoch (60,000 images; the conv network timed on {settings['conv_images']:,} and scaled) "
        f"with 0, 1 and 2 competing busy processes on this {settings['cpus']}-CPU machine. Ours: `auto` "
        "(`common/threads.py`: both thread counts follow the cores other programs leave free) and every "
        "fixed count; PyTorch CPU at every fixed count (`torch.set_num_threads`, fused Adam, subnormals "
        "flushed). Each rival in its own process, rounds interleaved; each process trains one untimed "
        f"warm-up pass and then {settings.get('mlp_epochs', settings['epochs'])} timed epochs (perceptron) or "
        f"{settings['epochs']} timed passes (conv), its figure the median of them; the table: the median over "
        f"{settings['rounds']} rounds. "
        "Adam, batch 128, no augmentation, float32.",
        "",
    ]
    for network, loads in table.items():
        rivals_seen = list(next(iter(loads.values()))["seconds_per_epoch"])
        rows = []
        for load, entry in loads.items():
            cells = [f"{entry['seconds_per_epoch'][name]:.2f}" for name in rivals_seen]
            torch_ratio = "n/a" if entry["ratio_vs_pytorch"] is None else f"{entry['ratio_vs_pytorch']:.2f}"
            rows.append([load, *cells, f"{entry['ratio_vs_best_fixed']:.2f}", torch_ratio])
        headers = ["busy processes", *[name.replace(":", " ") for name in rivals_seen], "auto / best fixed ours",
                   "auto / best PyTorch"]
        lines += [f"**{NETWORK_LABELS[network]}**, s/epoch:", "",
                  tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), ""]
    changes = sorted({str(r["changes"]) for r in record["rounds"] if r["rival"] == "ours:auto" and r["load"] > 0})
    lines += [f"What `auto` chose under load (seconds since start, threads): {'; '.join(changes) or 'n/a'}.", ""]
    rows = []
    for network in table:
        fixed, torch = record["under_load_ratio_vs_best_fixed"][network], record["under_load_ratio_vs_pytorch"][network]
        rows.append([NETWORK_LABELS[network], "auto / best fixed ours, worst load", f"<= {TARGET_VS_BEST_FIXED}",
                     f"{fixed:.2f}", check_mark(fixed, fixed <= TARGET_VS_BEST_FIXED)])
        rows.append([NETWORK_LABELS[network], "auto / best PyTorch, worst load", f"< {TARGET_VS_PYTORCH}",
                     "n/a" if torch is None else f"{torch:.2f}", check_mark(torch, torch is not None and torch < TARGET_VS_PYTORCH)])
        idle = record["idle_ratio_vs_all_cores"].get(network)
        if idle is not None:
            rows.append([NETWORK_LABELS[network], f"idle: auto / ours on all {settings['cpus']} cores",
                         f"<= {IDLE_TOLERANCE}", f"{idle:.2f}", check_mark(idle, idle <= IDLE_TOLERANCE)])
    lines += [tabulate(rows, headers=["network", "target", "threshold", "measured", "met"], tablefmt="github",
                       disable_numparse=True), "", "Environment:", "", *machine_lines(record["environment"]), end]
    return "\n".join(lines)


def machine_lines(environment: dict) -> list[str]:
    """:func:`harness.environment_lines` with its thread line told as this benchmark ran: every count."""
    lines = [line for line in environment_lines(environment) if not line.startswith("- threads:")]
    return [*lines, f"- threads: auto and every fixed count from 1 to {environment['cpu_count']} (the table); "
                    "no thread variables set in the workers' environment"]


def write_results(out: Path, record: dict) -> None:
    """Merge ``record`` into ``out/benchmark.json`` and its section into ``out/benchmark.md``."""
    merge_section(out, SECTION, record, {key: record[key] for key in TOP_KEYS}, render_section(record))


# --------------------------------------------------------------------------- command line

def parse_loads(text: str) -> list[int]:
    try:
        loads = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected busy-process counts such as 0,1,2, got {text!r}") from None
    if not loads or min(loads) < 0 or max(loads) > 16:
        raise argparse.ArgumentTypeError(f"expected counts from 0 to 16, got {text!r}")
    return loads


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = Parser(description="Seconds per epoch with competing busy processes: --threads auto against fixed "
                                "thread counts and PyTorch.")
    parser.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds per load (default 3)")
    parser.add_argument("--epochs", type=positive_int, default=2,
                        help="timed passes of the conv network per process, after one warm-up pass (default 2)")
    parser.add_argument("--mlp-epochs", type=positive_int, default=6,
                        help="timed epochs of the perceptron per process, after one warm-up epoch (default 6: "
                             "a quarter-second epoch needs several for a steady median)")
    parser.add_argument("--loads", type=parse_loads, default=[0, 1, 2],
                        help="numbers of competing busy processes (default 0,1,2)")
    parser.add_argument("--networks", default="mlp,conv", help="mlp, conv or both (default mlp,conv)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_IMAGES:,} images, 1 round, loads 0 and 1; writes to results/local/benchmarks/")
    add_run_options(parser, "folder of benchmark.json / benchmark.md to merge into (default results/; "
                            "results/local/benchmarks/ for --quick or without PyTorch)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--network", choices=list(NETWORKS), default="mlp", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=positive_int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.networks = [part.strip() for part in args.networks.split(",") if part.strip()]
    if not args.networks or set(args.networks) - set(NETWORKS):
        parser.error(f"--networks: choose from {', '.join(NETWORKS)}, got {','.join(args.networks)}")
    if args.threads is not None:
        parser.error("--threads: this benchmark runs every thread count itself")
    if args.quick:
        args.rounds, args.epochs, args.mlp_epochs, args.images = 1, 1, 1, args.images or QUICK_IMAGES
        args.loads = [load for load in args.loads if load <= 1] or [0]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    blas.configure()
    with_torch = installed("torch")
    skipped = {} if with_torch else {"pytorch": "not installed"}
    out = prepare_output(args.out, args.quick, skipped, SECTION, committed_section="conv")
    cpus = len(threads.usable_cpus())
    names = rivals(cpus, with_torch)
    load_start = load_average()
    records = [record for load in args.loads for record in run_load(load, args, names)]
    if not records:
        raise UserError("nothing was measured")
    record = {**summarize(records, args.loads, args.networks, names),
              "settings": {"loads": args.loads, "rounds": args.rounds, "epochs": args.epochs,
                           "mlp_epochs": args.mlp_epochs, "cpus": cpus,
                           "conv_images": args.images or CONV_IMAGES, "images": args.images or EPOCH_IMAGES,
                           "quick": args.quick, "networks": args.networks},
              "environment": run_environment(cpus, load_start, argv, script=__file__), "rounds": records,
              "skipped": skipped}
    write_results(out, record)
    print()
    print(render_section(record))
    print(f"wrote the {SECTION} section of {out / MARKDOWN_NAME} and {out / JSON_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
