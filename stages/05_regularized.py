"""Stage 05: a wider network, held back from memorising: shifted digits, AdamW + cosine.

Stage 04 fits its training images almost perfectly (its training accuracy passes 99.5 % around
epoch 10) while its test accuracy ends near 98 %: a generalisation gap of about two points, the
part of what it learned that holds for its training images only. This stage gives the network
more capacity and, at the same time, makes memorising harder:

  * wider: [784, 800, 800, 10] ReLU with He initialisation (1.3 million parameters; stage 04 has
    the same two hidden layers at widths 128 and 64);
  * random shifts (docs/math.md#data-augmentation) of every training digit by up to 2 pixels,
    a new draw every epoch: the network sees translated digits it never saw before, which teaches
    it the translation invariance a plain MLP lacks;
  * AdamW (docs/math.md#weight-decay): Adam with decoupled weight decay 0.01 on the weights;
  * a cosine learning-rate schedule after one warm-up epoch at half the rate
    (docs/math.md#learning-rate-schedules): large steps early, small ones at the end to settle;
  * no dropout (docs/math.md#dropout): validation chose against it (below).

How the settings were chosen: on a validation split of 10,000 images carved from the training
images, with three seeds for each of the 12 combinations of dropout (none, 0.1 / 0.2 or 0.2 / 0.4 on
the input pixels / hidden units), shifts (0 or 2 pixels) and weight decay (0 or 0.01), compared
under the one rule (docs/math.md#reading-the-statistics; table and command:
results/tuning/05_regularized.md). The best was no dropout, shifts of 2 pixels and weight decay
0.01. Against it, without shifts is clearly worse (shifts of 2 pixels are clearly better, by about
0.7 points), and dropout 0.2 / 0.4 is clearly worse; dropout 0.1 / 0.2 is not distinguishable from
none, and weight decay 0.01 against none is not distinguishable either, so the stage keeps the best
combination without claiming that decay helps. One warm-up epoch against none, compared the same
way, scored best without being distinguishable (results/tuning/05_regularized_warmup.md); it stays.
The width and the learning rate are common choices for this kind of network, not tuned here. What
each idea buys is measured afterwards, one at a time with three seeds and on the test set, by the
regularization ablation (results/ablations/regularization.md); nothing was chosen from it. The
budget of 30 epochs keeps a run to a few minutes on a 2-core machine, so three seeds fit in the
comparison's time.

Code: common.nn.augment.random_shift, common.nn.optimizers.Optimizer.step, common.nn.schedules.cosine

Exercises: python -m common.exercises check 05 (random_shift, decay_weights; and dropout_forward,
dropout_backward, dropout_layer_forward: the idea validation tried here and left out, which the
regularization ablation's with-dropout variant trains).

Run: python stages/05_regularized.py [--quick] [--epochs 30] [--seed 0] [--help]
"""
import sys

from common.protocol import StageSpec
from common.runner import main

SPEC = StageSpec(
    name="05_regularized",
    title="wider, shifts, AdamW + cosine",
    adds="[784, 800, 800, 10], random shifts of up to 2 px, AdamW, cosine schedule",
    sizes=(784, 800, 800, 10),
    init="he",
    optimizer="adam", lr=0.001, weight_decay=0.01, schedule="cosine", warmup=1,
    epochs=30, batch_size=128,
    input_dropout=0.0, hidden_dropout=0.0, shift=2,
    eval_every=5,
    quick={"epochs": 2, "train_size": 5000, "sizes": (784, 128, 10), "eval_every": 1},
)

if __name__ == "__main__":
    sys.exit(main(SPEC, description=__doc__))
