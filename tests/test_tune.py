"""experiments/tune.py: choices are scored on a validation split, with the spread over seeds."""
from __future__ import annotations

import pandas as pd
import pytest
from mnist_available import needs_mnist

from common.nn.errors import UserError
from common.stages import layer_choices, load_specs
from experiments import tune


@needs_mnist
def test_tune_writes_mean_and_spread_under_its_name(tmp_path):
    code = tune.main(["--stage", "03", "--lr", "0.1,0.3", "--epochs", "1", "--seeds", "0,1",
                      "--validation-size", "2000", "--out", str(tmp_path), "--name", "03_sweep"])
    assert code == 0
    frame = pd.read_csv(tmp_path / "03_sweep.csv")
    assert sorted(frame["seed"]) == [0, 0, 1, 1] and set(frame["lr"]) == {0.1, 0.3}
    assert frame["val_accuracy"].between(0.8, 1.0).all()
    page = (tmp_path / "03_sweep.md").read_text()
    assert "2,000 training images held out as validation" in page and " ± " in page
    assert ("The whole table: `python experiments/tune.py --stage 03 --lr 0.1,0.3 --epochs 1 --seeds 0,1 "
            "--validation-size 2000 --out ") in page
    best = frame.groupby("lr")["val_accuracy"].mean().idxmax()
    assert f"Best on validation: lr = {best}" in page


@needs_mnist
def test_a_diverging_setting_is_a_row_not_the_end(tmp_path):
    code = tune.main(["--stage", "03", "--lr", "0.1,1e9", "--epochs", "1", "--validation-size", "2000",
                      "--out", str(tmp_path)])
    assert code == 0
    page = (tmp_path / "03_minibatch.md").read_text()
    assert "diverged" in page and "Best on validation: lr = 0.1" in page


def test_tune_needs_a_grid():
    with pytest.raises(UserError, match="at least one grid option"):
        tune.main(["--stage", "03"])


@needs_mnist
def test_a_second_run_reuses_every_run_and_writes_nothing(tmp_path, capsys):
    arguments = ["--stage", "03", "--lr", "0.1", "--epochs", "1", "--validation-size", "2000", "--out", str(tmp_path)]
    assert tune.main(arguments) == 0
    written = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    capsys.readouterr()
    assert tune.main(arguments) == 0
    out = capsys.readouterr().out
    assert "training ..." not in out and "unchanged, reusing" in out and "nothing written" in out
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == written


@needs_mnist
def test_a_grid_where_everything_diverges_is_reported_and_fails(tmp_path):
    with pytest.raises(UserError, match="every setting of the grid failed or diverged"):
        tune.main(["--stage", "03", "--lr", "1e9,1e10", "--epochs", "1", "--validation-size", "2000",
                   "--out", str(tmp_path)])
    page = (tmp_path / "03_minibatch.md").read_text()
    assert page.count("failed or diverged") >= 3 and "Best on validation: none" in page


@pytest.mark.parametrize("options, message", [(["--seeds", "-1"], "non-negative"), (["--seeds", "0,0"], "more than once"),
                                              (["--lr", "0.1,0.1"], "more than once"), (["--lr", "x"], "--lr"),
                                              (["--elastic", "34"], "--elastic"), (["--layers", "stage,stage"], "more than once"),
                                              (["--recalibrate-batchnorm", "yes"], "--recalibrate-batchnorm")])
def test_bad_lists_are_refused_in_one_line(options, message, tmp_path):
    arguments = ["--stage", "03", "--epochs", "1", "--out", str(tmp_path)] + (["--lr", "0.1"] if "--lr" not in options else [])
    with pytest.raises(UserError, match=message):
        tune.main(arguments + options)


@needs_mnist
def test_a_setting_another_table_ran_is_shared_not_trained_again(tmp_path, capsys):
    common = ["--stage", "03", "--epochs", "1", "--validation-size", "2000", "--out", str(tmp_path), "--quiet"]
    assert tune.main([*common, "--lr", "0.1", "--name", "first"]) == 0
    capsys.readouterr()
    assert tune.main([*common, "--lr", "0.1,0.2", "--name", "second"]) == 0
    out = capsys.readouterr().out
    assert out.count("training ...") == 1 and "tune-second-lr0.2-epochs1 seed 0] training" in out
    assert "sharing its result" in out
    first = pd.read_csv(tmp_path / "first.csv")
    second = pd.read_csv(tmp_path / "second.csv")
    assert second.loc[second["lr"] == 0.1, "val_accuracy"].item() == first["val_accuracy"].item()


def test_layers_names_the_stage_networks_and_refuses_others(tmp_path):
    with pytest.raises(UserError, match="no network named 'wide'.*stage, dropout, deeper"):
        tune.main(["--stage", "07", "--layers", "stage,wide", "--out", str(tmp_path)])
    with pytest.raises(UserError, match="no stage 99"):
        tune.main(["--stage", "99", "--layers", "stage", "--out", str(tmp_path)])
    (spec,) = load_specs(["07"]).values()
    assert layer_choices("07")["stage"] == spec.layers and "dropout 0.5" in layer_choices("07")["dropout"]
    assert tune.overrides_of({"layers": "dropout", "elastic": "34/4"}, {"dropout": ("dense 10",)}) == {
        "layers": ("dense 10",), "elastic_alpha": 34.0, "elastic_sigma": 4.0}


def test_recalibration_is_a_grid_of_on_and_off():
    assert [tune.on_off(text) for text in ("0", "1", "off", "ON")] == [False, True, False, True]
    assert tune.overrides_of({"recalibrate_batchnorm": True}, {}) == {"recalibrate_batchnorm": True}
    with pytest.raises(ValueError):
        tune.on_off("2")
