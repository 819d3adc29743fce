"""Convolutional layers: ``Conv2D``, ``MaxPool2D``, ``Flatten`` and ``Reshape``, each with forward and backward.

Same conventions as ``common.nn.layers`` (``forward(x, training, keep_for_backward)``, ``backward(dout)`` returns
dLoss/dInput, ``params`` / ``grads`` dicts with matching keys), for images in the **NHWC** layout:
a batch has shape ``(B, H, W, C)``, channels last. Why NHWC rather than NCHW (``(B, C, H, W)``):

* the ``k x k`` window of output pixel ``(n, h, w)`` covers, in each of its ``k`` rows, ``k * C``
  numbers that sit next to each other in memory (``k`` neighbouring pixels, all their channels).
  Gathering the windows into a patch matrix (im2col) therefore copies long contiguous runs; in
  NCHW each run is only ``k`` numbers long (measured with 16-32 channels: the gather 4-10x
  slower, the whole forward pass 1.5-2x slower);
* the convolution is then one matrix product ``(B*H'*W', k*k*C) @ (k*k*C, F)`` whose result
  ``(B*H'*W', F)`` *is* the output ``(B, H', W', F)`` after a free reshape: already channels
  last, the next layer's input layout, with no transpose copy (NCHW needs one per layer);
* the bias broadcasts over the last axis, pooling reshapes ``H`` and ``W`` with ``C`` trailing,
  and ``Flatten`` to a ``Dense`` layer is a free reshape.

The weights of a ``Conv2D`` have shape ``(k, k, C_in, C_out)``: ``W[i, j, c, f]`` multiplies
input channel ``c`` at row offset ``i`` and column offset ``j`` of the window, for output channel
``f``. ``W.reshape(k*k*C_in, C_out)`` is then the patch matrix's partner, with no copy.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from common.nn import parallel
from common.nn.layers import Layer


class PatchLayout(NamedTuple):
    """How the patch matrix ``cols (B*H'*W', k*k*C_in + 1)`` sits in memory; the numbers are the same either way."""

    offset_first: bool  # stored transposed, (k*k*C_in + 1, B*H'*W'): one kernel offset's patches per row
    row_stride: int     # numbers per stored row of the row-major layout: k*k*C_in + 1 rounded up to 16


def choose_patch_layout(k: int, c_in: int, out_w: int) -> PatchLayout:
    """The layout that makes the patch copy and the products fastest (measured on a two-convolution digit network).

    * Offset first when a window row (``k * C_in`` numbers) is shorter than an output row (``W'``):
      copying ``(k, k, C_in, B, H', W')`` moves whole output rows, 4x faster than short window rows
      (the first layer of a digit network, with one input channel); the products read the
      transposed matrix just as well.
    * Otherwise row-major, each row padded to a multiple of 16 numbers (64 bytes), so that every row
      starts on a cache line: the products then read the matrix a few per cent faster.
    """
    width = k * k * c_in + 1  # the patch and the bias trick's 1
    return PatchLayout(offset_first=k * c_in < out_w, row_stride=-(-width // 16) * 16)


def gather_patches(windows: np.ndarray, cols_memory: np.ndarray, layout: PatchLayout) -> np.ndarray:
    """Copy every window into the patch matrix; returns ``cols (B*H'*W', k*k*C_in + 1)`` (a view).

    ``windows (B, H', W', k, k, C_in)``: a view of the padded input, one window per output pixel.
    ``cols_memory``: from :meth:`Conv2D._patch_memory`, its ones already in place. The copy is split
    across threads (``parallel.by_rows``): NumPy copies on one core, the product uses them all.
    """
    width = math.prod(windows.shape[3:])
    if layout.offset_first:
        windows = windows.transpose(3, 4, 5, 0, 1, 2)
        parallel.by_rows(np.copyto, cols_memory[:width].reshape(windows.shape), windows)
        return cols_memory.T
    parallel.by_rows(np.copyto, cols_memory[:, :width].reshape(windows.shape), windows)
    return cols_memory


def add_window_gradients(dx_pad: np.ndarray, contributions: np.ndarray) -> None:
    """``dx_pad (B, H, W, C_in) += contributions`` slid back into place, offset by offset (col2im).

    ``contributions (B, k, k, H', W', C_in)``: ``[:, i, j]`` is what every output pixel sends to the
    input pixel at offset ``(i, j)`` of its window, ``dout @ W[i, j].T``.
    """
    k, out_h, out_w = contributions.shape[1], contributions.shape[3], contributions.shape[4]
    for i in range(k):
        for j in range(k):
            dx_pad[:, i:i + out_h, j:j + out_w, :] += contributions[:, i, j]


class Conv2D(Layer):
    """2-D convolution (strictly: cross-correlation, as in every deep-learning library), stride 1.

    ``out[n, h, w, f] = bias[f] + sum_{i, j, c} x_pad[n, h + i, w + j, c] * W[i, j, c, f]``

    ``weights (k, k, C_in, C_out)`` with ``k`` odd, ``bias (C_out,)``. ``padding="valid"``: no
    padding, ``(B, H, W, C_in) -> (B, H-k+1, W-k+1, C_out)``; ``padding="same"``: ``(k-1)/2``
    zeros on each side, ``(B, H, W, C_in) -> (B, H, W, C_out)``. Like ``Dense``, a first layer sets
    ``needs_input_grad = False`` and its ``backward`` returns ``None`` (it still fills ``grads``).
    """

    def __init__(self, weights: np.ndarray, bias: np.ndarray, padding: str = "valid") -> None:
        super().__init__()
        if weights.ndim != 4 or weights.shape[0] != weights.shape[1] or weights.shape[0] % 2 == 0:
            raise ValueError(f"Conv2D: weights must be (k, k, C_in, C_out) with k odd, got {weights.shape}")
        if bias.shape != (weights.shape[3],):
            raise ValueError(f"Conv2D: weights {weights.shape} and bias {bias.shape} do not match")
        if padding not in ("valid", "same"):
            raise ValueError(f"Conv2D: padding must be 'valid' or 'same', got {padding!r}")
        self.params = {"W": weights, "b": bias}
        self.grads = {"W": np.zeros_like(weights), "b": np.zeros_like(bias)}
        self.padding = padding
        self.needs_input_grad = True
        self._cols: np.ndarray | None = None     # the patch matrix, kept for backward
        self._buffer: np.ndarray | None = None   # reused memory for it (see _patch_memory)
        self._padded_shape: tuple[int, ...] = ()

    @property
    def pad(self) -> int:
        """Zeros added on each side of ``H`` and ``W``: ``(k - 1) / 2`` for "same", 0 for "valid"."""
        return (self.params["W"].shape[0] - 1) // 2 if self.padding == "same" else 0

    def forward(self, x: np.ndarray, training: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        """``x (B, H, W, C_in)`` -> ``out (B, H', W', C_out)``.

        Textbook: ``reference.conv_forward``, a loop over every output pixel. Here (im2col): a view
        of every ``k x k x C_in`` window (``sliding_window_view``, no copy), copied once into a patch
        matrix ``cols (B*H'*W', k*k*C_in + 1)`` whose last column is all ones, then one product
        ``cols @ [W.reshape(k*k*C_in, C_out); b]``: with the bias as the last row of the weights
        (CS231n's "bias trick"), the product adds it too, and ``backward``'s product gives ``db``
        with ``dW``. The matrix's layout in memory: :func:`choose_patch_layout`.
        """
        weights = self.params["W"]
        k, _, c_in, c_out = weights.shape
        if x.ndim != 4 or x.shape[3] != c_in:
            raise ValueError(f"Conv2D: expected input (B, H, W, {c_in}), got {x.shape}")
        p = self.pad
        if p:
            x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        self._padded_shape = x.shape
        # (B, H', W', C, k, k) view -> (B, H', W', k, k, C), the order of W's first three axes
        windows = sliding_window_view(x, (k, k), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3)
        batch, out_h, out_w = windows.shape[:3]
        keep = training or keep_for_backward
        layout = choose_patch_layout(k, c_in, out_w)
        memory = self._patch_memory(batch * out_h * out_w, k * k * c_in, layout, x.dtype, keep)
        cols = gather_patches(windows, memory, layout)
        self._cols = cols if keep else None
        weights_and_bias = np.concatenate((weights.reshape(k * k * c_in, c_out), self.params["b"][None]))
        out = cols @ weights_and_bias
        return out.reshape(batch, out_h, out_w, c_out)

    def _patch_memory(self, rows: int, width: int, layout: PatchLayout, dtype: np.dtype, keep: bool) -> np.ndarray:
        """Memory for the patch matrix, its ones (the bias trick) already written: ``(rows, width + 1)``,
        or ``(width + 1, rows)`` offset first.

        Kept for backward (``keep``), the memory is handed out again while the shape stays the same,
        and only the patches are rewritten: a fresh 10-100 MB array each training step costs page
        faults (measured: the copy alone 2-3x slower, a whole step about 5 %). Otherwise it is a
        temporary, so evaluating a big chunk does not leave a big buffer behind.
        """
        shape = (width + 1, rows) if layout.offset_first else (rows, layout.row_stride)
        if keep and self._buffer is not None and self._buffer.shape == shape and self._buffer.dtype == dtype:
            buffer = self._buffer
        else:
            buffer = np.empty(shape, dtype=dtype)
            if layout.offset_first:
                buffer[width] = 1
            else:
                buffer[:, width] = 1
            if keep:
                self._buffer = buffer
        return buffer if layout.offset_first else buffer[:, :width + 1]

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """``dout (B, H', W', C_out)`` -> ``dx (B, H, W, C_in)``; fills ``grads["W"]`` and ``grads["b"]``.

        Textbook: ``reference.conv_backward``. Here ``dW`` and ``db`` come from one product over the
        patches, ``cols.T @ dout``, whose last row (from ``cols``' column of ones) is ``db``.
        ``dx``: each input pixel receives from every output pixel whose window covers it,
        ``dx_pad[n, h+i, w+j, c] += dout[n, h, w, f] * W[i, j, c, f]``, done as ``k*k`` products
        ``dout @ W[i, j].T`` (one batched ``np.matmul``) slid back into place by
        :func:`add_window_gradients`, split over the batch across threads, then the padding is cut
        off. (The same sum as the reference's "full" convolution with the flipped kernel, or as one
        product ``dout @ W.T`` folded back by col2im: both measured 1.1-2x slower here.)
        """
        if self._cols is None:
            raise RuntimeError("Conv2D.backward needs a forward pass in training (or with keep_for_backward) first")
        weights = self.params["W"]
        k, _, c_in, c_out = weights.shape
        dout2d = dout.reshape(-1, c_out)
        grads_and_bias = self._cols.T @ dout2d  # (k*k*C_in + 1, C_out): dW's rows, then db
        np.copyto(self.grads["W"], grads_and_bias[:-1].reshape(k, k, c_in, c_out))
        np.copyto(self.grads["b"], grads_and_bias[-1])
        if not self.needs_input_grad:
            return None
        batch, out_h, out_w = dout.shape[:3]
        # contributions[i * k + j] = dout @ W[i, j].T, shape (B*H'*W', C_in), for every offset at once
        contributions = np.matmul(dout2d, weights.reshape(k * k, c_in, c_out).transpose(0, 2, 1))
        contributions = contributions.reshape(k, k, batch, out_h, out_w, c_in).transpose(2, 0, 1, 3, 4, 5)
        dx_pad = np.zeros(self._padded_shape, dtype=dout.dtype)
        parallel.by_rows(add_window_gradients, dx_pad, contributions)
        p = self.pad
        return dx_pad[:, p:dx_pad.shape[1] - p, p:dx_pad.shape[2] - p, :]


def pool_tournament(windows: np.ndarray, out: np.ndarray, winner: np.ndarray | None) -> None:
    """The maximum of each 2x2 window into ``out``, and in ``winner`` which element won.

    ``windows (B, H // 2, 2, W // 2, 2, C)``, ``out`` and ``winner (B, H // 2, W // 2, C)``; ``winner``
    (uint8, the element's index in ``MaxPool2D.WINDOW``) may be None (inference: maxima only).
    Textbook: ``reference.maxpool_forward``, ``windows.max(axis=(2, 4))``; the element-wise maximum
    of the four elements gives the same numbers about 3x faster (NumPy reduces over two separated
    axes slowly). The winner is found as a small tournament: the right element of a pair wins only
    if it is strictly larger, and the bottom pair only if its maximum is strictly larger than the
    top pair's, so the first maximum in row-major order wins every tie (as ``argmax`` in the
    reference's backward).
    """
    top_left, top_right = windows[:, :, 0, :, 0], windows[:, :, 0, :, 1]
    bottom_left, bottom_right = windows[:, :, 1, :, 0], windows[:, :, 1, :, 1]
    if winner is None:
        np.maximum(top_left, top_right, out=out)
        np.maximum(out, bottom_left, out=out)
        np.maximum(out, bottom_right, out=out)
        return
    right_wins_top = np.greater(top_right, top_left)
    np.maximum(top_left, top_right, out=out)
    right_wins_bottom = np.greater(bottom_right, bottom_left)
    bottom = np.maximum(bottom_left, bottom_right)
    bottom_wins = np.greater(bottom, out)
    np.maximum(out, bottom, out=out)
    # winner = 2 * bottom_wins + (right_wins_bottom if bottom_wins else right_wins_top), in bytes of
    # 0 and 1. The choice is made with bit operations: ``np.where`` or ``np.copyto`` with ``where=``
    # took 15-25x as long here (measured), over a third of the whole tournament.
    top, bottom_pair, wins = (a.view(np.uint8) for a in (right_wins_top, right_wins_bottom, bottom_wins))
    np.bitwise_xor(top, bottom_pair, out=winner)  # 1 where the pairs' winners differ ...
    winner &= wins                                 # ... and the bottom pair won:
    winner ^= top                                  # flips top's answer into bottom_pair's there
    winner += wins
    winner += wins


def route_to_winners(dout: np.ndarray, winner: np.ndarray, dx_windows: np.ndarray) -> None:
    """Each window's gradient to its recorded winner, 0 to the other three elements.

    ``dout`` and ``winner (B, H // 2, W // 2, C)``, ``dx_windows (B, H // 2, 2, W // 2, 2, C)`` (a
    view of ``dx``): element ``WINDOW[code]`` of every window gets ``dout`` where the winner is ``code``.
    """
    for code, (i, j) in enumerate(MaxPool2D.WINDOW):
        np.multiply(dout, winner == code, out=dx_windows[:, :, i, :, j, :])


class MaxPool2D(Layer):
    """2x2 max pooling, stride 2: ``(B, H, W, C) -> (B, H // 2, W // 2, C)``.

    Odd ``H`` or ``W``: the last row or column is dropped (floor, as in PyTorch) and gets a zero
    gradient. Backward sends each window's gradient to exactly **one** element, the maximum;
    when several tie, the first in row-major order within the window (top-left, top-right,
    bottom-left, bottom-right) takes it all. At a tie the max has no derivative; any split that
    sums to ``dout`` is a valid subgradient, but copying ``dout`` to every tied element is not
    (it counts the window's gradient twice). Ties are common after a ReLU (windows of zeros) and
    in blank parts of an image (windows of equal numbers).
    """

    # The window elements in row-major order: WINDOW[code] = (row, column) within the window.
    WINDOW = ((0, 0), (0, 1), (1, 0), (1, 1))

    def __init__(self) -> None:
        super().__init__()
        self._winner: np.ndarray | None = None  # (B, H // 2, W // 2, C) uint8: which element won
        self._x_shape: tuple[int, ...] = ()

    @staticmethod
    def _as_windows(x: np.ndarray) -> np.ndarray:
        """``(B, H, W, C)`` -> ``(B, H//2, 2, W//2, 2, C)``: ``[:, r, i, s, j, :]`` is element ``(i, j)`` of window ``(r, s)``."""
        batch, height, width, channels = x.shape
        cropped = x[:, :height // 2 * 2, :width // 2 * 2, :]
        return cropped.reshape(batch, height // 2, 2, width // 2, 2, channels)

    def forward(self, x: np.ndarray, training: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        """``x (B, H, W, C)`` -> ``out (B, H // 2, W // 2, C)``: :func:`pool_tournament`, split over the
        batch across threads; kept for backward, each window's winner (one byte) rather than ``x``."""
        if x.ndim != 4 or x.shape[1] < 2 or x.shape[2] < 2:
            raise ValueError(f"MaxPool2D: expected input (B, H, W, C) with H, W >= 2, got {x.shape}")
        windows = self._as_windows(x)
        out = np.empty(windows[:, :, 0, :, 0].shape, dtype=x.dtype)
        winner = np.empty(out.shape, dtype=np.uint8) if training or keep_for_backward else None
        parallel.by_rows(pool_tournament, windows, out, winner)
        self._winner, self._x_shape = winner, x.shape
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout (B, H // 2, W // 2, C)`` -> ``dx (B, H, W, C)``, nonzero at one maximum per window.

        Textbook: ``reference.maxpool_backward``, which compares the input with the maxima again.
        Here :func:`route_to_winners` reads the one-byte winners the forward pass recorded (measured:
        a whole training step of a two-convolution network about 7 % faster, although the forward
        pass does more work).
        """
        if self._winner is None:
            raise RuntimeError("MaxPool2D.backward needs a forward pass in training (or with keep_for_backward) first")
        dx = np.zeros(self._x_shape, dtype=dout.dtype) if self._x_shape[1] % 2 or self._x_shape[2] % 2 \
            else np.empty(self._x_shape, dtype=dout.dtype)  # odd sizes: the dropped row / column stays 0
        parallel.by_rows(route_to_winners, dout, self._winner, self._as_windows(dx))
        return dx


class Reshape(Layer):
    """``(B, 784) -> (B, 28, 28, 1)`` (any ``(B, D) -> (B, *shape)``), and back; no parameters.

    The suite keeps one data layout everywhere, ``X (N, 784)``; a convolutional network's first
    layer turns each row back into the image it came from. No copy: a reshape of contiguous rows.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(int(n) for n in shape)
        self._in_shape: tuple[int, ...] = ()

    def forward(self, x: np.ndarray, training: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        """``x (B, D)`` with ``D = prod(shape)`` -> ``(B, *shape)``."""
        if x.ndim != 2 or x.shape[1] != math.prod(self.shape):
            raise ValueError(f"Reshape: expected input (B, {math.prod(self.shape)}), got {x.shape}")
        self._in_shape = x.shape
        return x.reshape(len(x), *self.shape)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout (B, *shape)`` -> ``(B, D)``."""
        return dout.reshape(self._in_shape)


class Flatten(Layer):
    """``(B, H, W, C) -> (B, H*W*C)`` for a ``Dense`` layer, and back; no parameters.

    The order of the features is NHWC's (channel fastest), so a Dense layer after it sees
    ``x[n, h, w, c]`` at column ``(h * W + w) * C + c``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] = ()

    def forward(self, x: np.ndarray, training: bool = False, keep_for_backward: bool = False) -> np.ndarray:
        """``x (B, H, W, C)`` -> ``(B, H*W*C)``: a view when ``x`` is contiguous."""
        self._shape = x.shape
        return x.reshape(len(x), math.prod(x.shape[1:]))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout (B, H*W*C)`` -> ``(B, H, W, C)``."""
        return dout.reshape(self._shape)
