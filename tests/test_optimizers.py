"""Tests for common.nn.optimizers: three steps of each rule against the textbook formulas written out
by hand, per-parameter state, dtype preservation, fused vs unfused parameters, the flush of tiny
state to zero (no subnormal numbers), bad options."""
from __future__ import annotations

import math

import numpy as np
import pytest

from common.nn import optimizers
from common.nn.errors import UserError
from common.nn.loss import softmax_cross_entropy
from common.nn.network import Network
from common.nn.optimizers import Adam, GradientDescent, Momentum, RMSprop, flush_threshold, flush_tiny, make_optimizer
from common.nn.train import loss_and_gradient

P0 = np.array([1.0, -2.0, 0.5, 0.0])
GRADS = [np.array([0.1, -0.3, 2.0, 0.0]),
         np.array([-0.2, -0.1, 1.5, 1e-3]),
         np.array([0.4, 0.0, -1.0, -2.0])]


def run_three_steps(optimizer, name: str = "layer.W", p0: np.ndarray = P0) -> list[np.ndarray]:
    """Step ``optimizer`` three times on one float64 parameter with the fixed GRADS; return the iterates."""
    param = p0.copy()
    grad = np.zeros_like(param)
    iterates = []
    for g in GRADS:
        grad[...] = g
        optimizer.step([(name, param, grad)])
        iterates.append(param.copy())
    return iterates


def assert_iterates(actual, expected):
    for step, (a, e) in enumerate(zip(actual, expected), start=1):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-15, err_msg=f"after step {step}")


def test_gradient_descent_by_hand():
    """GD: p = p - lr * g."""
    lr = 0.1
    p = P0.copy()
    expected = []
    for g in GRADS:
        p = p - lr * g
        expected.append(p)
    assert_iterates(run_three_steps(GradientDescent(lr)), expected)


def test_momentum_by_hand():
    """Heavy ball: v = mu * v + g; p = p - lr * v."""
    lr, mu = 0.1, 0.9
    p, v = P0.copy(), np.zeros(4)
    expected = []
    for g in GRADS:
        v = mu * v + g
        p = p - lr * v
        expected.append(p)
    assert_iterates(run_three_steps(Momentum(lr, momentum=mu)), expected)


def test_rmsprop_by_hand():
    """RMSprop: s = rho * s + (1 - rho) * g**2; p = p - lr * g / (sqrt(s) + eps)."""
    lr, rho, eps = 0.01, 0.9, 1e-8
    p, s = P0.copy(), np.zeros(4)
    expected = []
    for g in GRADS:
        s = rho * s + (1 - rho) * g ** 2
        p = p - lr * g / (np.sqrt(s) + eps)
        expected.append(p)
    assert_iterates(run_three_steps(RMSprop(lr, rho=rho, eps=eps)), expected)


def adam_by_hand(lr, b1, b2, eps, weight_decay=0.0, decay=True):
    """Textbook Adam with bias correction; decoupled weight decay p *= 1 - lr * wd first, if ``decay``."""
    p, m, v = P0.copy(), np.zeros(4), np.zeros(4)
    expected = []
    for t, g in enumerate(GRADS, start=1):
        if decay:
            p = p * (1 - lr * weight_decay)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        expected.append(p)
    return expected


def test_adam_by_hand():
    """Adam: m, v, bias-corrected m_hat, v_hat; p = p - lr * m_hat / (sqrt(v_hat) + eps)."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    expected = adam_by_hand(lr, b1, b2, eps)
    assert_iterates(run_three_steps(Adam(lr, beta1=b1, beta2=b2, eps=eps)), expected)
    # Without bias correction step 1 would move an element by ~3.16*lr; with it, by ~lr.
    first = run_three_steps(Adam(lr))[0]
    np.testing.assert_allclose(np.abs(first - P0)[:3], lr, rtol=1e-5)


def test_adam_large_eps_bias_correction_placement():
    """With a large eps the place where eps enters (after un-biasing v) matters: still the textbook rule."""
    lr, b1, b2, eps = 0.05, 0.8, 0.99, 0.5
    expected = adam_by_hand(lr, b1, b2, eps)
    assert_iterates(run_three_steps(Adam(lr, beta1=b1, beta2=b2, eps=eps)), expected)


def test_adamw_decays_weights_not_biases():
    """AdamW: a parameter named '...W' is shrunk by (1 - lr*wd) each step before Adam; '...b' is not."""
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.5
    weights = run_three_steps(Adam(lr, weight_decay=wd), name="0.W")
    biases = run_three_steps(Adam(lr, weight_decay=wd), name="0.b")
    assert_iterates(weights, adam_by_hand(lr, b1, b2, eps, wd, decay=True))
    assert_iterates(biases, adam_by_hand(lr, b1, b2, eps, wd, decay=False))
    assert not np.array_equal(weights[-1], biases[-1])


def test_sgd_weight_decay_by_hand():
    """Decoupled decay also works for plain GD: p = p * (1 - lr*wd) - lr * g."""
    lr, wd = 0.1, 0.2
    p = P0.copy()
    expected = []
    for g in GRADS:
        p = p * (1 - lr * wd)
        p = p - lr * g
        expected.append(p)
    assert_iterates(run_three_steps(GradientDescent(lr, weight_decay=wd), name="W"), expected)


OPTIMIZER_FACTORIES = {
    "gd": lambda: GradientDescent(0.1),
    "momentum": lambda: Momentum(0.1),
    "rmsprop": lambda: RMSprop(0.01),
    "adam": lambda: Adam(0.01),
}


@pytest.mark.parametrize("kind", list(OPTIMIZER_FACTORIES))
def test_state_is_per_parameter(kind):
    """Two parameters in one optimizer evolve exactly as with two separate optimizers; a step that
    leaves one out does not touch its state."""
    rng = np.random.default_rng(0)
    a0, b0 = rng.standard_normal((3, 2)), rng.standard_normal(5)
    grads_a = [rng.standard_normal((3, 2)) for _ in range(3)]
    grads_b = [rng.standard_normal(5) * 10 for _ in range(3)]

    shared = OPTIMIZER_FACTORIES[kind]()
    a, b, ga, gb = a0.copy(), b0.copy(), np.zeros((3, 2)), np.zeros(5)
    sep_a, sep_b = OPTIMIZER_FACTORIES[kind](), OPTIMIZER_FACTORIES[kind]()
    a2, b2, ga2, gb2 = a0.copy(), b0.copy(), np.zeros((3, 2)), np.zeros(5)
    for gA, gB in zip(grads_a, grads_b):
        ga[...], gb[...], ga2[...], gb2[...] = gA, gB, gA, gB
        shared.step([("a.W", a, ga), ("b.b", b, gb)])
        sep_a.step([("a.W", a2, ga2)])
        sep_b.step([("b.b", b2, gb2)])
    assert set(shared.state) == {"a.W", "b.b"}
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    for key in shared.state["a.W"]:
        if key != "scratch":
            assert not np.shares_memory(shared.state["a.W"][key], shared.state["b.b"][key])
            assert np.array_equal(shared.state["a.W"][key], sep_a.state["a.W"][key])
            assert np.array_equal(shared.state["b.b"][key], sep_b.state["b.b"][key])

    snapshot = {k: v.copy() for k, v in shared.state["b.b"].items() if k != "scratch"}
    b_before = b.copy()
    shared.step([("a.W", a, ga)])
    for k, v in snapshot.items():
        assert np.array_equal(shared.state["b.b"][k], v)
    assert np.array_equal(b, b_before)


def test_adam_states_differ_for_different_gradients():
    """Adam's m and v for two parameters stepped together with different gradients are different."""
    opt = Adam(0.01)
    p, q = np.zeros(3), np.zeros(3)
    opt.step([("p.W", p, np.array([1.0, 2.0, 3.0])), ("q.W", q, np.array([-1.0, 0.5, 0.0]))])
    np.testing.assert_allclose(opt.state["p.W"]["m"], [0.1, 0.2, 0.3], rtol=1e-12)
    np.testing.assert_allclose(opt.state["q.W"]["m"], [-0.1, 0.05, 0.0], rtol=1e-12)
    np.testing.assert_allclose(opt.state["q.W"]["v"], [1e-3, 2.5e-4, 0.0], rtol=1e-12)


@pytest.mark.parametrize("kind", ["gd", "momentum", "rmsprop", "adam"])
def test_float32_stays_float32(kind):
    """Float32 parameters (with weight decay) stay float32, all state is float32, and the values
    track a float64 run of the same steps closely."""
    rng = np.random.default_rng(1)
    w64, b64 = rng.standard_normal((4, 3)), rng.standard_normal(3)
    grads = [(rng.standard_normal((4, 3)), rng.standard_normal(3)) for _ in range(3)]
    results = {}
    for dtype in (np.float32, np.float64):
        opt = make_optimizer(kind, 0.01, weight_decay=0.1)
        w, b = w64.astype(dtype), b64.astype(dtype)
        gw, gb = np.zeros_like(w), np.zeros_like(b)
        for g_w, g_b in grads:
            gw[...], gb[...] = g_w, g_b
            opt.step([("0.W", w, gw), ("0.b", b, gb)])
        results[dtype] = (w, b, opt)
    w, b, opt = results[np.float32]
    assert w.dtype == np.float32 and b.dtype == np.float32
    for state in opt.state.values():
        for key, array in state.items():
            assert array.dtype == np.float32, key
    np.testing.assert_allclose(w, results[np.float64][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, results[np.float64][1], rtol=1e-5, atol=1e-6)


def test_fused_and_unfused_parameters_give_identical_results():
    """Adam (with weight decay) on the fused vectors and on per-layer arrays: bit-identical parameters."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 7)).astype(np.float32)
    y = rng.integers(0, 4, 8)
    nets = [Network.from_sizes([7, 6, 5, 4], np.random.default_rng(3)) for _ in range(2)]
    assert np.array_equal(nets[0].flat_params, nets[1].flat_params)
    opts = [Adam(0.01, weight_decay=0.1), Adam(0.01, weight_decay=0.1)]
    for _ in range(4):
        for net, opt, fused in zip(nets, opts, (True, False)):
            _, dlogits = softmax_cross_entropy(net.forward(x, training=True), y)
            net.backward(dlogits)
            opt.step(net.parameters(fused=fused))
    assert set(opts[0].state) == {"W", "b"}
    assert set(opts[1].state) == {"0.W", "0.b", "1.W", "1.b", "2.W", "2.b"}
    assert not np.array_equal(nets[0].flat_params, Network.from_sizes([7, 6, 5, 4], np.random.default_rng(3)).flat_params)
    assert np.array_equal(nets[0].flat_params, nets[1].flat_params)


def test_make_optimizer_names_and_errors():
    """make_optimizer builds each optimizer by name; an unknown name or a bad lr raises UserError."""
    for name, cls in (("gd", GradientDescent), ("momentum", Momentum), ("rmsprop", RMSprop), ("adam", Adam)):
        opt = make_optimizer(name, 0.5)
        assert type(opt) is cls and opt.lr == 0.5
    with pytest.raises(UserError, match="nope"):
        make_optimizer("nope", 0.1)
    for bad in (0.0, -0.1, math.nan, math.inf):
        with pytest.raises(UserError):
            make_optimizer("adam", bad)
    with pytest.raises(UserError):
        Adam(0.1, weight_decay=-1.0)


def test_lr_can_change_between_steps():
    """Changing optimizer.lr between steps (as schedules do) is used by the next step."""
    opt = GradientDescent(0.1)
    p, g = np.array([1.0]), np.array([1.0])
    opt.step([("W", p, g)])
    opt.lr = 0.5
    opt.step([("W", p, g)])
    np.testing.assert_allclose(p, [1.0 - 0.1 - 0.5], rtol=1e-15)


def subnormal_count(array: np.ndarray) -> int:
    size = np.abs(array)
    return int(np.count_nonzero((size > 0) & (size < np.finfo(array.dtype).tiny)))


def test_flush_tiny_zeroes_only_entries_below_the_threshold():
    threshold = flush_threshold(np.float32)
    assert 1e-31 < threshold < 1e-30  # 2**24 x 1.18e-38
    buffer = np.array([1e-30, -1e-30, 1e-31, -1e-32, 1e-40, 0.0, 1.0, -3.5], dtype=np.float32)
    flush_tiny(buffer, np.empty_like(buffer))
    np.testing.assert_array_equal(buffer, np.array([1e-30, -1e-30, 0, 0, 0, 0, 1.0, -3.5], dtype=np.float32))


@pytest.mark.parametrize("kind", [Momentum, RMSprop, Adam])
def test_state_never_holds_subnormal_numbers(kind):
    """A weight whose gradient stays zero (a pixel blank in every batch): its state shrinks by a constant
    factor each step. Without the flush it reaches the subnormal range (slow on every CPU) within a
    few hundred steps; with it, the state is never subnormal and ends exactly 0."""
    param = np.full(4, 0.5, dtype=np.float32)
    grad = np.array([1e-3, 1.0, 0.0, 1e-4], dtype=np.float32)
    optimizer = kind(lr=1e-3)
    optimizer.step([("w", param, grad)])
    grad[:] = 0.0
    for _ in range(3000):
        optimizer.step([("w", param, grad)])
        for key, buffer in optimizer.state["w"].items():
            if key != "scratch":
                assert subnormal_count(buffer) == 0, (key, optimizer.t, buffer)
    for key, buffer in optimizer.state["w"].items():
        if key not in ("scratch", "v"):  # Adam's v (beta2 = 0.999) is still far above the threshold
            np.testing.assert_array_equal(buffer, 0.0)
    assert np.all(np.isfinite(param))


def test_without_the_flush_adam_state_does_become_subnormal(monkeypatch):
    """The other side of the test above: the problem is real, so the flush is needed."""
    monkeypatch.setattr(optimizers, "FLUSH_EVERY", 10**9)
    param = np.full(2, 0.5, dtype=np.float32)
    grad = np.array([1e-3, 1.0], dtype=np.float32)
    optimizer = Adam(lr=1e-3)
    optimizer.step([("w", param, grad)])
    grad[:] = 0.0
    for _ in range(800):
        optimizer.step([("w", param, grad)])
    assert subnormal_count(optimizer.state["w"]["m"]) > 0


def test_flush_does_not_change_training(monkeypatch):
    """Training a small network with and without the flush gives the same weights, bit for bit here:
    what a flushed entry would still add to a weight is far below the weight's float32 rounding."""
    rng = np.random.default_rng(3)
    x_some = rng.random((256, 20), dtype=np.float32)
    x_blank = x_some.copy()
    x_blank[:, :5] = 0.0  # inputs that go blank after 50 steps: zero gradients, their state decays
    y = rng.integers(0, 4, 256)
    results = []
    for flush_every in (optimizers.FLUSH_EVERY, 10**9):
        monkeypatch.setattr(optimizers, "FLUSH_EVERY", flush_every)
        net = Network.from_sizes([20, 16, 4], np.random.default_rng(0))
        optimizer = Adam(lr=1e-3)
        parameters = net.parameters(fused="all")
        for step in range(900):
            rows = np.arange(step * 32, step * 32 + 32) % 256
            x = x_some if step < 50 else x_blank
            loss_and_gradient(net, x[rows], y[rows])
            optimizer.step(parameters)
        results.append((net.flat_params.copy(), optimizer.state[parameters[0][0]]["m"].copy()))
    (flushed, m_flushed), (kept, m_kept) = results
    assert subnormal_count(m_kept) > 0 and subnormal_count(m_flushed) == 0  # the flush did act
    np.testing.assert_array_equal(flushed, kept)
