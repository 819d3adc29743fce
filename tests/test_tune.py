"""experiments/tune.py: choices are scored on a validation split, with the spread over seeds."""
from __future__ import annotations

import pandas as pd
import pytest
from mnist_available import needs_mnist

from common.nn.errors import UserError
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
