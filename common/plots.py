"""The figures every training stage writes: loss, accuracy, confusion matrix, digits, weights.

Each ``plot_*`` function draws one figure with matplotlib's object-oriented API (no pyplot),
saves it as one PNG through :func:`save_figure` (atomically: a half-written file is never seen)
and returns the :class:`~pathlib.Path` it wrote. Nothing here opens a window or touches global
random state. Without matplotlib, or the Pillow it draws with, this module still imports; the
first figure asked for is a one-line :class:`~common.nn.errors.UserError` with the install command.

Data conventions
----------------
* images: ``(N, 784)`` arrays, either ``uint8`` 0-255 or float in ``[0, 1]`` or float 0-255. Each
  image is shown as 28 x 28 pixels on a 0..1 scale if its maximum is at most 1, else 0..255.
* labels: integer arrays of shape ``(N,)``.
* history: a list of dicts, one per epoch, with keys ``epoch`` (int, 1-based), ``loss`` (float),
  ``train_accuracy``, ``test_accuracy`` and optionally ``val_accuracy`` (fractions in [0, 1] or
  ``None`` when not evaluated that epoch), ``seconds`` (cumulative) and ``lr``.
* first-layer weights of a perceptron: ``(784, n)``, column ``j`` the input weights of hidden unit ``j``.
* convolution weights: ``(k, k, C_in, F)`` (NHWC, as :mod:`common.nn.conv`): ``W[i, j, c, f]``
  multiplies input channel ``c`` at row offset ``i``, column offset ``j``, for filter ``f``.
* feature maps: ``(H, W, F)``, one image's output of a convolution layer (channels last).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np

from common.files import atomic_open
from common.idx import IMAGE_SIDE
from common.nn.errors import UserError

try:
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator
    _MISSING: str | None = None
except ImportError as error:  # matplotlib, or Pillow (which matplotlib imports), is not installed
    _MISSING = (error.name or "matplotlib").split(".")[0]

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "DPI",
    "require_matplotlib",
    "subplots",
    "save_figure",
    "plot_loss",
    "plot_accuracy",
    "plot_confusion_matrix",
    "plot_misclassified",
    "plot_prediction_example",
    "plot_digit",
    "plot_first_layer_weights",
    "plot_conv_filters",
    "plot_feature_maps",
]

PathLike = Union[str, "os.PathLike[str]"]

DPI = 110
"""Resolution of every saved PNG (dots per inch)."""

IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE

_MARKER_LIMIT = 30  # draw point markers when a curve has at most this many points
_LOG_DECADES = 2.0  # log-scale y axis when the values span more than this many decades

_TRAIN_COLOUR = "tab:blue"
_VAL_COLOUR = "tab:green"
_TEST_COLOUR = "tab:orange"
_HIGHLIGHT = "tab:orange"
_MUTED = "#b0b7c3"
_RIGHT = "#1a7f37"
_WRONG = "#c62828"
_WEIGHT_CMAP = "RdBu_r"  # diverging: blue negative, white 0, red positive
_WEIGHT_CAPTION = "red: positive weight, blue: negative, white: 0 (colour scale per tile, symmetric around 0)"


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------


def require_matplotlib() -> None:
    """Raise a one-line :class:`UserError` naming the missing package and its install command if
    matplotlib cannot be imported (Pillow, which it draws with, missing included)."""
    if _MISSING is not None:
        package, install = ("Pillow", "pillow") if _MISSING == "PIL" else (_MISSING, _MISSING)
        raise UserError(f"figures need the package {package}, which is not installed; install it with: "
                        f"python -m pip install {install}")


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float],
             layout: str | None = "constrained", **kwargs: Any) -> tuple[Figure, Any]:
    """A new figure and its axes, as ``plt.subplots`` gives, but without pyplot: no global
    figure registry, no window, no backend to choose, nothing to close. The way into every
    figure, so the one place that says when matplotlib or Pillow is missing."""
    require_matplotlib()
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Figure, path: PathLike) -> Path:
    """Save ``fig`` as a PNG at ``path`` atomically (:func:`common.files.atomic_open`) and return the path."""
    with atomic_open(path) as handle:
        fig.savefig(handle, dpi=DPI, format="png", facecolor="white")
    return Path(path)


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _use_log_scale(values: Sequence[float] | np.ndarray) -> bool:
    """Whether a y axis for ``values`` should be logarithmic.

    True when the finite values are all positive and span more than two decades
    (``max / min > 100``). NaN and infinities are ignored; a zero or negative value, or fewer
    than two finite values, gives False (a log axis could not show them).
    """
    array = np.asarray(values, dtype=float).ravel()
    array = array[np.isfinite(array)]
    if array.size < 2 or np.any(array <= 0):
        return False
    return bool(array.max() / array.min() > 10.0**_LOG_DECADES)


def _as_image(image: Any) -> np.ndarray:
    """One image of 784 pixels (any shape holding 784 values) as a float ``(28, 28)`` array."""
    array = np.asarray(image, dtype=float)
    if array.size != IMAGE_PIXELS:
        raise ValueError(f"an image must have {IMAGE_PIXELS} pixels, got shape {array.shape}")
    return array.reshape(IMAGE_SIDE, IMAGE_SIDE)


def show_digit(ax: "Axes", image: Any) -> None:
    """Draw one digit on ``ax``: dark ink on white, scaled 0..1 or 0..255 by its own maximum."""
    pixels = _as_image(image)
    vmax = 255.0 if np.nanmax(pixels) > 1 else 1.0
    ax.imshow(pixels, cmap="gray_r", vmin=0.0, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(_MUTED)


def _series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    """The ``(epochs, values)`` of ``history`` where ``key`` is present and not None."""
    epochs: list[float] = []
    values: list[float] = []
    for position, record in enumerate(history, start=1):
        value = record.get(key)
        if value is None:
            continue
        epochs.append(record.get("epoch", position))
        values.append(float(value))
    return epochs, values


def _empty_message(ax: "Axes", message: str) -> None:
    """Write ``message`` in the middle of an otherwise blank axes."""
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="0.35",
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _style_curve_axes(ax: "Axes", x_label: str, y_label: str) -> None:
    """Common look of the loss and accuracy plots: labels, light grid, integer x ticks."""
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(True, which="major", alpha=0.35)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)


# --------------------------------------------------------------------------------------------
# training curves
# --------------------------------------------------------------------------------------------


def plot_loss(history: list[dict], path: PathLike, title: str = "Training loss",
              x_label: str = "epoch") -> Path:
    """Plot the mean training loss per epoch (or per iteration) and save it as a PNG.

    Args:
        history: one dict per epoch with ``epoch`` and ``loss`` (entries with ``loss`` None are
            skipped).
        path: where to write the PNG.
        title: figure title.
        x_label: x-axis label, e.g. ``"iteration"`` for full-batch stages.

    The y axis is logarithmic when the loss spans more than two decades (see
    :func:`_use_log_scale`). Returns the path written.
    """
    epochs, losses = _series(history, "loss")
    fig, ax = subplots(figsize=(7.0, 4.3), layout="constrained")
    if not losses:
        _empty_message(ax, "no loss recorded")
    else:
        marker = "o" if len(losses) <= _MARKER_LIMIT else None
        final = losses[-1]
        ax.plot(epochs, losses, color=_TRAIN_COLOUR, marker=marker, markersize=4, linewidth=1.8,
                label=f"training loss (final {final:.4g})")
        log_scale = _use_log_scale(losses)
        if log_scale:
            ax.set_yscale("log")
        _style_curve_axes(ax, x_label, "mean loss (log scale)" if log_scale else "mean loss")
        ax.legend(loc="upper right", frameon=False)
    ax.set_title(title, fontsize=13)
    return save_figure(fig, path)


def plot_accuracy(history: list[dict], path: PathLike, title: str = "Accuracy",
                  x_label: str = "epoch") -> Path:
    """Plot train, validation and test accuracy in percent per epoch and save it as a PNG.

    Args:
        history: one dict per epoch with ``epoch``, ``train_accuracy``, ``test_accuracy`` and
            optionally ``val_accuracy`` (fractions in [0, 1]; None where not evaluated, and such
            epochs are left out of that curve).
        path: where to write the PNG.
        title: figure title.
        x_label: x-axis label.

    Each legend entry carries the final value, e.g. ``"test 97.8 %"``. Returns the path written.
    """
    fig, ax = subplots(figsize=(7.0, 4.3), layout="constrained")
    curves = [("train_accuracy", "train", _TRAIN_COLOUR),
              ("val_accuracy", "validation", _VAL_COLOUR),
              ("test_accuracy", "test", _TEST_COLOUR)]
    drawn = 0
    highest = 0.0
    for key, name, colour in curves:
        epochs, fractions = _series(history, key)
        if not fractions:
            continue
        percent = [100.0 * value for value in fractions]
        marker = "o" if len(percent) <= _MARKER_LIMIT else None
        ax.plot(epochs, percent, color=colour, marker=marker, markersize=4, linewidth=1.8,
                label=f"{name} {percent[-1]:.1f} %")
        highest = max(highest, max(percent))
        drawn += 1
    if drawn == 0:
        _empty_message(ax, "no accuracy recorded")
    else:
        _style_curve_axes(ax, x_label, "accuracy (%)")
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, 0.0), min(high, max(100.5, highest + 0.5)))
        ax.legend(loc="lower right", frameon=False)
    ax.set_title(title, fontsize=13)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------------------------


def plot_confusion_matrix(matrix: np.ndarray, path: PathLike,
                          title: str = "Confusion matrix (test set)") -> Path:
    """Draw a confusion matrix of counts and save it as a PNG.

    Args:
        matrix: ``(K, K)`` integer counts (10 x 10 for MNIST); rows are the true class,
            columns the predicted class.
        path: where to write the PNG.
        title: figure title.

    Every cell shows its count (white on dark cells). Returns the path written.
    """
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {counts.shape}")
    size = counts.shape[0]
    total = int(counts.sum())
    correct = int(np.trace(counts))

    fig, ax = subplots(figsize=(7.0, 6.2), layout="constrained")
    shown = ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(int(counts.max()), 1))
    colourbar = fig.colorbar(shown, ax=ax, shrink=0.85)
    colourbar.set_label("count")

    threshold = counts.max() / 2.0
    font = 9 if size <= 10 else 7
    for row in range(size):
        for column in range(size):
            value = counts[row, column]
            ax.text(column, row, f"{int(value)}", ha="center", va="center", fontsize=font,
                    color="white" if value > threshold else "black")

    ticks = np.arange(size)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.xaxis.set_label_position("top")
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if total > 0:
        summary = f"{correct} of {total} correct ({100.0 * correct / total:.2f} %)"
        ax.text(0.5, -0.04, summary, ha="center", va="top", fontsize=10, color="0.3",
                transform=ax.transAxes)
    fig.suptitle(title, fontsize=13)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------


def plot_augmentation(originals: np.ndarray, distorted: np.ndarray, path: PathLike, title: str) -> Path:
    """Each of ``originals (N, 784)`` in the first column, then its distortions ``distorted (N, K, 784)``,
    one row per digit, and save it as a PNG. Returns the path written."""
    rows, columns = distorted.shape[0], distorted.shape[1] + 1
    fig, axes = subplots(rows, columns, figsize=(columns * 1.2, rows * 1.25 + 0.6), layout="constrained",
                         squeeze=False)
    for row in range(rows):
        for column in range(columns):
            show_digit(axes[row, column], originals[row] if column == 0 else distorted[row, column - 1])
    axes[0, 0].set_title("as it is", fontsize=9)
    for column in range(1, columns):
        axes[0, column].set_title(f"draw {column}", fontsize=9)
    fig.suptitle(title, fontsize=12)
    return save_figure(fig, path)


def plot_misclassified(images: np.ndarray, true_labels: np.ndarray, predicted_labels: np.ndarray,
                       confidences: np.ndarray | None, path: PathLike, max_images: int = 25,
                       title: str = "Misclassified test digits") -> Path:
    """Show up to ``max_images`` misclassified digits in a 5-column grid and save it as a PNG.

    Args:
        images: ``(N, 784)`` pixels of the misclassified digits.
        true_labels: ``(N,)`` int, the correct classes.
        predicted_labels: ``(N,)`` int, what the network said.
        confidences: ``(N,)`` float in [0, 1], the probability the network gave its prediction
            (or None to leave it out).
        path: where to write the PNG.
        max_images: the first this many are shown.
        title: figure title; "(first n of N)" is appended when not all are shown.

    Each digit is titled like ``true 4 → pred 9 (87%)``. With no images the figure says
    "no misclassified digits". Returns the path written.
    """
    pixels = np.asarray(images)
    truth = np.asarray(true_labels).ravel()
    predicted = np.asarray(predicted_labels).ravel()
    if pixels.size % IMAGE_PIXELS:
        raise ValueError(f"images must be (N, {IMAGE_PIXELS}) pixels, got shape {pixels.shape}")
    available = pixels.size // IMAGE_PIXELS
    pixels = pixels.reshape(available, IMAGE_PIXELS)
    confidence = None if confidences is None else np.asarray(confidences, dtype=float).ravel()
    lengths = {available, truth.size, predicted.size}
    if confidence is not None:
        lengths.add(confidence.size)
    if len(lengths) != 1:
        raise ValueError("images, true_labels, predicted_labels and confidences must have the same "
                         f"length, got {available}, {truth.size}, {predicted.size}"
                         + ("" if confidence is None else f", {confidence.size}"))

    shown = max(0, min(available, int(max_images)))
    if shown == 0:
        fig, ax = subplots(figsize=(6.0, 2.6), layout="constrained")
        _empty_message(ax, "no misclassified digits")
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(title, fontsize=13)
        return save_figure(fig, path)

    columns = 5
    rows = math.ceil(shown / columns)
    fig, axes = subplots(rows, columns, figsize=(columns * 1.75, rows * 1.95 + 0.5),
                             layout="constrained", squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= shown:
            ax.set_axis_off()
            continue
        show_digit(ax, pixels[index])
        label = f"true {int(truth[index])} → pred {int(predicted[index])}"
        if confidence is not None:
            label += f" ({100.0 * confidence[index]:.0f}%)"
        ax.set_title(label, fontsize=8.5, color=_WRONG)
    heading = title if shown == available else f"{title} (first {shown} of {available})"
    fig.suptitle(heading, fontsize=13)
    return save_figure(fig, path)


def plot_prediction_example(image: np.ndarray, true_label: int, predicted_label: int,
                            probabilities: np.ndarray, path: PathLike,
                            title: str | None = None) -> Path:
    """Show one digit next to the bar chart of its class probabilities and save it as a PNG.

    Args:
        image: ``(784,)`` (or ``(28, 28)``) pixels.
        true_label: the correct class.
        predicted_label: the class the network chose (its bar is highlighted).
        probabilities: ``(K,)`` class probabilities (10 for MNIST).
        path: where to write the PNG.
        title: figure title; by default "Prediction: Y (p % confident)".

    Returns the path written.
    """
    pixels = _as_image(image)
    probs = np.asarray(probabilities, dtype=float).ravel()
    classes = probs.size
    if not 0 <= int(predicted_label) < classes:
        raise ValueError(f"predicted_label {predicted_label} is not one of the {classes} classes")
    predicted = int(predicted_label)
    truth = int(true_label)
    right = truth == predicted

    fig, (digit_ax, bar_ax) = subplots(
        1, 2, figsize=(8.4, 3.7), layout="constrained", gridspec_kw={"width_ratios": [1, 1.7]})
    show_digit(digit_ax, pixels)
    digit_ax.set_title(f"true {truth}, predicted {predicted}", fontsize=11,
                       color=_RIGHT if right else _WRONG)

    colours = [_HIGHLIGHT if k == predicted else _MUTED for k in range(classes)]
    bars = bar_ax.bar(np.arange(classes), probs, color=colours, width=0.7)
    if 0 <= truth < classes and not right:
        bars[truth].set_edgecolor(_RIGHT)
        bars[truth].set_linewidth(2.0)
        legend_handles = [Patch(facecolor=_HIGHLIGHT, label="predicted"),
                          Patch(facecolor=_MUTED, edgecolor=_RIGHT, linewidth=2.0,
                                label="true class")]
        bar_ax.legend(handles=legend_handles, loc="best", frameon=False, fontsize=9)
    bar_ax.text(predicted, min(probs[predicted], 1.0) + 0.02, f"{100.0 * probs[predicted]:.1f} %",
                ha="center", va="bottom", fontsize=9)
    bar_ax.set_xticks(np.arange(classes))
    bar_ax.set_ylim(0.0, 1.1)
    bar_ax.set_yticks(np.linspace(0.0, 1.0, 6))
    bar_ax.set_xlabel("digit")
    bar_ax.set_ylabel("probability")
    bar_ax.set_title("class probabilities", fontsize=11)
    bar_ax.grid(True, axis="y", alpha=0.35)
    bar_ax.set_axisbelow(True)
    bar_ax.spines["top"].set_visible(False)
    bar_ax.spines["right"].set_visible(False)

    if title is None:
        title = f"Prediction: {predicted} ({100.0 * probs[predicted]:.0f} % confident)"
    fig.suptitle(title, fontsize=13)
    return save_figure(fig, path)


def plot_digit(image: np.ndarray, path: PathLike, title: str = "") -> Path:
    """Show one 28 x 28 digit exactly as the network sees it and save it as a PNG.

    Args:
        image: ``(784,)`` (or ``(28, 28)``) pixels, 0-255 or 0-1.
        path: where to write the PNG.
        title: optional title above the digit.

    Returns the path written.
    """
    pixels = _as_image(image)
    fig, ax = subplots(figsize=(3.4, 3.6), layout="constrained")
    show_digit(ax, pixels)
    ax.set_xlabel("28 × 28 pixels", fontsize=9, color="0.35")
    if title:
        ax.set_title(title, fontsize=12)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# weights and feature maps
# --------------------------------------------------------------------------------------------


def _grid_shape(count: int) -> tuple[int, int]:
    """``(rows, columns)`` of a near-square grid holding ``count`` tiles (at least 1 x 1)."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return max(1, math.ceil(count / columns)), columns


def _symmetric_limit(values: np.ndarray) -> float:
    """The largest finite ``|value|``, for a colour scale ``-m..m``; 1.0 when there is none or it is 0."""
    magnitudes = np.abs(np.asarray(values, dtype=float))
    magnitudes = magnitudes[np.isfinite(magnitudes)]
    limit = float(magnitudes.max()) if magnitudes.size else 0.0
    return limit if limit > 0.0 else 1.0


def _hide_ticks(ax: "Axes") -> None:
    """No ticks, light frame: for image tiles."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(_MUTED)


def _plot_weight_tiles(tiles: list[np.ndarray], labels: list[str], path: PathLike, title: str,
                       caption: str) -> Path:
    """Draw 2-D weight ``tiles`` in a near-square grid, each on its own diverging scale symmetric
    around 0 and titled by its entry of ``labels``, with ``caption`` under the grid; save as a PNG."""
    rows, columns = _grid_shape(len(tiles))
    tile_inches = max(0.55, min(1.1, 9.0 / columns))
    fig, axes = subplots(rows, columns, figsize=(columns * tile_inches + 0.4, rows * (tile_inches + 0.15) + 0.9),
                         layout="constrained", squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= len(tiles):
            ax.set_axis_off()
            continue
        limit = _symmetric_limit(tiles[index])
        ax.imshow(tiles[index], cmap=_WEIGHT_CMAP, vmin=-limit, vmax=limit, interpolation="nearest")
        _hide_ticks(ax)
        ax.set_title(labels[index], fontsize=7, color="0.35", pad=2)
    fig.supxlabel(caption, fontsize=9, color="0.35")
    if title:
        fig.suptitle(title, fontsize=13)
    return save_figure(fig, path)


def plot_first_layer_weights(weights: np.ndarray, path: PathLike, title: str = "", count: int = 64) -> Path:
    """Show what the first hidden units of a perceptron look for: their input weights as images.

    Args:
        weights: ``(784, n)`` first weight matrix; column ``j`` holds the 784 input weights of
            hidden unit ``j`` and is drawn as a 28 x 28 tile.
        path: where to write the PNG.
        title: optional figure title.
        count: the first ``min(count, n)`` hidden units are shown, in a near-square grid.

    Each tile has its own diverging colour scale symmetric around 0 (red positive, blue negative).
    Returns the path written.
    """
    matrix = np.asarray(weights, dtype=float)
    if matrix.ndim != 2 or matrix.shape[0] != IMAGE_PIXELS:
        raise ValueError(f"first-layer weights must be ({IMAGE_PIXELS}, n) (one column per hidden unit), "
                         f"got shape {matrix.shape}")
    if matrix.shape[1] == 0:
        raise ValueError(f"first-layer weights have no hidden units, got shape {matrix.shape}")
    if int(count) < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    units = matrix.shape[1]
    shown = min(int(count), units)
    tiles = [matrix[:, unit].reshape(IMAGE_SIDE, IMAGE_SIDE) for unit in range(shown)]
    which = f"hidden units 0-{shown - 1} of {units}" if shown < units else f"all {units} hidden units"
    caption = f"{which}, each its 784 input weights as 28 × 28\n{_WEIGHT_CAPTION}"
    return _plot_weight_tiles(tiles, [str(unit) for unit in range(shown)], path, title, caption)


def plot_conv_filters(weights: np.ndarray, path: PathLike, title: str = "") -> Path:
    """Show every filter of a convolution layer as a small image.

    Args:
        weights: ``(k, k, C_in, F)`` (NHWC): ``weights[i, j, c, f]`` multiplies input channel
            ``c`` at row offset ``i``, column offset ``j``, for filter ``f``. With ``C_in == 1``
            each filter is drawn as its ``k x k`` tile; with more input channels as the mean of
            its ``C_in`` tiles (the caption says so).
        path: where to write the PNG.
        title: optional figure title.

    Tiles are labelled with the filter index and each has its own diverging colour scale
    symmetric around 0 (red positive, blue negative). Returns the path written.
    """
    kernel = np.asarray(weights, dtype=float)
    if kernel.ndim != 4:
        raise ValueError(f"convolution weights must be 4-D (k, k, C_in, F), got shape {kernel.shape}")
    rows, columns, channels, filters = kernel.shape
    if min(kernel.shape) == 0:
        raise ValueError(f"convolution weights must not have an empty axis, got shape {kernel.shape}")
    if channels == 1:
        shown = kernel[:, :, 0, :]
        what = f"{filters} filters of {rows} × {columns}"
    else:
        shown = kernel.mean(axis=2)
        what = (f"{filters} filters of {rows} × {columns} × {channels}, "
                f"each shown as its mean over the {channels} input channels")
    tiles = [shown[:, :, index] for index in range(filters)]
    caption = f"{what}\n{_WEIGHT_CAPTION}"
    return _plot_weight_tiles(tiles, [str(index) for index in range(filters)], path, title, caption)


def _checked_feature_maps(maps: list[tuple[str, np.ndarray]], per_layer: int) -> list[tuple[str, np.ndarray]]:
    """``maps`` as ``(label, float array (H, W, F))`` pairs; ValueError for anything else."""
    if int(per_layer) < 1:
        raise ValueError(f"per_layer must be at least 1, got {per_layer}")
    layers: list[tuple[str, np.ndarray]] = []
    for label, values in maps:
        array = np.asarray(values, dtype=float)
        if array.ndim != 3:
            raise ValueError(f"feature map {label!r} must be 3-D (H, W, F), got shape {array.shape}")
        if array.shape[2] == 0:
            raise ValueError(f"feature map {label!r} has no channels, got shape {array.shape}")
        layers.append((str(label), array))
    return layers


def plot_feature_maps(image: np.ndarray, maps: list[tuple[str, np.ndarray]], path: PathLike,
                      title: str = "", per_layer: int = 8) -> Path:
    """Show one digit and what the convolution layers make of it: a row of channels per layer.

    Args:
        image: ``(784,)`` (or ``(28, 28)``) pixels of the digit, 0-255 or 0-1; drawn in the
            first column.
        maps: ``(label, array)`` per layer, ``array`` of shape ``(H, W, F)``: that layer's output
            (after its ReLU) for this one image. Each becomes a row of its first
            ``min(per_layer, F)`` channels, labelled like ``"conv 1 + relu"`` plus its shape.
        path: where to write the PNG.
        title: optional figure title.
        per_layer: at most this many channels per row.

    Channels are grayscale, darker meaning stronger, on a scale from 0 to the row's maximum.
    Returns the path written.
    """
    pixels = _as_image(image)
    layers = _checked_feature_maps(maps, per_layer)
    widest = max((min(int(per_layer), array.shape[2]) for _, array in layers), default=0)
    rows, columns = max(1, len(layers)), 1 + widest
    fig, axes = subplots(rows, columns, figsize=(2.6 + 2.0 + widest * 1.05, rows * 1.2 + 0.9),
                         layout="constrained", squeeze=False,
                         gridspec_kw={"width_ratios": [1.6] + [1.0] * widest})
    for ax in axes[:, 0]:  # the digit gets the whole first column
        ax.remove()
    digit_ax = fig.add_subplot(axes[0, 0].get_gridspec()[:, 0])
    show_digit(digit_ax, pixels)
    digit_ax.set_title("input (28x28)", fontsize=9)

    for row, (label, array) in enumerate(layers):
        height, width, channels = array.shape
        shown = min(int(per_layer), channels)
        finite = array[:, :, :shown][np.isfinite(array[:, :, :shown])]
        vmax = float(finite.max()) if finite.size else 0.0
        vmax = vmax if vmax > 0.0 else 1.0
        for column in range(1, columns):
            ax = axes[row, column]
            channel = column - 1
            if channel >= shown:
                ax.set_axis_off()
                continue
            ax.imshow(array[:, :, channel], cmap="gray_r", vmin=0.0, vmax=vmax, interpolation="nearest")
            _hide_ticks(ax)
            ax.set_title(f"ch {channel}", fontsize=7, color="0.35", pad=2)
        axes[row, 1].set_ylabel(f"{label} ({height}x{width}x{channels})", rotation=0, ha="right",
                                va="center", fontsize=9)
    for ax in axes[len(layers):, 1:].flat:  # no layers at all: only the digit
        ax.set_axis_off()
    fig.supxlabel("darker = stronger activation (scale per row: 0 to that row's maximum); "
                  f"first {int(per_layer)} channels per layer at most", fontsize=9, color="0.35")
    if title:
        fig.suptitle(title, fontsize=13)
    return save_figure(fig, path)
