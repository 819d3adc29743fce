"""Make a stage's open choices on a validation split, never on the test set.

For each setting in a small grid, train the stage on 50,000 training images and measure the
accuracy on the other 10,000 (a seeded validation split); the test set is not loaded into any
decision. Writes ``results/tuning/<stage>.md`` and ``.csv``.

    python experiments/tune.py --stage 02 --lr 0.1,0.2,0.5,1.0
    python experiments/tune.py --stage 03 --lr 0.05,0.1,0.2
    python experiments/tune.py --stage 04 --epochs 10,20,30 --schedule constant,cosine
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
from tabulate import tabulate

from common import blas
from common.cli import OneLineParser, parse_list, run_cli, writable_folder
from common.environment import describe_environment
from common.files import atomic_write_text
from common.nn.errors import DivergenceError, UserError
from common.paths import RESULTS_DIR
from common.runner import load_data, run_stage
from common.stages import load_specs

GRID_OPTIONS = {"lr": float, "epochs": int, "schedule": str, "batch_size": int,
                "hidden_dropout": float, "input_dropout": float, "weight_decay": float, "shift": int}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True, help="stage number, e.g. 02")
    for option in GRID_OPTIONS:
        parser.add_argument(f"--{option.replace('_', '-')}", default=None,
                            help=f"comma-separated values of {option} to try")
    parser.add_argument("--validation-size", type=int, default=10_000)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "tuning")
    parser.add_argument("--name", default=None,
                        help="file name of the table, without extension (default: the stage's name)")
    return parser.parse_args(argv)


def parse_grid(args: argparse.Namespace) -> dict[str, list]:
    """``{"lr": [0.1, 0.2], ...}`` from the grid options given on the command line."""
    grid = {}
    for option, kind in GRID_OPTIONS.items():
        text = getattr(args, option)
        if text:
            try:
                grid[option] = [kind(value) for value in text.split(",")]
            except ValueError:
                raise UserError(f"--{option.replace('_', '-')}: cannot read {text!r}") from None
    if not grid:
        raise UserError("give at least one grid option, e.g. --lr 0.1,0.2")
    return grid


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    writable_folder(args.out)
    blas.configure()
    (spec,) = load_specs([args.stage]).values()
    grid = parse_grid(args)
    seeds = parse_list(args.seeds, int, "--seeds")
    data = load_data(args.data_dir)

    rows = []
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        trial = dataclasses.replace(spec, validation_size=args.validation_size, **setting)
        for seed in seeds:
            try:
                metrics = run_stage(trial, seed, data, out_dir=None, progress=False)
            except DivergenceError as error:  # a rate too large is a result of the sweep, not the end of it
                print(f"{setting} seed {seed}: {error}", flush=True)
                metrics = {"val_accuracy": None, "train_accuracy": None, "seconds": None}
            row = {**setting, "seed": seed, "val_accuracy": metrics["val_accuracy"],
                   "train_accuracy": metrics["train_accuracy"], "seconds": metrics["seconds"]}
            print("  ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                            for key, value in row.items()), flush=True)
            rows.append(row)

    text = tuning_markdown(spec, grid, pd.DataFrame(rows), args.validation_size)
    name = args.name or spec.name
    atomic_write_text(args.out / f"{name}.md", text)
    atomic_write_text(args.out / f"{name}.csv", pd.DataFrame(rows).to_csv(index=False))
    print(text)
    return 0


def tuning_markdown(spec, grid: dict[str, list], frame: pd.DataFrame, validation_size: int) -> str:
    """The page: one row per setting (validation accuracy mean ± std over seeds), the best, provenance."""
    summary = frame.groupby(list(grid), sort=False).agg(
        val_accuracy=("val_accuracy", "mean"), val_std=("val_accuracy", "std"),
        train_accuracy=("train_accuracy", "mean"), seconds=("seconds", "mean"),
        seeds=("seed", "count"), finished=("val_accuracy", "count")).reset_index()
    best = summary.loc[summary["val_accuracy"].idxmax()]
    rows = []
    for row in summary.to_dict("records"):
        if row["finished"] == 0:
            rows.append([*(row[key] for key in grid), "diverged", "-", "-", row["seeds"]])
            continue
        accuracy = f"{100 * row['val_accuracy']:.2f}" + (f" ± {100 * row['val_std']:.2f}" if row["finished"] > 1 else "")
        if row["finished"] < row["seeds"]:
            accuracy += f" ({row['seeds'] - row['finished']} diverged)"
        rows.append([*(row[key] for key in grid), accuracy, f"{100 * row['train_accuracy']:.2f}",
                     f"{row['seconds']:.1f}", row["seeds"]])
    table = tabulate(rows, headers=[*grid, "validation accuracy %", "train accuracy %", "seconds", "seeds"],
                     tablefmt="github", disable_numparse=True)
    environment = describe_environment()
    spread = " (mean ± std over the seeds)" if summary["seeds"].max() > 1 else ""
    return (f"# Tuning stage {spec.name} on a validation split\n\n"
            f"{validation_size:,} training images held out as validation (seeded); the test set plays no part{spread}.\n\n"
            f"{table}\n\nBest on validation: "
            + ", ".join(f"{key} = {best[key]}" for key in grid)
            + f" ({100 * best['val_accuracy']:.2f} %).\n\n"
            f"Command: `{environment['command']}`  \n"
            f"Environment: {environment['date']}, commit {environment['commit']}, Python {environment['python']}, "
            f"NumPy {environment['numpy']} ({environment['blas']}), {environment['cpu_count']} CPUs.\n")


if __name__ == "__main__":
    sys.exit(run_cli(main))
