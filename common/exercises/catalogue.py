"""The exercises, in the order of the ladder: each one's name (that of its answer in
``common.nn.reference``), its stage, the section of docs/math.md it practises, and its check.

Batch normalization comes after stage 06 as a rung of its own, ``bn``: stage 07 uses it (its other new
idea, the affine distortions, is no exercise), and ``python -m common.exercises check bn`` checks it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import common.exercises.checks_conv as checks_conv
import common.exercises.checks_layers as checks_layers
import common.exercises.checks_norm as checks_norm
import common.exercises.checks_regularize as checks_regularize
import common.exercises.checks_steps as checks_steps

STAGES = {
    "01": "one hidden layer, gradient descent",
    "02": "tanh and sigmoid",
    "03": "mini-batches",
    "04": "momentum, RMSprop, Adam",
    "05": "dropout, shifted digits, weight decay",
    "06": "convolution and max-pooling",
    "bn": "batch normalization (stage 07)",
}


@dataclass(frozen=True)
class Exercise:
    """One function to write: ``name`` and signature as ``common.nn.reference.<name>``."""

    name: str
    stage: str                      # "01" .. "06", or "bn": batch normalization, used by stage 07
    section: str                    # its section of docs/math.md (the anchor)
    check: Callable[[Callable], None]  # returns if right, raises Wrong / NotWritten otherwise

    @property
    def hint(self) -> str:
        return f"docs/math.md#{self.section}"


EXERCISES: tuple[Exercise, ...] = (
    Exercise("dense_forward", "01", "forward-pass", checks_layers.check_dense_forward),
    Exercise("dense_backward", "01", "backpropagation-through-a-dense-layer", checks_layers.check_dense_backward),
    Exercise("relu_forward", "01", "activations", checks_layers.check_relu_forward),
    Exercise("relu_backward", "01", "activations", checks_layers.check_relu_backward),
    Exercise("softmax_cross_entropy", "01", "softmax-and-cross-entropy", checks_layers.check_softmax_cross_entropy),
    Exercise("sgd_step", "01", "gradient-descent-and-mini-batches", checks_steps.check_sgd_step),
    Exercise("tanh_backward", "02", "activations", checks_layers.check_tanh_backward),
    Exercise("sigmoid_forward", "02", "activations", checks_layers.check_sigmoid_forward),
    Exercise("sigmoid_backward", "02", "activations", checks_layers.check_sigmoid_backward),
    Exercise("minibatches", "03", "gradient-descent-and-mini-batches", checks_steps.check_minibatches),
    Exercise("momentum_step", "04", "momentum", checks_steps.check_momentum_step),
    Exercise("rmsprop_step", "04", "rmsprop", checks_steps.check_rmsprop_step),
    Exercise("adam_step", "04", "adam", checks_steps.check_adam_step),
    Exercise("dropout_forward", "05", "dropout", checks_regularize.check_dropout_forward),
    Exercise("dropout_backward", "05", "dropout", checks_regularize.check_dropout_backward),
    Exercise("dropout_layer_forward", "05", "dropout", checks_regularize.check_dropout_layer_forward),
    Exercise("random_shift", "05", "data-augmentation", checks_regularize.check_random_shift),
    Exercise("decay_weights", "05", "weight-decay", checks_steps.check_decay_weights),
    Exercise("conv_forward", "06", "convolution-and-max-pooling", checks_conv.check_conv_forward),
    Exercise("conv_backward", "06", "convolution-and-max-pooling", checks_conv.check_conv_backward),
    Exercise("maxpool_forward", "06", "convolution-and-max-pooling", checks_conv.check_maxpool_forward),
    Exercise("maxpool_backward", "06", "convolution-and-max-pooling", checks_conv.check_maxpool_backward),
    Exercise("batchnorm_forward", "bn", "batch-normalization", checks_norm.check_batchnorm_forward),
    Exercise("batchnorm_backward", "bn", "batch-normalization", checks_norm.check_batchnorm_backward),
)

BY_NAME = {exercise.name: exercise for exercise in EXERCISES}
