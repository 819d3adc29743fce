"""Tests for common.nn.parallel and the layers that use it: splitting element-wise work over threads
gives exactly the numbers of one thread (Conv2D, MaxPool2D, ReLU, Adam), every slice is covered once,
errors in a worker reach the caller; and max-pooling commutes with ReLU (stage 06 pools first)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from common.nn import parallel
from common.nn.conv import Conv2D, MaxPool2D
from common.nn.layers import ReLU
from common.nn.optimizers import Adam, ParamGroup


@pytest.fixture
def threads(monkeypatch):
    """Split everything, however small, over 3 threads (more than the 2 pieces a 2-core run uses)."""
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 1)
    monkeypatch.setattr(parallel, "THREADS", 3)
    monkeypatch.setattr(parallel, "_pool", None)


def test_for_slices_covers_every_index_once_across_threads(threads):
    seen = np.zeros(10, dtype=int)
    names = set()

    def work(rows: slice) -> None:
        seen[rows] += 1
        names.add(threading.current_thread().name)

    parallel.for_slices(work, 10, elements=10)
    assert seen.tolist() == [1] * 10
    assert threading.current_thread().name in names and len(names) >= 2  # the caller and a worker


def test_for_slices_small_work_runs_once_in_the_calling_thread(monkeypatch):
    monkeypatch.setattr(parallel, "THREADS", 4)
    calls = []
    parallel.for_slices(lambda rows: calls.append((rows, threading.current_thread().name)), 100,
                        elements=parallel.MIN_ELEMENTS - 1)
    assert calls == [(slice(0, 100), threading.current_thread().name)]


def test_for_slices_fewer_rows_than_threads(threads):
    calls = []
    parallel.for_slices(lambda rows: calls.append((rows.start, rows.stop)), 2, elements=10**9)
    assert sorted(calls) == [(0, 1), (1, 2)]


def test_an_error_in_a_worker_reaches_the_caller(threads):
    def work(rows: slice) -> None:
        if rows.start == 0:  # the first piece runs in a worker thread
            raise ValueError("broken slice")

    with pytest.raises(ValueError, match="broken slice"):
        parallel.for_slices(work, 9, elements=9)


def test_num_threads_follows_the_blas_setting(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert parallel.num_threads() == 3
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert parallel.num_threads() == 1
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert parallel.num_threads() >= 1


def _conv_pool_relu_pass(rng: np.random.Generator) -> list[np.ndarray]:
    """Forward and backward of Conv2D (same padding, not first) -> MaxPool2D -> ReLU in float32."""
    conv = Conv2D(rng.standard_normal((3, 3, 2, 4)).astype(np.float32),
                  rng.standard_normal(4).astype(np.float32), "same")
    pool, relu = MaxPool2D(), ReLU()
    x = rng.standard_normal((7, 9, 9, 2)).astype(np.float32)
    x[:, :4] = 0.0  # blank rows: windows of equal outputs (ties) after the convolution
    out = relu.forward(pool.forward(conv.forward(x, training=True), True), True)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dx = conv.backward(pool.backward(relu.backward(dout)))
    return [out, dx, conv.grads["W"].copy(), conv.grads["b"].copy(), conv.forward(x)]


def test_threaded_layers_give_exactly_the_single_thread_numbers(monkeypatch):
    single = _conv_pool_relu_pass(np.random.default_rng(0))
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 1)
    monkeypatch.setattr(parallel, "THREADS", 3)
    monkeypatch.setattr(parallel, "_pool", None)
    threaded = _conv_pool_relu_pass(np.random.default_rng(0))
    for one, many in zip(single, threaded):
        assert one.dtype == many.dtype == np.float32
        np.testing.assert_array_equal(one, many)


def test_threaded_adam_gives_exactly_the_single_thread_numbers(monkeypatch):
    def run() -> np.ndarray:
        rng = np.random.default_rng(1)
        param = rng.standard_normal(1001).astype(np.float32)
        optimizer = Adam(lr=0.01, weight_decay=0.1)
        for _ in range(3):
            optimizer.step([ParamGroup("weights", param, rng.standard_normal(1001).astype(np.float32), decay=True)])
        return param

    single = run()
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 1)
    monkeypatch.setattr(parallel, "THREADS", 3)
    monkeypatch.setattr(parallel, "_pool", None)
    np.testing.assert_array_equal(single, run())


def test_maxpool_then_relu_equals_relu_then_maxpool_with_the_same_gradient():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 6, 6, 3))
    x[0, :2] = -1.0  # windows whose maximum is negative: ReLU after pooling zeroes them
    x[1, :2] = 0.5   # tied positive maxima: both orders give the first one the gradient
    dout = rng.standard_normal((4, 3, 3, 3))
    pool_first, relu_after = MaxPool2D(), ReLU()
    relu_first, pool_after = ReLU(), MaxPool2D()
    out_a = relu_after.forward(pool_first.forward(x, True), True)
    out_b = pool_after.forward(relu_first.forward(x, True), True)
    np.testing.assert_array_equal(out_a, out_b)
    np.testing.assert_array_equal(pool_first.backward(relu_after.backward(dout)),
                                  relu_first.backward(pool_after.backward(dout)))
