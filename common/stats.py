"""The one rule every generated reading uses to say that one setting did better than another.

Each setting is trained with a few seeds, and its accuracy moves from seed to seed. A difference
between two settings counts when it is larger than twice its standard error over the seeds:

* runs that share their seeds (the same seeds, the same data splits) are **paired**: the standard
  error is that of the seed-by-seed differences, ``sd(a_i - b_i) / sqrt(n)``;
* otherwise **Welch**'s: ``sqrt(sd_a**2 / n_a + sd_b**2 / n_b)``.

Two standard errors is about a 95 % interval for a mean difference over many seeds; with three seeds
it is a rule of thumb, not a test (the t-distribution with 2 degrees of freedom would ask for 4.3),
so the readings say "distinguishable" rather than "significant". With one seed per setting there is
no standard error and no verdict. The maths page explains the rule ("Reading the statistics"), with
the other uncertainty in every table: the test set's own, a binomial error of
``sqrt(p (1 - p) / 10,000)``, 0.1 points at 99 %.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Difference:
    """``a - b``: the mean difference, its standard error (None with one seed), and how it was paired."""

    mean: float
    se: float | None
    paired: bool
    n: int

    @property
    def distinguishable(self) -> bool | None:
        """True or False under the rule; None when there is no standard error (one seed)."""
        if self.se is None:
            return None
        return abs(self.mean) > 2 * self.se

    def points(self) -> str:
        """``+0.16 ± 0.05 points`` (the difference and its standard error, in percentage points)."""
        text = f"{100 * self.mean:+.2f}"
        return text + (f" ± {100 * self.se:.2f}" if self.se is not None else "") + " points"

    def verdict(self) -> str:
        """``distinguishable``, ``not distinguishable`` (within two standard errors) or ``one seed: no verdict``."""
        return {True: "distinguishable", False: "not distinguishable", None: "one seed: no verdict"}[self.distinguishable]


def difference(a: Sequence[float], b: Sequence[float], seeds_a: Sequence[int] | None = None,
               seeds_b: Sequence[int] | None = None) -> Difference:
    """``mean(a) - mean(b)`` with the rule's standard error: paired when both lists come from the same
    seeds (``seeds_a == seeds_b``, in the same order), else Welch's."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("a difference needs at least one value on each side")
    mean = float(a.mean() - b.mean())
    paired = seeds_a is not None and seeds_b is not None and list(seeds_a) == list(seeds_b) and len(a) == len(b)
    if paired:
        if len(a) < 2:
            return Difference(mean, None, True, len(a))
        return Difference(mean, float(np.std(a - b, ddof=1) / math.sqrt(len(a))), True, len(a))
    if len(a) < 2 or len(b) < 2:
        return Difference(mean, None, False, min(len(a), len(b)))
    se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    return Difference(mean, se, False, min(len(a), len(b)))


def compare_runs(runs_a: Sequence[dict], runs_b: Sequence[dict], key: str = "test_accuracy") -> Difference:
    """:func:`difference` of ``key`` between two lists of run records (paired by their ``seed``)."""
    runs_a = sorted(runs_a, key=lambda r: r["seed"])
    runs_b = sorted(runs_b, key=lambda r: r["seed"])
    return difference([r[key] for r in runs_a], [r[key] for r in runs_b],
                      [r["seed"] for r in runs_a], [r["seed"] for r in runs_b])


def binomial_se(accuracy: float, size: int = 10_000) -> float:
    """The binomial standard error of an accuracy measured on ``size`` independent test images."""
    return math.sqrt(accuracy * (1 - accuracy) / size)


RULE = ("a difference counts when it exceeds twice its standard error over the seeds (paired by seed where the "
        "runs share their seeds, else Welch's)")
"""The rule in words, for the pages that apply it."""
