"""Stage 01: one hidden layer, full-batch gradient descent (the first source design, as published).

The starting point. A 784 -> 1000 ReLU -> 10 softmax network whose weights start at
``0.001 * randn``, fed raw 0-255 pixels (``pixel_scale="raw"``, an explicit setting here), trained
by full-batch gradient descent (lr 0.002, 500 iterations) on the design's 1,000-image budget.
It fits its 1,000 images perfectly (100 % training accuracy) and generalises to about 88-90 %:
a textbook case of too little data. The source reported 88.29 % on 350 images held out from
the *training* set (drawn with replacement, so some overlapped its training rows); we draw the
1,000 + 350 without replacement and disjoint, report that held-out accuracy too, and judge every
stage on the official 10,000-image test set.

Maths (docs/math.md): #forward-pass, #softmax-and-cross-entropy, #backpropagation-through-a-dense-layer,
and #initialisation, of which this stage's 0.001 * randn start on raw pixels is the worked example.
Code: common.nn.network.Network.forward, common.nn.loss.softmax_cross_entropy, common.nn.layers.Dense.backward, common.nn.optimizers.GradientDescent.update

Exercises: python -m common.exercises check 01 (dense_forward, dense_backward, relu_forward, relu_backward,
softmax_cross_entropy, sgd_step); train on yours with --exercises my_exercises.

Run: python stages/01_one_hidden_gd.py [--quick] [--seed 0] [--help]
"""
import sys

from common.protocol import StageSpec
from common.runner import main

SPEC = StageSpec(
    name="01_one_hidden_gd",
    title="one hidden layer, full-batch GD",
    adds="the first source design: 784-1000-10, 0.001*randn weights, raw pixels, 1,000 images",
    sizes=(784, 1000, 10),
    init="normal", init_scale=0.001,
    pixel_scale="raw",
    optimizer="gd", lr=0.002, epochs=500, batch_size=None,
    train_size=1000, holdout_size=350,
    eval_every=25,
    reproduces="first source design (one hidden layer)",
    published_accuracy=0.8829,
    published_note="on 350 held-out training-set images, not the official test set",
    quick={"epochs": 40, "eval_every": 10},
)

if __name__ == "__main__":
    sys.exit(main(SPEC, description=__doc__))
