"""Tests for the benchmark's bookkeeping (benchmarks/compare_libraries.py): how the figures and
targets are derived from the timed runs, and how a missing library is reported. The timings
themselves are measured by running the scripts, not here."""
from __future__ import annotations

import pytest

import compare_libraries as bench

GFLOP = 27.264
ENVIRONMENT = {"date": "d", "commit": "c", "python": "3", "numpy": "2", "blas": "b", "torch": "not installed",
               "scikit-learn": "1", "threads": 2, "thread_env": {}, "cpu_count": 2, "command": "python x",
               "load_average_1min": [0.1, None]}


def fake_runs(with_pytorch: bool = True) -> dict:
    runs = {
        "ours": [{"seconds": 3.0, "test_accuracy": 0.978, "epoch_seconds": [1.0, 1.0, 1.0]},
                 {"seconds": 2.0, "test_accuracy": 0.980, "epoch_seconds": [1.2, 0.4, 0.4]},
                 {"seconds": 2.5, "test_accuracy": 0.979, "epoch_seconds": [0.9, 0.8, 0.8]}],
        "sklearn": [{"seconds": 10.0, "test_accuracy": 0.977}] * 3,
        "sklearn_float32": [{"seconds": 6.0, "test_accuracy": 0.976}] * 3,
        "pytorch": [{"seconds": 5.0, "test_accuracy": 0.975}] * 3 if with_pytorch else [],
    }
    return runs


def test_summary_figures_and_targets():
    summary = bench.summarize(fake_runs(), epochs=3, peaks=[100.0, 150.0, 120.0], fullbatch=[0.2, 0.3, 0.25],
                              gflop=GFLOP, skipped={}, fullbatch_one_pass=[0.5, 0.4, 0.6])
    # library ratios: median whole-budget seconds / epochs (ours 2.5 / 3, sklearn 10 / 3, ...)
    assert summary["seconds_per_epoch"]["ours"] == pytest.approx(2.5 / 3)
    assert summary["ratio_vs_sklearn"] == pytest.approx(0.25)
    assert summary["ratio_vs_pytorch"] == pytest.approx(0.5)
    assert summary["ratio_per_round"]["pytorch"] == pytest.approx([0.6, 0.4, 0.5])
    # the peak fraction: median of the epochs after each run's first (1, 1, .4, .4, .8, .8 -> .8)
    assert summary["epoch_seconds"] == pytest.approx(0.8)
    assert summary["matmul_peak_gflops"] == 120.0  # the median round
    assert summary["peak_fraction_epoch"] == pytest.approx(GFLOP / 0.8 / 120.0)
    assert summary["peak_fraction_fullbatch"] == pytest.approx(GFLOP / 0.25 / 120.0)
    # per round, each against its own peak: epochs (1, 1) / 100, (.4, .4) / 150, (.8, .8) / 120
    assert summary["peak_fraction_epoch_per_round"] == pytest.approx(
        [GFLOP / 1.0 / 100.0, GFLOP / 0.4 / 150.0, GFLOP / 0.8 / 120.0])
    assert summary["peak_fraction_fullbatch_per_round"] == pytest.approx(
        [GFLOP / 0.2 / 100.0, GFLOP / 0.3 / 150.0, GFLOP / 0.25 / 120.0])
    assert summary["fullbatch_one_pass_seconds"] == pytest.approx(0.5)
    assert summary["accuracy_gap_vs_pytorch"] == pytest.approx(0.4)
    met = {key: target["met"] for key, target in summary["targets"].items()}
    assert met == {"ratio_vs_sklearn": True, "ratio_vs_pytorch": True, "peak_fraction_epoch": False,
                   "peak_fraction_fullbatch": True, "accuracy_gap_vs_pytorch": False}
    markdown = bench.render_markdown(summary, fake_runs(), {"epochs": 3, "repeats": 3}, ENVIRONMENT)
    assert "epoch 27.3 %, 45.4 %, 28.4 %" in markdown


def test_single_epoch_runs_keep_their_only_epoch():
    runs = fake_runs()
    for run in runs["ours"]:
        run["epoch_seconds"] = run["epoch_seconds"][:1]
    summary = bench.summarize(runs, epochs=1, peaks=[100.0], fullbatch=[0.2], gflop=GFLOP, skipped={})
    assert summary["epoch_seconds"] == pytest.approx(1.0)
    assert summary["fullbatch_one_pass_seconds"] is None


def test_missing_library_is_reported_as_skipped():
    skipped = {"pytorch": "not installed"}
    runs = fake_runs(with_pytorch=False)
    summary = bench.summarize(runs, epochs=3, peaks=[100.0], fullbatch=[0.2], gflop=GFLOP, skipped=skipped)
    assert summary["seconds_per_epoch"]["pytorch"] is None
    assert summary["ratio_vs_pytorch"] is None and summary["accuracy_gap_vs_pytorch"] is None
    assert summary["targets"]["ratio_vs_pytorch"]["met"] is None
    assert "pytorch" not in summary["ratio_per_round"]
    settings = {"epochs": 3, "repeats": 3}
    markdown = bench.render_markdown(summary, runs, settings, ENVIRONMENT)
    assert "skipped (not installed)" in markdown
    assert "not measured (library skipped)" in markdown
    assert "| 50.0" not in markdown  # no invented figure for the missing library


def test_profiled_epoch_trains_exactly_like_train():
    """The profiler's clocked step is the training step: same seed, same parameters afterwards."""
    import numpy as np

    from common.nn.network import Network
    from common.nn.optimizers import Adam
    from common.nn.train import train

    import profile_epoch

    rng = np.random.default_rng(0)
    x = rng.random((300, 784), dtype=np.float32)
    y = rng.integers(0, 10, 300)
    reference = Network.from_sizes([784, 128, 64, 10], np.random.default_rng(1))
    train(reference, Adam(1e-3), x, y, epochs=1, rng=np.random.default_rng(2), batch_size=128, progress=False)
    profiled = Network.from_sizes([784, 128, 64, 10], np.random.default_rng(1))
    parts = profile_epoch.timed_epoch(profiled, Adam(1e-3), profiled.parameters(fused="all"), x, y,
                                      np.random.default_rng(2))
    np.testing.assert_array_equal(profiled.flat_params, reference.flat_params)
    assert set(parts) >= {"gather", "loss", "optimizer", "forward 0 Dense", "backward 0 Dense"}
    assert all(seconds > 0 for seconds in parts.values())
    assert profile_epoch.matmul_only_epoch(profiled, x, y, np.random.default_rng(3)) > 0
