"""Batch normalization's textbook form (common.nn.reference.batchnorm_*): the backward pass against finite
differences in float64, for features (B, D) and per channel for images (B, H, W, C); what the forward pass
normalises over; inference against training when the running statistics are the batch's; the running
averages by hand; a batch of one refused. If PyTorch is installed, torch.nn.functional.batch_norm too (an
extra: the checks above do not need it).

Conventions under test (PyTorch's): training normalises with the batch's biased variance (divided by M,
the rows normalised over); the running variance averages the unbiased one (divided by M - 1); momentum
is the weight of the new batch.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from common.nn import reference
from common.nn.gradcheck import numerical_gradient_of_output, rel_error

TOL = 1e-6
ROUNDOFF = 1e-9
"""Absolute error of a finite difference of ``sum(out * dout)`` (a few dozen terms of order 1) in float64:
about 1e-16 * 10 / 1e-5; measured up to 3e-9. An element of the gradient below ~1e-3 is judged by it."""

SHAPES = [(6, 4), (2, 3, 4, 3), (1, 3, 3, 2)]
SHAPE_IDS = ["features (B, D)", "images (B, H, W, C)", "one image (1, H, W, C)"]


def layer_inputs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x`` (off-centre, not unit scale, so the mean and variance matter), ``gamma``, ``beta`` (one per
    feature, the last axis) and a random ``dout``, in float64."""
    rng = np.random.default_rng(seed)
    x = 1.5 + 2.0 * rng.standard_normal(shape)
    features = shape[-1]
    gamma, beta = 1.0 + 0.5 * rng.standard_normal(features), rng.standard_normal(features)
    return x, gamma, beta, rng.standard_normal(shape)


def assert_gradient(analytic: np.ndarray, numeric: np.ndarray) -> None:
    """Relative error below TOL element by element, except where the difference is below the finite
    difference's own roundoff (tiny elements)."""
    assert analytic.shape == numeric.shape
    error = np.abs(analytic - numeric)
    assert np.all((error <= TOL * (np.abs(analytic) + np.abs(numeric))) | (error < ROUNDOFF)), \
        rel_error(analytic, numeric)


# -- the backward pass is the derivative ------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("eps", [1e-5, 0.5])
def test_batchnorm_backward_matches_finite_differences(shape, eps):
    x, gamma, beta, dout = layer_inputs(shape, seed=len(shape) + int(10 * eps))
    out, cache = reference.batchnorm_forward(x, gamma, beta, eps)
    dx, dgamma, dbeta = reference.batchnorm_backward(dout, cache)
    assert (dx.shape, dgamma.shape, dbeta.shape) == (shape, gamma.shape, beta.shape)
    for value, wrt in ((dx, x), (dgamma, gamma), (dbeta, beta)):
        numeric = numerical_gradient_of_output(lambda: reference.batchnorm_forward(x, gamma, beta, eps)[0], wrt, dout)
        assert_gradient(value, numeric)


def test_dx_sums_to_zero_over_the_batch_and_differs_from_the_constant_statistics_gradient():
    """Adding a constant to a feature changes no xhat, so its dx sums to 0; the paths through the mean and
    the variance matter: gamma * dout / std alone (the statistics taken as constants) is wrong."""
    x, gamma, beta, dout = layer_inputs((8, 5), seed=11)
    xhat, _, std, _, _ = cache = reference.batchnorm_forward(x, gamma, beta)[1]
    dx = reference.batchnorm_backward(dout, cache)[0]
    np.testing.assert_allclose(dx.sum(axis=0), 0.0, atol=1e-12)
    assert rel_error(dx, gamma * dout / std) > 0.1


# -- the forward pass -------------------------------------------------------------------------------

def test_batchnorm_forward_by_hand():
    """Column 0: [1, 3], mean 2, biased variance 1; column 1: [10, 30], mean 20, variance 100."""
    x = np.array([[1.0, 10.0], [3.0, 30.0]])
    out, (xhat, gamma, std, mean, var) = reference.batchnorm_forward(x, np.array([2.0, 1.0]), np.array([0.5, -1.0]),
                                                                     eps=0.0)
    np.testing.assert_array_equal(out, [[-1.5, -2.0], [2.5, 0.0]])
    np.testing.assert_array_equal(xhat, [[-1.0, -1.0], [1.0, 1.0]])
    np.testing.assert_array_equal(mean, [2.0, 20.0])
    np.testing.assert_array_equal(var, [1.0, 100.0])
    np.testing.assert_array_equal(std, [1.0, 10.0])
    np.testing.assert_array_equal(gamma, [2.0, 1.0])


def test_each_feature_has_mean_0_and_variance_var_over_var_plus_eps():
    x, gamma, beta, _ = layer_inputs((16, 5), seed=12)
    out, (xhat, _, _, mean, var) = reference.batchnorm_forward(x, gamma, beta, eps=1e-3)
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(var, x.var(axis=0), rtol=1e-13)           # the biased variance, ddof=0
    np.testing.assert_allclose(xhat.mean(axis=0), 0.0, atol=1e-14)
    np.testing.assert_allclose(xhat.var(axis=0), var / (var + 1e-3), rtol=1e-12)
    np.testing.assert_allclose(out, gamma * xhat + beta, rtol=0, atol=0)


def test_images_are_normalised_per_channel_over_the_batch_and_every_pixel():
    x, gamma, beta, dout = layer_inputs((3, 4, 5, 2), seed=13)
    out, cache = reference.batchnorm_forward(x, gamma, beta)
    xhat, _, _, mean, var = cache
    assert out.shape == x.shape and xhat.shape == (3 * 4 * 5, 2)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-14)
    np.testing.assert_allclose(var, x.var(axis=(0, 1, 2)), rtol=1e-13)
    rows_out, rows_cache = reference.batchnorm_forward(x.reshape(-1, 2), gamma, beta)  # the documented reshape
    np.testing.assert_array_equal(out, rows_out.reshape(x.shape))
    dx = reference.batchnorm_backward(dout, cache)[0]
    np.testing.assert_array_equal(dx, reference.batchnorm_backward(dout.reshape(-1, 2), rows_cache)[0].reshape(x.shape))


def test_the_forward_pass_leaves_its_inputs_alone_and_keeps_float32():
    x, gamma, beta, dout = (a.astype(np.float32) for a in layer_inputs((5, 3), seed=14))
    copies = [a.copy() for a in (x, gamma, beta, dout)]
    out, cache = reference.batchnorm_forward(x, gamma, beta)
    grads = reference.batchnorm_backward(dout, cache)
    assert out.dtype == np.float32 and all(a.dtype == np.float32 for a in cache + grads)
    for before, after in zip(copies, (x, gamma, beta, dout)):
        np.testing.assert_array_equal(before, after)


# -- a batch of one ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 4), (1, 1, 1, 3)])
def test_a_batch_of_one_is_refused_in_training_in_one_line(shape):
    with pytest.raises(ValueError, match="at least 2 values per feature, got 1 .*the variance of one value is 0") as info:
        reference.batchnorm_forward(np.ones(shape), np.ones(shape[-1]), np.zeros(shape[-1]))
    assert "\n" not in str(info.value)


def test_one_image_has_enough_values_per_channel_and_inference_takes_a_batch_of_one():
    x, gamma, beta, _ = layer_inputs((1, 3, 3, 2), seed=15)
    out, _ = reference.batchnorm_forward(x, gamma, beta)                 # 9 values per channel
    assert out.shape == x.shape
    single = reference.batchnorm_inference(x[:1, 0, 0], gamma, beta, np.zeros(2), np.ones(2))
    np.testing.assert_allclose(single, gamma * x[:1, 0, 0] / np.sqrt(1 + 1e-5) + beta, rtol=1e-15)


# -- inference and the running averages -------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES[:2], ids=SHAPE_IDS[:2])
def test_inference_with_the_batchs_own_statistics_is_the_training_output(shape):
    """Equal when the running variance is the *biased* batch variance, the one training normalises with;
    the unbiased one (what the running average collects) gives another output."""
    x, gamma, beta, _ = layer_inputs(shape, seed=16)
    out, (xhat, _, _, mean, var) = reference.batchnorm_forward(x, gamma, beta, eps=1e-3)
    np.testing.assert_array_equal(reference.batchnorm_inference(x, gamma, beta, mean, var, eps=1e-3), out)
    rows = len(xhat)
    unbiased = var * rows / (rows - 1)
    other = reference.batchnorm_inference(x, gamma, beta, mean, unbiased, eps=1e-3)
    assert not np.allclose(other, out)
    np.testing.assert_allclose(other, gamma * xhat.reshape(shape) * np.sqrt((var + 1e-3) / (unbiased + 1e-3)) + beta,
                               rtol=1e-12)


def test_running_averages_by_hand():
    """Batch x = [[1, 2], [3, 6]]: mean [2, 4], biased variance [1, 4], unbiased [2, 8]. With momentum 1/4
    (a power of two, so every step below is exact): mean 3/4 * 0 + 1/4 * [2, 4] = [0.5, 1]; variance
    3/4 * 1 + 1/4 * [2, 8] = [1.25, 2.75]; a second step with the same batch: [0.875, 1.75] and
    [1.4375, 4.0625]."""
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    _, (_, _, _, mean, var) = reference.batchnorm_forward(x, np.ones(2), np.zeros(2))
    np.testing.assert_array_equal(var, [1.0, 4.0])
    unbiased = var * 2 / (2 - 1)
    np.testing.assert_array_equal(unbiased, x.var(axis=0, ddof=1))
    running_mean, running_var = np.zeros(2), np.ones(2)                   # where they start
    same_arrays = (running_mean, running_var)
    assert reference.update_running_stats(running_mean, running_var, mean, unbiased, momentum=0.25) is None
    np.testing.assert_array_equal(running_mean, [0.5, 1.0])
    np.testing.assert_array_equal(running_var, [1.25, 2.75])
    reference.update_running_stats(running_mean, running_var, mean, unbiased, momentum=0.25)
    np.testing.assert_array_equal(running_mean, [0.875, 1.75])
    np.testing.assert_array_equal(running_var, [1.4375, 4.0625])
    assert same_arrays[0] is running_mean and same_arrays[1] is running_var  # updated in place


def test_the_default_momentum_and_eps_are_pytorchs():
    assert inspect.signature(reference.update_running_stats).parameters["momentum"].default == 0.1
    for function in (reference.batchnorm_forward, reference.batchnorm_inference):
        assert inspect.signature(function).parameters["eps"].default == 1e-5
    running_mean, running_var = np.zeros(1), np.ones(1)
    reference.update_running_stats(running_mean, running_var, np.array([10.0]), np.array([21.0]))
    np.testing.assert_allclose(running_mean, [0.9 * 0.0 + 0.1 * 10.0], rtol=1e-15)
    np.testing.assert_allclose(running_var, [0.9 * 1.0 + 0.1 * 21.0], rtol=1e-15)


# -- against PyTorch, if it is installed (an extra) -------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_batchnorm_is_torchs_batch_norm(shape):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    x, gamma, beta, dout = layer_inputs(shape, seed=17)
    to_torch = (lambda a: torch.from_numpy(np.ascontiguousarray(a))) if len(shape) == 2 else \
        (lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))))   # NHWC -> NCHW
    from_torch = (lambda t: t.detach().numpy()) if len(shape) == 2 else (lambda t: t.detach().numpy().transpose(0, 2, 3, 1))
    features = shape[-1]
    mean0, var0 = np.linspace(-1, 1, features), np.linspace(0.5, 2, features)
    t_x = to_torch(x).requires_grad_(True)
    t_gamma, t_beta = torch.from_numpy(gamma.copy()).requires_grad_(True), torch.from_numpy(beta.copy()).requires_grad_(True)
    t_mean, t_var = torch.from_numpy(mean0.copy()), torch.from_numpy(var0.copy())
    t_out = functional.batch_norm(t_x, t_mean, t_var, t_gamma, t_beta, training=True, momentum=0.1, eps=1e-5)
    t_out.backward(to_torch(dout))

    out, cache = reference.batchnorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = reference.batchnorm_backward(dout, cache)
    np.testing.assert_allclose(out, from_torch(t_out), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx, from_torch(t_x.grad), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(dgamma, t_gamma.grad.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dbeta, t_beta.grad.numpy(), rtol=1e-12, atol=1e-13)

    xhat, _, _, mean, var = cache
    running_mean, running_var = mean0.copy(), var0.copy()
    reference.update_running_stats(running_mean, running_var, mean, var * len(xhat) / (len(xhat) - 1))
    np.testing.assert_allclose(running_mean, t_mean.numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(running_var, t_var.numpy(), rtol=1e-13)

    t_inference = functional.batch_norm(to_torch(x), t_mean, t_var, t_gamma.detach(), t_beta.detach(),
                                        training=False, eps=1e-5)
    np.testing.assert_allclose(reference.batchnorm_inference(x, gamma, beta, running_mean, running_var),
                               from_torch(t_inference), rtol=1e-12, atol=1e-13)
