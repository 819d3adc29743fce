"""Tests for benchmarks/conv_speed.py (stage 06's conv network, and stage 07's with --stage 07, ours
vs PyTorch CPU) and the conv parts of profile_epoch.py and compare_libraries.py: the section
merging, the figures derived from the rounds, the PyTorch twin's shapes (that it computes what ours
does: tests/test_torch_twin.py), and short smoke runs of the script itself (tiny budgets:
the timings are measured by running the script, not here). PyTorch is optional: only the tests
that need it are skipped without it, and the ours-only path is run with PyTorch hidden."""
from __future__ import annotations

import dataclasses
import json
import types

import numpy as np
import pytest
from mnist_available import needs_mnist

from common import environment, torch_twin

import compare_libraries
import conv_speed
import harness
import profile_epoch

START, END = harness.markers("conv")
OTHER = "# Library benchmark\n\nThe perceptron table, written by compare_libraries.py.\n"


def fake_conv(with_pytorch: bool = True) -> dict:
    """A ``conv`` record as conv_speed.py writes it, from made-up rounds (ours 3 s, PyTorch 2 s)."""
    rounds = [
        {"library": "ours", "round": 1, "epoch_seconds": [3.0, 3.2], "warmup_seconds": 4.0},
        {"library": "pytorch", "round": 1, "epoch_seconds": [2.0, 2.0], "warmup_seconds": 2.5},
        {"library": "ours", "round": 2, "epoch_seconds": [2.8, 3.0], "warmup_seconds": 4.0},
        {"library": "pytorch", "round": 2, "epoch_seconds": [1.5, 2.5], "warmup_seconds": 2.5},
    ]
    if not with_pytorch:
        rounds = [r for r in rounds if r["library"] == "ours"]
    summary = conv_speed.summarize(rounds, {} if with_pytorch else {"pytorch": "not installed"})
    settings = {"architecture": "conv5x5x32, pool", "layers": ["reshape 28x28x1", "conv 32 5x5 valid"],
                "num_parameters": 1234, "batch_size": 128, "lr": 0.001, "epochs": 2, "repeats": 2,
                "threads": 2, "train_images": 60000, "gflop_per_epoch": 1385.5, "quick": False,
                "torch_optimizer": "Adam(fused=True)" if with_pytorch else None}
    environment = {"date": "d", "commit": "c", "python": "3", "numpy": "2", "blas": "b", "torch": "2.13.0+cpu",
                   "scikit-learn": "1", "threads": 2, "thread_env": {}, "cpu_count": 2,
                   "command": "python benchmarks/conv_speed.py", "load_average_1min": [0.1, 0.2]}
    return {**summary, "settings": settings, "environment": environment, "rounds": rounds}


# --------------------------------------------------------------------------- sections and files

def test_replace_section_keeps_everything_else():
    section = f"{START}\nnew figures\n{END}"
    appended = harness.replace_section(OTHER, "conv", section)
    assert appended.startswith(OTHER) and appended.endswith(section + "\n")
    tail = "\n## Something after\n\nkept\n"
    replaced = harness.replace_section(OTHER + f"{START}\nold figures\n{END}" + tail, "conv", section)
    assert replaced == OTHER + section + tail
    assert harness.replace_section(replaced, "conv", section) == replaced  # idempotent
    assert harness.extract_section(replaced, "conv") == section
    assert harness.replace_section("", "conv", section) == section + "\n"


@pytest.mark.parametrize("broken", [f"{START}\nno end", f"no start\n{END}", f"{END}\n{START}",
                                    f"{START}\n{START}\n{END}"])
def test_broken_markers_are_one_line_errors(broken):
    from common.nn.errors import UserError

    with pytest.raises(UserError, match="markers"):
        harness.replace_section(broken, "conv", f"{START}\n{END}")


def test_summary_medians_ratio_and_targets():
    conv = fake_conv()
    assert conv["seconds_per_epoch"]["ours"] == pytest.approx(3.0)   # median of 3.0, 3.2, 2.8, 3.0
    assert conv["seconds_per_epoch"]["pytorch"] == pytest.approx(2.0)
    assert conv["seconds_per_epoch_range"]["pytorch"] == [1.5, 2.5]
    assert conv["ratio_vs_pytorch"] == pytest.approx(1.5)
    assert conv["ratio_per_round"] == pytest.approx([3.1 / 2.0, 2.9 / 2.0])
    assert conv["targets"]["target"]["met"] is True and conv["targets"]["stretch"]["met"] is True
    section = conv_speed.render_section(conv)
    assert section.startswith(START) and section.endswith(END)
    for text in ("| 3.00", "1.50-2.50", "<= 2.0", "<= 1.5", "Adam(fused=True)", "python benchmarks/conv_speed.py",
                 "2 thread(s)", "1.55, 1.45"):
        assert text in section


def test_pytorch_counts_its_faster_memory_format():
    """PyTorch at its best: the format with the lower median is its time, the ratio and the
    per-round ratios come from that format's rounds, and the page shows both with the counted one marked."""
    rounds = [
        {"library": "ours", "round": 1, "epoch_seconds": [3.0, 3.0]},
        {"library": "pytorch", "round": 1, "epoch_seconds": [2.0, 2.2], "torch_memory_format": "contiguous"},
        {"library": "pytorch", "round": 1, "epoch_seconds": [1.5, 1.5], "torch_memory_format": "channels_last"},
        {"library": "ours", "round": 2, "epoch_seconds": [3.3, 3.3]},
        {"library": "pytorch", "round": 2, "epoch_seconds": [2.4, 2.0], "torch_memory_format": "contiguous"},
        {"library": "pytorch", "round": 2, "epoch_seconds": [1.5, 1.4], "torch_memory_format": "channels_last"},
    ]
    summary = conv_speed.summarize(rounds, {})
    assert summary["pytorch_memory_format"] == "channels_last"
    assert list(summary["pytorch_memory_formats"]) == ["channels_last", "contiguous"]  # fastest first
    assert summary["pytorch_memory_formats"]["contiguous"] == {"median": 2.1, "range": [2.0, 2.4]}
    assert summary["seconds_per_epoch"]["pytorch"] == 1.5 and summary["seconds_per_epoch_range"]["pytorch"] == [1.4, 1.5]
    assert summary["ratio_vs_pytorch"] == pytest.approx(3.15 / 1.5)
    assert summary["ratio_per_round"] == pytest.approx([3.0 / 1.5, 3.3 / 1.45])
    record = {**fake_conv(), **summary, "rounds": rounds}
    table = conv_speed.library_table(record)
    assert "| PyTorch CPU (the faster: counted) | NCHW (native), oneDNN / ATen, channels-last memory" in table
    assert "contiguous NCHW memory" in table and table.count("PyTorch CPU") == 2
    assert "the faster here, channels-last memory, is PyTorch's time" in conv_speed.render_section(record)


def test_a_pytorch_worker_trains_in_one_memory_format(capsys):
    with pytest.raises(SystemExit):
        conv_speed.main(["--torch-memory-format", "both"])
    assert "invalid choice" in capsys.readouterr().err
    args = conv_speed.parse_args(["--worker", "pytorch", "--worker-result", "r.json", "--torch-memory-format", "best"])
    with pytest.raises(conv_speed.UserError, match="one memory format"):
        conv_speed.worker(args)


def test_the_cpu_is_described_with_its_vector_instructions():
    intel = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum\ncpu family\t: 6\nmodel\t\t: 85\nflags\t\t: fma avx2 avx512f\n"
    assert environment.cpu_description(intel) == "Intel(R) Xeon(R) Platinum (family 6, model 85), AVX-512"
    amd = "model name\t: AMD EPYC\ncpu family\t: 23\nmodel\t\t: 49\nflags\t\t: avx avx2\nmodel name\t: other\n"
    assert environment.cpu_description(amd) == "AMD EPYC (family 23, model 49), AVX2"
    assert environment.cpu_description("flags\t: sse2\n").endswith(", no AVX")
    lines = harness.environment_lines({**fake_conv()["environment"], "cpu": "AMD EPYC (family 23, model 49), AVX2"})
    assert any(line.endswith("CPUs: 2 (AMD EPYC (family 23, model 49), AVX2)") for line in lines)
    assert any(line.endswith("CPUs: 2") for line in harness.environment_lines(fake_conv()["environment"]))


def test_missing_pytorch_is_a_skipped_row_not_a_figure():
    conv = fake_conv(with_pytorch=False)
    assert conv["seconds_per_epoch"]["pytorch"] is None and conv["ratio_vs_pytorch"] is None
    assert conv["targets"]["target"]["met"] is None
    section = conv_speed.render_section(conv)
    assert "skipped (not installed)" in section and "not measured (PyTorch skipped)" in section


def test_write_results_merges_into_both_files(tmp_path):
    (tmp_path / "benchmark.json").write_text(json.dumps({"ratio_vs_pytorch": 0.52, "runs": {}}))
    (tmp_path / "benchmark.md").write_text(OTHER)
    conv_speed.write_results(tmp_path, fake_conv())
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert record["ratio_vs_pytorch"] == 0.52 and record["runs"] == {}
    assert record["conv_ratio_vs_pytorch"] == pytest.approx(1.5)
    assert record["conv"]["settings"]["batch_size"] == 128
    markdown = (tmp_path / "benchmark.md").read_text()
    assert markdown.startswith(OTHER) and markdown.count(START) == 1


def test_a_result_file_that_is_not_json_is_not_overwritten(tmp_path):
    from common.nn.errors import UserError

    (tmp_path / "benchmark.json").write_text("not json")
    with pytest.raises(UserError, match="not valid JSON"):
        conv_speed.write_results(tmp_path, fake_conv())
    assert (tmp_path / "benchmark.json").read_text() == "not json"


def test_compare_libraries_carries_the_conv_section_over(tmp_path, capsys):
    conv_speed.write_results(tmp_path, fake_conv())
    new_markdown = "# Library benchmark\n\nregenerated perceptron table\n"
    written = compare_libraries.write_results(tmp_path, {"ratio_vs_pytorch": 0.6}, new_markdown)
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert record["ratio_vs_pytorch"] == 0.6
    assert record["conv"]["ratio_vs_pytorch"] == pytest.approx(1.5)
    assert record["conv_ratio_vs_pytorch"] == pytest.approx(1.5)
    markdown = (tmp_path / "benchmark.md").read_text()
    assert markdown == written and markdown.startswith(new_markdown)
    assert "The perceptron table" not in markdown  # the old perceptron part is replaced ...
    assert harness.extract_section(markdown, "conv") == conv_speed.render_section(fake_conv())  # ... not conv's

    # no conv record in the JSON (or an unreadable one): the old section is kept verbatim
    (tmp_path / "benchmark.json").write_text("not json")
    compare_libraries.write_results(tmp_path, {"ratio_vs_pytorch": 0.7}, new_markdown)
    assert "not carried over" in capsys.readouterr().err
    assert harness.extract_section((tmp_path / "benchmark.md").read_text(), "conv") is not None
    assert json.loads((tmp_path / "benchmark.json").read_text()) == {"ratio_vs_pytorch": 0.7}

    # nothing to carry over: the files are what compare_libraries made
    empty = tmp_path / "fresh"
    empty.mkdir()
    compare_libraries.write_results(empty, {"ratio_vs_pytorch": 0.7}, new_markdown)
    assert (empty / "benchmark.md").read_text() == new_markdown


def test_profile_compose_keeps_the_other_section():
    mlp_old, mlp_new = "# Where a batch-128 Adam epoch goes\n\nold\n", "# Where a batch-128 Adam epoch goes\n\nnew\n"
    conv_old, conv_new = f"{START}\nold conv\n{END}", f"{START}\nnew conv\n{END}"
    existing = profile_epoch.compose("", mlp_old, conv_old)
    assert existing == mlp_old + "\n" + conv_old + "\n"
    assert profile_epoch.compose(existing, mlp_new, None) == mlp_new + "\n" + conv_old + "\n"
    assert profile_epoch.compose(existing, None, conv_new) == mlp_old + "\n" + conv_new + "\n"
    assert profile_epoch.compose(mlp_old, None, conv_new) == mlp_old + "\n" + conv_new + "\n"  # file before conv
    assert profile_epoch.compose(existing, mlp_new, conv_new) == mlp_new + "\n" + conv_new + "\n"


# --------------------------------------------------------------------------- the network

def test_gflop_counts_the_matrix_products():
    spec = types.SimpleNamespace(sizes=(784, 10), layers=("reshape 28x28x1", "conv 2 3x3 valid", "relu",
                                                          "maxpool", "flatten", "dense 10"))
    conv, dense = 26 * 26 * 2 * 9 * 1, 13 * 13 * 2 * 10
    # forward + weight gradients of both, input gradient of the dense layer only (not the first layer's)
    assert conv_speed.conv_gflop(spec, 1000) == pytest.approx(1000 * 2 * (2 * (conv + dense) + dense) / 1e9)


def _specs():
    spec = conv_speed.load_conv_spec()
    specs = [spec]
    if spec.quick.get("layers"):
        specs.append(dataclasses.replace(spec, layers=tuple(spec.quick["layers"])))
    return specs


@pytest.mark.parametrize("spec", _specs(), ids=lambda spec: f"{len(spec.layers)} layers")
def test_pytorch_twin_has_our_shapes_and_parameter_count(spec):
    torch = pytest.importorskip("torch")
    from common.nn.network import Network

    model, input_shape = torch_twin.torch_model(spec)
    ours = Network.from_architecture(spec.architecture(), np.random.default_rng(0), spec.init)
    count = sum(p.numel() for p in model.parameters())
    assert count == spec.architecture().num_parameters == ours.num_parameters
    # layer by layer: Conv2d (F, C, k, k) <-> ours (k, k, C, F); Linear (out, in) <-> ours (in, out)
    theirs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    mine = list(ours.weighted_layers())
    assert len(theirs) == len(mine)
    for module, layer in zip(theirs, mine):
        w = layer.params["W"].shape
        expected = (w[3], w[2], w[0], w[1]) if len(w) == 4 else (w[1], w[0])
        assert tuple(module.weight.shape) == expected and tuple(module.bias.shape) == layer.params["b"].shape
    x = np.random.default_rng(1).random((3, 784), dtype=np.float32)
    with torch.no_grad():
        out = model(torch.from_numpy(x).reshape(3, *input_shape))
    assert tuple(out.shape) == ours.forward(x).shape == (3, 10)
    assert out.dtype == torch.float32


def test_pytorch_optimizer_is_fused_when_available():
    torch = pytest.importorskip("torch")
    spec = conv_speed.load_conv_spec()
    model, _ = torch_twin.torch_model(spec)
    optimizer, described = torch_twin.torch_optimizer(model, spec)
    assert described in ("Adam(fused=True)", "Adam(foreach=True)")
    assert isinstance(optimizer, torch.optim.Adam)


def test_profiled_conv_step_is_the_training_step():
    """The conv profile clocks exactly train()'s step: same seed, same parameters afterwards."""
    from common.nn.network import Network
    from common.nn.optimizers import Adam
    from common.nn.train import train

    spec = _specs()[-1]
    rng = np.random.default_rng(0)
    x = rng.random((300, 784), dtype=np.float32)
    y = rng.integers(0, 10, 300)
    reference = Network.from_architecture(spec.architecture(), np.random.default_rng(1), spec.init)
    train(reference, Adam(1e-3), x, y, epochs=1, rng=np.random.default_rng(2), batch_size=128, progress=False)
    profiled = Network.from_architecture(spec.architecture(), np.random.default_rng(1), spec.init)
    profile_epoch.timed_epoch(profiled, Adam(1e-3), profiled.parameter_groups(decay_weights=False), x, y,
                              np.random.default_rng(2), batch_size=128)
    np.testing.assert_array_equal(profiled.flat_params, reference.flat_params)

    result = profile_epoch.profile_conv(x, y, spec, steps=2, blocks=1, warmup=0)
    parts = result["parts"]
    assert {"gather", "loss", "optimizer", "forward 0 Reshape", "forward 1 Conv2D", "backward 1 Conv2D",
            "forward 2 MaxPool2D", "backward 2 MaxPool2D", "forward 3 ReLU"} <= set(parts)
    assert "backward 0 Reshape" not in parts and result["never_run"] == ["backward 0 Reshape"]
    assert all(seconds > 0 for seconds in parts.values())
    section = profile_epoch.render_conv(result, spec, peak=100.0, threads=1, num_examples=60000)
    assert section.startswith(START) and section.endswith(END) and "x 469" in section


# --------------------------------------------------------------------------- the script, tiny budgets

def _seed_results(folder):
    (folder / "benchmark.json").write_text(json.dumps({"ratio_vs_pytorch": 0.52}))
    (folder / "benchmark.md").write_text(OTHER)


# One thread in the smoke runs: the budget is --quick's; on a shared 2-core machine two threads can
# make a step 10-30x slower (benchmarks/README.md), which would only make these tests slow.
SMOKE = ["--quick", "--threads", "1"]


@needs_mnist
def test_quick_run_without_pytorch(tmp_path, monkeypatch, capsys):
    """The ours-only path: PyTorch reported as skipped, and the worker runs with torch unimportable."""
    hidden = tmp_path / "hide_torch" / "torch"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('torch is hidden in this test')\n")
    monkeypatch.setenv("PYTHONPATH", str(hidden.parent))
    monkeypatch.setattr(conv_speed, "torch_installed", lambda: False)
    out = tmp_path / "out"
    out.mkdir()
    _seed_results(out)
    assert conv_speed.main([*SMOKE, "--out", str(out)]) == 0
    assert "pytorch: skipped (not installed" in capsys.readouterr().out
    record = json.loads((out / "benchmark.json").read_text())
    assert record["ratio_vs_pytorch"] == 0.52 and record["conv_ratio_vs_pytorch"] is None
    conv = record["conv"]
    assert {"seconds_per_epoch", "seconds_per_epoch_range", "ratio_vs_pytorch", "ratio_per_round", "targets",
            "skipped", "settings", "environment", "rounds"} <= set(conv)
    assert conv["skipped"] == {"pytorch": "not installed"}
    assert [r["library"] for r in conv["rounds"]] == ["ours"]
    assert conv["settings"]["quick"] and conv["settings"]["train_images"] == conv_speed.QUICK_TRAIN_SIZE
    assert conv["seconds_per_epoch"]["ours"] > 0 and len(conv["rounds"][0]["epoch_seconds"]) == 1
    assert conv["rounds"][0]["threads"] == 1 and conv["environment"]["thread_env"]["OPENBLAS_NUM_THREADS"] == "1"
    assert conv["environment"]["command"] == "python benchmarks/conv_speed.py " + " ".join([*SMOKE, "--out", str(out)])
    markdown = (out / "benchmark.md").read_text()
    assert markdown.startswith(OTHER) and "skipped (not installed)" in markdown and "Smoke run" in markdown


@needs_mnist
def test_quick_run_with_pytorch(tmp_path):
    pytest.importorskip("torch")
    _seed_results(tmp_path)
    assert conv_speed.main([*SMOKE, "--train-size", "512", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "benchmark.json").read_text())
    conv = record["conv"]
    # each in its own process; PyTorch in both memory formats, the faster counted
    assert [(r["library"], r.get("torch_memory_format")) for r in conv["rounds"]] == \
        [("ours", None), ("pytorch", "contiguous"), ("pytorch", "channels_last")]
    formats = conv["pytorch_memory_formats"]
    assert conv["pytorch_memory_format"] == min(formats, key=lambda fmt: formats[fmt]["median"])
    assert conv["settings"]["torch_memory_format"] == conv["pytorch_memory_format"]
    assert conv["seconds_per_epoch"]["pytorch"] == formats[conv["pytorch_memory_format"]]["median"]
    assert conv["seconds_per_epoch"]["pytorch"] > 0
    assert record["conv_ratio_vs_pytorch"] == pytest.approx(conv["seconds_per_epoch"]["ours"]
                                                            / conv["seconds_per_epoch"]["pytorch"])
    assert all(r["num_parameters"] == conv["settings"]["num_parameters"] for r in conv["rounds"])
    assert conv["settings"]["torch_optimizer"] in ("Adam(fused=True)", "Adam(foreach=True)")
    markdown = (tmp_path / "benchmark.md").read_text()
    assert markdown.startswith(OTHER) and markdown.count(START) == 1 and "| PyTorch CPU" in markdown


def test_the_committed_conv_record_is_still_carried_over():
    """results/benchmark.json as the old code wrote it: compare_libraries.py still carries its conv
    record over, and renders exactly the committed section from it."""
    from common.paths import RESULTS_DIR

    committed = json.loads((RESULTS_DIR / "benchmark.json").read_text(encoding="utf-8"))
    if "conv" not in committed:
        pytest.skip("no conv record in the committed results/benchmark.json")
    record, markdown = harness.carry_over_conv(RESULTS_DIR, {"ratio_vs_pytorch": 0.6}, "# new\n",
                                               conv_speed.render_section)
    assert record["conv"] == committed["conv"] and record["ratio_vs_pytorch"] == 0.6
    assert record["conv_ratio_vs_pytorch"] == committed["conv_ratio_vs_pytorch"]
    section = harness.extract_section((RESULTS_DIR / "benchmark.md").read_text(encoding="utf-8"), "conv")
    assert markdown.startswith("# new\n") and harness.extract_section(markdown, "conv") == section


# --------------------------------------------------------------------------- stage 07: batch normalization (--stage 07)

BN_START, BN_END = harness.markers("bn_conv")


def fake_bn_conv() -> dict:
    """A ``bn_conv`` record as ``conv_speed.py --stage 07`` writes it (ours 3 s, PyTorch 2 s, like fake_conv)."""
    conv = fake_conv()
    layers = ["reshape 28x28x1", "conv 32 5x5 valid", "maxpool", "batchnorm", "relu"]
    return {**conv, "settings": {**conv["settings"], "stage": "07", "layers": layers, "lr": 0.003}}


def test_stage_07_has_its_own_section_and_keys():
    bn = fake_bn_conv()
    section = conv_speed.render_section(bn)
    assert section.startswith(BN_START) and section.endswith(BN_END) and START not in section
    for text in ("## Convolutional network with batch normalization (stage 07)", "stage 07's `SPEC.layers`",
                 "batchnorm", "BatchNorm2d", "BatchNorm1d", "common/nn/batchnorm.py",
                 "no augmentation in either library's timed epochs", "`bn_conv.rounds`", "<= 2.0", "| 3.00"):
        assert text in section, text
    keys = conv_speed.top_keys(bn)
    assert tuple(keys) == harness.CONV_TOP_KEYS["bn_conv"]
    assert keys["bn_conv_ratio_vs_pytorch"] == pytest.approx(1.5)
    assert keys["bn_conv_seconds_per_epoch"] == {"ours": pytest.approx(3.0), "pytorch": pytest.approx(2.0)}
    assert tuple(conv_speed.top_keys(fake_conv())) == harness.CONV_TOP_KEYS["conv"]
    # a record written before --stage existed is stage 06's
    old = fake_conv()
    assert "stage" not in old["settings"] and conv_speed.render_section(old).startswith(START)


def test_the_two_stages_merge_side_by_side(tmp_path):
    _seed_results(tmp_path)
    conv_speed.write_results(tmp_path, fake_conv())
    stage_06_md = harness.extract_section((tmp_path / "benchmark.md").read_text(), "conv")
    conv_speed.write_results(tmp_path, fake_bn_conv())
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert record["ratio_vs_pytorch"] == 0.52 and record["conv"]["settings"].get("stage") is None
    assert record["conv_ratio_vs_pytorch"] == pytest.approx(1.5)
    assert record["bn_conv"]["settings"]["stage"] == "07" and record["bn_conv_ratio_vs_pytorch"] == pytest.approx(1.5)
    markdown = (tmp_path / "benchmark.md").read_text()
    assert markdown.startswith(OTHER) and harness.extract_section(markdown, "conv") == stage_06_md
    assert harness.extract_section(markdown, "bn_conv") == conv_speed.render_section(fake_bn_conv())
    conv_speed.write_results(tmp_path, fake_conv())  # a stage-06 run again leaves stage 07's as it is
    assert harness.extract_section((tmp_path / "benchmark.md").read_text(), "bn_conv") is not None
    assert json.loads((tmp_path / "benchmark.json").read_text())["bn_conv"] == record["bn_conv"]


def test_compare_libraries_carries_the_stage_07_section_over(tmp_path):
    conv_speed.write_results(tmp_path, fake_conv())
    conv_speed.write_results(tmp_path, fake_bn_conv())
    compare_libraries.write_results(tmp_path, {"ratio_vs_pytorch": 0.6}, "# Library benchmark\n\nnew\n")
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert record["ratio_vs_pytorch"] == 0.6 and record["bn_conv"] == json.loads(json.dumps(fake_bn_conv()))
    assert record["bn_conv_ratio_vs_pytorch"] == pytest.approx(1.5) and record["conv_ratio_vs_pytorch"] == pytest.approx(1.5)
    assert record["bn_conv_seconds_per_epoch"]["pytorch"] == pytest.approx(2.0)
    markdown = (tmp_path / "benchmark.md").read_text()
    assert harness.extract_section(markdown, "bn_conv") == conv_speed.render_section(fake_bn_conv())
    assert harness.extract_section(markdown, "conv") == conv_speed.render_section(fake_conv())


def test_stage_option():
    assert conv_speed.parse_args([]).stage == "06"  # the existing commands keep their meaning
    assert conv_speed.parse_args(["--stage", "07"]).stage == "07"
    assert "batchnorm" in conv_speed.load_conv_spec("07").layers
    assert "batchnorm" not in conv_speed.load_conv_spec().layers


@needs_mnist
def test_quick_run_of_stage_07_keeps_stage_06(tmp_path):
    pytest.importorskip("torch")
    _seed_results(tmp_path)
    conv_speed.write_results(tmp_path, fake_conv())
    before_md = harness.extract_section((tmp_path / "benchmark.md").read_text(), "conv")
    before = json.loads((tmp_path / "benchmark.json").read_text())
    assert conv_speed.main([*SMOKE, "--stage", "07", "--train-size", "512", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "benchmark.json").read_text())
    bn = record["bn_conv"]
    assert [r["library"] for r in bn["rounds"]] == ["ours", "pytorch", "pytorch"]  # each in its own process; PyTorch in both formats
    assert bn["settings"]["stage"] == "07" and "batchnorm" in bn["settings"]["layers"]
    assert bn["settings"]["num_parameters"] == conv_speed.load_conv_spec("07").architecture().num_parameters
    assert all(r["num_parameters"] == bn["settings"]["num_parameters"] for r in bn["rounds"])
    assert record["bn_conv_ratio_vs_pytorch"] == pytest.approx(bn["seconds_per_epoch"]["ours"]
                                                               / bn["seconds_per_epoch"]["pytorch"])
    assert record["bn_conv_seconds_per_epoch"] == bn["seconds_per_epoch"]
    assert {key: record[key] for key in before} == before  # stage 06's record and keys untouched
    markdown = (tmp_path / "benchmark.md").read_text()
    assert markdown.startswith(OTHER) and harness.extract_section(markdown, "conv") == before_md
    section = harness.extract_section(markdown, "bn_conv")
    assert "Smoke run" in section and "| PyTorch CPU" in section and "--stage 07" in section


def test_profiled_stage_07_step_has_batchnorm_rows():
    spec = conv_speed.load_conv_spec("07")
    spec = dataclasses.replace(spec, layers=tuple(spec.quick["layers"]))  # small: the rows, not the timings
    rng = np.random.default_rng(0)
    x = rng.random((300, 784), dtype=np.float32)
    y = rng.integers(0, 10, 300)
    result = profile_epoch.profile_conv(x, y, spec, steps=2, blocks=1, warmup=0)
    assert {"forward 3 BatchNorm", "backward 3 BatchNorm"} <= set(result["parts"])
    section = profile_epoch.render_conv(result, spec, peak=100.0, threads=1, num_examples=60000)
    assert section.startswith(BN_START) and section.endswith(BN_END)
    assert "| forward 3 BatchNorm" in section and "| backward 3 BatchNorm" in section
    assert "- BatchNorm layers (" in section and "affine distortions" in section
    # the file: perceptron part, stage 06's section and stage 07's, each kept when another is measured
    mlp, conv = "# Where a batch-128 Adam epoch goes\n\nmlp\n", f"{START}\nconv\n{END}"
    existing = profile_epoch.compose("", mlp, conv)
    both = profile_epoch.compose(existing, None, None, section)
    assert both == mlp + "\n" + conv + "\n\n" + section + "\n"
    assert profile_epoch.compose(both, "# new mlp\n", None) == "# new mlp\n\n" + conv + "\n\n" + section + "\n"
    new_conv = f"{START}\nnew conv\n{END}"
    assert profile_epoch.compose(both, None, new_conv) == mlp + "\n" + new_conv + "\n\n" + section + "\n"


@needs_mnist
def test_profile_only_bn_writes_the_batchnorm_section(tmp_path, monkeypatch, capsys):
    """``profile_epoch.py --quick --only bn``: the stage-07 section with its BatchNorm rows is added to
    the file, the perceptron part and stage 06's section kept byte for byte."""
    from common import threads
    from common.nn import parallel

    monkeypatch.setattr(profile_epoch, "matmul_peak", lambda repeats: {"gflops": 100.0})  # seconds saved
    out = tmp_path / "epoch_profile.md"
    existing = profile_epoch.compose("", "# Where a batch-128 Adam epoch goes\n\nold\n", f"{START}\nold conv\n{END}")
    out.write_text(existing)
    blas_start, parallel_start = threads.blas_threads(), parallel.THREADS
    threads.set_threads(1)  # as SMOKE's --threads 1, in this process (--threads would re-execute it)
    try:
        assert profile_epoch.main(["--quick", "--only", "bn", "--out", str(out)]) == 0
    finally:
        threads.set_threads(blas_start or parallel_start)
        parallel.THREADS = parallel_start
    report = out.read_text()
    assert report.startswith(existing)
    section = harness.extract_section(report, "bn_conv")
    assert "stage-07" in section and "| forward 3 BatchNorm" in section and "| backward 11 BatchNorm" in section
    assert "- BatchNorm layers (" in section


def test_the_committed_records_say_what_the_docstring_says_of_the_memory_formats():
    """conv_speed.py's docstring: the two formats 'within a few per cent of each other here, a different one
    faster for each network'."""
    from common.paths import RESULTS_DIR

    committed = json.loads((RESULTS_DIR / "benchmark.json").read_text(encoding="utf-8"))
    winners = set()
    for key in ("conv", "bn_conv"):
        formats = committed[key]["pytorch_memory_formats"]
        fastest, slowest = (measured["median"] for measured in formats.values())
        assert len(formats) == 2 and slowest / fastest < 1.05
        winners.add(committed[key]["pytorch_memory_format"])
    assert winners == {"contiguous", "channels_last"}
    assert "within a few per cent of each other" in " ".join(conv_speed.__doc__.split())
