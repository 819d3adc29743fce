"""Label smoothing (common.nn.label_smoothing): a value worked by hand, the fast form against the textbook form
and finite differences, zero smoothing as plain cross-entropy, and a feature of its own in the run fingerprints."""
import dataclasses
import math

import numpy as np
import pytest

from common.data import MNIST
from common.nn.errors import UserError
from common.nn.gradcheck import numerical_gradient
from common.nn.label_smoothing import label_smoothing_cross_entropy as fast_form
from common.nn.label_smoothing import label_smoothing_cross_entropy_textbook as textbook_form
from common.nn.label_smoothing import label_smoothing_loss, smoothed_targets
from common.nn.loss import softmax, softmax_cross_entropy
from common.nn.textbook import Textbook
from common.protocol import train_stage, validate_spec
from common.runs import features_used, fingerprint
from common.stages import load_specs

FORMS = (fast_form, textbook_form)


def test_the_targets_put_one_minus_e_plus_e_over_k_on_the_label():
    targets = smoothed_targets(np.array([2, 0]), 4, 0.2)
    np.testing.assert_allclose(targets, [[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]], rtol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    assert targets.dtype == np.float32


@pytest.mark.parametrize("form", FORMS)
def test_hand_case(form):
    """Two equal logits, e = 0.2, K = 2: p = [1/2, 1/2], q = [0.9, 0.1], loss = log 2, dlogits = p - q."""
    loss, dlogits = form(np.array([[0.0, 0.0]]), np.array([0]), 0.2)
    assert loss == pytest.approx(math.log(2), rel=1e-14)
    np.testing.assert_allclose(dlogits, [[-0.4, 0.4]], rtol=1e-14)
    # a confident row: logits (log 3, 0), p = (3/4, 1/4): loss = -(0.9 log 3/4 + 0.1 log 1/4)
    loss, _ = form(np.array([[math.log(3.0), 0.0]]), np.array([0]), 0.2)
    assert loss == pytest.approx(-(0.9 * math.log(0.75) + 0.1 * math.log(0.25)), rel=1e-13)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_the_fast_form_equals_the_textbook_and_finite_differences(smoothing):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(7, 10))
    labels = rng.integers(0, 10, 7)
    fast_loss, fast_grad = fast_form(logits.copy(), labels, smoothing)
    book_loss, book_grad = textbook_form(logits.copy(), labels, smoothing)
    assert fast_loss == pytest.approx(book_loss, rel=1e-13)
    np.testing.assert_allclose(fast_grad, book_grad, rtol=1e-12, atol=1e-16)
    numeric = numerical_gradient(lambda: fast_form(logits, labels, smoothing)[0], logits)
    np.testing.assert_allclose(fast_grad, numeric, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(fast_grad, (softmax(logits.copy()) - smoothed_targets(labels, 10, smoothing,
                                                                                    np.float64)) / 7, atol=1e-15)


def test_zero_smoothing_is_plain_cross_entropy_and_float32_stays_float32():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, size=(5, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 5)
    plain_loss, plain_grad = softmax_cross_entropy(logits.copy(), labels)
    loss, grad = fast_form(logits.copy(), labels, 0.0)
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    np.testing.assert_allclose(grad, plain_grad, rtol=1e-6, atol=1e-8)
    for form in FORMS:
        assert form(logits.copy(), labels, 0.1)[1].dtype == np.float32


def test_the_gradient_vanishes_at_the_smoothed_targets_so_the_logits_stop_growing():
    """At logits log q the softmax is q itself: the gradient is zero there, and a larger gap pushes back."""
    targets = smoothed_targets(np.array([3]), 10, 0.1, np.float64)
    _, grad = fast_form(np.log(targets), np.array([3]), 0.1)
    np.testing.assert_allclose(grad, 0.0, atol=1e-15)
    wider = np.log(targets)
    wider[0, 3] += 1.0  # more confident than the target
    _, grad = fast_form(wider, np.array([3]), 0.1)
    assert grad[0, 3] > 0  # descent lowers the label's logit again
    with pytest.raises(ValueError, match="at least 0 and below 1"):
        label_smoothing_loss(1.0)


def tiny_stage(**changes):
    (spec,) = load_specs(["07"]).values()
    return dataclasses.replace(spec, epochs=1, batch_size=50, validation_size=50, eval_every=1,
                               layers=("reshape 28x28x1", "conv 4 5x5 valid", "maxpool", "batchnorm", "relu",
                                       "flatten", "dense 10"), **{"recalibrate_batchnorm": False, **changes})


def test_label_smoothing_trains_a_stage_and_is_a_feature_of_its_own():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(300, 784), dtype=np.uint8)
    data = MNIST(images[:200], rng.integers(0, 10, 200), images[200:], rng.integers(0, 10, 100))
    plain = train_stage(tiny_stage(), 0, data, progress=False)
    smoothed = train_stage(tiny_stage(label_smoothing=0.1), 0, data, progress=False)
    textbook = train_stage(tiny_stage(label_smoothing=0.5), 0, data, progress=False, book=Textbook())
    fast = train_stage(tiny_stage(label_smoothing=0.5), 0, data, progress=False)
    assert not np.allclose(smoothed.network.flat_params, plain.network.flat_params)
    # the epoch's mean loss is the smoothed one, on the textbook as on the fast core (the same batches)
    assert textbook.history[-1]["loss"] == pytest.approx(fast.history[-1]["loss"], rel=1e-5)
    assert abs(fast.history[-1]["loss"] - plain.history[-1]["loss"]) > 1e-2
    spec = tiny_stage()
    assert features_used(dataclasses.replace(spec, label_smoothing=0.1).settings()) == {
        "batchnorm", "affine", "label_smoothing"}
    assert fingerprint(dataclasses.replace(spec, label_smoothing=0.1), 0) != fingerprint(spec, 0)
    assert "label_smoothing" in spec.settings()  # recorded as 0.0; the fingerprint leaves it out
    for bad in (-0.1, 1.0):
        with pytest.raises(UserError, match="label smoothing must be at least 0 and below 1"):
            validate_spec(dataclasses.replace(spec, label_smoothing=bad))
