"""Stage 05: a wider network, held back from memorising: dropout, shifted digits, AdamW + cosine.

Stage 04 fits its training images almost perfectly (its training accuracy passes 99.5 % around
epoch 10) while its test accuracy ends near 98 %: a generalisation gap of about two points, the
part of what it learned that holds for its training images only. This stage gives the network
more capacity and, at the same time, makes memorising harder:

  * wider: [784, 800, 800, 10] ReLU with He initialisation (1.3 million parameters; stage 04 has
    the same two hidden layers at widths 128 and 64);
  * dropout (docs/math.md#dropout): each training step drops 20 % of the input pixels and 40 % of
    the hidden units at random, so no unit can rely on a particular other one: a cheap ensemble of
    thinned networks;
  * random shifts (docs/math.md#data-augmentation) of every training digit by up to 2 pixels,
    a new draw every epoch: the network sees translated digits it never saw before, which teaches
    it the translation invariance a plain MLP lacks;
  * AdamW (docs/math.md#weight-decay): Adam with decoupled weight decay on the weights;
  * a cosine learning-rate schedule after one warm-up epoch at half the rate
    (docs/math.md#learning-rate-schedules): large steps early, small ones at the end to settle.

How the settings were chosen: only the shifts were compared on a validation split carved from the
training images (shifts of 0 against 2 pixels, one seed: results/tuning/05_regularized.md, with the
command). The width, the dropout rates, the weight decay, the warm-up and the learning rate are
common choices for this kind of network, not tuned here. What each of them buys is measured afterwards, one at a time with three
seeds, by the regularization ablation (results/ablations/regularization.md); nothing was chosen
from it. The budget of 30 epochs keeps a run to a few minutes on a 2-core machine, so three seeds
fit in the comparison's time.

Code: common.nn.layers.Dropout.forward, common.nn.augment.random_shift, common.nn.optimizers.Optimizer.step, common.nn.schedules.cosine

Exercises: python -m common.exercises check 05 (dropout_forward, dropout_backward, dropout_layer_forward,
random_shift, decay_weights).

Run: python stages/05_regularized.py [--quick] [--epochs 30] [--seed 0] [--help]
"""
import sys

from common.protocol import StageSpec
from common.runner import main

SPEC = StageSpec(
    name="05_regularized",
    title="wider, dropout, shifts, AdamW + cosine",
    adds="[784, 800, 800, 10], dropout 0.2/0.4, random shifts of up to 2 px, AdamW, cosine schedule",
    sizes=(784, 800, 800, 10),
    init="he",
    optimizer="adam", lr=0.001, weight_decay=0.01, schedule="cosine", warmup=1,
    epochs=30, batch_size=128,
    input_dropout=0.2, hidden_dropout=0.4, shift=2,
    eval_every=5,
    quick={"epochs": 2, "train_size": 5000, "sizes": (784, 128, 10), "eval_every": 1},
)

if __name__ == "__main__":
    sys.exit(main(SPEC, description=__doc__))
