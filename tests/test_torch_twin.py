"""The PyTorch twin (``common/torch_twin.py``) is the same network as ours, not just one of the same
size: with our weights copied into it, a training-mode forward pass gives the same logits, the
backward pass the same gradients of every parameter, and batch normalization the same running
averages, to float32 tolerance. That is what makes ``benchmarks/conv_speed.py``'s PyTorch epoch a
timing of *our* network. PyTorch is optional: without it these tests are skipped."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from common import torch_twin
from common.stages import load_specs


def _specs():
    """Stage 06's and stage 07's networks, and stage 07's ``--quick`` one (batch norm right before a flatten)."""
    specs = load_specs(["06", "07"])
    quick = dataclasses.replace(specs["07"], layers=tuple(specs["07"].quick["layers"]))
    return [specs["06"], specs["07"], quick]


def _ours_to_torch(walk, ours):
    """``[(ours' layer, the architecture's shape record, the flatten input shape before it or None)]``
    for every layer with parameters, in order (the flatten's ``(H, W, C)`` tells how to permute a
    dense layer's rows: ours flattens HWC, the twin CHW)."""
    pairs, flattened = [], None
    for shape, layer in zip(walk, ours.layers):
        if shape.kind == "flatten":
            flattened = shape.in_shape
        if layer.params:
            pairs.append((layer, shape, flattened if shape.kind == "dense" else None))
            if shape.kind == "dense":
                flattened = None
    return pairs


def _to_torch_layout(kind: str, key: str, array: np.ndarray, flattened) -> np.ndarray:
    """One of our arrays in the twin's layout: conv W (k, k, C, F) -> (F, C, k, k); dense W (in, out)
    -> (out, in), its rows permuted from HWC to CHW order after a flatten; vectors as they are."""
    if kind == "conv" and key == "W":
        return array.transpose(3, 2, 0, 1)
    if kind == "dense" and key == "W":
        if flattened is not None:
            height, width, channels = flattened
            return array.reshape(height, width, channels, -1).transpose(3, 2, 0, 1).reshape(array.shape[1], -1)
        return array.T
    return array


def _close(theirs, ours, what: str) -> None:
    """float32 agreement: relative to the array's own scale (sums in another order round differently)."""
    theirs = np.asarray(theirs, dtype=np.float64)
    ours = np.asarray(ours, dtype=np.float64)
    scale = max(float(np.abs(ours).max()), 1e-12)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=2e-5 * scale, err_msg=what)


@pytest.mark.parametrize("spec", _specs(), ids=lambda spec: f"{spec.name} {len(spec.layers)} layers")
def test_the_twin_with_our_weights_computes_what_ours_computes(spec):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from common.nn.loss import softmax_cross_entropy
    from common.nn.network import Network

    architecture = spec.architecture()
    ours = Network.from_architecture(architecture, np.random.default_rng(0), spec.init)
    model, input_shape = torch_twin.torch_model(spec)
    model.train()
    modules = [m for m in model.modules() if list(m.parameters(recurse=False))]
    pairs = _ours_to_torch(architecture.walk, ours)
    assert [type(m).__name__ for m in modules] == [
        {"conv": "Conv2d", "dense": "Linear"}.get(shape.kind)
        or ("BatchNorm2d" if len(shape.in_shape) == 3 else "BatchNorm1d") for _, shape, _ in pairs]
    names = {"W": "weight", "b": "bias", "gamma": "weight", "beta": "bias"}
    rng = np.random.default_rng(1)
    for (layer, shape, flattened), module in zip(pairs, modules):
        if shape.kind == "batchnorm":  # not 1 and 0: a wrong pairing of gamma / beta would show
            assert (module.momentum, module.eps) == (0.1, 1e-5)
            layer.params["gamma"][...] = rng.uniform(0.5, 1.5, layer.params["gamma"].shape)
            layer.params["beta"][...] = rng.uniform(-0.5, 0.5, layer.params["beta"].shape)
        elif shape.kind == "conv":  # non-zero biases too
            layer.params["b"][...] = rng.uniform(-0.1, 0.1, layer.params["b"].shape)
        for key, value in layer.params.items():
            with torch.no_grad():
                getattr(module, names[key]).copy_(torch.from_numpy(_to_torch_layout(shape.kind, key, value, flattened)))

    batch = 16
    x = rng.random((batch, 784), dtype=np.float32)
    y = rng.integers(0, 10, batch)

    logits = ours.forward(x, training=True)
    loss, dlogits = softmax_cross_entropy(logits, y)
    ours.backward(dlogits)
    out = model(torch.from_numpy(x).reshape(batch, *input_shape))
    their_loss = F.cross_entropy(out, torch.from_numpy(y))
    their_loss.backward()

    _close(out.detach().numpy(), logits, "training-mode logits")
    assert float(their_loss.detach()) == pytest.approx(loss, rel=1e-5)
    for index, ((layer, shape, flattened), module) in enumerate(zip(pairs, modules)):
        for key, grad in layer.grads.items():
            if key == "b" and index + 1 < len(pairs) and pairs[index + 1][1].kind == "batchnorm":
                # a bias right before batch normalization (a max-pooling between keeps it a per-channel
                # shift) is subtracted again with the batch mean: its gradient is 0 in exact arithmetic,
                # rounding noise in both libraries, of no sign in common; both must be that small
                scale = float(np.abs(layer.grads["W"]).max())
                assert np.abs(grad).max() < 1e-4 * scale and module.bias.grad.abs().max() < 1e-4 * scale
                continue
            _close(getattr(module, names[key]).grad.numpy(), _to_torch_layout(shape.kind, key, grad, flattened),
                   f"layer {index} ({shape.kind}) d{key}")
        if shape.kind == "batchnorm":  # after one training step: the batch's mean, its unbiased variance
            _close(module.running_mean.numpy(), layer.running_mean, f"layer {index} running mean")
            _close(module.running_var.numpy(), layer.running_var, f"layer {index} running variance")
            assert int(module.num_batches_tracked) == 1

    # and as they predict, with those running averages
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x).reshape(batch, *input_shape)).numpy()
    _close(predicted, ours.forward(x), "prediction-mode logits")


def test_a_batchnorm_layer_becomes_batchnorm2d_on_images_and_batchnorm1d_on_vectors():
    pytest.importorskip("torch")
    from torch import nn

    spec = load_specs(["07"])["07"]
    model, _ = torch_twin.torch_model(spec)
    kinds = [(type(m).__name__, m.num_features) for m in model if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert kinds == [("BatchNorm2d", 32), ("BatchNorm2d", 64), ("BatchNorm1d", 256)]
    assert sum(p.numel() for p in model.parameters()) == spec.architecture().num_parameters
