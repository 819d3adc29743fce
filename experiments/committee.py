"""Committees: the three seeds' models of a stage, their probabilities averaged (no new training).

Networks trained from different seeds make partly different mistakes; averaging their predicted
probabilities and answering the most probable digit (a committee) fixes some of them. The best
published MNIST results are committees (Ciresan et al. 2012: 35 networks, 99.77 %). For each stage
given (default: the last one, the best), this takes the models of seeds 0, 1 and 2 that the comparison
trains (found where the robustness experiment and the studies keep them, else trained here exactly as
they are), and reports on the official test set:

* each member's accuracy and the committee's, and how many test digits the committee gets right that
  a member got wrong (and the reverse);
* what it costs at inference: three forward passes instead of one (the multiply-adds of
  ``common.compute``), and the measured seconds to answer the 10,000 test images;
* what is left: a figure of every test digit the committee still gets wrong, with its label, the
  committee's answer and the probability it gave it. Some of them a person would read as the
  committee did, or could not read at all (the test set has mislabeled digits: Northcutt et al. 2021
  found at least 15); the figure invites the reader to count, the code makes no such claim.

Writes ``committee.md``, ``committee.json`` and ``committee_errors_<stage>.png`` into
``results/local/committee/`` (git-ignored); the committed page, ``results/committee/``, was written with
``--out results/committee``.

    python experiments/committee.py                  # the last stage
    python experiments/committee.py --stages 05,06   # several
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tabulate import tabulate

from common import blas, threads
from common.cli import OneLineParser, parse_list, run_cli, writable_folder
from common.compute import forward_multiply_adds
from common.environment import describe_environment
from common.files import atomic_write_json, atomic_write_text
from common.models import COMMITTED_MODELS, MODELS_CACHE, Entry, Model, gather_models
from common.nn.errors import UserError
from common.paths import LOCAL_DIR, shown
from common.protocol import scale_pixels
from common.report import environment_line
from common.runner import load_data
from common.stages import load_specs

SEEDS = (0, 1, 2)
TIMING_REPEATS = 3


def probabilities(model: Model, images: np.ndarray) -> np.ndarray:
    """The model's ``(N, 10)`` probabilities for ``images (N, 784)`` uint8, in its own pixel scale."""
    return model.network.predict_proba(scale_pixels(images, model.pixel_scale))


def best_seconds(function, repeats: int = TIMING_REPEATS) -> float:
    """The fastest of ``repeats`` timed calls of ``function()`` (after one untimed)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def committee_record(stage: str, members: list[Model], images: np.ndarray, labels: np.ndarray) -> dict:
    """Every member's and the committee's test accuracy, the digits it fixes and breaks, its cost, its errors."""
    member_probabilities = [probabilities(model, images) for model in members]
    averaged = np.mean(member_probabilities, axis=0)
    answers = averaged.argmax(axis=1)
    member_right = [p.argmax(axis=1) == labels for p in member_probabilities]
    right = answers == labels
    wrong = np.flatnonzero(~right)
    forward = sum(forward_multiply_adds(members[0].entry.spec.architecture()))
    one = best_seconds(lambda: probabilities(members[0], images))
    all_three = best_seconds(lambda: np.mean([probabilities(m, images) for m in members], axis=0))
    return {
        "stage": stage, "name": members[0].entry.spec.name, "seeds": [m.seed for m in members],
        "member_accuracies": [float(r.mean()) for r in member_right],
        "committee_accuracy": float(right.mean()),
        "fixed": [int(np.sum(right & ~r)) for r in member_right],
        "broken": [int(np.sum(~right & r)) for r in member_right],
        "wrong_by_every_member": int(np.sum(~np.any(member_right, axis=0))),
        "forward_multiply_adds": {"member": int(forward), "committee": int(len(members) * forward)},
        "seconds_for_the_test_set": {"member": one, "committee": all_three},
        "errors": [{"index": int(i), "label": int(labels[i]), "answer": int(answers[i]),
                    "probability": float(averaged[i, answers[i]])} for i in wrong],
        "models": [{"seed": m.seed, "model": shown(m.path), "fingerprint": m.metadata.get("fingerprint")}
                   for m in members],
    }


def errors_figure(record: dict, images: np.ndarray, path: Path) -> None:
    from common.plots import plot_misclassified

    errors = record["errors"]
    plot_misclassified(images[[e["index"] for e in errors]], np.array([e["label"] for e in errors]),
                       np.array([e["answer"] for e in errors]), np.array([e["probability"] for e in errors]),
                       path, max_images=max(1, len(errors)),
                       title=f"{record['name']}: the {len(errors)} test digits its committee of {len(record['seeds'])} "
                             "still gets wrong. Would you?")


def committee_markdown(records: list[dict], environment: dict) -> str:
    rows = []
    for r in records:
        members = r["member_accuracies"]
        cost = r["seconds_for_the_test_set"]
        rows.append([r["name"], " / ".join(f"{100 * a:.2f}" for a in members),
                     f"{100 * float(np.mean(members)):.2f}", f"**{100 * r['committee_accuracy']:.2f}**",
                     " / ".join(str(n) for n in r["fixed"]), " / ".join(str(n) for n in r["broken"]),
                     f"{len(r['errors'])}", f"{cost['member']:.2f} / {cost['committee']:.2f}"])
    lines = [
        "# Committees: three seeds' models, their probabilities averaged",
        "",
        "Each stage's models of seeds " + ", ".join(str(s) for s in SEEDS) + " (the comparison's; no new training), "
        "on the 10,000 official test images. The committee answers the digit with the highest mean probability.",
        "",
        tabulate(rows, headers=["stage", "members' test accuracy %", "members' mean %", "committee %",
                                "digits it fixes (per member)", "digits it breaks (per member)", "still wrong",
                                "s for the test set (one / committee)"], tablefmt="github", disable_numparse=True),
        "",
        "At inference a committee costs as many forward passes as it has members: "
        + "; ".join(f"{r['name']} {r['forward_multiply_adds']['member'] / 1e6:.2f} million multiply-adds per digit "
                    f"for one model, {r['forward_multiply_adds']['committee'] / 1e6:.2f} for the committee"
                    for r in records) + ".",
        "",
        "A committee score is one number per stage (one set of three seeds), so the one rule of the other pages "
        "gives it no standard error: compare it with the spread of its members, and with the test set's own "
        "uncertainty, about 0.07 points at 99.5 % (docs/math.md#reading-the-statistics).",
        "",
        "## What is left",
        "",
    ]
    for r in records:
        lines += [f"![{r['name']}: the test digits its committee still gets wrong](committee_errors_{r['stage']}.png)",
                  "",
                  f"{r['name']}: the {len(r['errors'])} test digits its committee still gets wrong, each with its label, "
                  "the committee's answer and the probability it gave it; "
                  f"{r['wrong_by_every_member']} of them every member got wrong too. How many would you have read as "
                  "the label says? Some are ambiguous to a person, and a few test labels are themselves wrong "
                  "(Northcutt et al. 2021 found at least 15 in this test set): count them yourself.", ""]
    lines += [environment_line(environment), ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python experiments/committee.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=None, help="comma-separated stage numbers (default: the last stage)")
    parser.add_argument("--out", type=Path, default=LOCAL_DIR / "committee",
                        help="output folder (default results/local/committee/; the committed page: "
                             "--out results/committee)")
    parser.add_argument("--no-train", action="store_true",
                        help="leave out a stage whose three models are not all saved, instead of training them")
    parser.add_argument("--data-dir", default=None)
    threads.add_threads_option(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    blas.configure()
    threads.configure(args.threads)
    writable_folder(args.out)
    specs = load_specs(parse_list(args.stages, str, "--stages") or None)
    if args.stages is None:
        last = sorted(specs)[-1]
        specs = {last: specs[last]}
    data = load_data(args.data_dir)
    entries = [Entry(spec.name, spec.name, number, spec) for number, spec in specs.items()]
    found = gather_models(entries, list(SEEDS), data, MODELS_CACHE, COMMITTED_MODELS, train=not args.no_train)
    if not found:
        raise UserError("no stage has all three models; run without --no-train to train them here")
    records = []
    for entry in entries:
        if entry.key in found:
            record = committee_record(entry.number, found[entry.key], data.test_images, data.test_labels)
            errors_figure(record, data.test_images, args.out / f"committee_errors_{entry.number}.png")
            records.append(record)
            print(f"{entry.spec.name}: members {', '.join(f'{100 * a:.2f}' for a in record['member_accuracies'])} %, "
                  f"committee {100 * record['committee_accuracy']:.2f} %, {len(record['errors'])} still wrong",
                  flush=True)
    environment = describe_environment()
    atomic_write_json(args.out / "committee.json", {"committees": records, "environment": environment})
    atomic_write_text(args.out / "committee.md", committee_markdown(records, environment))
    print(f"wrote {shown(args.out / 'committee.md')}, committee.json and the figures")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
