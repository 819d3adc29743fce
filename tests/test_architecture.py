"""Tests for networks described as layers (common.nn.architecture, Network.from_architecture):
parsing and shape-walking the layer strings, parameter counts, the whole conv network's gradients
(every parameter and the input) against finite differences in float64, dLoss/dInput for perceptrons,
and saving / loading (format 2, with format-1 files still read)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from common.nn.architecture import ACTIVATION_NAMES, Architecture, parse_layer, walk_layers
from common.nn.conv import Conv2D, MaxPool2D
from common.nn.errors import UserError
from common.nn.gradcheck import numerical_gradient, rel_error
from common.nn.layers import ACTIVATIONS
from common.nn.loss import softmax_cross_entropy
from common.nn.network import Network
from common.serialize import load_network, save_network
from common.stages import load_specs

STAGE_06 = ("reshape 28x28x1", "conv 32 5x5 valid", "relu", "maxpool", "conv 64 5x5 valid", "relu", "maxpool",
            "flatten", "dense 256", "relu", "dense 10")
SMALL = ("reshape 9x9x1", "conv 3 3x3 same", "relu", "maxpool", "conv 2 3x3 valid", "tanh", "flatten",
         "dense 5", "sigmoid", "dense 4")


def test_activation_names_match_the_layers():
    assert set(ACTIVATION_NAMES) == set(ACTIVATIONS)


def test_parse_layer_forms():
    assert parse_layer("conv 32 5x5 same") == ("conv", (32, 5, "same"))
    assert parse_layer("reshape 28x28x1") == ("reshape", (28, 28, 1))
    assert parse_layer("dense 10") == ("dense", (10,))
    assert parse_layer("dropout 0.25") == ("dropout", (0.25,))
    assert parse_layer("maxpool") == ("maxpool", ())


@pytest.mark.parametrize("bad", ["", "conv 32 4x4 valid", "conv 32 5x3 valid", "conv 0 5x5 valid", "conv 8 5x5 full",
                                 "dense", "dense -3", "dropout 1", "dropout x", "softmax", "maxpool 3",
                                 "reshape 28x28", "reshape 28xAx1"])
def test_bad_layer_strings_are_one_line_errors(bad):
    with pytest.raises(UserError) as error:
        parse_layer(bad)
    assert "\n" not in str(error.value)


def test_walk_layers_shapes_of_stage_06():
    walked = walk_layers(784, STAGE_06)
    assert [layer.out_shape for layer in walked] == [
        (28, 28, 1), (24, 24, 32), (24, 24, 32), (12, 12, 32), (8, 8, 64), (8, 8, 64), (4, 4, 64),
        (1024,), (256,), (256,), (10,)]
    assert walked[4].param_shapes == {"W": (5, 5, 32, 64), "b": (64,)}
    architecture = Architecture((784, 10), layers=STAGE_06)
    assert architecture.num_parameters == 832 + 51_264 + 262_400 + 2_570
    assert architecture.describe() == "conv5x5x32, pool, conv5x5x64, pool, 1024-256-10 relu"


@pytest.mark.parametrize("layers, message", [
    (("conv 8 3x3 valid", "flatten", "dense 10"), "reshape"),
    (("reshape 28x28x1", "dense 10"), "flatten"),
    (("reshape 28x28x1", "conv 8 29x29 valid", "flatten", "dense 10"), "does not fit"),
    (("reshape 14x14x4", "flatten", "dense 9"), "dense 10"),
    (("reshape 27x27x1", "flatten", "dense 10"), "cannot reshape"),
])
def test_descriptions_that_cannot_run_are_refused(layers, message):
    with pytest.raises(UserError, match=message):
        Architecture((784, 10), layers=layers)


def test_stage_06_network_is_built_as_described():
    spec = load_specs(["06"])["06"]
    network = Network.from_architecture(spec.architecture(), np.random.default_rng(0))
    convs = [layer for layer in network.layers if isinstance(layer, Conv2D)]
    assert len(convs) >= 1 and any(isinstance(layer, MaxPool2D) for layer in network.layers)
    assert network.num_parameters == spec.architecture().num_parameters
    assert network.dtype == np.float32 and all(layer.params["W"].dtype == np.float32 for layer in convs)
    assert convs[0].needs_input_grad is False and convs[1].needs_input_grad is True
    # He initialisation with fan_in = k*k*C_in: std sqrt(2 / (5*5*32)) for the second convolution
    weights = convs[1].params["W"]
    assert abs(weights.std() / np.sqrt(2 / np.prod(weights.shape[:3])) - 1) < 0.03
    x = np.random.default_rng(1).random((3, 784), dtype=np.float32)
    assert network.predict_proba(x).shape == (3, 10) and network.predict(x).shape == (3,)


def make_small(dtype: str = "float64", seed: int = 3) -> Network:
    rng = np.random.default_rng(seed)
    network = Network.from_architecture(Architecture((81, 4), dtype=dtype, layers=SMALL), rng)
    for layer in network.weighted_layers():  # non-zero biases, so their gradients are exercised too
        layer.params["b"][...] = 0.1 * rng.standard_normal(layer.params["b"].shape)
    return network


def test_conv_network_gradients_and_input_gradient_match_finite_differences():
    """Reshape -> conv(same) -> ReLU -> pool -> conv(valid) -> tanh -> flatten -> dense -> sigmoid -> dense,
    float64: every parameter's gradient and dLoss/dInput agree with finite differences (rel. error < 1e-6)."""
    network = make_small()
    rng = np.random.default_rng(4)
    x = rng.random((3, 81))
    y = np.array([0, 3, 1])
    loss = lambda: softmax_cross_entropy(network.forward(x), y)[0]  # noqa: E731
    _, dlogits = softmax_cross_entropy(network.forward(x, training=True), y)
    dx = network.backward(dlogits, input_grad=True)
    assert dx.shape == x.shape and np.count_nonzero(dx) > x.size // 2
    analytic = {name: grad.copy() for name, _, grad in network.named_parameters()}
    assert list(analytic) == ["0.W", "0.b", "1.W", "1.b", "2.W", "2.b", "3.W", "3.b"]
    for name, param, _ in network.named_parameters():
        assert rel_error(analytic[name], numerical_gradient(loss, param)) < 1e-6, name
    assert rel_error(dx, numerical_gradient(loss, x)) < 1e-6


@pytest.mark.parametrize("input_dropout", [0.0, 0.3])
def test_perceptron_input_gradient_matches_finite_differences(input_dropout):
    """dLoss/dInput of a 7-6-4 perceptron on request (the default skips it and returns None)."""
    rng = np.random.default_rng(5)
    network = Network.from_sizes([7, 6, 4], rng, dtype="float64", input_dropout=input_dropout)
    x, y = rng.standard_normal((4, 7)), np.array([0, 1, 2, 3])
    _, dlogits = softmax_cross_entropy(network.forward(x), y)
    assert network.backward(dlogits) is None
    dx = network.backward(dlogits, input_grad=True)
    loss = lambda: softmax_cross_entropy(network.forward(x), y)[0]  # noqa: E731
    assert rel_error(dx, numerical_gradient(loss, x)) < 1e-6
    assert network.backward(dlogits) is None  # asking once does not change what training computes


def test_conv_network_round_trip(tmp_path):
    network = make_small("float32")
    path = save_network(tmp_path / "model.npz", network, {"pixel_scale": "unit"})
    loaded, metadata = load_network(path)
    assert loaded.architecture == network.architecture and metadata == {"pixel_scale": "unit"}
    assert np.array_equal(loaded.flat_params, network.flat_params)
    x = np.random.default_rng(6).random((5, 81), dtype=np.float32)
    assert np.array_equal(loaded.predict_proba(x), network.predict_proba(x))
    with np.load(path, allow_pickle=False) as archive:
        header = json.loads(str(archive["header"]))
    assert header["format"] == "mnist-from-scratch-network/3" and header["architecture"]["layers"] == list(SMALL)


def test_format_1_files_still_load(tmp_path):
    """A perceptron saved before networks could be given as layers (format 1, no 'layers' key)."""
    network = Network.from_sizes([6, 5, 3], np.random.default_rng(0))
    path = save_network(tmp_path / "new.npz", network)
    with np.load(path, allow_pickle=False) as archive:
        arrays = dict(archive)
    header = json.loads(str(arrays["header"]))
    header["format"] = "mnist-from-scratch-network/1"
    del header["architecture"]["layers"]
    arrays["header"] = np.array(json.dumps(header))
    np.savez(tmp_path / "old.npz", **arrays)
    loaded, _ = load_network(tmp_path / "old.npz")
    assert loaded.architecture == network.architecture
    assert np.array_equal(loaded.flat_params, network.flat_params)


@pytest.mark.parametrize("layers", [["conv 3 3x3 same", 7], "dense 4", [["dense", 4]]])
def test_layers_that_are_not_strings_are_refused(tmp_path, layers):
    path = save_network(tmp_path / "model.npz", make_small("float32"))
    with np.load(path, allow_pickle=False) as archive:
        arrays = dict(archive)
    header = json.loads(str(arrays["header"]))
    header["architecture"]["layers"] = layers
    arrays["header"] = np.array(json.dumps(header))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UserError, match="bad.npz"):
        load_network(tmp_path / "bad.npz")


def test_inference_chunks_bound_memory():
    """A conv network predicts in chunks small enough for its largest patch matrix (64 MB)."""
    network = Network.from_architecture(Architecture((784, 10), layers=STAGE_06), np.random.default_rng(0))
    assert network.chunk_rows == 64 * 2**20 // (5 * 5 * 32 * 8 * 8 * 4)
    assert Network.from_sizes([784, 10], np.random.default_rng(0)).chunk_rows == 8192
