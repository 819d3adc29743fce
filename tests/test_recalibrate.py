"""Batch norm's running statistics re-estimated after training (common.nn.recalibrate): the exact average of
the clean batches' statistics, nothing else touched, and a feature of its own in the run fingerprints."""
import dataclasses

import numpy as np
import pytest

from common.data import MNIST
from common.nn.errors import UserError
from common.nn.metrics import accuracy
from common.nn.network import Architecture, Network
from common.nn.recalibrate import recalibrate_statistics
from common.protocol import train_stage, validate_spec
from common.runs import features_used, fingerprint
from common.stages import load_specs

LAYERS = ("dense 6", "batchnorm", "relu", "dense 3")


def small_network(seed: int = 0) -> Network:
    return Network.from_architecture(Architecture((5, 3), layers=LAYERS), np.random.default_rng(seed), "he")


def test_the_statistics_become_the_average_of_the_batches_statistics():
    network = small_network()
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(50, 5)).astype(np.float32)
    dense, norm = network.layers[0], network.layers[1]
    norm.running_mean[...] = 7.0  # what training left: forgotten entirely
    norm.running_var[...] = 7.0
    params_before = network.flat_params.copy()
    batches = recalibrate_statistics(network, x, batch_size=16)
    assert batches == 3  # 50 // 16: the last 2 rows (a partial batch) are left out
    outputs = [x[i * 16:(i + 1) * 16] @ dense.params["W"] + dense.params["b"] for i in range(3)]
    np.testing.assert_allclose(norm.running_mean, np.mean([out.mean(axis=0) for out in outputs], axis=0),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(norm.running_var, np.mean([out.var(axis=0, ddof=1) for out in outputs], axis=0),
                               rtol=1e-5)
    assert norm.momentum == 0.1  # put back as it was
    np.testing.assert_array_equal(network.flat_params, params_before)  # no parameter moves


def test_fewer_images_than_a_batch_make_one_batch_and_a_network_without_batch_norm_is_refused():
    network = small_network()
    x = np.random.default_rng(2).normal(size=(10, 5)).astype(np.float32)
    assert recalibrate_statistics(network, x, batch_size=128) == 1
    out = x @ network.layers[0].params["W"] + network.layers[0].params["b"]
    np.testing.assert_allclose(network.layers[1].running_mean, out.mean(axis=0), rtol=1e-5, atol=1e-6)
    plain = Network.from_architecture(Architecture((5, 4, 3)), np.random.default_rng(0), "he")
    with pytest.raises(ValueError, match="no batch-normalization layer"):
        recalibrate_statistics(plain, x, batch_size=4)


def tiny_stage(**changes):
    (spec,) = load_specs(["07"]).values()
    return dataclasses.replace(spec, epochs=1, batch_size=50, validation_size=50, eval_every=1,
                               layers=("reshape 28x28x1", "conv 4 5x5 valid", "maxpool", "batchnorm", "relu",
                                       "flatten", "dense 10"), **{"recalibrate_batchnorm": False, **changes})


def tiny_data() -> MNIST:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 784), dtype=np.uint8)
    return MNIST(images[:200], rng.integers(0, 10, 200), images[200:], rng.integers(0, 10, 100))


def test_a_run_records_the_accuracies_after_recalibration():
    data = tiny_data()
    plain = train_stage(tiny_stage(), 0, data, progress=False)
    recalibrated = train_stage(tiny_stage(recalibrate_batchnorm=True), 0, data, progress=False)
    last, before = recalibrated.history[-1], plain.history[-1]
    assert last["recalibrated_batches"] == 3  # 150 training images (50 held out for validation), batches of 50
    assert last["train_seconds"] > before["train_seconds"] * 0.5 and last["seconds"] >= last["train_seconds"]
    predicted = recalibrated.probabilities.argmax(axis=1)
    assert last["test_accuracy"] == accuracy(predicted, recalibrated.splits["test"].y)
    assert last["val_accuracy"] == accuracy(recalibrated.network.predict(recalibrated.splits["val"].x),
                                            recalibrated.splits["val"].y)
    # the same training (same weights), only the statistics differ
    np.testing.assert_array_equal(recalibrated.network.flat_params, plain.network.flat_params)
    assert not np.allclose(recalibrated.network.layers[3].running_mean, plain.network.layers[3].running_mean)


def test_recalibration_is_a_feature_of_its_own_and_needs_batch_norm():
    spec = tiny_stage()
    recalibrated = dataclasses.replace(spec, recalibrate_batchnorm=True)
    assert features_used(recalibrated.settings()) == {"batchnorm", "affine", "recalibrate"}
    assert fingerprint(recalibrated, 0) != fingerprint(spec, 0)
    assert "recalibrate_batchnorm" in spec.settings()  # recorded as False; the fingerprint leaves it out
    (stage06,) = load_specs(["06"]).values()
    with pytest.raises(UserError, match="needs a network with a 'batchnorm' layer"):
        validate_spec(dataclasses.replace(stage06, recalibrate_batchnorm=True))
