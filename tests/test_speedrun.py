"""experiments/speedrun.py: the search's order, pruning and choice; a quick run end to end; the committed page."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from mnist_available import needs_mnist

from common.runs import code_digest
from experiments import speedrun
from experiments.speedrun import Recipe, Search

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "results" / "speedrun.json"


def test_a_recipe_is_a_stage_with_adam_cosine_and_no_augmentation():
    recipe = Recipe("c16-c32", 256, 0.005, 3)
    spec = recipe.spec(validation_size=10_000)
    assert spec.layers == speedrun.NETWORKS["c16-c32"] and spec.batch_size == 256 and spec.lr == 0.005
    assert (spec.optimizer, spec.schedule, spec.init, spec.shift, spec.epochs) == ("adam", "cosine", "he", 0, 3)
    assert spec.validation_size == 10_000 and spec.eval_every == 3
    assert recipe.key() == "speedrun-c16-c32-b256-lr0.005-e3"
    assert recipe.gflop(60_000) == pytest.approx(3 * Recipe("c16-c32", 256, 0.005, 1).gflop(60_000))


class FakeSearch(Search):
    """A search whose runs are looked up, not trained: ``outcomes[(network, epochs)] = (val by seed, s per epoch)``."""

    def __init__(self, outcomes: dict) -> None:
        super().__init__(data=None, runs_dir=Path("."), sources=(), progress=False, train_size=50_000)
        self.outcomes, self.trained = outcomes, []

    def run(self, recipe: Recipe, seed: int) -> dict:
        self.trained.append((recipe.network, recipe.epochs, seed))
        val, per_epoch = self.outcomes[(recipe.network, recipe.epochs)]
        record = {"status": "ok", "val_accuracy": val[seed], "train_seconds": per_epoch * recipe.epochs, "seed": seed}
        self.runs[(recipe, seed)] = record
        return record


def test_the_search_tries_cheapest_first_confirms_with_three_seeds_and_skips_the_slower():
    small, big = "c8-c16", "c16-c32-d128"
    outcomes = {
        (small, 1): ([0.96, 0.96, 0.96], 2.0), (small, 2): ([0.991, 0.985, 0.986], 2.0),  # lucky seed 0 only
        (big, 1): ([0.985] * 3, 5.0), (big, 2): ([0.991, 0.990, 0.992], 5.0),
    }
    state = FakeSearch(outcomes)
    recipes = [Recipe(network, 128, 0.005, epochs) for network in (small, big) for epochs in (1, 2)]
    table, chosen = speedrun.search(recipes, state)
    assert chosen == Recipe(big, 128, 0.005, 2)
    verdicts = {(row["network"], row["epochs"]): row["verdict"] for row in table}
    assert verdicts[(small, 1)] == "below 99.0 % (seed 0)"
    assert verdicts[(small, 2)] == "below 99.0 % over 3 seeds"
    assert verdicts[(big, 2)] == "qualifies (chosen)"
    assert state.trained[0] == (small, 1, 0)  # the cheapest first
    assert (small, 2, 1) in state.trained and (big, 2, 2) in state.trained
    row = next(r for r in table if (r["network"], r["epochs"]) == (big, 2))
    assert row["val_accuracy"] == pytest.approx(0.991) and row["val_seeds"] == 3 and row["train_seconds"] == 10.0


def test_a_recipe_predicted_slower_than_the_chosen_is_not_trained():
    outcomes = {("c8-c16", 2): ([0.992] * 3, 2.0), ("c8-c16", 4): ([0.995] * 3, 2.0)}
    state = FakeSearch(outcomes)
    recipes = [Recipe("c8-c16", 128, 0.005, 4), Recipe("c8-c16", 128, 0.005, 2)]
    table, chosen = speedrun.search(recipes, state)
    assert chosen == Recipe("c8-c16", 128, 0.005, 2)
    assert table[0]["verdict"].startswith("not trained: predicted 8.0 s") and table[0]["val_accuracy"] is None
    assert ("c8-c16", 4, 0) not in state.trained


def test_the_lessons_name_the_fastest_qualifying_recipe_per_value():
    table = [
        {"network": "a", "batch_size": 128, "lr": 0.002, "epochs": 2, "val_accuracy": 0.991, "train_seconds": 9.0,
         "verdict": "qualifies"},
        {"network": "b", "batch_size": 128, "lr": 0.002, "epochs": 2, "val_accuracy": 0.985, "train_seconds": 4.0,
         "verdict": "below 99.0 % (seed 0)"},
        {"network": "b", "batch_size": 256, "lr": 0.002, "epochs": 4, "val_accuracy": None, "train_seconds": None,
         "verdict": "not trained"},
    ]
    lines = speedrun.lessons(table)
    assert lines[0] == ("- **network** (fastest qualifying recipe with each value): a: 9.0 s; "
                        "b: none of 1 trained qualified (best validation 98.50 %), 1 not trained (predicted slower).")
    assert lines[1].endswith("128: 9.0 s; 256: none trained.")
    assert speedrun.percent_below(0.98996) == "98.996" and speedrun.percent_below(0.9876) == "98.76"


@needs_mnist
def test_a_quick_run_writes_its_page_and_leaves_the_committed_results_alone(tmp_path):
    before = COMMITTED.read_bytes() if COMMITTED.exists() else None
    finished = subprocess.run([sys.executable, "experiments/speedrun.py", "--quick", "--no-pytorch", "--quiet",
                               "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    record = json.loads((tmp_path / "speedrun.json").read_text())
    assert record["quick"] and record["result"]["pytorch"] is None and record["result"]["ratio_vs_pytorch"] is None
    assert [run["library"] for run in record["test_runs"]] == ["ours"]
    assert 0.5 < record["result"]["ours"]["test_accuracy_mean"] <= 1.0
    text = (tmp_path / "speedrun.md").read_text()
    assert "**Smoke run (`--quick`): not a measurement.**" in text and (tmp_path / "speedrun.png").stat().st_size > 0
    assert (COMMITTED.read_bytes() if COMMITTED.exists() else None) == before


def test_a_bad_seed_list_is_one_line():
    finished = subprocess.run([sys.executable, "experiments/speedrun.py", "--seeds", "a,b"], cwd=REPO,
                              capture_output=True, text=True)
    assert finished.returncode == 2 and "Traceback" not in finished.stderr
    assert len(finished.stderr.strip().splitlines()) == 1


def committed() -> dict:
    return json.loads(COMMITTED.read_text(encoding="utf-8"))


def test_the_committed_speedrun_reaches_its_targets_and_is_todays_code():
    record = committed()
    result = record["result"]
    assert not record["quick"]
    assert record["code_digest"] == code_digest(), "the numeric core changed: run the speedrun again"
    assert len(result["ours"]["seeds"]) == 5 and result["train_images"] == 60_000
    assert result["ours"]["test_accuracy_mean"] >= 0.99
    assert result["ours"]["train_seconds_median"] <= speedrun.TIME_TARGET
    chosen = Recipe(**record["chosen"])
    row = next(r for r in record["search"] if Recipe(r["network"], r["batch_size"], r["lr"], r["epochs"]) == chosen)
    assert row["verdict"] == "qualifies (chosen)" and row["val_accuracy"] >= speedrun.TARGET
    qualifying = [r for r in record["search"] if r["verdict"].startswith("qualifies")]
    assert min(qualifying, key=lambda r: r["train_seconds"]) == row  # the fastest qualifying one was chosen


def test_the_committed_page_is_rendered_from_its_record():
    record = committed()
    assert (REPO / "results" / "speedrun.md").read_text(encoding="utf-8") == speedrun.speedrun_markdown(record)
    assert dataclasses.asdict(Recipe(**record["chosen"])) == record["result"]["recipe"]


@pytest.mark.skipif(not speedrun.torch_installed(), reason="PyTorch is optional (benchmarks/requirements-bench.txt)")
@needs_mnist
def test_the_pytorch_twin_trains_the_same_recipe():
    result = speedrun.pytorch_on_test(Recipe("c8-c16", 256, 0.005, 1), 0, None, 1, train_size=3_000)
    assert result["train_images"] == 3_000 and result["threads"] == 1
    assert 0.7 < result["test_accuracy"] <= 1.0 and result["train_seconds"] > 0


def test_the_readme_quotes_the_committed_speedrun():
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    record = committed()
    result, ours = record["result"], record["result"]["ours"]
    for quoted in (f"**{result['label']}** reaches **{100 * ours['test_accuracy_mean']:.2f} ± "
                   f"{100 * ours['test_accuracy_std']:.2f} %**",
                   f"a median **{ours['train_seconds_median']:.1f} s** of training ({result['train_gflop']:,.0f} GFLOP)",
                   f"PyTorch trains the same recipe in {result['pytorch']['train_seconds_median']:.1f} s",
                   f"**{result['ratio_vs_pytorch']:.2f}x** its time"):
        assert quoted in readme, quoted
