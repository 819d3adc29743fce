"""``--threads auto|N`` (common/threads.py): the load reading, the choice, the watcher, and the scripts' option."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mnist_available import needs_mnist

from common import threads
from common.cli import run_cli
from common.nn import parallel

import harness
import under_load

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def restore_threads():
    yield
    threads.stop()


@pytest.mark.parametrize("text, expected", [("auto", "auto"), (" AUTO ", "auto"), ("1", 1), ("16", 16)])
def test_threads_option_reads_auto_or_a_count(text, expected):
    assert threads.threads_option(text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "two", "", "1.5"])
def test_threads_option_refuses_anything_else(text):
    with pytest.raises(argparse.ArgumentTypeError, match="'auto' or a whole number"):
        threads.threads_option(text)


@pytest.mark.parametrize("cores, others, expected", [
    (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 1.4, 1), (2, 2.0, 1), (2, 3.0, 1),
    (4, 1.0, 3), (4, 2.6, 1), (1, 0.0, 1),
])
def test_the_free_cores_rounded_and_at_least_one(cores, others, expected):
    assert threads.fitted_threads(cores, others) == expected


def test_others_busy_cores_is_the_busy_time_less_our_own_over_the_wall_time():
    first = threads.LoadReading(wall=10.0, busy=100.0, own=50.0)
    assert threads.others_busy_cores(first, threads.LoadReading(12.0, 104.0, 52.0)) == pytest.approx(1.0)
    assert threads.others_busy_cores(first, threads.LoadReading(12.0, 102.0, 52.0)) == 0.0  # only us
    assert threads.others_busy_cores(first, threads.LoadReading(10.0, 104.0, 52.0)) == 0.0  # no time passed


def test_set_threads_sets_both_counts():
    start = parallel.THREADS
    try:
        blas_set = threads.set_threads(1)
        assert parallel.THREADS == 1
        # the BLAS's count follows where NumPy's BLAS is an OpenBLAS that exports its setter, as in NumPy's wheels
        assert blas_set == (threads.blas_threads() is not None)
        if blas_set:
            assert threads.blas_threads() == 1
        threads.set_threads(2)
        assert parallel.THREADS == 2 and threads.blas_threads() in (None, 2)
    finally:
        threads.set_threads(start)


def test_products_are_right_while_the_count_changes_under_them():
    """The watcher sets the count from its own thread while the main thread multiplies."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 200), dtype=np.float32), rng.standard_normal((200, 250), dtype=np.float32)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    flipping = True

    def flip():
        count = 1
        while flipping:
            threads.set_threads(count)
            count = 3 - count

    import threading

    start = parallel.THREADS
    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        for _ in range(300):
            np.testing.assert_allclose(a @ b, expected, rtol=1e-4, atol=1e-3)
    finally:
        flipping = False
        flipper.join()
        threads.set_threads(start)


def test_fixed_count_holds_and_stop_gives_back_the_starting_counts():
    start = parallel.THREADS
    assert threads.configure(1) == "1"
    assert parallel.THREADS == 1 and threads.describe() == "1" and threads.changes() == []
    threads.stop()
    assert parallel.THREADS == start and threads.describe() is None


def test_a_count_set_in_the_shell_is_kept_unless_threads_is_given(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert threads.configure(None) == "1 (from the shell)"
    assert parallel.THREADS == 1
    assert threads.configure("auto").startswith(("auto", f"{len(threads.usable_cpus())} (auto"))


def test_auto_keeps_every_core_where_the_load_cannot_be_read(monkeypatch, tmp_path):
    monkeypatch.setattr(threads, "STAT_FILE", tmp_path / "no-such-file")
    cores = len(threads.usable_cpus())
    assert threads.configure("auto") == f"{cores} (auto: the load cannot be read here)"
    assert parallel.THREADS == cores and threads.changes() == []


class FakeLoad:
    """A machine whose other programs keep ``others`` cores busy, and whose clock runs as fast as we ask."""

    def __init__(self) -> None:
        self.others, self.busy, self.wall = 0.0, 0.0, 0.0

    def reading(self) -> threads.LoadReading:
        self.wall += 0.25
        self.busy += 0.25 * self.others
        return threads.LoadReading(self.wall, self.busy, 0.0)


def wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_the_watcher_follows_the_free_cores_both_ways(monkeypatch):
    monkeypatch.setattr(threads, "PERIOD", 0.005)
    load = FakeLoad()
    governor = threads.Governor(cores=2, cpus=[0, 1])
    monkeypatch.setattr(governor, "reading", load.reading)
    threads.set_threads(1)  # whatever the counts were, the watcher starts from every core
    assert governor.start()
    assert parallel.THREADS == 2
    try:
        load.others = 1.0  # one busy program
        assert wait_for(lambda: parallel.THREADS == 1), "auto did not drop to the one free core"
        load.others = 0.0  # it ended
        assert wait_for(lambda: parallel.THREADS == 2), "auto did not take both cores back"
        assert [count for _, count in governor.history] == [2, 1, 2]
    finally:
        governor.stop()
        threads.set_threads(2)


@pytest.mark.skipif(len(threads.usable_cpus()) < 2 or not threads.STAT_FILE.exists(),
                    reason="needs Linux's /proc/stat and two CPUs")
def test_the_reading_sees_a_real_busy_process():
    """One more busy process reads as about one more busy core, beside whatever else keeps the machine busy
    (a shared CI machine, another study): the load is read before it starts, then while it runs."""
    cores = len(threads.usable_cpus())
    governor = threads.Governor(cores=cores, cpus=threads.usable_cpus())

    def others_over_a_second() -> float:
        first = governor.reading()
        time.sleep(1.0)
        return threads.others_busy_cores(first, governor.reading())

    before = others_over_a_second()
    busy = subprocess.Popen([sys.executable, "-c", "while True:\n    pass\n"])
    try:
        time.sleep(0.5)  # let it start
        others = others_over_a_second()
    finally:
        busy.kill()
        busy.wait()
    if before < cores - 1.4:  # a core was free for it: it shows as one more
        assert 0.6 < others - before < 1.6, f"one busy process read as {others - before:.2f} more cores"
    else:  # the machine was full already: the reading still says so
        assert others > cores - 1.6, f"a full machine read as {others:.2f} busy cores of {cores}"


def test_run_cli_gives_the_threads_back_however_main_ends():
    start = parallel.THREADS

    def main(argv):
        threads.configure(1)
        raise KeyboardInterrupt

    assert run_cli(main, []) != 0
    assert parallel.THREADS == start and threads.describe() is None


@needs_mnist
def test_a_stage_records_its_threads_and_refuses_a_bad_count(tmp_path):
    out = tmp_path / "04"
    command = [sys.executable, "stages/04_adam.py", "--quick", "--no-plots", "--quiet", "--out", str(out)]
    finished = subprocess.run(command + ["--threads", "1"], cwd=REPO, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert json.loads((out / "metrics.json").read_text())["environment"]["threads"] == "1"
    finished = subprocess.run(command + ["--threads", "0"], cwd=REPO, capture_output=True, text=True)
    assert finished.returncode == 2
    assert finished.stderr.strip().splitlines() == [
        "error: argument --threads: expected 'auto' or a whole number >= 1, got '0' (see --help)"]
    assert "Traceback" not in finished.stderr


def test_compare_libraries_carries_the_committed_under_load_section_over():
    """compare_libraries.py writes benchmark.json / .md whole: the under-load record and its section stay,
    rendered again from the record exactly as committed."""
    from common.paths import RESULTS_DIR

    committed = json.loads((RESULTS_DIR / "benchmark.json").read_text(encoding="utf-8"))
    record, markdown = harness.carry_over_section(RESULTS_DIR, {"ratio_vs_pytorch": 0.6}, "# new\n",
                                                  under_load.render_section, under_load.SECTION,
                                                  ("under_load_ratio_vs_best_fixed", "under_load_ratio_vs_pytorch"))
    assert record["under_load"] == committed["under_load"] and record["ratio_vs_pytorch"] == 0.6
    assert record["under_load_ratio_vs_pytorch"] == committed["under_load_ratio_vs_pytorch"]
    section = harness.extract_section((RESULTS_DIR / "benchmark.md").read_text(encoding="utf-8"), "under_load")
    assert markdown.startswith("# new\n") and harness.extract_section(markdown, "under_load") == section


def test_under_load_summary_picks_the_best_fixed_counts_and_the_worst_load():
    def rounds(load: int, seconds: dict) -> list[dict]:
        return [{"load": load, "network": "mlp", "rival": name, "seconds_per_epoch": value}
                for name, value in seconds.items()]

    names = under_load.rivals(2, with_torch=True)
    assert names == ["ours:auto", "ours:1", "ours:2", "pytorch:1", "pytorch:2"]
    records = (rounds(0, {"ours:auto": 1.0, "ours:1": 1.6, "ours:2": 1.0, "pytorch:1": 2.0, "pytorch:2": 1.2})
               + rounds(1, {"ours:auto": 1.1, "ours:1": 1.0, "ours:2": 3.0, "pytorch:1": 2.2, "pytorch:2": 4.0}))
    summary = under_load.summarize(records, [0, 1], ["mlp"], names)
    busy = summary["by_network"]["mlp"]["1"]
    assert busy["best_fixed"] == "ours:1" and busy["best_pytorch"] == "pytorch:1"
    assert summary["under_load_ratio_vs_best_fixed"]["mlp"] == pytest.approx(1.1)
    assert summary["under_load_ratio_vs_pytorch"]["mlp"] == pytest.approx(0.5)
    assert summary["idle_ratio_vs_all_cores"]["mlp"] == pytest.approx(1.0)
