"""The one rule for "better" (common.stats): paired and Welch standard errors by hand, verdicts."""
from __future__ import annotations

import math

import pytest

from common.stats import binomial_se, compare_runs, difference


def test_paired_difference_uses_the_seed_by_seed_differences():
    d = difference([0.99, 0.98, 0.97], [0.98, 0.975, 0.96], [0, 1, 2], [0, 1, 2])
    diffs = [0.01, 0.005, 0.01]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    assert d.paired and d.mean == pytest.approx(mean) and d.se == pytest.approx(sd / math.sqrt(3))
    assert d.distinguishable and d.verdict() == "distinguishable" and d.points().startswith("+0.83 ± 0.17")


def test_welch_when_the_seeds_differ_and_no_verdict_with_one_seed():
    d = difference([0.90, 0.92], [0.91, 0.95, 0.93])
    se = math.sqrt(0.0002 / 2 + 0.0004 / 3)
    assert not d.paired and d.se == pytest.approx(se) and d.distinguishable is False
    assert d.verdict() == "not distinguishable"
    one = difference([0.9], [0.8], [0], [0])
    assert one.se is None and one.distinguishable is None and one.verdict() == "one seed: no verdict"


def test_compare_runs_pairs_by_seed_whatever_the_order():
    a = [{"seed": 2, "test_accuracy": 0.97}, {"seed": 0, "test_accuracy": 0.99}, {"seed": 1, "test_accuracy": 0.98}]
    b = [{"seed": s, "test_accuracy": 0.96 + s / 100} for s in range(3)]
    d = compare_runs(a, b)
    assert d.paired and d.mean == pytest.approx(0.01) and d.se == pytest.approx(0.02 / math.sqrt(3))  # diffs .03 .01 -.01


def test_the_binomial_error_of_a_10000_image_test():
    assert binomial_se(0.99) == pytest.approx(math.sqrt(0.99 * 0.01 / 10_000))
    assert 100 * binomial_se(0.99) == pytest.approx(0.0995, abs=1e-4)
