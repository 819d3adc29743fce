"""Stage 02: a deeper, well-initialised network on all 60,000 images (the second design's network).

What changes from stage 01, and why it helps:
  * all 60,000 training images instead of 1,000 (60x the data: the biggest single gain). The
    data-budget ablation (results/ablations/data_budget.md) shows it at a fixed number of updates:
    more images raise test accuracy and shrink the generalisation gap, the distance between
    training and test accuracy, which is how far the network memorised rather than learned;
  * inputs scaled to [0, 1] instead of 0-255. With raw pixels the first layer's weights see a
    gradient 255 times larger, which acts as a 255^2 times larger learning rate for that layer
    alone (docs/math.md#raw-pixels-are-a-hidden-learning-rate-change); scaled, one learning rate
    suits every layer;
  * two hidden layers, [784, 128, 64, 10], with ReLU and He initialisation (std sqrt(2 / fan_in)),
    which keeps activations at a steady scale through depth (docs/math.md#initialisation);
    it has 7.3x fewer parameters than stage 01 (109,386 vs 795,010).
Still full-batch gradient descent: one update per pass over all 60,000 images.

Open choices, and how they were made: the source fixes neither a learning rate nor a budget for
full-batch descent. The learning rate 0.5 was the best of 0.1 / 0.2 / 0.5 / 1 on a 10,000-image
validation split carved from the training images (never the test set), with the command in
results/tuning/02_deep_relu.md. 400 iterations keep the run around a minute on a 2-core machine;
accuracy is still creeping up then, which is stage 03's point: one update per 60,000 images is slow.

Code: common.protocol.scale_pixels, common.nn.init.he, common.nn.train.loss_and_gradient

Exercises: python -m common.exercises check 02 (tanh_backward, sigmoid_forward, sigmoid_backward), after stage 01's.

Run: python stages/02_deep_relu.py [--quick] [--lr 0.5] [--epochs 400] [--help]
"""
import sys

from common.protocol import StageSpec
from common.runner import main

SPEC = StageSpec(
    name="02_deep_relu",
    title="deeper ReLU network, He init, all data",
    adds="all 60,000 images in [0, 1]; [784, 128, 64, 10] ReLU with He init; still full-batch GD",
    sizes=(784, 128, 64, 10),
    init="he",
    optimizer="gd", lr=0.5, epochs=400, batch_size=None,
    eval_every=20,
    reproduces="second source design's network (without its optimizer)",
    quick={"epochs": 30, "eval_every": 10, "train_size": 5000},
)

if __name__ == "__main__":
    sys.exit(main(SPEC, description=__doc__))
