"""Graded exercises on the ladder: write each formula of the network yourself, check it, train on it.

``python -m common.exercises start`` copies the blank worksheet (``worksheet.py``, one function per
idea, in the order of the stages) into ``my_exercises/``; ``python -m common.exercises check``
grades it in seconds, one line per exercise. Each exercise has the name and signature of its
answer in ``common.nn.reference``, so a written exercise can stand in for the reference in a
:class:`~common.nn.textbook.Textbook` (:func:`load_learner_book`) and a stage trains on it.

The checks (``checks_*.py``) use shapes and dtypes, hand-made cases, finite differences in
float64 and the reference on random inputs, and name the first thing that is wrong in words
(``grading.py``); ``tests/test_exercises.py`` shows they tell the usual mistakes apart.

The command line (``python -m common.exercises``, :func:`main`): ``start`` copies the worksheet, never
over a copy the learner has edited (unless ``--force``); ``check`` prints one line per exercise and a
summary, and exits with 0 only if every exercise asked for passes (1 otherwise, 2 for a problem such as
a worksheet that does not import).
"""
from __future__ import annotations

from typing import Sequence

from common.cli import OneLineParser
from common.exercises.catalogue import EXERCISES, STAGES, Exercise
from common.exercises.learner import (
    DEFAULT_DIR,
    PASS,
    WORKSHEET,
    LearnerBook,
    Result,
    check_worksheet,
    grade,
    load_learner_book,
    load_worksheet,
    start_worksheet,
    summary,
)

__all__ = ["DEFAULT_DIR", "EXERCISES", "STAGES", "WORKSHEET", "Exercise", "LearnerBook", "Result", "build_parser",
           "check_worksheet", "grade", "load_learner_book", "load_worksheet", "main", "start_worksheet", "summary"]


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m common.exercises",
                           description="Graded exercises: write the network's maths yourself, check it, train on it.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{start,check}",
                                     parser_class=OneLineParser)
    start = commands.add_parser("start", help="copy the blank worksheet into a folder of your own",
                                description="Copy the blank worksheet to DIR/worksheet.py; a copy you have "
                                            "edited is never overwritten (unless --force).")
    start.add_argument("dir", nargs="?", default=str(DEFAULT_DIR), metavar="DIR",
                       help=f"your folder (default: {DEFAULT_DIR}/ under the current folder)")
    start.add_argument("--force", action="store_true", help="replace an edited worksheet with a blank copy")
    check = commands.add_parser("check", help="grade your worksheet",
                                description="Grade DIR/worksheet.py: one line per exercise (pass, not yet "
                                            "written, or the first thing wrong) and a summary.")
    check.add_argument("names", nargs="*", metavar="NAME",
                       help="exercises to check, by name (dense_backward) or stage (04); default: all")
    check.add_argument("--dir", default=str(DEFAULT_DIR), help=f"your folder (default: {DEFAULT_DIR})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "start":
        print(start_worksheet(args.dir, args.force))
        return 0
    results = []
    for result in check_worksheet(args.dir, args.names):
        print(result.line(), flush=True)
        results.append(result)
    print(summary(results))
    return 0 if all(result.status == PASS for result in results) else 1
