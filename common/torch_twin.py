"""The PyTorch twin of a stage's network: the same layers, shapes, initialisation and optimizer, for the
side-by-side timings (``benchmarks/``) and the speedrun's PyTorch row (``experiments/speedrun.py``).

A ``batchnorm`` layer is ``nn.BatchNorm2d(C)`` on images (the twin's images are NCHW, so it normalises
per channel, as ours does on NHWC ones) and ``nn.BatchNorm1d(D)`` on vectors, with our momentum (0.1,
the new batch's weight) and eps (1e-5), which are PyTorch's defaults too; gamma and beta start at 1 and
0 in both, and both keep the unbiased batch variance in the running average.

PyTorch is not a requirement of the suite: it is imported only when a function here is called.
"""
from __future__ import annotations

from common.nn.batchnorm import EPS as BATCHNORM_EPS
from common.nn.batchnorm import MOMENTUM as BATCHNORM_MOMENTUM


def torch_model(spec):
    """``(model, input_shape)``: the stage's network (``SPEC.layers``, or a perceptron's ``SPEC.sizes``) as
    an NCHW ``nn.Sequential``; ``input_shape`` is ``(C, H, W)`` when the first layer is the ``reshape``
    (the data is then shaped once, up front)."""
    import torch
    from torch import nn

    class NHWCToNCHW(nn.Module):
        """A ``reshape HxWxC`` inside the network: rows -> NHWC images -> NCHW."""

        def __init__(self, shape: tuple[int, int, int]) -> None:
            super().__init__()
            self.shape = shape

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(len(x), *self.shape).permute(0, 3, 1, 2)

    activations = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    modules: list[nn.Module] = []
    input_shape: tuple[int, ...] = (spec.sizes[0],)
    for index, layer in enumerate(spec.architecture().walk):
        if layer.kind == "reshape":
            height, width, channels = layer.args
            if index == 0:
                input_shape = (channels, height, width)
            else:
                modules.append(NHWCToNCHW((height, width, channels)))
        elif layer.kind == "conv":
            filters, k, padding = layer.args
            modules.append(nn.Conv2d(layer.in_shape[2], filters, k, padding=0 if padding == "valid" else (k - 1) // 2))
        elif layer.kind == "maxpool":
            modules.append(nn.MaxPool2d(2))  # floor on odd sizes, like ours
        elif layer.kind == "flatten":
            modules.append(nn.Flatten())  # C, H, W order: a permutation of ours, same sizes
        elif layer.kind == "dense":
            modules.append(nn.Linear(layer.in_shape[0], layer.args[0]))
        elif layer.kind == "dropout":
            modules.append(nn.Dropout(layer.args[0]))
        elif layer.kind == "batchnorm":  # ours: per channel of (B, H, W, C) images, per feature of (B, D)
            features = layer.in_shape[-1]  # the images are NCHW here, so BatchNorm2d's channels are dim 1
            batchnorm = nn.BatchNorm2d if len(layer.in_shape) == 3 else nn.BatchNorm1d
            modules.append(batchnorm(features, eps=BATCHNORM_EPS, momentum=BATCHNORM_MOMENTUM))
        else:
            modules.append(activations[layer.kind]())
    model = nn.Sequential(*modules)
    if spec.init == "he":  # ours: std sqrt(2 / fan_in), fan_in = K*K*C_in for a conv; zero biases
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
    return model, input_shape


def torch_optimizer(model, spec):
    """``(optimizer, description)``: PyTorch's Adam at ``spec.lr`` (AdamW on weights only, as ours, with
    ``spec.weight_decay``), ``fused=True`` if this PyTorch runs it on the CPU, else ``foreach=True``."""
    import torch

    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    cls = torch.optim.AdamW if spec.weight_decay else torch.optim.Adam
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # a throwaway one-step probe: fused kernels that do not exist fail at construction or step
        probe = torch.zeros(4, requires_grad=True)
        probe.grad = torch.ones(4)
        cls([probe], lr=spec.lr, fused=True).step()
        return cls(groups, lr=spec.lr, fused=True), f"{cls.__name__}(fused=True)"
    except (RuntimeError, ValueError, TypeError):
        return cls(groups, lr=spec.lr, foreach=True), f"{cls.__name__}(foreach=True)"
