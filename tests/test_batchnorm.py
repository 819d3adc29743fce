"""Batch normalization as the stages train it (common.nn.batchnorm.BatchNorm) and in a network: equal to the
textbook (common.nn.reference.batchnorm_*) in both layouts, gradients against finite differences in float64
through whole networks (dense and convolutional, fast and textbook layers), inference against training,
the running averages, a batch of one, the parameter buffer and weight decay, saving and loading (the model
format's new version; older models still load), and the layer strings."""
from __future__ import annotations

import numpy as np
import pytest

from common.nn import reference
from common.nn.architecture import Architecture
from common.nn.batchnorm import BatchNorm
from common.nn.errors import UserError
from common.nn.gradcheck import numerical_gradient, rel_error
from common.nn.loss import softmax_cross_entropy
from common.nn.network import Network
from common.nn.textbook import Textbook, textbook_layers
from common.paths import RESULTS_DIR
from common.serialize import FORMAT, load_network, save_network

ROUNDOFF = 1e-9
"""Absolute error of a float64 finite difference of the loss (h = 1e-5): measured below 1e-10 here."""
SHAPES = [(6, 5), (3, 4, 4, 3)]
SHAPE_IDS = ["features (B, D)", "images (B, H, W, C)"]
DENSE = ("dense 12", "batchnorm", "relu", "dense 10")
CONV = ("reshape 28x28x1", "conv 3 5x5 valid", "maxpool", "batchnorm", "relu", "flatten", "dense 16", "batchnorm",
        "relu", "dense 10")


def layer_and_input(shape: tuple[int, ...], seed: int = 0) -> tuple[BatchNorm, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    layer = BatchNorm(shape[-1], np.float64)
    layer.params["gamma"][...] = 1.0 + 0.5 * rng.standard_normal(shape[-1])
    layer.params["beta"][...] = rng.standard_normal(shape[-1])
    return layer, 1.5 + 2.0 * rng.standard_normal(shape), rng.standard_normal(shape)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_training_forward_and_backward_equal_the_textbook(shape):
    layer, x, dout = layer_and_input(shape)
    out = layer.forward(x, training=True)
    expected, cache = reference.batchnorm_forward(x, layer.params["gamma"], layer.params["beta"])
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    dx = layer.backward(dout)
    dx_ref, dgamma, dbeta = reference.batchnorm_backward(dout, cache)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.grads["gamma"], dgamma, rtol=1e-10)
    np.testing.assert_allclose(layer.grads["beta"], dbeta, rtol=1e-10)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_inference_equals_training_output_when_the_running_statistics_are_the_batchs(shape):
    layer, x, _ = layer_and_input(shape)
    trained = layer.forward(x, training=True)
    rows = x.reshape(-1, shape[-1])
    layer.running_mean[...], layer.running_var[...] = rows.mean(axis=0), rows.var(axis=0)
    np.testing.assert_allclose(layer.forward(x), trained, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.forward(x, keep_for_backward=True), trained, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.forward(x), reference.batchnorm_inference(
        x, layer.params["gamma"], layer.params["beta"], layer.running_mean, layer.running_var), rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_running_averages_follow_pytorchs_convention(shape):
    layer, x, _ = layer_and_input(shape)
    layer.forward(x, training=True)
    rows = x.reshape(-1, shape[-1])
    np.testing.assert_allclose(layer.running_mean, 0.1 * rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * rows.var(axis=0, ddof=1), rtol=1e-12)
    before = (layer.running_mean.copy(), layer.running_var.copy())
    layer.forward(x)  # prediction leaves them alone
    np.testing.assert_array_equal(layer.running_mean, before[0])
    np.testing.assert_array_equal(layer.running_var, before[1])


def test_the_gradient_after_a_prediction_treats_the_running_statistics_as_constants():
    layer, x, dout = layer_and_input((5, 4))
    layer.running_mean[...], layer.running_var[...] = 0.3, 2.0
    layer.forward(x, keep_for_backward=True)
    dx = layer.backward(dout)
    numeric = numerical_gradient(lambda: float(np.sum(layer.forward(x) * dout)), x)
    assert rel_error(dx, numeric) < 1e-6


def test_a_batch_of_one_is_refused_in_training_and_fine_at_prediction():
    layer = BatchNorm(4, np.float32)
    with pytest.raises(ValueError, match="at least 2 values per feature"):
        layer.forward(np.ones((1, 4), np.float32), training=True)
    assert layer.forward(np.ones((1, 4), np.float32)).shape == (1, 4)
    assert layer.forward(np.ones((1, 3, 3, 4), np.float32), training=True).shape == (1, 3, 3, 4)  # 9 per channel


def test_float32_stays_float32():
    layer = BatchNorm(8, np.float32)
    x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    out = layer.forward(x, training=True)
    assert out.dtype == np.float32 and layer.backward(out).dtype == np.float32
    assert layer.running_var.dtype == np.float32 and layer.forward(x).dtype == np.float32


def network(layers: tuple[str, ...], textbook: bool = False, seed: int = 0) -> Network:
    architecture = Architecture((784, 10), layers=layers, dtype="float64")
    kit = textbook_layers(Textbook()) if textbook else None
    rng = np.random.default_rng(seed)
    return (Network.from_architecture(architecture, rng, kit=kit) if kit
            else Network.from_architecture(architecture, rng))


@pytest.mark.parametrize("textbook", [False, True], ids=["fast", "textbook"])
@pytest.mark.parametrize("layers", [DENSE, CONV], ids=["dense", "conv"])
def test_network_gradients_match_finite_differences(layers, textbook):
    """Every parameter, the scales and shifts included, at 1e-6 in float64 (entries near 0 within the finite
    differences' roundoff); a bias right before batch
    normalization has no effect on the loss (the mean takes it away), so its gradient is 0 to roundoff."""
    net = network(layers, textbook)
    rng = np.random.default_rng(1)
    for layer in net.layers:
        if "gamma" in layer.params:
            layer.params["gamma"][...] = 1.0 + 0.3 * rng.standard_normal(layer.params["gamma"].shape)
            layer.params["beta"][...] = 0.3 * rng.standard_normal(layer.params["beta"].shape)
    x, y = rng.random((5, 784)), rng.integers(0, 10, 5)
    _, dlogits = softmax_cross_entropy(net.forward(x, training=True), y)
    net.backward(dlogits)
    names = []
    for name, param, grad in net.named_parameters():
        numeric = numerical_gradient(lambda: softmax_cross_entropy(net.forward(x, training=True), y)[0], param)
        names.append(name)
        if np.abs(numeric).max() < 1e-8:  # the bias before a normalization
            assert np.abs(grad).max() < 1e-9, name
        else:  # relative error 1e-6, or the finite differences' own roundoff for entries near 0
            assert np.all(np.abs(grad - numeric) <= 1e-6 * (np.abs(grad) + np.abs(numeric)) + ROUNDOFF), name
    assert sum(name.endswith(".gamma") for name in names) == layers.count("batchnorm")


def test_fast_and_textbook_networks_train_to_the_same_numbers():
    fast, book = network(CONV), network(CONV, textbook=True)
    rng = np.random.default_rng(2)
    x, y = rng.random((8, 784)), rng.integers(0, 10, 8)
    for net in (fast, book):
        _, dlogits = softmax_cross_entropy(net.forward(x, training=True), y)
        net.backward(dlogits)
    np.testing.assert_allclose(fast.flat_grads, book.flat_grads, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast.forward(x), book.forward(x), rtol=1e-9)


def test_scales_and_shifts_share_the_parameter_buffer_and_are_not_decayed():
    net = network(CONV)
    normalizers = [layer for layer in net.layers if "gamma" in layer.params]
    weights, biases = (group.param for group in net.parameter_groups())
    for layer in normalizers:
        assert np.shares_memory(layer.params["gamma"], biases) and np.shares_memory(layer.grads["beta"], net.flat_grads)
        assert not np.shares_memory(layer.params["gamma"], weights)
    assert net.num_parameters == net.architecture.num_parameters == weights.size + biases.size


def test_layer_strings():
    architecture = Architecture((784, 10), layers=CONV)
    assert "batch norm" in architecture.describe()
    assert [layer.param_shapes for layer in architecture.walk if layer.kind == "batchnorm"] == [
        {"gamma": (3,), "beta": (3,)}, {"gamma": (16,), "beta": (16,)}]
    with pytest.raises(UserError, match="after a 'dense' or 'conv' layer"):
        Architecture((784, 10), layers=("batchnorm", "dense 10"))
    with pytest.raises(UserError, match="cannot read layer 'batchnorm 3'.*batchnorm"):
        Architecture((784, 10), layers=("dense 5", "batchnorm 3", "dense 10"))


def test_save_and_load_keep_the_running_averages(tmp_path):
    net = network(CONV)
    rng = np.random.default_rng(3)
    x = rng.random((6, 784))
    net.forward(x, training=True)
    save_network(tmp_path / "model.npz", net)
    loaded, _ = load_network(tmp_path / "model.npz")
    np.testing.assert_array_equal(loaded.forward(x), net.forward(x))
    for mine, theirs in zip(loaded.layers, net.layers):
        if hasattr(theirs, "running_mean"):
            np.testing.assert_array_equal(mine.running_var, theirs.running_var)
            assert np.abs(theirs.running_mean).max() > 0
    with np.load(tmp_path / "model.npz") as archive:
        assert "running_var1" in archive.files and FORMAT in str(archive["header"])


def test_models_of_the_earlier_format_still_load():
    model = RESULTS_DIR / "stages" / "06_conv" / "model.npz"
    with np.load(model) as archive:
        assert "mnist-from-scratch-network/2" in str(archive["header"])
    loaded, _ = load_network(model)
    assert loaded.num_parameters == loaded.architecture.num_parameters
