"""Tests for common/robustness.py and experiments/robustness.py: each transform on known pixels, FGSM
raises a trained model's loss without moving any pixel by more than epsilon, saliency of a linear
model and of a convolutional one, the same transformed images for every stage, the readings, a
``--quick`` run that writes every output, and bad options.

The end-to-end run measures a tiny model trained here (not a committed stage model) on 200 real
MNIST test images; it is skipped if MNIST is not in the default data folder.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from mnist_available import needs_mnist
from PIL import Image

from common import robustness
from common.nn.architecture import Architecture
from common.nn.loss import softmax_cross_entropy
from common.nn.network import Network
from common.nn.optimizers import make_optimizer
from common.nn.train import train
from common.serialize import save_network
from common.stages import load_specs
from experiments import robustness as experiment

REPO = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIDE = 28
OUTPUTS = ["robustness.md", "robustness.csv", "robustness.png", "robustness_examples.png", "robustness_saliency.png"]
COLUMNS = ["clean", "shift_2px", "shift_4px", "rotate_15deg", "rotate_30deg", "scale_0.8", "scale_1.2",
           "noise_0.2", "noise_0.4", "occlusion_8x8", "fgsm_0.05", "fgsm_0.1", "fgsm_0.2"]




def lit(row: int, col: int, count: int = 1) -> np.ndarray:
    """``count`` images ``(count, 784)``, each black but for the pixel ``(row, col)``."""
    images = np.zeros((count, SIDE, SIDE), dtype=np.float32)
    images[:, row, col] = 1.0
    return images.reshape(count, SIDE * SIDE)


def where_lit(images: np.ndarray) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in np.unravel_index(int(np.argmax(image)), (SIDE, SIDE))) for image in images]


# -- shifts ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dy, dx", [(2, 0), (-4, 0), (0, 3), (0, -1), (2, -2), (0, 0)])
def test_a_shift_moves_a_single_lit_pixel_by_exactly_the_shift(dy, dx):
    moved = robustness.shift_images(lit(10, 12), dy, dx).reshape(SIDE, SIDE)
    assert moved[10 + dy, 12 + dx] == 1.0 and moved.sum() == 1.0


def test_pixels_that_leave_are_lost_and_new_ones_are_zero():
    assert robustness.shift_images(lit(0, 5), -1, 0).sum() == 0  # off the top edge
    assert robustness.shift_images(np.ones((1, 784)), 0, SIDE + 3).sum() == 0  # moved further than the image
    moved = robustness.shift_images(np.ones((1, 784), dtype=np.float32), 4, -2).reshape(SIDE, SIDE)
    assert (moved[:4] == 0).all() and (moved[:, -2:] == 0).all() and moved.sum() == (SIDE - 4) * (SIDE - 2)


@pytest.mark.parametrize("distance", [2, 4])
def test_random_shifts_move_each_image_exactly_distance_pixels_in_one_of_four_directions(distance):
    moved = robustness.random_direction_shift(lit(14, 14, count=400), np.random.default_rng(0), distance)
    offsets = [(row - 14, col - 14) for row, col in where_lit(moved)]
    assert set(offsets) == {(-distance, 0), (distance, 0), (0, -distance), (0, distance)}
    again = robustness.random_direction_shift(lit(14, 14, count=400), np.random.default_rng(0), distance)
    assert np.array_equal(moved, again), "the same seed must give the same directions"


# -- rotation and scaling --------------------------------------------------------------------------

@pytest.mark.parametrize("degrees, quarter_turns", [(90, 1), (-90, -1), (180, 2), (270, 3)])
def test_a_quarter_turn_is_exact(degrees, quarter_turns):
    pattern = np.random.default_rng(1).random((3, 784)).astype(np.float32)
    turned = robustness.rotate(pattern, degrees).reshape(3, SIDE, SIDE)
    assert np.array_equal(turned, np.rot90(pattern.reshape(3, SIDE, SIDE), quarter_turns, axes=(1, 2)))


def test_positive_angles_turn_counter_clockwise_as_displayed():
    """A pixel in the top right corner goes to the top left after +90 degrees."""
    assert where_lit(robustness.rotate(lit(3, 20), 90)) == [(SIDE - 1 - 20, 3)]


def test_bilinear_rotation_agrees_with_pillow():
    """An independent implementation: Pillow's bilinear rotation about the centre, counter-clockwise."""
    image = np.random.default_rng(2).random((SIDE, SIDE)).astype(np.float32)
    pillow = np.asarray(Image.fromarray(image).rotate(15, resample=Image.Resampling.BILINEAR))
    ours = robustness.rotate(image.reshape(1, -1), 15).reshape(SIDE, SIDE)
    grid = np.arange(SIDE) - (SIDE - 1) / 2
    inside = np.hypot(grid[:, None], grid[None, :]) < 12  # whose source is well inside (the borders differ)
    assert np.abs(ours - pillow)[inside].max() < 1e-5


def test_random_rotation_turns_each_image_one_way_or_the_other():
    images = np.random.default_rng(3).random((200, 784)).astype(np.float32)
    turned = robustness.random_rotation(images, np.random.default_rng(0), 30)
    left, right = robustness.rotate(images, 30), robustness.rotate(images, -30)
    is_left = np.all(turned == left, axis=1)
    assert np.all(is_left | np.all(turned == right, axis=1)) and 0 < is_left.sum() < 200


def test_scale_by_one_and_rotation_by_zero_are_the_identity():
    images = np.random.default_rng(4).random((5, 784)).astype(np.float32)
    assert np.array_equal(robustness.scale(images, 1.0), images)
    assert np.array_equal(robustness.rotate(images, 0.0), images)


def test_scaling_grows_or_shrinks_the_ink_about_the_centre():
    grid = np.arange(SIDE) - (SIDE - 1) / 2
    blob = np.exp(-(grid[:, None] ** 2 + grid[None, :] ** 2) / (2 * 3.0 ** 2)).reshape(1, -1).astype(np.float32)
    for factor in (0.8, 1.2):
        scaled = robustness.scale(blob, factor)
        assert scaled.sum() / blob.sum() == pytest.approx(factor ** 2, rel=0.03)
        assert where_lit(scaled) == where_lit(blob), "the centre stays where it is"
    with pytest.raises(ValueError):
        robustness.scale(blob, 0.0)


# -- noise and occlusion ---------------------------------------------------------------------------

def test_noise_with_std_zero_is_the_identity_and_noise_stays_in_0_1():
    images = np.random.default_rng(5).random((20, 784)).astype(np.float32)
    assert np.array_equal(robustness.gaussian_noise(images, np.random.default_rng(0), 0.0), images)
    loud = robustness.gaussian_noise(images, np.random.default_rng(0), 5.0)
    assert loud.min() == 0.0 and loud.max() == 1.0 and loud.dtype == np.float32
    grey = robustness.gaussian_noise(np.full((50, 784), 0.5, np.float32), np.random.default_rng(0), 0.2)
    assert float(np.std(grey)) == pytest.approx(0.2, rel=0.05)  # hardly clipped at 0.5 +- 2.5 std


def test_the_occluding_patch_zeroes_exactly_64_pixels_in_an_8x8_square_inside_the_image():
    hidden = robustness.occlude(np.ones((500, 784), dtype=np.float32), np.random.default_rng(0), size=8)
    places = set()
    for image in hidden.reshape(-1, SIDE, SIDE):
        rows, cols = np.nonzero(image == 0)
        assert len(rows) == 64
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
        places.add((rows.min(), cols.min()))
    assert len(places) > 100, "the place is drawn per image"
    assert {0, SIDE - 8} <= {row for row, _ in places}, "the patch reaches both edges, never beyond"


# -- a trained toy model ---------------------------------------------------------------------------

def toy_data(count: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten classes of noisy random strokes: a prototype per class plus noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((10, 784)) > 0.8).astype(np.float32)
    labels = rng.integers(0, 10, size=count)
    images = np.clip(prototypes[labels] + 0.3 * rng.standard_normal((count, 784)), 0, 1).astype(np.float32)
    return images, labels


@pytest.fixture(scope="module")
def toy_model() -> tuple[Network, np.ndarray, np.ndarray]:
    images, labels = toy_data()
    network = Network.from_sizes([784, 32, 10], np.random.default_rng(0))
    train(network, make_optimizer("adam", 0.001), images, labels, epochs=3, rng=np.random.default_rng(1),
          batch_size=64, progress=False)
    assert robustness.accuracy_on(network, images, labels, "unit") > 0.9
    return network, images, labels


def mean_loss(network: Network, images: np.ndarray, labels: np.ndarray) -> float:
    return softmax_cross_entropy(network.forward(images), labels)[0]


def test_fgsm_raises_the_loss_and_moves_every_pixel_by_at_most_epsilon_within_0_1(toy_model):
    network, images, labels = toy_model
    direction = robustness.fgsm_direction(network, images, labels, "unit")
    assert set(np.unique(direction)) <= {-1.0, 0.0, 1.0}
    losses = [mean_loss(network, images, labels)]
    for epsilon in (0.05, 0.1, 0.2):
        attacked = robustness.fgsm(images, direction, epsilon)
        assert np.abs(attacked - images).max() <= epsilon + 1e-6
        assert attacked.min() >= 0.0 and attacked.max() <= 1.0
        losses.append(mean_loss(network, attacked, labels))
    assert losses == sorted(losses) and losses[1] > losses[0], losses
    assert robustness.accuracy_on(network, robustness.fgsm(images, direction, 0.2), labels, "unit") < 0.5


def test_fgsm_works_in_chunks(toy_model):
    network, images, labels = toy_model
    whole = robustness.fgsm_direction(network, images, labels, "unit")
    network.chunk_rows = 7
    try:
        assert np.array_equal(robustness.fgsm_direction(network, images, labels, "unit"), whole)
    finally:
        network.chunk_rows = 8192


def test_a_raw_model_is_attacked_in_its_own_pixel_scale(toy_model):
    """A model on 0..255 pixels whose first weights are the unit model's / 255 computes the same
    function of the [0, 1] image: it gets the same attack and the same accuracies."""
    network, images, labels = toy_model
    raw = Network.from_sizes([784, 32, 10], np.random.default_rng(9))
    raw.flat_params[...] = network.flat_params
    first = next(raw.weighted_layers())
    first.params["W"][...] = network.layers[0].params["W"] / np.float32(255)
    unit_direction = robustness.fgsm_direction(network, images, labels, "unit")
    raw_direction = robustness.fgsm_direction(raw, images, labels, "raw")
    assert np.mean(unit_direction == raw_direction) > 0.999
    attacked = robustness.fgsm(images, raw_direction, 0.1)
    assert attacked.max() <= 1.0, "epsilon is applied in [0, 1] units, not 0..255"
    assert robustness.accuracy_on(raw, attacked, labels, "raw") == pytest.approx(
        robustness.accuracy_on(network, attacked, labels, "unit"), abs=0.01)


def test_the_gradient_pass_gives_the_test_time_logits_even_with_dropout():
    network = Network.from_sizes([784, 32, 10], np.random.default_rng(0), input_dropout=0.2, hidden_dropout=0.5)
    images, _ = toy_data(50)
    assert np.array_equal(network.forward(images, keep_for_backward=True), network.forward(images))


# -- saliency --------------------------------------------------------------------------------------

def test_the_saliency_of_a_linear_model_is_its_weight_column():
    network = Network.from_sizes([784, 10], np.random.default_rng(0))
    images, _ = toy_data(40)
    gradient, predicted = robustness.saliency(network, images, "unit")
    weights = network.layers[0].params["W"]
    assert np.array_equal(predicted, network.predict(images))
    assert np.allclose(gradient, weights[:, predicted].T, rtol=1e-6, atol=0)
    raw_gradient, raw_predicted = robustness.saliency(network, images, "raw")
    assert np.allclose(raw_gradient, 255 * weights[:, raw_predicted].T, rtol=1e-6, atol=0), "per [0, 1] pixel unit"


def test_the_saliency_of_a_convolutional_network_matches_finite_differences():
    architecture = Architecture(sizes=(784, 10), dtype="float64",
                                layers=("reshape 28x28x1", "conv 3 5x5 valid", "relu", "maxpool", "flatten", "dense 10"))
    network = Network.from_architecture(architecture, np.random.default_rng(0))
    image = np.random.default_rng(1).random((1, 784))
    gradient, predicted = robustness.saliency(network, image, "unit")
    k, h = int(predicted[0]), 1e-6
    for pixel in np.random.default_rng(2).choice(784, size=12, replace=False):
        up, down = image.copy(), image.copy()
        up[0, pixel] += h
        down[0, pixel] -= h
        numeric = (network.forward(up)[0, k] - network.forward(down)[0, k]) / (2 * h)
        assert gradient[0, pixel] == pytest.approx(numeric, rel=1e-4, abs=1e-7)


# -- the experiment, in process --------------------------------------------------------------------

def toy_stage(network: Network, number: str, name: str, shift: int = 0, scale: str = "unit") -> experiment.Stage:
    spec = SimpleNamespace(name=name, shift=shift)
    return experiment.Stage(number, spec, network, scale, Path(f"/nowhere/{name}/model.npz"))


def test_every_stage_sees_the_same_transformed_images_and_the_seed_fixes_them(toy_model, capsys):
    """Two stages that are the same network must get identical accuracies in every column: they
    would not if each drew its own shifts, angles, noise or patches."""
    network, images, labels = toy_model
    stages = [toy_stage(network, "01", "a"), toy_stage(network, "02", "b")]
    table, examples = experiment.measure(stages, images, labels, 0, np.arange(6))
    assert set(table["01"]) == set(COLUMNS) and table["01"] == table["02"]
    again, _ = experiment.measure(stages, images, labels, 0, np.arange(6))
    other, _ = experiment.measure(stages, images, labels, 1, np.arange(6))
    assert again == table and other != table
    assert len(examples) == 1 + len(experiment.TRANSFORMS) and all(v.shape == (6, 784) for v in examples.values())


def fake_table(rows: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Fill every column not given with the row's clean accuracy."""
    return {number: {key: values.get(key, values["clean"]) for key in COLUMNS} for number, values in rows.items()}


def fake_stage(number: str, name: str, convolutional: bool = False, shift: int = 0) -> SimpleNamespace:
    return SimpleNamespace(number=number, spec=SimpleNamespace(name=name, shift=shift), convolutional=convolutional,
                           path=Path(f"/nowhere/{name}/model.npz"))


def test_the_readings_follow_the_numbers():
    stages = [fake_stage("01", "01_mlp"), fake_stage("05", "05_wide", shift=2), fake_stage("06", "06_conv", True, 2)]
    table = fake_table({
        "01": {"clean": 0.90, "shift_2px": 0.60, "shift_4px": 0.20, "noise_0.4": 0.70, "fgsm_0.1": 0.30},
        "05": {"clean": 0.99, "shift_2px": 0.97, "shift_4px": 0.90, "rotate_30deg": 0.50, "fgsm_0.1": 0.40},
        "06": {"clean": 0.995, "shift_2px": 0.99, "shift_4px": 0.97, "occlusion_8x8": 0.80, "fgsm_0.1": 0.60},
    })
    text = experiment.readings(stages, table, 10_000, 10_000, 0)
    shifts, worst, attack, rankings = text.split("\n")[:4]
    assert "06_conv holds up best" in shifts and "01_mlp holds up least" in shifts and "97.00 % at 4" in shifts
    assert "05_wide and 06_conv were trained on digits shifted" in shifts and "06_conv is convolutional" in shifts
    assert "shift 4 px hurts the perceptron stages most" in worst and "occlusion 8x8 hurts most" in worst
    assert "01_mlp from 90.00 % to 30.00 %" in attack and "06_conv resists it best" in attack
    assert "06_conv, the best on the digits as they are, is clearly overtaken under occlusion 8x8 (05_wide" in rankings
    assert "sqrt(p (1 - p) / 10,000)" in text and "0.50 points" in text


def test_the_readings_say_when_the_best_stage_is_overtaken():
    stages = [fake_stage("01", "a"), fake_stage("02", "b")]
    table = fake_table({"01": {"clean": 0.99, "noise_0.4": 0.30}, "02": {"clean": 0.95, "noise_0.4": 0.80}})
    text = experiment.readings(stages, table, 10_000, 10_000, 0)
    assert "a, the best on the digits as they are, is clearly overtaken under noise 0.4 (b 80.00 % against 30.00 %)" in text


def test_the_readings_do_not_rank_stages_within_sampling_error():
    stages = [fake_stage("01", "one"), fake_stage("02", "two")]
    table = fake_table({"01": {"clean": 0.95, "shift_4px": 0.80, "fgsm_0.1": 0.30},
                        "02": {"clean": 0.96, "shift_4px": 0.81, "fgsm_0.1": 0.31}})
    text = experiment.readings(stages, table, 500, 10_000, 0)
    assert "No stage holds up clearly better" in text and "none resists it clearly better" in text
    assert "stays the best, or within sampling error of the best, under every transform" in text
    single = experiment.readings(stages[:1], table, 500, 10_000, 0)
    assert "**Shifts.** one goes from 95.00 %" in single and "holds up" not in single and "15.00 points lost" in single


def test_the_clean_column_is_checked_against_each_stages_metrics_json(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.json").write_text('{"test_accuracy": 0.9}')
    stage = fake_stage("01", "a")
    stage.path = tmp_path / "a" / "model.npz"
    table = fake_table({"01": {"clean": 0.9}})
    assert "equals the test accuracy recorded" in experiment.read_clean([stage], table, 10_000, 10_000)
    assert experiment.read_clean([stage], table, 500, 10_000) == "", "a sample is not the whole test set"
    table["01"]["clean"] = 0.9001
    assert "differs from its metrics.json (90.00 %)" in experiment.read_clean([stage], table, 10_000, 10_000)


def test_a_missing_model_is_trained_by_its_stage_script_or_skipped(tmp_path: Path, capsys):
    """The stage's own script is run (here a stand-in that saves a tiny model where --out says)."""
    script = tmp_path / "04_fake.py"
    script.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        from common.nn.network import Network
        from common.serialize import save_network
        out = sys.argv[sys.argv.index("--out") + 1]
        network = Network.from_sizes([784, 10], np.random.default_rng(0))
        save_network(out + "/model.npz", network, {"stage": "04_fake", "pixel_scale": "unit", "args": sys.argv[1:]})
    """))
    spec = SimpleNamespace(name="04_fake")
    options = argparse.Namespace(models_dir=tmp_path / "models", out=tmp_path / "out", quick=True, no_train=True)
    assert experiment.find_model("04", spec, script, options) is None
    assert "no model at" in capsys.readouterr().out
    options.no_train = False
    path = experiment.find_model("04", spec, script, options)
    assert path == tmp_path / "out" / "04_fake" / "model.npz" and path.is_file()
    assert "training it: python" in capsys.readouterr().out
    assert experiment.find_model("04", spec, script, options) == path, "a quick model trained once is reused"
    options.quick = False
    options.data_dir = str(tmp_path / "my_mnist")
    path = experiment.find_model("04", spec, script, options)
    assert path == tmp_path / "models" / "04_fake" / "model.npz" and path.is_file()
    from common.serialize import load_network
    arguments = load_network(path)[1]["args"]  # the stand-in saved what it was given
    assert arguments[arguments.index("--data-dir") + 1] == options.data_dir, "--data-dir is passed on"


# -- the command line ------------------------------------------------------------------------------

def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "experiments/robustness.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """A tiny model saved as stage 04's, trained here on 1,000 real images, measured by ``--quick``."""
    from common.data import load_mnist
    from common.protocol import scale_pixels

    data = load_mnist()
    images, labels = scale_pixels(data.train_images[:1000]), data.train_labels[:1000]
    network = Network.from_sizes([784, 32, 10], np.random.default_rng(0))
    train(network, make_optimizer("adam", 0.003), images, labels, epochs=3, rng=np.random.default_rng(1),
          batch_size=64, progress=False)
    models, out = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("out")
    name = load_specs(["04"])["04"].name
    save_network(models / name / "model.npz", network, {"stage": name, "pixel_scale": "unit"})
    result = run("--quick", "--stages", "04", "--images", "200", "--models-dir", str(models), "--out", str(out),
                 "--no-train")
    return result, out


@needs_mnist
def test_a_quick_run_writes_every_output(quick_run):
    result, out = quick_run
    assert result.returncode == 0, result.stderr
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == PNG_SIGNATURE
    frame = pd.read_csv(out / "robustness.csv")
    assert len(frame) == 1 and frame["stage"][0] == "04_adam" and (frame["images"] == 200).all()
    assert all(0 <= frame[column][0] <= 100 for column in COLUMNS)
    assert frame["clean"][0] > 60, "the tiny model learned something"
    markdown = (out / "robustness.md").read_text(encoding="utf-8")
    for text in ("Quick mode", "**Shifts.**", "**What hurts most.**", "**Attack.**", "robustness.png",
                 "robustness_examples.png", "robustness_saliency.png", "Produced by `", "--quick --stages 04"):
        assert text in markdown, text
    assert not [p for p in out.rglob(".*")], "temporary files left behind"


@pytest.mark.parametrize("args", [["--images", "0"], ["--stages", "99"], ["--seed", "-1"], ["--bogus"],
                                  ["--stages", ""], ["--images", "many"]])
def test_bad_options_give_one_line_and_exit_2(args):
    result = run(*args, timeout=120)
    assert result.returncode == 2, (args, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


def test_an_output_folder_that_is_a_file_gives_one_line(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run("--quick", "--stages", "04", "--out", str(blocker / "sub"), timeout=120)
    assert result.returncode == 2 and result.stderr.strip().startswith("error:")
    assert len(result.stderr.strip().splitlines()) == 1


@needs_mnist
def test_no_model_and_no_training_gives_one_line(tmp_path: Path):
    result = run("--stages", "04", "--models-dir", str(tmp_path / "none"), "--out", str(tmp_path / "out"),
                 "--no-train", "--images", "50", timeout=120)
    assert result.returncode == 2, result.stderr
    assert "skipped (--no-train)" in result.stdout
    assert result.stderr.strip().startswith("error: no stage model") and len(result.stderr.strip().splitlines()) == 1


def test_the_committed_table_covers_every_stage_and_matches_its_sources():
    """results/robustness.csv has a row for every stage in stages/ and at least 12 transform columns;
    its clean column is each stage's committed test accuracy, and the markdown shows the same numbers."""
    import json

    import pandas as pd

    from common.paths import RESULTS_DIR
    from common.stages import stage_files

    frame = pd.read_csv(RESULTS_DIR / "robustness.csv")
    assert list(frame["stage"]) == [path.stem for path in stage_files().values()]
    transforms = [column for column in frame.columns if column.split("_")[0] in
                  ("shift", "rotate", "scale", "noise", "occlusion", "fgsm")]
    assert len(transforms) >= 12 and (frame["images"] == 10_000).all()
    markdown = (RESULTS_DIR / "robustness.md").read_text(encoding="utf-8")
    assert "python3 experiments/robustness.py" in markdown or "python experiments/robustness.py" in markdown
    for _, row in frame.iterrows():
        metrics = json.loads((RESULTS_DIR / "stages" / row["stage"] / "metrics.json").read_text())
        assert row["clean"] == round(100 * metrics["test_accuracy"], 2), row["stage"]
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {row['stage']} "))
        cells = [cell.strip() for cell in line.strip("|").split("|")][1:]
        assert cells == [f"{row[column]:.2f}" for column in ["clean", *transforms]], row["stage"]


def test_fgsm_keeps_the_true_class_part_of_the_gradient_for_a_confident_prediction():
    """A linear model 30 logits sure of class 0: float32 rounds p_0 to exactly 1, so the textbook p - y
    loses its true-class entry and the gradient only raises the other classes. The attack's direction
    must be the sign of the exact gradient, sum_j p_j (W_j - W_0), which also lowers class 0."""
    network = Network.from_sizes([4, 3], np.random.default_rng(0))
    layer = next(network.weighted_layers())
    layer.params["W"][...] = np.array([[10.0, 0.0, 3.0], [10.0, 2.0, 0.0], [0.0, -1.0, 1.0], [5.0, 1.0, 1.0]])
    layer.params["b"][...] = 0.0
    x = np.array([[1.0, 1.0, 0.0, 1.0]], dtype=np.float32)  # logits 25, 3, 4: p_0 = 1 - 8e-10
    logits = network.forward(x)
    assert softmax_cross_entropy(logits, np.array([0]))[1][0, 0] == 0.0  # the float32 textbook entry is gone
    W = layer.params["W"].astype(np.float64)
    z = x.astype(np.float64) @ W
    p = np.exp(z - z.max())
    p /= p.sum()
    exact = (p[0, 1] * (W[:, 1] - W[:, 0]) + p[0, 2] * (W[:, 2] - W[:, 0]))[None, :]
    direction = robustness.fgsm_direction(network, x / 1.0, np.array([0]), "unit")
    np.testing.assert_array_equal(direction, np.sign(exact).astype(np.float32))
    assert direction[0, 0] == -1.0, "the pixel that feeds class 0 most is darkened, not left alone"
