"""The figures every training stage writes: loss, accuracy, confusion matrix, digits.

Each ``plot_*`` function draws one figure with matplotlib's object-oriented API (no pyplot),
saves it as one PNG through :func:`save_figure` (atomically: a half-written file is never seen)
and returns the :class:`~pathlib.Path` it wrote. Nothing here opens a window or touches global
random state.

Data conventions
----------------
* images: ``(N, 784)`` arrays, either ``uint8`` 0-255 or float in ``[0, 1]`` or float 0-255. Each
  image is shown as 28 x 28 pixels on a 0..1 scale if its maximum is at most 1, else 0..255.
* labels: integer arrays of shape ``(N,)``.
* history: a list of dicts, one per epoch, with keys ``epoch`` (int, 1-based), ``loss`` (float),
  ``train_accuracy``, ``test_accuracy`` and optionally ``val_accuracy`` (fractions in [0, 1] or
  ``None`` when not evaluated that epoch), ``seconds`` (cumulative) and ``lr``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, Union

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from common.files import atomic_open
from common.idx import IMAGE_SIDE

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "DPI",
    "subplots",
    "save_figure",
    "plot_loss",
    "plot_accuracy",
    "plot_confusion_matrix",
    "plot_misclassified",
    "plot_prediction_example",
    "plot_digit",
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


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float],
             layout: str | None = "constrained", **kwargs: Any) -> tuple[Figure, Any]:
    """A new figure and its axes, as ``plt.subplots`` gives, but without pyplot: no global
    figure registry, no window, no backend to choose, nothing to close."""
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


def _show_digit(ax: "Axes", image: Any) -> None:
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
        _show_digit(ax, pixels[index])
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
    _show_digit(digit_ax, pixels)
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
    _show_digit(ax, pixels)
    ax.set_xlabel("28 × 28 pixels", fontsize=9, color="0.35")
    if title:
        ax.set_title(title, fontsize=12)
    return save_figure(fig, path)
