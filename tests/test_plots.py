"""Tests for common.plots: every figure is a real PNG, written atomically, from realistic data."""
from __future__ import annotations

from pathlib import Path

import matplotlib.colors
import matplotlib.image as mpimg
import numpy as np
import pytest

from common import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------- helpers


def assert_png(path: Path, written: Path) -> np.ndarray:
    """``written`` is ``path``, a valid PNG of plausible size, alone in its directory."""
    assert written == path
    assert path.is_file()
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_SIGNATURE
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3
    height, width, channels = pixels.shape
    assert 150 <= height <= 3000 and 150 <= width <= 3000
    assert channels in (3, 4)
    assert float(pixels[..., :3].std()) > 0.01, "the image should not be blank"
    leftovers = [entry.name for entry in path.parent.iterdir() if entry != path]
    assert leftovers == [], f"temporary files left behind: {leftovers}"
    return pixels


def test_plots_never_uses_pyplot():
    """pyplot keeps every figure in a global registry until closed (a leak in a long run) and
    may try to open a window; the plots are drawn on bare Figure objects instead."""
    source = Path(plots.__file__).read_text(encoding="utf-8")
    assert "import matplotlib.pyplot" not in source and "from matplotlib import pyplot" not in source


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record every figure the plot functions hand to save_figure, for inspection after."""
    captured: list = []
    original = plots.save_figure

    def recording(fig, path):
        captured.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "save_figure", recording)
    return captured


def all_text(fig) -> list[str]:
    """Every text string drawn in a figure (titles, labels, annotations, legends)."""
    return [artist.get_text() for artist in fig.findobj(lambda a: hasattr(a, "get_text"))]


def history(epochs: int = 6, with_val: bool = True, sparse_test: bool = False) -> list[dict]:
    records = []
    for epoch in range(1, epochs + 1):
        record = {
            "epoch": epoch,
            "loss": 2.3 * 0.5**epoch,
            "train_accuracy": 0.90 + 0.01 * epoch,
            "test_accuracy": 0.89 + 0.01 * epoch,
            "seconds": 2.5 * epoch,
            "lr": 0.1,
        }
        if sparse_test and epoch % 3:
            record["test_accuracy"] = None
        if with_val:
            record["val_accuracy"] = 0.885 + 0.01 * epoch
        records.append(record)
    return records


def digits(count: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(count, 784), dtype=np.uint8)


# ------------------------------------------------------------------------------ log decision


@pytest.mark.parametrize(
    "values, expected",
    [
        ([2.3, 0.5, 0.1], False),          # under one decade
        ([10.0, 0.1], False),              # exactly two decades: not more than two
        ([10.0, 0.099], True),             # just over two decades
        ([2.3, 0.2, 0.001], True),         # over three decades
        ([1.0, 0.0], False),               # zero cannot go on a log axis
        ([5.0, -1.0, 0.001], False),       # nor a negative value
        ([], False),
        ([0.3], False),
        ([float("nan"), 10.0, 0.01], True),  # NaN (a diverged epoch) is ignored
        ([float("inf"), 1.0, 0.5], False),   # infinity is ignored
    ],
)
def test_use_log_scale(values, expected):
    assert plots._use_log_scale(values) is expected


def test_use_log_scale_accepts_arrays():
    assert plots._use_log_scale(np.array([[1000.0], [1.0]])) is True


# ------------------------------------------------------------------------------- save_figure


def test_save_figure_writes_png_and_creates_parent(tmp_path):
    fig, ax = plots.subplots(figsize=(3.0, 2.0))
    ax.plot([0, 1], [1, 0])
    target = tmp_path / "sub" / "dir" / "line.png"
    written = plots.save_figure(fig, target)
    assert_png(target, written)


def test_save_figure_accepts_str_path(tmp_path):
    fig, ax = plots.subplots(figsize=(3.0, 2.0))
    ax.plot([0, 1], [1, 0])
    written = plots.save_figure(fig, str(tmp_path / "line.png"))
    assert isinstance(written, Path)
    assert_png(tmp_path / "line.png", written)


def test_save_figure_failure_keeps_old_file_and_removes_temporary(tmp_path, monkeypatch):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old contents")
    fig, ax = plots.subplots(figsize=(3.0, 2.0))

    def broken_savefig(handle, **kwargs):
        handle.write(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plots.save_figure(fig, target)
    assert target.read_bytes() == b"old contents"
    assert [entry.name for entry in tmp_path.iterdir()] == ["plot.png"]


def test_save_figure_replaces_existing_file(tmp_path):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old contents")
    fig, ax = plots.subplots(figsize=(3.0, 2.0))
    ax.plot([0, 1], [0, 1])
    assert_png(target, plots.save_figure(fig, target))


# ------------------------------------------------------------------------------------- loss


def test_plot_loss_log_scale_when_loss_spans_decades(tmp_path, figures):
    records = history(epochs=12)  # 1.15 down to 5.6e-4: over three decades
    path = tmp_path / "loss.png"
    assert_png(path, plots.plot_loss(records, path))
    ax = figures[0].axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "epoch"
    assert ax.get_title() == "Training loss"
    line = ax.get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), np.arange(1, 13))
    np.testing.assert_allclose(line.get_ydata(), [r["loss"] for r in records])


def test_plot_loss_linear_scale_and_iteration_label(tmp_path, figures):
    records = [{"epoch": i, "loss": 0.5 / i} for i in range(1, 6)]
    path = tmp_path / "loss.png"
    assert_png(path, plots.plot_loss(records, path, title="Full-batch loss", x_label="iteration"))
    ax = figures[0].axes[0]
    assert ax.get_yscale() == "linear"
    assert ax.get_xlabel() == "iteration"
    assert ax.get_title() == "Full-batch loss"


def test_plot_loss_empty_history_still_writes_a_figure(tmp_path, figures):
    path = tmp_path / "loss.png"
    assert_png(path, plots.plot_loss([], path))
    assert "no loss recorded" in all_text(figures[0])


# --------------------------------------------------------------------------------- accuracy


def test_plot_accuracy_with_validation_annotates_final_values(tmp_path, figures):
    path = tmp_path / "accuracy.png"
    assert_png(path, plots.plot_accuracy(history(epochs=6), path))
    ax = figures[0].axes[0]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["train 96.0 %", "validation 94.5 %", "test 95.0 %"]
    assert ax.get_ylabel() == "accuracy (%)"
    assert ax.get_xlabel() == "epoch"
    train = ax.get_lines()[0]
    np.testing.assert_allclose(train.get_ydata(), [91, 92, 93, 94, 95, 96])


def test_plot_accuracy_skips_none_and_missing_validation(tmp_path, figures):
    records = history(epochs=9, with_val=False, sparse_test=True)
    path = tmp_path / "accuracy.png"
    assert_png(path, plots.plot_accuracy(records, path, title="Stage 2", x_label="iteration"))
    ax = figures[0].axes[0]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["train 99.0 %", "test 98.0 %"]
    test_line = ax.get_lines()[1]
    np.testing.assert_allclose(test_line.get_xdata(), [3, 6, 9])
    np.testing.assert_allclose(test_line.get_ydata(), [92, 95, 98])
    assert ax.get_title() == "Stage 2"
    assert ax.get_xlabel() == "iteration"


def test_plot_accuracy_with_val_key_all_none(tmp_path, figures):
    records = history(epochs=3)
    for record in records:
        record["val_accuracy"] = None
    path = tmp_path / "accuracy.png"
    assert_png(path, plots.plot_accuracy(records, path))
    labels = [text.get_text() for text in figures[0].axes[0].get_legend().get_texts()]
    assert [label.split()[0] for label in labels] == ["train", "test"]


# ------------------------------------------------------------------------- confusion matrix


def test_plot_confusion_matrix_writes_counts_in_cells(tmp_path, figures):
    rng = np.random.default_rng(1)
    matrix = np.diag(rng.integers(900, 1100, 10)) + rng.integers(0, 9, (10, 10)) * (1 - np.eye(10, dtype=int))
    path = tmp_path / "confusion.png"
    assert_png(path, plots.plot_confusion_matrix(matrix, path))
    ax = figures[0].axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts
             if t.get_text().isdigit()}
    assert len(cells) == 100
    assert cells[(3, 3)].get_text() == str(matrix[3, 3])
    assert cells[(2, 7)].get_text() == str(matrix[2, 7])
    image = ax.images[0]
    for cell in ((3, 3), (2, 7)):  # a dark diagonal cell and a light off-diagonal one: both readable
        background = np.array(image.cmap(image.norm(matrix[cell]))[:3])
        text = np.array(matplotlib.colors.to_rgb(cells[cell].get_color()))
        luminance = np.array([0.2126, 0.7152, 0.0722])
        assert abs(float(luminance @ background - luminance @ text)) > 0.4, cell
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert list(ax.get_xticks()) == list(range(10)) and list(ax.get_yticks()) == list(range(10))


def test_plot_confusion_matrix_rejects_non_square(tmp_path):
    with pytest.raises(ValueError, match="square"):
        plots.plot_confusion_matrix(np.zeros((10, 9), dtype=int), tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- misclassified


def test_plot_misclassified_grid_and_titles(tmp_path, figures):
    rng = np.random.default_rng(2)
    count = 7
    true = rng.integers(0, 10, count)
    predicted = (true + 1) % 10
    confidence = np.full(count, 0.87)
    path = tmp_path / "wrong.png"
    assert_png(path, plots.plot_misclassified(digits(count, rng), true, predicted, confidence, path))
    fig = figures[0]
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == count
    assert titles[0] == f"true {true[0]} → pred {predicted[0]} (87%)"
    assert len(fig.axes) == 10  # 2 rows of 5 columns, unused cells hidden


def test_plot_misclassified_caps_at_max_images_float_images(tmp_path, figures):
    rng = np.random.default_rng(3)
    images = rng.random((40, 784), dtype=np.float32)
    labels = rng.integers(0, 10, 40)
    path = tmp_path / "wrong.png"
    written = plots.plot_misclassified(images, labels, (labels + 3) % 10, rng.random(40), path,
                                       max_images=10)
    assert_png(path, written)
    fig = figures[0]
    assert len([ax for ax in fig.axes if ax.get_title()]) == 10
    assert "(first 10 of 40)" in fig._suptitle.get_text()


def test_plot_misclassified_with_no_images(tmp_path, figures):
    path = tmp_path / "wrong.png"
    empty = np.zeros((0, 784), dtype=np.uint8)
    none = np.zeros(0, dtype=int)
    assert_png(path, plots.plot_misclassified(empty, none, none, np.zeros(0), path))
    assert "no misclassified digits" in all_text(figures[0])


def test_plot_misclassified_rejects_mismatched_lengths(tmp_path):
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="same length"):
        plots.plot_misclassified(digits(3, rng), [1, 2, 3], [4, 5], [0.5, 0.5, 0.5],
                                 tmp_path / "w.png")


# ------------------------------------------------------------------------ prediction, digit


def test_plot_prediction_example_highlights_predicted_bar(tmp_path, figures):
    rng = np.random.default_rng(5)
    probabilities = rng.dirichlet(np.ones(10))
    predicted = int(np.argmax(probabilities))
    true = (predicted + 1) % 10
    path = tmp_path / "prediction.png"
    written = plots.plot_prediction_example(digits(1, rng)[0], true, predicted, probabilities, path)
    assert_png(path, written)
    fig = figures[0]
    digit_ax, bar_ax = fig.axes
    assert digit_ax.get_title() == f"true {true}, predicted {predicted}"
    bars = bar_ax.patches
    assert len(bars) == 10
    np.testing.assert_allclose([bar.get_height() for bar in bars], probabilities)
    colours = [bar.get_facecolor() for bar in bars]
    assert all(colours[k] != colours[predicted] for k in range(10) if k != predicted)
    assert bar_ax.get_xlabel() == "digit" and bar_ax.get_ylabel() == "probability"


def test_plot_prediction_example_custom_title_float_image(tmp_path, figures):
    rng = np.random.default_rng(6)
    probabilities = np.full(10, 0.01)
    probabilities[4] = 0.91
    image = rng.random((28, 28), dtype=np.float32)
    path = tmp_path / "prediction.png"
    assert_png(path, plots.plot_prediction_example(image, 4, 4, probabilities, path, title="One test image"))
    assert figures[0]._suptitle.get_text() == "One test image"


def test_plot_digit(tmp_path, figures):
    rng = np.random.default_rng(7)
    path = tmp_path / "digit.png"
    assert_png(path, plots.plot_digit(digits(1, rng)[0], path, title="your digit"))
    ax = figures[0].axes[0]
    assert ax.get_title() == "your digit"
    shown = ax.get_images()[0]
    assert shown.get_array().shape == (28, 28)
    assert shown.get_clim() == (0.0, 255.0)


def test_plot_digit_float_scale_and_bad_size(tmp_path, figures):
    path = tmp_path / "digit.png"
    image = np.linspace(0.0, 1.0, 784, dtype=np.float32)
    assert_png(path, plots.plot_digit(image, path))
    assert figures[0].axes[0].get_images()[0].get_clim() == (0.0, 1.0)
    with pytest.raises(ValueError, match="784"):
        plots.plot_digit(np.zeros(100), tmp_path / "bad.png")


# ------------------------------------------------------------------ weights and feature maps


def image_axes(fig) -> list:
    """The axes of a figure that show an image (tiles), in drawing order; hidden grid cells excluded."""
    return [ax for ax in fig.axes if ax.get_images()]


def assert_symmetric_tiles(axes: list, tiles: list[np.ndarray]) -> None:
    """Each axes shows its tile on a diverging scale -m..m, m the tile's largest |weight|."""
    assert len(axes) == len(tiles)
    for ax, tile in zip(axes, tiles):
        shown = ax.get_images()[0]
        np.testing.assert_allclose(shown.get_array(), tile)
        low, high = shown.get_clim()
        assert low == -high
        assert high == pytest.approx(float(np.abs(tile).max()))
        assert shown.get_cmap().name == "RdBu_r"
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []


def test_plot_first_layer_weights_tiles_first_count_units(tmp_path, figures):
    rng = np.random.default_rng(8)
    weights = rng.normal(0.0, 0.05, size=(784, 100))
    weights[:, 3] *= 10.0  # a unit with much larger weights keeps its own scale
    path = tmp_path / "weights.png"
    assert_png(path, plots.plot_first_layer_weights(weights, path, title="Stage 3", count=64))
    fig = figures[0]
    tiles = image_axes(fig)
    assert len(tiles) == 64 and len(fig.axes) == 64  # an 8 x 8 grid
    assert_symmetric_tiles(tiles, [weights[:, unit].reshape(28, 28) for unit in range(64)])
    assert [ax.get_title() for ax in tiles[:3]] == ["0", "1", "2"]
    text = " ".join(all_text(fig))
    assert "red: positive weight, blue: negative" in text
    assert "0-63 of 100" in text
    assert fig._suptitle.get_text() == "Stage 3"


def test_plot_first_layer_weights_fewer_units_than_count_and_zero_unit(tmp_path, figures):
    weights = np.linspace(-1.0, 2.0, 784 * 10).reshape(784, 10)
    weights[:, 5] = 0.0  # a dead unit: its scale must not collapse to 0..0
    path = tmp_path / "weights.png"
    assert_png(path, plots.plot_first_layer_weights(weights, path))
    fig = figures[0]
    tiles = image_axes(fig)
    assert len(tiles) == 10 and len(fig.axes) == 12  # 3 rows of 4, two cells hidden
    assert tiles[5].get_images()[0].get_clim() == (-1.0, 1.0)
    assert fig._suptitle is None  # no title asked for


@pytest.mark.parametrize("shape", [(100, 784), (784,), (784, 10, 1), (28, 28), (784, 0)])
def test_plot_first_layer_weights_rejects_bad_shapes(tmp_path, shape):
    with pytest.raises(ValueError, match="784|hidden units"):
        plots.plot_first_layer_weights(np.zeros(shape), tmp_path / "w.png")
    assert list(tmp_path.iterdir()) == []


def test_plot_first_layer_weights_rejects_count_below_one(tmp_path):
    with pytest.raises(ValueError, match="count"):
        plots.plot_first_layer_weights(np.ones((784, 4)), tmp_path / "w.png", count=0)


def test_plot_conv_filters_single_channel(tmp_path, figures):
    rng = np.random.default_rng(9)
    weights = rng.normal(0.0, 0.2, size=(5, 5, 1, 32))
    path = tmp_path / "filters.png"
    assert_png(path, plots.plot_conv_filters(weights, path, title="conv 1"))
    fig = figures[0]
    tiles = image_axes(fig)
    assert len(tiles) == 32 and len(fig.axes) == 36  # a 6 x 6 grid, four cells hidden
    assert_symmetric_tiles(tiles, [weights[:, :, 0, f] for f in range(32)])
    assert all(ax.get_images()[0].get_interpolation() == "nearest" for ax in tiles)
    assert [ax.get_title() for ax in tiles] == [str(f) for f in range(32)]
    text = " ".join(all_text(fig))
    assert "red: positive weight, blue: negative" in text
    assert "mean" not in text


def test_plot_conv_filters_multi_channel_shows_channel_mean(tmp_path, figures):
    rng = np.random.default_rng(10)
    weights = rng.normal(0.0, 0.2, size=(3, 3, 4, 6))
    path = tmp_path / "filters.png"
    assert_png(path, plots.plot_conv_filters(weights, path))
    fig = figures[0]
    tiles = image_axes(fig)
    assert len(tiles) == 6
    assert_symmetric_tiles(tiles, [weights[:, :, :, f].mean(axis=2) for f in range(6)])
    assert "mean over the 4 input channels" in " ".join(all_text(fig))


@pytest.mark.parametrize("shape", [(5, 5, 32), (5, 5), (1, 5, 5, 1, 8)])
def test_plot_conv_filters_rejects_non_4d(tmp_path, shape):
    with pytest.raises(ValueError, match="4-D"):
        plots.plot_conv_filters(np.zeros(shape), tmp_path / "f.png")
    assert list(tmp_path.iterdir()) == []


def test_plot_feature_maps_rows_per_layer(tmp_path, figures):
    rng = np.random.default_rng(11)
    first = np.maximum(rng.normal(size=(24, 24, 32)), 0.0)
    first[..., 20] = 50.0  # beyond the channels shown: must not set the row's scale
    second = np.maximum(rng.normal(size=(8, 8, 5)), 0.0)
    maps = [("conv 1 + relu", first), ("conv 2 + relu", second)]
    path = tmp_path / "maps.png"
    assert_png(path, plots.plot_feature_maps(digits(1, rng)[0], maps, path, title="Feature maps"))
    fig = figures[0]
    shown = image_axes(fig)
    assert len(shown) == 1 + 8 + 5
    digit = [ax for ax in shown if ax.get_images()[0].get_array().shape == (28, 28)]
    assert len(digit) == 1
    assert digit[0].get_images()[0].get_clim() == (0.0, 255.0)
    rows = {(24, 24): first[..., :8], (8, 8): second}
    for ax in shown:
        if ax is digit[0]:
            continue
        image = ax.get_images()[0]
        assert image.get_cmap().name in ("gray", "gray_r")
        assert image.get_clim() == (0.0, pytest.approx(float(rows[image.get_array().shape].max())))
    text = all_text(fig)
    assert "conv 1 + relu (24x24x32)" in text and "conv 2 + relu (8x8x5)" in text
    assert fig._suptitle.get_text() == "Feature maps"


def test_plot_feature_maps_per_layer_and_dead_layer(tmp_path, figures):
    image = np.linspace(0.0, 1.0, 784, dtype=np.float32)
    maps = [("conv 1 + relu", np.ones((24, 24, 3))), ("dead", np.zeros((12, 12, 16)))]
    path = tmp_path / "maps.png"
    assert_png(path, plots.plot_feature_maps(image, maps, path, per_layer=4))
    shown = image_axes(figures[0])
    assert len(shown) == 1 + 3 + 4
    dead = [ax for ax in shown if ax.get_images()[0].get_array().shape == (12, 12)]
    assert len(dead) == 4
    assert all(ax.get_images()[0].get_clim() == (0.0, 1.0) for ax in dead)  # all zero: scale 0..1


def test_plot_feature_maps_rejects_bad_shapes(tmp_path):
    image = np.zeros(784, dtype=np.uint8)
    with pytest.raises(ValueError, match="3-D"):
        plots.plot_feature_maps(image, [("conv 1", np.zeros((24, 24)))], tmp_path / "m.png")
    with pytest.raises(ValueError, match="3-D"):
        plots.plot_feature_maps(image, [("conv 1", np.zeros((1, 24, 24, 8)))], tmp_path / "m.png")
    with pytest.raises(ValueError, match="784"):
        plots.plot_feature_maps(np.zeros(100), [("conv 1", np.zeros((24, 24, 8)))], tmp_path / "m.png")
    assert list(tmp_path.iterdir()) == []
