"""Stage 06: a convolutional network: small shared filters that slide over the image.

DRAFT docstring: settings pending validation.

Code: common.nn.conv.Conv2D.forward, common.nn.conv.Conv2D.backward, common.nn.conv.MaxPool2D.backward

Run: python stages/06_conv.py [--quick] [--epochs 8] [--seed 0] [--help]
"""
import sys

from common.protocol import StageSpec
from common.runner import main

SPEC = StageSpec(
    name="06_conv",
    title="convolutional network",
    adds="two 5x5 convolutions with 2x2 max-pooling before two dense layers; shifts, Adam + cosine",
    sizes=(784, 10),
    layers=("reshape 28x28x1",
            "conv 32 5x5 valid", "relu", "maxpool",     # (28, 28, 1) -> (24, 24, 32) -> (12, 12, 32)
            "conv 64 5x5 valid", "relu", "maxpool",     # -> (8, 8, 64) -> (4, 4, 64)
            "flatten", "dense 256", "relu", "dense 10"),  # 1,024 -> 256 -> 10
    init="he",
    optimizer="adam", lr=0.001, schedule="cosine",
    epochs=8, batch_size=128, shift=2,
    eval_every=4,
    quick={"epochs": 1, "train_size": 2000, "eval_every": 1,
           "layers": ("reshape 28x28x1", "conv 8 5x5 valid", "relu", "maxpool", "flatten", "dense 10")},
)

if __name__ == "__main__":
    sys.exit(main(SPEC, description=__doc__))
