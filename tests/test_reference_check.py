"""experiments/reference_check.py: the textbook and the fast core train a stage to the same accuracy."""
from __future__ import annotations

import json

from mnist_available import needs_mnist

from experiments import reference_check


@needs_mnist
def test_a_short_run_on_the_textbook_ends_where_the_fast_core_does(tmp_path, capsys):
    """Two epochs on 5,000 images: too few steps for the two orders of summation to part ways."""
    assert reference_check.main(["--stage", "04", "--seeds", "0", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "reference_check.json").read_text(encoding="utf-8"))
    (row,) = result["rows"]
    assert row["fast"] > 0.8 and abs(row["textbook"] - row["fast"]) <= 0.002
    page = (tmp_path / "reference_check.md").read_text(encoding="utf-8")
    assert "trained here, at the stage's --quick budget" in page and "--quick" in page
    assert "| 0 " in page


def test_the_committed_page_finds_the_two_alike_under_the_one_rule():
    from common.paths import RESULTS_DIR

    result = json.loads((RESULTS_DIR / "reference_check" / "reference_check.json").read_text(encoding="utf-8"))
    assert result["stage"] == "04_adam" and [row["seed"] for row in result["rows"]] == [0, 1, 2]
    assert result["distinguishable"] is False
    runs = {seed: json.loads((RESULTS_DIR / "runs" / "04" / f"seed{seed}.json").read_text(encoding="utf-8"))
            for seed in (0, 1, 2)}
    assert all(row["fast"] == runs[row["seed"]]["test_accuracy"] for row in result["rows"]), \
        "the fast column is the comparison's committed runs"


def test_the_readme_says_what_the_committed_page_shows():
    from common.paths import REPO_ROOT, RESULTS_DIR

    result = json.loads((RESULTS_DIR / "reference_check" / "reference_check.json").read_text(encoding="utf-8"))
    widest = max(round(10_000 * abs(row["textbook"] - row["fast"])) for row in result["rows"])
    readme = " ".join((REPO_ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "the two train to the same accuracy under the one rule" in readme and not result["distinguishable"]
    assert "a single seed can end a few dozen test digits apart" in readme and 10 <= widest < 100
