"""Stage 03: mini-batches of 128, reshuffled every epoch (plain gradient descent).

What changes from stage 02, and why it helps: instead of one update per pass over the
60,000 images, 469 updates, each from the gradient of 128 images drawn without replacement in a
fresh order every epoch (the last, smaller batch is kept). Each mini-batch gradient is a noisy but
unbiased estimate of the full one, so the network makes far more progress per second of compute
(docs/math.md#gradient-descent-and-mini-batches; the comparison page measures how much sooner
each accuracy is reached).

Open choices, and how they were made: the learning rate was compared over 0.05 / 0.1 / 0.2 /
0.3 / 0.5 on a 10,000-image validation split carved from the training images, with three seeds
(results/tuning/03_minibatch.md, with its command). 0.3, the rate this stage already had, is not
distinguishable from the best there under the one rule (docs/math.md#reading-the-statistics), so it
stays: a stage changes a setting only when validation shows a better one. 20 epochs keep the run
well under a minute.

Code: common.nn.train.iterate_minibatches, common.nn.train.train_one_epoch

Exercises: python -m common.exercises check 03 (minibatches: shuffle, cut, keep the last batch).

Run: python stages/03_minibatch.py [--quick] [--lr 0.3] [--batch-size 128] [--epochs 20] [--help]
"""
import sys

from common.protocol import StageSpec
from common.runner import main

SPEC = StageSpec(
    name="03_minibatch",
    title="mini-batches of 128",
    adds="mini-batches of 128 reshuffled every epoch (plain gradient descent)",
    sizes=(784, 128, 64, 10),
    init="he",
    optimizer="gd", lr=0.3, epochs=20, batch_size=128,
    quick={"epochs": 2, "train_size": 5000},
)

if __name__ == "__main__":
    sys.exit(main(SPEC, description=__doc__))
