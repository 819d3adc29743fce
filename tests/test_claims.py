"""Every number a learner reads in a stage's docstring is checked here against the code or the
committed results, so a change to either cannot leave a sentence behind."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from common.stages import load_specs, stage_files

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "results"
SPECS = load_specs()


def docstring(number: str) -> str:
    text = stage_files()[number].read_text(encoding="utf-8")
    return " ".join(text.split('"""')[1].split())  # one line: claims may wrap


def parameters(number: str) -> int:
    return SPECS[number].architecture().num_parameters


def tuning(name: str) -> pd.DataFrame:
    return pd.read_csv(RESULTS / "tuning" / f"{name}.csv")


def best_on_validation(frame: pd.DataFrame, key: str):
    return frame.groupby(key)["val_accuracy"].mean().idxmax()


def runs(key: str) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((RESULTS / "runs" / key).glob("seed*.json"))]


def test_stage_02_parameter_ratio_and_data():
    text = docstring("02")
    ratio = parameters("01") / parameters("02")
    assert f"{ratio:.1f}x fewer parameters than stage 01 ({parameters('02'):,} vs {parameters('01'):,})" in text
    assert f"{60_000 // SPECS['01'].train_size}x the data" in text


def test_stage_02_learning_rate_was_the_best_on_validation():
    frame = tuning("02_deep_relu")
    grid = " / ".join(f"{lr:g}" for lr in sorted(frame["lr"].unique()))
    text = docstring("02")
    assert f"best of {grid} on a 10,000-image validation split" in text
    assert best_on_validation(frame, "lr") == SPECS["02"].lr and f"learning rate {SPECS['02'].lr:g} was" in text


def kept_by_the_rule(frame: pd.DataFrame, key: str, value) -> bool:
    """The stage's ``value`` is the best on validation, or not distinguishable from it (common.stats)."""
    from common.stats import compare_runs

    best = best_on_validation(frame, key)
    if best == value:
        return True
    return compare_runs(grid_runs(frame, **{key: best}), grid_runs(frame, **{key: value}), "val_accuracy").distinguishable is False


def test_stage_03_updates_and_learning_rate():
    text = docstring("03")
    assert f"{math.ceil(60_000 / SPECS['03'].batch_size)} updates, each from the gradient of {SPECS['03'].batch_size}" in text
    frame = tuning("03_minibatch")
    grid = " / ".join(f"{lr:g}" for lr in sorted(frame["lr"].unique()))
    assert f"compared over {grid}" in text and frame.groupby("lr").size().eq(3).all() and "three seeds" in text
    assert kept_by_the_rule(frame, "lr", SPECS["03"].lr)
    if best_on_validation(frame, "lr") != SPECS["03"].lr:
        assert f"{SPECS['03'].lr:g}, the rate this stage already had, is not distinguishable from the best" in text
    assert "lowers the best learning rate" not in text, "one seed and 12 images did not support it"


def test_stage_05_settings_as_described():
    spec, text = SPECS["05"], docstring("05")
    assert f"{parameters('05') / 1e6:.1f} million parameters" in text
    assert f"by up to {spec.shift} pixels" in text
    assert f"The budget of {spec.epochs} epochs" in text
    assert spec.sizes[1:-1] == (800, 800) and SPECS["04"].sizes[1:-1] == (128, 64)
    assert len(spec.sizes) == len(SPECS["04"].sizes), "stage 05 is wider, not deeper"
    assert spec.input_dropout == spec.hidden_dropout == 0.0 and "no dropout" in text


def test_stage_05_reading_of_stage_04_runs():
    """'its training accuracy passes 99.5 % around epoch 10 while its test accuracy ends near 98 %:
    a generalisation gap of about two points' -- from the committed stage-04 runs."""
    text = docstring("05")
    assert "passes 99.5 % around epoch 10" in text and "ends near 98 %" in text and "about two points" in text
    stage04 = runs("04")
    assert len(stage04) == 3
    for run in stage04:
        first = next(h["epoch"] for h in run["history"] if (h["train_accuracy"] or 0) >= 0.995)
        assert 8 <= first <= 12, first
        assert 97.5 <= 100 * run["test_accuracy"] <= 98.5
        assert 1.5 <= 100 * (run["train_accuracy"] - run["test_accuracy"]) <= 2.5


def grid_runs(frame: pd.DataFrame, **setting) -> list[dict]:
    chosen = frame
    for key, value in setting.items():
        chosen = chosen[chosen[key] == value]
    return [{"seed": int(s), "val_accuracy": float(v)} for s, v in zip(chosen["seed"], chosen["val_accuracy"])]


def test_stage_05_is_what_validation_chose_and_its_docstring_says_why():
    """Every combination of dropout, shifts and weight decay with three seeds on validation; the stage is
    the best, and each sentence's verdict is the one rule's (common.stats)."""
    from common.stats import compare_runs

    frame = pd.read_csv(RESULTS / "tuning" / "05_regularized.csv", dtype={"dropout": str})
    assert set(frame["dropout"]) == {"0/0", "0.1/0.2", "0.2/0.4"} and set(frame["shift"]) == {0, 2}
    assert set(frame["weight_decay"]) == {0.0, 0.01} and frame.groupby(["dropout", "shift", "weight_decay"]).size().eq(3).all()
    means = frame.groupby(["dropout", "shift", "weight_decay"])["val_accuracy"].mean()
    spec, text = SPECS["05"], docstring("05")
    best = means.idxmax()
    assert best == (f"{spec.input_dropout:g}/{spec.hidden_dropout:g}", spec.shift, spec.weight_decay)
    chosen = dict(dropout=best[0], shift=best[1], weight_decay=best[2])
    verdicts = {
        "shifts": compare_runs(grid_runs(frame, **chosen), grid_runs(frame, **{**chosen, "shift": 0}), "val_accuracy"),
        "dropout 0.2/0.4": compare_runs(grid_runs(frame, **chosen), grid_runs(frame, **{**chosen, "dropout": "0.2/0.4"}),
                                        "val_accuracy"),
        "dropout 0.1/0.2": compare_runs(grid_runs(frame, **chosen), grid_runs(frame, **{**chosen, "dropout": "0.1/0.2"}),
                                        "val_accuracy"),
        "weight decay": compare_runs(grid_runs(frame, **chosen), grid_runs(frame, **{**chosen, "weight_decay": 0.0}),
                                     "val_accuracy"),
    }
    assert verdicts["shifts"].distinguishable and verdicts["shifts"].mean > 0 and "shifts of 2 pixels are clearly better" in text
    assert f"by about {100 * verdicts['shifts'].mean:.1f} points" in text
    assert verdicts["dropout 0.2/0.4"].distinguishable and "dropout 0.2 / 0.4 is clearly worse" in text
    assert verdicts["dropout 0.1/0.2"].distinguishable is False and "0.1 / 0.2 is not distinguishable from none" in text
    assert verdicts["weight decay"].distinguishable is False and "weight decay 0.01 against none is not distinguishable" in text


def test_stage_05_warm_up_follows_validation():
    frame = tuning("05_regularized_warmup")
    assert sorted(frame["warmup"].unique()) == [0, 1] and frame.groupby("warmup").size().eq(3).all()
    assert best_on_validation(frame, "warmup") == SPECS["05"].warmup or "warm-up is not distinguishable" in docstring("05")


@pytest.mark.parametrize("number", sorted(SPECS))
def test_every_stage_docstring_links_math_sections_that_exist(number: str):
    headings = {line.lstrip("#").strip().lower() for line in (REPO / "docs" / "math.md").read_text().splitlines()
                if line.startswith("#")}
    anchors = {"-".join(heading.replace(",", "").replace(":", "").replace("(", "").replace(")", "").split())
               for heading in headings}
    text = stage_files()[number].read_text(encoding="utf-8")
    for anchor in {part.split()[0].rstrip(").,;:") for part in text.split("#")[1:] if part[:1].isalpha()}:
        assert anchor in anchors, f"stage {number} links docs/math.md#{anchor}, which has no heading"


def test_stage_04_settings_follow_validation():
    """'passes 99.5 % after about 10', '30 epochs at the constant rate scored best', 'within half a
    point of each other', 'standard deviations reach a third of a point', 'a sweep from 0.0001 to
    0.01 ... found none better'."""
    text = docstring("04")
    spec = SPECS["04"]
    assert (spec.epochs, spec.schedule, spec.lr, spec.batch_size) == (30, "constant", 0.001, 128)
    assert "passes 99.5 % after about 10" in text and "30 epochs at the constant rate scored best" in text
    for run in runs("04"):
        first = next(h["epoch"] for h in run["history"] if (h["train_accuracy"] or 0) >= 0.995)
        assert 8 <= first <= 12, first
    grid = tuning("04_adam").groupby(["epochs", "schedule"])["val_accuracy"]
    assert grid.count().eq(3).all() and grid.mean().idxmax() == (30, "constant")
    assert grid.mean().max() - grid.mean().min() < 0.005 and "within half a point of each other" in text
    assert round(3 * grid.std().max(), 2) == 0.01 and "standard deviations reach a third of a point" in text
    sweep = tuning("04_adam_lr")
    assert sorted(sweep["lr"].unique()) == [0.0001, 0.0003, 0.001, 0.003, 0.01]
    assert best_on_validation(sweep, "lr") == spec.lr and "found none better" in text


def test_stage_06_settings_and_claims():
    """'26 for a 5x5 filter ... against 785', 'about a quarter of stage 05's parameters', 'stage 04's
    learning rate and batch size', 'stage 05's random shifts', and the validation grid it names."""
    text, spec = docstring("06"), SPECS["06"]
    assert "26 for a 5x5 filter on one channel, against 785 for a dense unit on 784 pixels" in text
    assert 5 * 5 * 1 + 1 == 26 and 784 + 1 == 785
    assert round(4 * parameters("06") / parameters("05")) == 1 and "about a quarter of stage 05's" in text
    assert (spec.lr, spec.batch_size, spec.optimizer, spec.init) == (SPECS["04"].lr, SPECS["04"].batch_size, "adam", "he")
    assert spec.shift == SPECS["05"].shift == 2 and "random shifts of up to 2 pixels" in text
    assert [layer for layer in spec.layers if layer.startswith("conv")] == ["conv 32 5x5 valid", "conv 64 5x5 valid"]
    assert "dense 256" in spec.layers and "two 5x5 convolutions (32, then 64 filters)" in text
    grid = tuning("06_conv")
    assert sorted(grid["epochs"].unique()) == [4, 8] and sorted(grid["schedule"].unique()) == ["constant", "cosine"]
    assert sorted(grid["shift"].unique()) == [0, 2] and grid["seed"].nunique() == 1 and len(grid) == 8
    best = grid.loc[grid["val_accuracy"].idxmax()]
    assert (best["epochs"], best["schedule"], best["shift"]) == (spec.epochs, spec.schedule, spec.shift) == (8, "cosine", 2)
    assert "8 epochs with cosine decay and 2-pixel shifts scored best" in text
    minutes = [run["seconds"] / 60 for run in runs("06")]
    assert len(minutes) == 3 and max(minutes) < 6 and "Each run takes a few minutes" in text


def readme_text() -> str:
    """The README on one line: claims may wrap."""
    return " ".join((REPO / "README.md").read_text(encoding="utf-8").split())


def three_seed_gain(frame: pd.DataFrame, column: str, value, baseline):
    """The one rule's paired difference in validation accuracy between the rows where ``column`` is ``value``
    and those where it is ``baseline``, each with seeds 0, 1 and 2."""
    from common.stats import difference

    frame = frame.sort_values("seed")
    a, b = frame[frame[column] == value], frame[frame[column] == baseline]
    assert list(a["seed"]) == list(b["seed"]) == [0, 1, 2]
    return difference(a["val_accuracy"], b["val_accuracy"], [0, 1, 2], [0, 1, 2])

def test_stage_07_statistics_pass_alone_was_not_distinguishable():
    """'scored 0.01 points above keeping the running averages on average, with a standard error of 0.02', from
    the three-seed validation table, not distinguishable (the stage adopts it only with weight decay)."""
    text, readme = docstring("07"), readme_text()
    gain = three_seed_gain(tuning("07_batchnorm_recalibrate"), "recalibrate_batchnorm", True, False)
    assert (round(100 * gain.mean, 2), round(100 * gain.se, 2), gain.distinguishable) == (0.01, 0.02, False)
    assert ("scored 0.01 points above keeping the running averages on average, with a standard error of 0.02 "
            "(results/tuning/07_batchnorm_recalibrate.md)") in text
    assert f"scored {gain.points()} against keeping the running averages" in readme


def test_stage_07_elastic_losses_are_mostly_the_statistics():
    """'0.01 points below the stage instead of 0.33 with the milder distortions, and 0.29 instead of 1.97 with
    the stronger': the elastic runs with and without the statistics pass, against the stage (elastic 0/0)."""
    text = docstring("07")
    stage = tuning("07_batchnorm_elastic").set_index("elastic")["val_accuracy"]
    grid = tuning("07_batchnorm_recalibrate_elastic").set_index(["elastic", "recalibrate_batchnorm"])["val_accuracy"]
    below = {(alpha, on): round(100 * (stage["0/0"] - grid[(alpha, on)]), 2)
             for alpha in ("15/4", "34/4") for on in (False, True)}
    assert below == {("15/4", True): 0.01, ("15/4", False): 0.33, ("34/4", True): 0.29, ("34/4", False): 1.97}
    assert all(stage[alpha] == grid[(alpha, False)] for alpha in ("15/4", "34/4"))  # the same runs, shared
    assert ("scored 0.01 points below the stage instead of 0.33 with the milder distortions, and 0.29 instead "
            "of 1.97 with the stronger") in text


def test_stage_07_twenty_epochs_with_three_seeds():
    """'20 epochs scored 0.02 points above 15 on average, with a standard error of 0.02: not distinguishable',
    and the stage keeps 15."""
    text, readme = docstring("07"), readme_text()
    gain = three_seed_gain(tuning("07_batchnorm_epochs_3seeds"), "epochs", 20, 15)
    assert (round(100 * gain.mean, 2), round(100 * gain.se, 2), gain.distinguishable) == (0.02, 0.02, False)
    assert ("20 epochs scored 0.02 points above 15 on average, with a standard error of 0.02: not "
            "distinguishable under the one rule") in text
    assert f"20 epochs scored {gain.points()} against 15, {gain.verdict()} under the one rule" in readme
    assert SPECS["07"].epochs == 15 and "keeps 15 epochs" in text


def test_stage_07_weight_decay_and_the_statistics_pass_with_three_seeds():
    """Weight decay 0.05 alone 'scored 0.02 points above none on average, with a standard error of 0.01 (0.017 and
    0.012 unrounded)', not distinguishable; with the statistics pass 'together they scored 0.05 points above
    neither on average, with a standard error of 0.02: distinguishable ..., higher with every seed', and the
    stage adopts both."""
    from common.stats import difference

    text, readme = docstring("07"), readme_text()
    gain = three_seed_gain(tuning("07_batchnorm_weight_decay"), "weight_decay", 0.05, 0.0)
    assert (round(100 * gain.mean, 3), round(100 * gain.se, 3), gain.distinguishable) == (0.017, 0.012, False)
    assert "scored 0.02 points above none on average, with a standard error of 0.01 (0.017 and 0.012 unrounded" in text
    assert f"decoupled weight decay 0.05 scored {gain.points()} against none (0.017 and 0.012 unrounded)" in readme
    assert "each not distinguishable under the one rule" in readme and not gain.distinguishable
    grid = tuning("07_batchnorm_combined").sort_values("seed")
    both = grid[(grid["weight_decay"] == 0.05) & grid["recalibrate_batchnorm"]]
    neither = grid[(grid["weight_decay"] == 0.0) & ~grid["recalibrate_batchnorm"]]
    assert list(both["seed"]) == list(neither["seed"]) == [0, 1, 2]
    together = difference(both["val_accuracy"], neither["val_accuracy"], [0, 1, 2], [0, 1, 2])
    assert (round(100 * together.mean, 2), round(100 * together.se, 2), together.distinguishable) == (0.05, 0.02, True)
    assert (both["val_accuracy"].to_numpy() > neither["val_accuracy"].to_numpy()).all()  # higher with every seed
    assert ("Together they scored 0.05 points above neither on average, with a standard error of 0.02: "
            "distinguishable under the one rule, higher with every seed") in text
    assert (f"the two together scored {together.points()} against neither, {together.verdict()} under the one "
            "rule and higher with every seed") in readme
    best = grid.groupby(["weight_decay", "recalibrate_batchnorm"])["val_accuracy"].mean().idxmax()
    assert best == (0.05, True) == (SPECS["07"].weight_decay, SPECS["07"].recalibrate_batchnorm)
    assert "so the stage adopts both" in text and "so stage 07 adopts both" in readme
