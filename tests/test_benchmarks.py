"""Tests for the benchmark's bookkeeping (benchmarks/compare_libraries.py): how the figures and
targets are derived from the timed runs, and how a missing library is reported; the scripts' layout
(an import graph without cycles, the BLAS configured by every entry point); and that a user's own
runs never touch the committed results. The timings themselves are measured by running the
scripts, not here."""
from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mnist_available import needs_mnist

from common.paths import RESULTS_DIR

import compare_libraries as bench
import conv_speed
import harness
import mlp_scaling

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"

GFLOP = 27.264
ENVIRONMENT = {"date": "d", "commit": "c", "python": "3", "numpy": "2", "blas": "b", "torch": "not installed",
               "scikit-learn": "1", "threads": 2, "thread_env": {}, "cpu_count": 2, "command": "python x",
               "load_average_1min": [0.1, None]}


def torch_run(epochs: list[float], accuracy: float, optimizer: str, **extra) -> dict:
    return {"seconds": sum(epochs), "epoch_seconds": epochs, "test_accuracy": accuracy, "optimizer": optimizer,
            **extra}


def fake_runs(with_pytorch: bool = True) -> dict:
    runs = {
        "ours": [{"seconds": 3.0, "test_accuracy": 0.978, "epoch_seconds": [1.0, 1.0, 1.0]},
                 {"seconds": 2.0, "test_accuracy": 0.980, "epoch_seconds": [1.2, 0.4, 0.4]},
                 {"seconds": 2.5, "test_accuracy": 0.979, "epoch_seconds": [0.9, 0.8, 0.8]}],
        "sklearn": [{"seconds": 10.0, "test_accuracy": 0.977}] * 3,
        "sklearn_float32": [{"seconds": 6.0, "test_accuracy": 0.976}] * 3,
        "pytorch": [torch_run([2.0, 1.6, 1.6], 0.975, "Adam (default)")] * 3 if with_pytorch else [],
        "pytorch_fused": [torch_run([1.5, 1.0, 1.0], 0.975, "Adam(fused=True)")] * 3 if with_pytorch else [],
        "pytorch_compile": ([torch_run([30.0, 1.2, 1.2], 0.974, "torch.compile + Adam(fused=True)",
                                       compile_seconds=28.8)] * 3 if with_pytorch else []),
    }
    return runs


def fake_scaling(libraries=("ours", "pytorch_fused")) -> list[dict]:
    """Scaling records as the workers return them: ours twice PyTorch's time per step, every configuration."""
    records = []
    for round_index in (1, 2, 3):
        for config in mlp_scaling.configurations():
            for library in libraries:
                per_step = 1e-3 * config["sizes"][1] / 128 * (2.0 if library == "ours" else 1.0) * round_index
                parts = ({"matmul": 0.5 * per_step * 10, "optimizer": 0.3 * per_step * 10, "rest": 0.2 * per_step * 10}
                         if library == "ours" else {})
                records.append({**config, "library": library, "round": round_index, "seed": round_index - 1,
                                "steps": 10, "seconds": per_step * 10, "seconds_per_step": per_step, "parts": parts,
                                "train_images": 60000, "threads": 2, "optimizer": library})
    return records


def test_summary_figures_and_targets():
    scaling = mlp_scaling.summarize_scaling(fake_scaling(), peak_gflops=120.0)
    summary = bench.summarize(fake_runs(), epochs=3, peaks=[100.0, 150.0, 120.0], fullbatch=[0.2, 0.3, 0.25],
                              gflop=GFLOP, skipped={}, scaling=scaling)
    # seconds per epoch: the mean of each run's epochs after the first, median over rounds (1, .4, .8 -> .8);
    # scikit-learn, one fit: the budget / epochs
    assert summary["seconds_per_epoch"]["ours"] == pytest.approx(0.8)
    assert summary["seconds_per_epoch"]["sklearn"] == pytest.approx(10 / 3)
    assert summary["ratio_vs_sklearn"] == pytest.approx(0.24)
    assert summary["ratio_vs_pytorch"] == pytest.approx(0.5)
    # the headline ratio is against the fastest PyTorch configuration (fused, 1.0 s), not the default
    assert summary["pytorch_best"] == "pytorch_fused"
    assert summary["ratio_vs_pytorch_best"] == pytest.approx(0.8)
    assert summary["ratio_vs_pytorch_compile"] == pytest.approx(0.8 / 1.2)
    assert summary["compile_seconds"] == pytest.approx(28.8)
    assert summary["ratio_per_round"]["pytorch"] == pytest.approx([1 / 1.6, 0.4 / 1.6, 0.8 / 1.6])
    assert summary["ratio_width_1024"] == pytest.approx(2.0)
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
    assert summary["fullbatch_seconds"] == pytest.approx(0.25)  # one pass: no "blocks" vs "one pass" pair
    assert not any(key.startswith("fullbatch_one_pass") for key in summary)
    assert summary["accuracy_gap_vs_pytorch"] == pytest.approx(0.4)
    met = {key: target["met"] for key, target in summary["targets"].items()}
    assert met == {"ratio_vs_sklearn": True, "ratio_vs_pytorch_best": False, "ratio_width_1024": False,
                   "ratio_width_1024_stretch": False, "peak_fraction_fullbatch": True, "accuracy_gap_vs_pytorch": False}
    markdown = bench.render_markdown(summary, fake_runs(), {"epochs": 3, "repeats": 3, "wall_seconds": 90.0},
                                     ENVIRONMENT, scaling)
    assert "epoch 27.3 %, 45.4 %, 28.4 %" in markdown
    assert "(PyTorch CPU, Adam(fused=True)): **0.80** (`ratio_vs_pytorch_best`)" in markdown
    assert "against PyTorch's default Adam: 0.50" in markdown and "28.8 s to compile" in markdown
    assert "| PyTorch CPU, torch.compile + Adam(fused=True)" in markdown
    assert "## How the cost grows" in markdown and "](benchmark_scaling.png)" in markdown
    assert "| width  | [784, 1024, 1024, 10] | 128" in markdown and "50 / 30 / 20" in markdown
    assert "wall time of this benchmark: 1.5 min" in markdown
    assert "60,000 images in one pass (median) | 0.250" in markdown and "blocks" not in markdown
    assert "50 %" not in markdown.split("## Targets")[1]  # the retired epoch target is gone


def test_scaling_records_cover_every_width_and_batch_for_both_libraries(tmp_path):
    scaling = mlp_scaling.summarize_scaling(fake_scaling(), peak_gflops=120.0)
    for library in mlp_scaling.LIBRARIES:
        widths = [e["sizes"][1] for e in scaling if e["axis"] == "width" and e["library"] == library]
        batches = [e["batch_size"] for e in scaling if e["axis"] == "batch" and e["library"] == library]
        assert widths == [128, 256, 512, 1024, 2048] and batches == [32, 128, 512, 2048]
    ours = mlp_scaling.find(scaling, "width", "ours", [784, 1024, 1024, 10])
    # rounds 1, 2, 3 take 1x, 2x, 3x: the median is round 2; an epoch is ceil(60,000 / 128) = 469 steps
    assert ours["seconds_per_epoch"] == pytest.approx(2 * 469 * 1e-3 * 8 * 2)
    assert [r["round"] for r in ours["rounds"]] == [1, 2, 3]
    assert sum(ours["breakdown"].values()) == pytest.approx(ours["seconds_per_epoch"])
    assert ours["breakdown"]["matmul"] == pytest.approx(0.5 * ours["seconds_per_epoch"])
    assert ours["peak_fraction"] == pytest.approx(ours["gflop_per_epoch"] / ours["seconds_per_epoch"] / 120.0)
    assert ours["ratio_vs_pytorch"] == pytest.approx(2.0)
    assert "ratio_vs_pytorch" not in mlp_scaling.find(scaling, "width", "pytorch_fused", [784, 1024, 1024, 10])
    json.dumps(scaling)  # what goes into benchmark.json
    assert mlp_scaling.plot_scaling(scaling, tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"


def test_scaling_without_pytorch_has_no_ratio():
    scaling = mlp_scaling.summarize_scaling(fake_scaling(("ours",)), peak_gflops=120.0)
    assert mlp_scaling.width_ratio(scaling) is None
    assert "| skipped" in mlp_scaling.scaling_table(scaling)
    assert any("ours / PyTorch is n/a" in line for line in mlp_scaling.scaling_sentences(scaling))


def test_single_epoch_runs_keep_their_only_epoch():
    runs = fake_runs()
    for run in runs["ours"]:
        run["epoch_seconds"] = run["epoch_seconds"][:1]
    summary = bench.summarize(runs, epochs=1, peaks=[100.0], fullbatch=[0.2], gflop=GFLOP, skipped={})
    assert summary["epoch_seconds"] == pytest.approx(1.0)
    assert summary["fullbatch_seconds"] == pytest.approx(0.2)
    assert summary["ratio_width_1024"] is None and summary["targets"]["ratio_width_1024"]["met"] is None


def test_missing_library_is_reported_as_skipped():
    skipped = {lib: "not installed" for lib in bench.TORCH_CONFIGS}
    runs = fake_runs(with_pytorch=False)
    summary = bench.summarize(runs, epochs=3, peaks=[100.0], fullbatch=[0.2], gflop=GFLOP, skipped=skipped)
    assert summary["seconds_per_epoch"]["pytorch"] is None and summary["pytorch_best"] is None
    assert summary["ratio_vs_pytorch"] is None and summary["accuracy_gap_vs_pytorch"] is None
    assert summary["ratio_vs_pytorch_best"] is None and summary["targets"]["ratio_vs_pytorch_best"]["met"] is None
    assert "pytorch" not in summary["ratio_per_round"]
    settings = {"epochs": 3, "repeats": 3}
    markdown = bench.render_markdown(summary, runs, settings, ENVIRONMENT)
    assert "skipped (not installed)" in markdown
    assert "not measured (library skipped)" in markdown
    assert "no PyTorch ratio" in markdown
    assert "| 50.0" not in markdown  # no invented figure for the missing library


def test_compile_is_left_out_of_quick_runs_and_on_request(monkeypatch):
    monkeypatch.setattr(bench, "installed", lambda module: True)  # as if PyTorch were installed
    assert bench.not_run(bench.parse_args(["--quick"]))["pytorch_compile"] == "not run with --quick"
    assert bench.not_run(bench.parse_args(["--no-compile"]))["pytorch_compile"] == "not run (--no-compile)"


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--scaling-seconds", "-1"], ["--repeats", "x"],
                                  ["--worker", "ours"], ["--worker", "nobody", "--worker-result", "r.json"]])
def test_bad_options_give_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_a_failed_worker_is_one_line(tmp_path):
    from common.nn.errors import UserError

    script = tmp_path / "fails.py"
    script.write_text("import sys\nprint('Traceback ...', file=sys.stderr)\nprint('error: no such data', file=sys.stderr)\n"
                      "sys.exit(2)\n")
    with pytest.raises(UserError, match="^the ours worker failed: no such data$"):
        harness.run_worker(script, [], None, "ours")


@needs_mnist
def test_scaling_worker_protocol(tmp_path):
    """A worker process of mlp_scaling.py: one configuration, a few steps, its record as JSON."""
    config = {"axis": "batch", "sizes": [784, 128, 64, 10], "batch_size": 512}
    done = harness.run_worker(mlp_scaling.__file__, ["--worker", "ours", "--configs", json.dumps([config]),
                                                     "--seconds", "0.01", "--min-steps", "2"], 1, "ours")
    (result,) = done["results"]
    assert result["sizes"] == config["sizes"] and result["batch_size"] == 512 and result["steps"] >= 2
    assert result["threads"] == 1 and result["train_images"] == 60000 and done["process_seconds"] > 0
    assert set(result["parts"]) == {"matmul", "optimizer", "rest"} and result["parts"]["matmul"] > 0


@needs_mnist
def test_quick_run_writes_table_figure_and_scaling(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    for var in harness.THREAD_VARS:  # already set: --threads 1 then needs no re-execution of this process
        monkeypatch.setenv(var, "1")
    assert bench.main(["--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    assert f"results go to {tmp_path}/ (--out;" in capsys.readouterr().out  # --out wins over --quick's folder
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert record["pytorch_best"] in ("pytorch", "pytorch_fused")
    assert record["ratio_vs_pytorch_best"] == pytest.approx(
        record["seconds_per_epoch"]["ours"] / record["seconds_per_epoch"][record["pytorch_best"]])
    assert record["skipped"]["pytorch_compile"] == "not run with --quick"
    assert [r["threads"] for lib in ("ours", "pytorch", "pytorch_fused") for r in record["runs"][lib]] == [1, 1, 1]
    covered = {(e["axis"], e["library"], e["sizes"][1] if e["axis"] == "width" else e["batch_size"])
               for e in record["scaling"]}
    assert covered == {(axis, lib, size) for lib in mlp_scaling.LIBRARIES
                       for axis, sizes in (("width", mlp_scaling.WIDTHS), ("batch", mlp_scaling.BATCHES))
                       for size in sizes}
    assert all("breakdown" in e and "peak_fraction" in e for e in record["scaling"] if e["library"] == "ours")
    markdown = (tmp_path / "benchmark.md").read_text()
    assert "Smoke run" in markdown and "](benchmark_scaling.png)" in markdown
    assert (tmp_path / "benchmark_scaling.png").read_bytes()[:4] == b"\x89PNG"


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
    parts = profile_epoch.timed_epoch(profiled, Adam(1e-3), profiled.parameter_groups(decay_weights=False), x, y,
                                      np.random.default_rng(2))
    np.testing.assert_array_equal(profiled.flat_params, reference.flat_params)
    assert set(parts) >= {"gather", "loss", "optimizer", "forward 0 Dense", "backward 0 Dense"}
    assert all(seconds > 0 for seconds in parts.values())
    assert profile_epoch.matmul_only_epoch(profiled, x, y, np.random.default_rng(3)) > 0


def test_readme_speed_summary_matches_the_committed_benchmark():
    """The README's two-sentence speed summary quotes results/benchmark.json, to the digit shown."""
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    readme = (repo / "README.md").read_text(encoding="utf-8")
    section = " ".join(readme.split("## Speed", 1)[1].split("\n## ", 1)[0].split())
    summary = section.split("The core works", 1)[0]
    bench = json.loads((repo / "results" / "benchmark.json").read_text(encoding="utf-8"))
    bound = mlp_scaling.bounds(bench["scaling"])
    for quoted in (f"**{bench['ratio_vs_pytorch_best']:.2f}x** PyTorch's time for the suite's",
                   f"**{bench['ratio_width_1024']:.2f}x** at width 1,024",
                   f"**{bench['conv_ratio_vs_pytorch']:.2f}x** for stage 06's",
                   f"**{bench['bn_conv_ratio_vs_pytorch']:.2f}x** for stage 07's",
                   f"would take {bound['suite']['without_adam']:.2f}x PyTorch's",
                   f"alone take {bound['width']['matmul_only']:.2f}x PyTorch's whole epoch"):
        assert quoted in summary, quoted
    assert bench["pytorch_best"] == "pytorch_fused"  # "fused Adam" in the summary
    # "measured side by side on the 2-core machine described there, an AMD EPYC with AVX2": all four
    # figures' records name one CPU, the one the summary names
    cpus = {bench[key]["cpu"] if key == "environment" else bench[key]["environment"].get("cpu")
            for key in ("environment", "conv", "bn_conv")}
    assert len(cpus) == 1 and None not in cpus, cpus
    cpu = cpus.pop()
    assert f"an {cpu.split(' (')[0]} with {cpu.rsplit(', ', 1)[1]}" in summary
    for key in ("conv", "bn_conv"):  # "the faster of its two memory formats"
        assert len(bench[key]["pytorch_memory_formats"]) == 2
    # the busy-machine paragraph's figures come from the earlier machine, which recorded no CPU
    assert "cpu" not in bench["under_load"]["environment"] and "on that earlier 2-core AVX-512 machine" in section


# --------------------------------------------------------------------------- the scripts' layout

def benchmark_imports(tree: ast.AST) -> list[tuple[str, int]]:
    """``(script, line)`` of every import of a benchmark script anywhere in ``tree``."""
    scripts = {p.stem for p in BENCHMARKS.glob("*.py")}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        else:
            continue
        found += [(name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in scripts]
    return found


def import_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` (module -> the modules it imports) as a path that ends where it starts, or None."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == "open":
                return path[path.index(imported):] + [imported]
            if imported not in state and (cycle := visit(imported, path + [imported])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_import_cycle_finds_a_cycle():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_benchmark_scripts_import_each_other_without_a_cycle():
    """harness.py imports no benchmark script; the scripts' imports form no cycle, and none is deferred
    into a function (or any other block) to hide one."""
    trees = {path.stem: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(BENCHMARKS.glob("*.py"))}
    graph = {name: {script for script, _ in benchmark_imports(tree)} for name, tree in trees.items()}
    assert graph["harness"] == set()
    assert graph["compare_libraries"] >= {"harness", "mlp_scaling"}  # the graph is built at all
    cycle = import_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"
    deferred = [f"{name}.py:{line} imports {script}" for name, tree in trees.items()
                for statement in tree.body if not isinstance(statement, (ast.Import, ast.ImportFrom))
                for script, line in benchmark_imports(statement)]
    assert not deferred, deferred


def test_every_entry_point_configures_the_blas_and_nothing_relies_on_an_import():
    """Each script's main and worker call common.blas.configure(); no bare ``import common`` for its side effect."""
    for path in sorted(BENCHMARKS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert not [node for node in ast.walk(tree) if isinstance(node, ast.Import)
                    and any(alias.name == "common" for alias in node.names)], path.name
        for function in (node for node in tree.body if isinstance(node, ast.FunctionDef)
                         and node.name in ("main", "worker")):
            calls = [node.func for node in ast.walk(function) if isinstance(node, ast.Call)
                     and isinstance(node.func, ast.Attribute)]
            assert any(call.attr == "configure" and isinstance(call.value, ast.Name) and call.value.id == "blas"
                       for call in calls), f"{path.name}: {function.name} does not call blas.configure()"


# --------------------------------------------------------------------------- a user's runs never touch the committed results

def test_output_folder_keeps_the_committed_results_out_of_reach(tmp_path):
    committed = {"ours", "pytorch"}
    assert harness.output_folder(None, False, [], committed)[0] == RESULTS_DIR
    assert harness.output_folder(None, False, ["sklearn"], committed)[0] == RESULTS_DIR  # not committed either
    assert harness.output_folder(None, True, [], committed)[0] == harness.QUICK_DIR
    assert harness.output_folder(None, False, ["pytorch"], committed)[0] == harness.QUICK_DIR
    assert harness.output_folder(str(tmp_path), True, ["pytorch"], committed)[0] == tmp_path  # --out wins
    assert harness.committed_libraries(tmp_path / "none.json") == set()
    (tmp_path / "bad.json").write_text("not json")
    assert harness.committed_libraries(tmp_path / "bad.json") == set()
    (tmp_path / "old.json").write_text(json.dumps({"seconds_per_epoch": {"ours": 1.0, "sklearn": None},
                                                   "conv": {"seconds_per_epoch": {"ours": 3.0, "pytorch": 2.0}}}))
    assert harness.committed_libraries(tmp_path / "old.json") == {"ours"}
    assert harness.committed_libraries(tmp_path / "old.json", "conv") == {"ours", "pytorch"}


def test_a_run_without_a_committed_library_writes_to_quick(monkeypatch, capsys):
    committed = harness.committed_libraries(RESULTS_DIR / harness.JSON_NAME)
    if "pytorch" not in committed:
        pytest.skip("the committed results/benchmark.json has no PyTorch figures")
    monkeypatch.setattr(bench, "installed", lambda module: module is None)  # as if nothing were installed
    assert bench.results_folder(bench.parse_args([]), bench.not_run(bench.parse_args([]))) == harness.QUICK_DIR
    assert conv_speed.prepare_output(conv_speed.parse_args([]), {"pytorch": "not installed"}) == harness.QUICK_DIR
    out = capsys.readouterr().out
    assert out.count("results go to results/local/benchmarks/ (pytorch") == 2 and "not installed here" in out


def repository_copy(destination: Path) -> Path:
    """The repository's files as they are now (tracked and new ones, not the git-ignored data and
    scratch results), copied to ``destination``."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO, capture_output=True, check=True, timeout=60).stdout.decode()
    except (OSError, subprocess.SubprocessError):  # no git: everything but the ignored folders
        ignored = shutil.ignore_patterns(".git", "data", "quick", "local", "__pycache__", "*.egg-info", ".pytest_cache")
        shutil.copytree(REPO, destination, ignore=ignored)
        return destination
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    return destination


COMMITTED = ("benchmark.md", "benchmark.json", "benchmark_scaling.png", "epoch_profile.md")


def checksums(results: Path) -> dict[str, str]:
    return {name: hashlib.sha256((results / name).read_bytes()).hexdigest() for name in COMMITTED
            if (results / name).is_file()}


@pytest.mark.slow
def test_quick_runs_never_touch_the_committed_results(tmp_path):
    """--quick runs of every script that writes results, started in a copy of the repository (whose
    ``common`` they import), write to its results/local/benchmarks/ and leave its committed files byte for byte."""
    data = REPO / "data" / "mnist"
    if not data.is_dir() or len(list(data.glob("*-ubyte*"))) < 4:
        pytest.skip(f"no MNIST in {data} (python -m common.data fetch)")
    copy = repository_copy(tmp_path / "repo")
    before, original = checksums(copy / "results"), checksums(RESULTS_DIR)
    assert set(before) == set(COMMITTED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")]))}
    for script, extra in (("compare_libraries.py", []), ("conv_speed.py", ["--train-size", "256"]),
                          ("profile_epoch.py", [])):
        command = [sys.executable, str(copy / "benchmarks" / script), "--quick", "--threads", "1",
                   "--data-dir", str(data), *extra]
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"{script}: {done.stderr[-2000:]}"
        assert "results/local/benchmarks/" in done.stdout and "a --quick run" in done.stdout, script
    assert checksums(copy / "results") == before
    assert checksums(RESULTS_DIR) == original
    written = copy / "results" / "local" / "benchmarks"
    assert json.loads((written / "benchmark.json").read_text())["settings"]["quick"]
    assert json.loads((written / "benchmark.json").read_text())["conv"]["settings"]["quick"]
    assert (written / "benchmark_scaling.png").is_file() and (written / "epoch_profile.md").is_file()
    assert "Smoke run" in (written / "benchmark.md").read_text()


def test_readme_under_load_summary_matches_the_committed_benchmark():
    """The README's busy-machine paragraph quotes results/benchmark.json's under-load figures, to the digit shown."""
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    readme = " ".join((repo / "README.md").read_text(encoding="utf-8").split())
    paragraph = readme.split("**On a busy machine.**", 1)[1].split("`python benchmarks/core_speed.py`", 1)[0]
    bench = json.loads((repo / "results" / "benchmark.json").read_text(encoding="utf-8"))
    fixed, torch = bench["under_load_ratio_vs_best_fixed"], bench["under_load_ratio_vs_pytorch"]
    for quoted in (f"within **{fixed['mlp']:.2f}x** of the best fixed count for the perceptron",
                   f"**{fixed['conv']:.2f}x** for stage 06's network",
                   f"the perceptron's epoch takes **{torch['mlp']:.2f}x** PyTorch's",
                   f"stays at **{torch['conv']:.2f}x** PyTorch's"):
        assert quoted in paragraph, quoted
    table = bench["under_load"]["by_network"]
    both_cores = [max(table[net][load]["seconds_per_epoch"]["ours:2"] / table[net][load]["seconds_per_epoch"]["ours:1"]
                      for load in ("1", "2")) for net in ("mlp", "conv")]
    assert f"up to {both_cores[0]:.1f}x and {both_cores[1]:.1f}x as long as one" in paragraph
    idle = table["conv"]["0"]["seconds_per_epoch"]
    for count in ("1", "2"):  # "on one core, as on two, PyTorch's convolutions are about twice as fast as ours"
        assert 1.6 < idle[f"ours:{count}"] / idle[f"pytorch:{count}"] < 2.5
    assert bench["under_load"]["settings"]["loads"] == [0, 1, 2] and not bench["under_load"]["settings"]["quick"]
