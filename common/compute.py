"""How much arithmetic a network costs: multiply-adds per example, and the GFLOP of a training run.

Only the matrix products are counted (docs/math.md#training-compute): they are nearly all of the
work, and the count is what the benchmarks divide by a measured time to get GFLOP/s. Per example,

* forward: a dense layer costs ``fan_in * fan_out`` multiply-adds, a convolution
  ``H' * W' * C_out * k * k * C_in`` (every filter weight at every output position);
* backward: as many again for the weight gradients, and as many again for the input gradients of
  every weighted layer but the first (nothing needs the gradient of the pixels);
* 2 FLOPs per multiply-add.

Biases, activations, pooling, batch normalization, the softmax and the optimizer's update are left out (each is a few
operations per value against hundreds per weight in a product).
"""
from __future__ import annotations

import math

from common.nn.architecture import Architecture


def forward_multiply_adds(architecture: Architecture) -> list[int]:
    """Multiply-adds of one example's forward pass through each layer with weights, first to last."""
    counts = []
    for layer in architecture.walk:
        if layer.kind == "dense":
            counts.append(math.prod(layer.param_shapes["W"]))
        elif layer.kind == "conv":
            out_height, out_width, filters = layer.out_shape
            counts.append(out_height * out_width * filters * math.prod(layer.param_shapes["W"][:-1]))
    return counts


def training_multiply_adds_per_example(architecture: Architecture) -> int:
    """Forward, weight gradients, and input gradients of every weighted layer but the first."""
    forward = forward_multiply_adds(architecture)
    return 2 * sum(forward) + sum(forward[1:])


def training_gflop(architecture: Architecture, examples_seen: int) -> float:
    """GFLOP (10**9 floating-point operations) of training on ``examples_seen`` examples."""
    return 2 * training_multiply_adds_per_example(architecture) * examples_seen / 1e9
