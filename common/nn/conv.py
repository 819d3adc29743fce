"""Convolutional layers: ``Conv2D``, ``MaxPool2D``, ``Flatten`` and ``Reshape``, each with forward and backward.

Same conventions as ``common.nn.layers`` (``forward(x, training)``, ``backward(dout)`` returns
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

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from common.nn import parallel
from common.nn.layers import Layer


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
        self._cols: np.ndarray | None = None     # the patch matrix of the last training forward
        self._buffer: np.ndarray | None = None   # reused memory for it (see forward)
        self._padded_shape: tuple[int, ...] = ()

    @property
    def pad(self) -> int:
        """Zeros added on each side of ``H`` and ``W``: ``(k - 1) / 2`` for "same", 0 for "valid"."""
        return (self.params["W"].shape[0] - 1) // 2 if self.padding == "same" else 0

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """``x (B, H, W, C_in)`` -> ``out (B, H', W', C_out)``.

        Textbook: the sum above, a loop over every output pixel. Here (im2col): a view of every
        ``k x k x C_in`` window (``sliding_window_view``, no copy), copied once into a patch
        matrix ``cols (B*H'*W', k*k*C_in + 1)`` whose last column is all ones, then one product
        ``cols @ [W.reshape(k*k*C_in, C_out); b]``: with the bias as the last row of the weights
        (CS231n's "bias trick"), the product adds it too, so no pass over the output is needed
        for it, and ``backward``'s product gives ``db`` with ``dW``.
        In training the patch matrix is kept for ``backward`` and its memory reused by the next
        call (a fresh 10-100 MB array each step costs page faults: the gather alone was 2-3x
        slower, a whole training step ~5 %). In inference it is a temporary, so evaluating a big
        chunk does not leave a big buffer behind. The copy is split over the batch across threads
        (``common.nn.parallel``): NumPy copies on one core, the product uses them all.
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
        # A window row is k*C_in numbers long, an output row W'. With one input channel the window
        # rows are short (5 numbers for stage 06's first layer), so the patches are stored kernel
        # offset first, (k, k, C_in, B, H', W'), copying whole output rows, 4x faster; ``cols`` is
        # then the transpose of a C-ordered matrix, which the products read just as well.
        offset_first = k * c_in < out_w
        if offset_first:
            windows = windows.transpose(3, 4, 5, 0, 1, 2)
        rows, width = batch * out_h * out_w, k * k * c_in
        buffer = self._patch_memory(rows, width, offset_first, x.dtype, training)
        patches = (buffer[:width] if offset_first else buffer[:, :width]).reshape(windows.shape)

        def gather(rows: slice) -> None:
            np.copyto(patches[rows], windows[rows])

        parallel.for_slices(gather, len(windows), patches.size)
        cols = buffer.T if offset_first else buffer
        self._cols = cols if training else None
        weights_and_bias = np.concatenate((weights.reshape(width, c_out), self.params["b"][None]))
        out = cols @ weights_and_bias
        return out.reshape(batch, out_h, out_w, c_out)

    def _patch_memory(self, rows: int, width: int, offset_first: bool, dtype: np.dtype,
                      training: bool) -> np.ndarray:
        """Memory for the patch matrix, its last column (offset first: its last row) already all ones.

        Returns ``(rows, width + 1)``, or ``(width + 1, rows)`` when ``offset_first``. The ones (the
        bias trick) are written when the memory is made; each call overwrites only the patches.
        In training the memory is kept and handed out again while the shape stays the same.
        Row-major rows are padded to a multiple of 16 numbers (64 bytes) so that each starts on a
        cache line: the products then read the matrix a few per cent faster (measured); the
        returned matrix is a view that leaves the padding out.
        """
        shape = (width + 1, rows) if offset_first else (rows, -(-(width + 1) // 16) * 16)
        if training and self._buffer is not None and self._buffer.shape == shape and self._buffer.dtype == dtype:
            buffer = self._buffer
        else:
            buffer = np.empty(shape, dtype=dtype)
            if offset_first:
                buffer[width] = 1
            else:
                buffer[:, width] = 1
            if training:
                self._buffer = buffer
        return buffer if offset_first else buffer[:, :width + 1]

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        """``dout (B, H', W', C_out)`` -> ``dx (B, H, W, C_in)``; fills ``grads["W"]`` and ``grads["b"]``.

        ``dW[i, j, c, f] = sum_{n, h, w} x_pad[n, h+i, w+j, c] * dout[n, h, w, f]`` and ``db[f]`` =
        sum of ``dout`` over ``B, H', W'``: one product ``cols.T @ dout`` over the patches, whose
        last row (from ``cols``' column of ones) is ``db``.
        ``dx``: each input pixel receives from every output pixel whose window covers it,
        ``dx_pad[n, h+i, w+j, c] += dout[n, h, w, f] * W[i, j, c, f]`` -- done as ``k*k`` slice-adds
        of ``dout @ W[i, j].T``, one per kernel offset, then the padding is cut off. The ``k*k``
        products are one batched ``np.matmul`` (each result contiguous, so each slice-add reads
        long runs), and the slice-adds are split over the batch across threads. (The same sum as
        a "full" convolution of ``dout`` with the flipped kernel, or as one product ``dout @ W.T``
        folded back by col2im: both measured 1.1-2x slower here.)
        """
        if self._cols is None:
            raise RuntimeError("Conv2D.backward needs a forward(x, training=True) first")
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
        contributions = contributions.reshape(k, k, batch, out_h, out_w, c_in)
        dx_pad = np.zeros(self._padded_shape, dtype=dout.dtype)

        def scatter(images: slice) -> None:
            for i in range(k):
                for j in range(k):
                    dx_pad[images, i:i + out_h, j:j + out_w, :] += contributions[i, j, images]

        parallel.for_slices(scatter, batch, k * k * contributions[0, 0].size)
        p = self.pad
        return dx_pad[:, p:dx_pad.shape[1] - p, p:dx_pad.shape[2] - p, :]


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

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """``x (B, H, W, C)`` -> ``out (B, H // 2, W // 2, C)``.

        Textbook: ``windows.max(axis=(2, 4))``. Here the element-wise maximum of the four window
        elements, the same numbers about 3x faster (NumPy reduces over two separated axes slowly),
        split over the batch across threads. In training the maximum is found as a small
        tournament that also records the winner of each window for ``backward`` (its element's
        index in ``WINDOW``): the right element of a pair wins only if it is strictly larger, and
        the bottom pair only if its maximum is strictly larger than the top pair's, so the first
        maximum in row-major order wins every tie.
        """
        if x.ndim != 4 or x.shape[1] < 2 or x.shape[2] < 2:
            raise ValueError(f"MaxPool2D: expected input (B, H, W, C) with H, W >= 2, got {x.shape}")
        w = self._as_windows(x)
        out = np.empty(w[:, :, 0, :, 0].shape, dtype=x.dtype)
        winner = np.empty(out.shape, dtype=np.uint8) if training else None

        def pool(images: slice) -> None:
            o = out[images]
            top_left, top_right = w[images, :, 0, :, 0], w[images, :, 0, :, 1]
            bottom_left, bottom_right = w[images, :, 1, :, 0], w[images, :, 1, :, 1]
            if winner is None:
                np.maximum(top_left, top_right, out=o)
                np.maximum(o, bottom_left, out=o)
                np.maximum(o, bottom_right, out=o)
                return
            right_wins_top = np.greater(top_right, top_left)
            np.maximum(top_left, top_right, out=o)
            right_wins_bottom = np.greater(bottom_right, bottom_left)
            bottom = np.maximum(bottom_left, bottom_right)
            bottom_wins = np.greater(bottom, o)
            np.maximum(o, bottom, out=o)
            # winner = 2 * bottom_wins + (right_wins_bottom if bottom_wins else right_wins_top), in
            # bytes of 0 and 1. The choice is made with bit operations: ``np.where`` or ``np.copyto``
            # with ``where=`` took 15-25x as long here (measured), over a third of the whole tournament.
            top, bottom_pair, wins = (a.view(np.uint8) for a in (right_wins_top, right_wins_bottom, bottom_wins))
            code = winner[images]
            np.bitwise_xor(top, bottom_pair, out=code)  # 1 where the pairs' winners differ ...
            code &= wins                                  # ... and the bottom pair won:
            code ^= top                                   # flips top's answer into bottom_pair's there
            code += wins
            code += wins

        parallel.for_slices(pool, len(x), x.size)
        self._winner, self._x_shape = winner, x.shape
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout (B, H // 2, W // 2, C)`` -> ``dx (B, H, W, C)``, nonzero at one maximum per window.

        Element ``WINDOW[code]`` of every window gets ``dout`` where the window's winner is
        ``code``, else 0: four products with a mask, which read the one-byte winners rather than
        the input again (measured: stage 06's whole training step about 7 % faster than comparing
        the input with the maxima here, although the forward pass does more work).
        """
        if self._winner is None:
            raise RuntimeError("MaxPool2D.backward needs a forward(x, training=True) first")
        dx = np.zeros(self._x_shape, dtype=dout.dtype) if self._x_shape[1] % 2 or self._x_shape[2] % 2 \
            else np.empty(self._x_shape, dtype=dout.dtype)  # odd sizes: the dropped row / column stays 0
        dx_windows = self._as_windows(dx)  # a view: writing into it writes into dx
        winner = self._winner

        def route(images: slice) -> None:
            for code, (i, j) in enumerate(self.WINDOW):
                np.multiply(dout[images], winner[images] == code, out=dx_windows[images, :, i, :, j, :])

        parallel.for_slices(route, len(dout), dx.size)
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

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
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

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """``x (B, H, W, C)`` -> ``(B, H*W*C)``: a view when ``x`` is contiguous."""
        self._shape = x.shape
        return x.reshape(len(x), math.prod(x.shape[1:]))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout (B, H*W*C)`` -> ``(B, H, W, C)``."""
        return dout.reshape(self._shape)
