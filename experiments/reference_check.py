"""The textbook against the fast core over whole runs: a stage trained on common.nn.reference's plain
functions (``--reference``) beside the same stage's committed runs of the fast core, seed by seed.

Step by step the two are equal to float32 precision (tests/test_reference.py checks every layer, loss
and optimizer step). Over a whole run they are not bit-identical: the fast core adds the same numbers
in another order (blocked matrix products, threads), and thousands of steps later the weights, and a
few test digits, differ. So the question a whole run can answer is whether the two train to the same
accuracy, and the one rule answers it (common.stats: the difference over the seeds against twice its
standard error, paired by seed).

Usage:
  python experiments/reference_check.py                      # stage 04, seeds 0, 1, 2: ~2 min
  python experiments/reference_check.py --stage 03 --seeds 0 --quick
  python experiments/reference_check.py --out results/reference_check   # the committed page

The fast runs are the comparison's committed ones (results/runs/) when they match today's code, else
trained and kept with this page's; the textbook's runs are trained every time (the textbook is not
part of a run's fingerprint, so its runs are not cached). Writes reference_check.md and .json to
--out (default results/local/reference_check/).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tabulate import tabulate

from common import blas, threads
from common.cli import OneLineParser, parse_list, run_cli, writable_folder
from common.environment import describe_environment
from common.files import atomic_write_json, atomic_write_text
from common.nn.textbook import Textbook
from common.paths import LOCAL_DIR, RESULTS_DIR, shown
from common.protocol import train_stage
from common.report import environment_line
from common.runner import load_data
from common.runs import run_or_resume
from common.stages import load_specs
from common.stats import RULE, compare_runs

COMMITTED_OUT = RESULTS_DIR / "reference_check"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python experiments/reference_check.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="04", help="stage number (default 04)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--quick", action="store_true", help="the stage's tiny smoke-test budget (a few seconds)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=LOCAL_DIR / "reference_check",
                        help="output folder (default results/local/reference_check/; the committed page: "
                             "results/reference_check)")
    threads.add_threads_option(parser)
    return parser.parse_args(argv)


def textbook_run(spec, seed: int, data) -> dict:
    """Train ``spec`` on the textbook's functions; its test accuracy and seconds."""
    started = time.perf_counter()
    trained = train_stage(spec, seed, data, progress=False, book=Textbook())
    accuracy = float(np.mean(trained.probabilities.argmax(axis=1) == data.test_labels))
    return {"seed": seed, "test_accuracy": accuracy, "seconds": time.perf_counter() - started}


def page(spec, rows: list[dict], verdict, environment: dict, quick: bool) -> str:
    """The page: each seed's two accuracies, and the verdict over the seeds."""
    widest = max(round(10_000 * abs(r["textbook"] - r["fast"])) for r in rows)
    source = ("trained here, at the stage's --quick budget" if quick else
              "the comparison's (results/runs/, made as results/comparison.md says)")
    table = tabulate([[r["seed"], f"{100 * r['fast']:.2f}", f"{100 * r['textbook']:.2f}",
                       f"{100 * (r['textbook'] - r['fast']):+.2f}"] for r in rows],
                     headers=["seed", "fast core %", "textbook %", "textbook - fast (points)"],
                     tablefmt="github", disable_numparse=True)
    return "\n".join([
        f"# The textbook against the fast core: stage {spec.name}", "",
        "Test accuracy on the official 10,000-image test set after a whole run, the same seed giving both the "
        f"same data, starting weights, batches and shifts; the fast runs are {source}.", "", table, "",
        f"Textbook minus fast core over the seeds: {verdict.points()}, {verdict.verdict()} under the one rule "
        f"({RULE}).", "",
        "Step by step the two are equal to float32 precision (tests/test_reference.py); over a whole run they add "
        "the same numbers in another order, so a single seed can end a few dozen test digits either way (here "
        f"up to {widest} of the 10,000), and the seeds together are the comparison.", "",
        environment_line(environment), ""])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    writable_folder(args.out)
    (spec,) = load_specs([args.stage]).values()
    if args.quick:
        spec = dataclasses.replace(spec, **spec.quick)
    seeds = parse_list(args.seeds, int, "--seeds")
    data = load_data(args.data_dir)
    blas.configure()
    threads.configure(args.threads)
    rows, fast_runs, textbook_runs = [], [], []
    for seed in seeds:
        key = args.stage + ("-quick" if args.quick else "")
        fast = run_or_resume(key, spec, seed, data, args.out / "runs", False, False, (RESULTS_DIR / "runs",))
        textbook = textbook_run(spec, seed, data)
        print(f"[{spec.name} seed {seed}] fast core {100 * fast['test_accuracy']:.2f} %, "
              f"textbook {100 * textbook['test_accuracy']:.2f} % ({textbook['seconds']:.0f} s)", flush=True)
        rows.append({"seed": seed, "fast": fast["test_accuracy"], "textbook": textbook["test_accuracy"],
                     "textbook_seconds": textbook["seconds"]})
        fast_runs.append(fast)
        textbook_runs.append(textbook)
    verdict = compare_runs(textbook_runs, fast_runs)
    arguments = list(sys.argv[1:] if argv is None else argv)
    environment = describe_environment(["python", "experiments/reference_check.py", *arguments])
    atomic_write_json(args.out / "reference_check.json",
                      {"stage": spec.name, "rows": rows, "difference": verdict.mean, "standard_error": verdict.se,
                       "distinguishable": verdict.distinguishable, "environment": environment})
    text = page(spec, rows, verdict, environment, args.quick)
    atomic_write_text(args.out / "reference_check.md", text)
    print(text)
    print(f"wrote {shown(args.out / 'reference_check.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
