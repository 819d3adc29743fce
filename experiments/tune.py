"""Make a stage's open choices on a validation split, never on the test set.

For each setting in a small grid, train the stage on 50,000 training images and measure the
accuracy on the other 10,000 (a seeded validation split); the test set plays no part in any
decision. Each (setting, seed) run is saved with a fingerprint of its settings and of the numeric
code, and reused while both are unchanged, like the comparison's runs. Writes ``<name>.md`` and
``<name>.csv`` (``<name>``: the stage's name unless ``--name``) to ``results/local/tuning/``; the
committed tables in ``results/tuning/`` were written with ``--out results/tuning``, the command each
of them names (a run of your own reuses their saved runs).

    python experiments/tune.py --stage 02 --lr 0.1,0.2,0.5,1.0
    python experiments/tune.py --stage 04 --epochs 10,20,30 --schedule constant,cosine --seeds 0,1,2
    python experiments/tune.py --stage 07 --lr 0.001,0.003 --affine 0/0/0,10/0.1/10
    python experiments/tune.py --stage 07 --layers stage,dropout --epochs 15,30
    python experiments/tune.py --stage 07 --elastic 0/0,34/4

``--layers`` names networks: ``stage`` is the stage's own, other names come from the ``LAYER_CHOICES``
dict of the stage's script.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import shlex
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
from tabulate import tabulate

from common import blas, threads
from common.cli import OneLineParser, non_negative_int, parse_list, run_cli, writable_folder
from common.files import atomic_write_json, atomic_write_text
from common.nn.errors import UserError
from common.paths import LOCAL_DIR, REPO_ROOT, RESULTS_DIR, shown
from common.report import provenance_line, render_key, runs_environment, up_to_date
from common.runner import load_data
from common.runs import Runner, plan_progress
from common.stages import layer_choices, load_specs
from common.stats import compare_runs


def dropout_pair(text: str) -> str:
    """``"0.2/0.4"``: input and hidden dropout rates, each in [0, 1) (kept as text: a table's label)."""
    parts = text.split("/")
    if len(parts) != 2 or not all(part.replace(".", "", 1).isdigit() and float(part) < 1 for part in parts):
        raise ValueError(text)
    return f"{float(parts[0]):g}/{float(parts[1]):g}"


def affine_triple(text: str) -> str:
    """``"10/0.1/10"`` -> the same, normalised: rotation (degrees), scale and shear (degrees) of the
    random affine distortions; ``0/0/0`` turns them off (the stage's shifts alone)."""
    parts = text.split("/")
    if len(parts) != 3 or not all(part.replace(".", "", 1).isdigit() for part in parts):
        raise ValueError(text)
    return "/".join(f"{float(part):g}" for part in parts)


def elastic_pair(text: str) -> str:
    """``"34/4"`` -> the same, normalised: alpha (pixels) and sigma (pixels) of the random elastic
    distortions; ``0/0`` turns them off."""
    parts = text.split("/")
    if len(parts) != 2 or not all(part.replace(".", "", 1).isdigit() for part in parts):
        raise ValueError(text)
    return "/".join(f"{float(part):g}" for part in parts)


def on_off(text: str) -> bool:
    """``"1"``/``"on"`` -> True, ``"0"``/``"off"`` -> False (a setting that is either done or not)."""
    choices = {"1": True, "on": True, "0": False, "off": False}
    if text.lower() not in choices:
        raise ValueError(text)
    return choices[text.lower()]


GRID_OPTIONS = {"lr": float, "epochs": int, "schedule": str, "batch_size": int, "hidden_dropout": float,
                "input_dropout": float, "dropout": dropout_pair, "weight_decay": float, "shift": int, "warmup": int,
                "affine": affine_triple, "elastic": elastic_pair, "layers": str,
                "recalibrate_batchnorm": on_off, "label_smoothing": float}
"""The settings a grid can vary; ``dropout`` sets input and hidden rates together, as ``IN/HIDDEN``,
``affine`` the three strengths of the affine distortions, as ``ROTATION/SCALE/SHEAR``, ``elastic`` those of
the elastic ones, as ``ALPHA/SIGMA``, ``layers`` a network by its name in the stage's choices
(:func:`common.stages.layer_choices`: ``stage`` is its own), and ``recalibrate_batchnorm`` (``0``/``1``, or
``off``/``on``) whether batch norm's statistics are re-estimated on clean training digits after training;
``label_smoothing`` the share of the target spread over all classes (``0``: plain cross-entropy)."""


def overrides_of(setting: dict, networks: dict[str, tuple[str, ...]]) -> dict:
    """The StageSpec fields a grid setting changes (``dropout`` "0.2/0.4" -> both rates, ``layers``
    "dropout" -> the layer strings ``networks`` names so)."""
    fields = {key: value for key, value in setting.items() if key not in ("dropout", "affine", "elastic", "layers")}
    if "elastic" in setting:
        fields["elastic_alpha"], fields["elastic_sigma"] = (float(x) for x in setting["elastic"].split("/"))
    if "layers" in setting:
        fields["layers"] = networks[setting["layers"]]
    if "dropout" in setting:
        fields["input_dropout"], fields["hidden_dropout"] = (float(x) for x in setting["dropout"].split("/"))
    if "affine" in setting:
        fields["affine_rotation"], fields["affine_scale"], fields["affine_shear"] = (
            float(x) for x in setting["affine"].split("/"))
    return fields
COMMITTED_OUT = RESULTS_DIR / "tuning"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python experiments/tune.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", required=True, help="stage number, e.g. 02")
    for option in GRID_OPTIONS:
        parser.add_argument(f"--{option.replace('_', '-')}", default=None,
                            help=f"comma-separated values of {option} to try")
    parser.add_argument("--validation-size", type=non_negative_int, default=10_000)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=LOCAL_DIR / "tuning",
                        help="output folder (default results/local/tuning/; the committed tables: results/tuning)")
    parser.add_argument("--name", default=None,
                        help="file name of the table, without extension (default: the stage's name)")
    parser.add_argument("--force", action="store_true", help="re-train runs that are saved and unchanged")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    threads.add_threads_option(parser)
    return parser.parse_args(argv)


def parse_grid(args: argparse.Namespace) -> dict[str, list]:
    """``{"lr": [0.1, 0.2], ...}`` from the grid options given on the command line."""
    grid = {}
    for option, kind in GRID_OPTIONS.items():
        text = getattr(args, option)
        if text is not None:
            grid[option] = parse_list(text, kind, f"--{option.replace('_', '-')}")  # repeats are refused
    if not grid:
        raise UserError("give at least one grid option, e.g. --lr 0.1,0.2")
    return grid


def parse_seeds(text: str) -> list[int]:
    seeds = parse_list(text, int, "--seeds")
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds needs distinct non-negative integers, e.g. 0,1,2; got {text!r}")
    return seeds


def run_key(name: str, setting: dict) -> str:
    """``tune-04_adam-epochs10-schedulecosine``: the saved run's folder name."""
    return "-".join(["tune", name, *(f"{key.replace('_', '')}{str(value).replace('/', '-')}"
                                     for key, value in setting.items())])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    writable_folder(args.out)
    (spec,) = load_specs([args.stage]).values()
    grid, seeds = parse_grid(args), parse_seeds(args.seeds)
    networks = layer_choices(args.stage) if "layers" in grid else {}
    unknown = [name for name in grid.get("layers", []) if name not in networks]
    if unknown:
        raise UserError(f"--layers: stage {args.stage} has no network named {', '.join(map(repr, unknown))}; "
                        f"its choices are {', '.join(networks)}")
    name = args.name or spec.name
    data = load_data(args.data_dir)
    blas.configure()
    threads.configure(args.threads)
    settings = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    trials = [(setting, dataclasses.replace(spec, validation_size=args.validation_size, **overrides_of(setting, networks)))
              for setting in settings]
    runs_dir = args.out / "runs" / name
    committed = args.out.resolve() == COMMITTED_OUT.resolve()
    sources = () if committed else (COMMITTED_OUT / "runs" / name,)
    # A setting some other tuning table already ran (its baseline, say) is shared, not trained again.
    shared_from = (COMMITTED_OUT / "runs",) + (() if committed else (args.out / "runs",))
    runner = Runner(data, runs_dir, args.force, not args.quiet, sources, shared_from)
    runner.tracker = plan_progress([(run_key(name, s), trial, seed) for s, trial in trials for seed in seeds],
                                   runs_dir, args.force, sources)
    rows, records = [], []
    for setting, trial in trials:
        for seed in seeds:
            record = runner.run(run_key(name, setting), trial, seed)
            ok = record["status"] == "ok"
            rows.append({**setting, "seed": seed, "val_accuracy": record.get("val_accuracy") if ok else None,
                         "train_accuracy": record.get("train_accuracy") if ok else None,
                         "seconds": record.get("seconds") if ok else None})
            records.append(record)
    frame = pd.DataFrame(rows)
    command = "python experiments/tune.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = write_pages(args.out, name, spec, grid, frame, records, args.validation_size, command)
    print(text)
    if frame["val_accuracy"].isna().all():
        raise UserError(f"every setting of the grid failed or diverged (see {shown(args.out / name)}.md); "
                        "try smaller learning rates")
    return 0


def write_pages(out: Path, name: str, spec, grid: dict[str, list], frame: pd.DataFrame, records: list[dict],
                validation_size: int, command: str) -> str:
    """``<name>.md`` and ``<name>.csv``, unless already rendered from exactly these runs and this code."""
    key = render_key(records, [Path(__file__), REPO_ROOT / "common" / "report.py", REPO_ROOT / "common" / "stats.py"])
    stamp = out / "runs" / name / "rendered.json"
    if up_to_date(key, stamp, [out / f"{name}.md", out / f"{name}.csv"]):
        print(f"{shown(out / name)}.md is up to date with its {len(records)} runs; nothing written")
        return (out / f"{name}.md").read_text(encoding="utf-8")
    environment = runs_environment([r for r in records if r.get("status") == "ok"] or records)
    text = tuning_markdown(spec, grid, frame, validation_size, environment, command)
    atomic_write_text(out / f"{name}.md", text)
    atomic_write_text(out / f"{name}.csv", frame.to_csv(index=False))
    atomic_write_json(stamp, {"rendered_from": key})
    return text


def summary_rows(grid: dict[str, list], summary: pd.DataFrame) -> list[list]:
    rows = []
    for row in summary.to_dict("records"):
        if row["finished"] == 0:
            rows.append([*(row[key] for key in grid), "failed or diverged", "-", "-", row["seeds"]])
            continue
        accuracy = f"{100 * row['val_accuracy']:.2f}" + (f" ± {100 * row['val_std']:.2f}" if row["finished"] > 1 else "")
        if row["finished"] < row["seeds"]:
            accuracy += f" ({row['seeds'] - row['finished']} diverged)"
        rows.append([*(row[key] for key in grid), accuracy, f"{100 * row['train_accuracy']:.2f}",
                     f"{row['seconds']:.1f}", row["seeds"]])
    return rows


def runner_up(frame: pd.DataFrame, grid: dict[str, list], ranked: pd.DataFrame) -> str:
    """`` Against the runner-up (X): +0.12 ± 0.05 points, not distinguishable.``: the one rule (common.stats),
    paired by seed; nothing with a single setting."""
    if len(ranked) < 2:
        return ""

    def runs(row) -> list[dict]:
        mask = (frame[list(grid)] == pd.Series({key: row[key] for key in grid})).all(axis=1)
        chosen = frame[mask & frame["val_accuracy"].notna()]
        return [{"seed": int(s), "val_accuracy": float(v)} for s, v in zip(chosen["seed"], chosen["val_accuracy"])]

    second = ranked.iloc[1]
    gap = compare_runs(runs(ranked.iloc[0]), runs(second), "val_accuracy")
    return (f" Against the runner-up ({setting_text(grid, second)}): {gap.points()}, {gap.verdict()} under the one "
            "rule (docs/math.md#reading-the-statistics).")


def setting_text(grid: dict[str, list], row) -> str:
    """``lr = 0.3, epochs = 10``: a row's setting, each value shown as given on the command line."""
    return ", ".join(f"{key} = {int(row[key]) if GRID_OPTIONS[key] is int else row[key]}" for key in grid)


def tuning_markdown(spec, grid: dict[str, list], frame: pd.DataFrame, validation_size: int, environment: dict,
                    command: str) -> str:
    """The page: one row per setting (validation accuracy mean ± std over seeds), the best, provenance, and
    ``command``, the one that rendered the whole table (its runs may come from several)."""
    summary = frame.groupby(list(grid), sort=False).agg(
        val_accuracy=("val_accuracy", "mean"), val_std=("val_accuracy", "std"),
        train_accuracy=("train_accuracy", "mean"), seconds=("seconds", "mean"),
        seeds=("seed", "count"), finished=("val_accuracy", "count")).reset_index()
    table = tabulate(summary_rows(grid, summary), headers=[*grid, "validation accuracy %", "train accuracy %",
                                                           "seconds", "seeds"], tablefmt="github", disable_numparse=True)
    finished = summary[summary["finished"] > 0]
    if finished.empty:
        best = "Best on validation: none; every setting failed or diverged."
    else:
        ranked = finished.sort_values("val_accuracy", ascending=False)
        top = ranked.iloc[0]
        best = (f"Best on validation: {setting_text(grid, top)} ({100 * top['val_accuracy']:.2f} %)."
                + runner_up(frame, grid, ranked))
    spread = " (mean ± std over the seeds)" if summary["seeds"].max() > 1 else ""
    return (f"# Tuning stage {spec.name} on a validation split\n\n"
            f"{validation_size:,} training images held out as validation (seeded); the test set plays no part{spread}.\n\n"
            f"{table}\n\n{best}\n\n{provenance_line(environment)}\n\nThe whole table: `{command}`.\n")


if __name__ == "__main__":
    sys.exit(run_cli(main))
