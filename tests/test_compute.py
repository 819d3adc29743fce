"""common.compute: the multiply-adds of a network, counted by hand for small cases."""
from __future__ import annotations

import pytest

from common.compute import forward_multiply_adds, training_gflop, training_multiply_adds_per_example
from common.nn.architecture import Architecture


def test_a_perceptron_costs_fan_in_times_fan_out_per_layer():
    network = Architecture((784, 128, 64, 10))
    assert forward_multiply_adds(network) == [784 * 128, 128 * 64, 64 * 10]
    # forward + weight gradients + the input gradients of layers 2 and 3 (the pixels need none)
    assert training_multiply_adds_per_example(network) == 2 * 109_184 + 128 * 64 + 64 * 10 == 227_200


def test_a_convolution_costs_every_filter_weight_at_every_output_position():
    network = Architecture((784, 10), layers=("reshape 28x28x1", "conv 4 5x5 valid", "maxpool", "relu",
                                             "conv 6 3x3 same", "flatten", "dense 10"))
    first = 24 * 24 * 4 * (5 * 5 * 1)      # 24x24 outputs, 4 filters of 5x5x1
    second = 12 * 12 * 6 * (3 * 3 * 4)     # after pooling: 12x12, 6 filters of 3x3x4, padded to keep 12x12
    dense = 12 * 12 * 6 * 10
    assert forward_multiply_adds(network) == [first, second, dense]
    assert training_multiply_adds_per_example(network) == 2 * (first + second + dense) + second + dense


def test_training_gflop_counts_two_flops_per_multiply_add_for_every_example_seen():
    network = Architecture((784, 128, 64, 10))
    assert training_gflop(network, 60_000) == pytest.approx(2 * 227_200 * 60_000 / 1e9)
    assert training_gflop(network, 0) == 0.0


def test_layers_without_weights_cost_nothing():
    network = Architecture((784, 10), layers=("reshape 28x28x1", "maxpool", "flatten", "relu", "dense 10"))
    assert forward_multiply_adds(network) == [14 * 14 * 10]
    assert training_multiply_adds_per_example(network) == 2 * 14 * 14 * 10


def test_the_comparison_counts_a_run_from_its_record():
    """A full-batch stage's 'epochs' are iterations, each over all its training images."""
    from experiments import compare

    record = {"settings": {"name": "x", "title": "x", "adds": "x", "sizes": [784, 1000, 10], "epochs": 500,
                           "batch_size": None, "optimizer": "gd", "lr": 0.002, "train_size": 1000},
              "train_size": 1000}
    expected = 2 * (2 * (784 * 1000 + 1000 * 10) + 1000 * 10) * 500 * 1000 / 1e9
    assert compare.run_gflop(record) == pytest.approx(expected)
