"""Tests for common.nn.optimizers: three steps of each rule against the textbook's (common.nn.reference)
and against numbers worked out by hand, per-group state, dtype preservation, one group or two, the flush
of tiny state to zero (no subnormal numbers), bad options."""
from __future__ import annotations

import math

import numpy as np
import pytest

from common.nn import optimizers, reference
from common.nn.errors import UserError
from common.nn.network import Network
from common.nn.optimizers import (
    Adam,
    GradientDescent,
    Momentum,
    ParamGroup,
    RMSprop,
    flush_threshold,
    flush_tiny,
    make_optimizer,
)
from common.nn.train import loss_and_gradient

P0 = np.array([1.0, -2.0, 0.5, 0.0])
GRADS = [np.array([0.1, -0.3, 2.0, 0.0]),
         np.array([-0.2, -0.1, 1.5, 1e-3]),
         np.array([0.4, 0.0, -1.0, -2.0])]


def run_three_steps(optimizer, decay: bool = False, p0: np.ndarray = P0) -> list[np.ndarray]:
    """Step ``optimizer`` three times on one float64 parameter with the fixed GRADS; return the iterates."""
    param = p0.copy()
    grad = np.zeros_like(param)
    iterates = []
    for g in GRADS:
        grad[...] = g
        optimizer.step([ParamGroup("p", param, grad, decay)])
        iterates.append(param.copy())
    return iterates


def textbook_three_steps(rule: str, lr: float, weight_decay: float = 0.0, **settings) -> list[np.ndarray]:
    """The same three steps by ``reference.<rule>_step`` (after ``reference.decay_weights`` if decaying)."""
    param = P0.copy()
    state = [np.zeros_like(param) for _ in range({"sgd": 0, "momentum": 1, "rmsprop": 1, "adam": 2}[rule])]
    iterates = []
    for t, g in enumerate(GRADS, start=1):
        if weight_decay:
            reference.decay_weights(param, lr, weight_decay)
        step = getattr(reference, f"{rule}_step")
        if rule == "adam":
            step(param, g, *state, t, lr, **settings)
        else:
            step(param, g, *state, lr, **settings)
        iterates.append(param.copy())
    return iterates


def assert_iterates(actual, expected):
    for step, (a, e) in enumerate(zip(actual, expected), start=1):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-15, err_msg=f"after step {step}")


def test_gradient_descent_is_the_textbook_step_and_the_hand_numbers():
    """GD: p = p - lr * g, by the reference and by hand."""
    expected = textbook_three_steps("sgd", 0.1)
    assert_iterates(run_three_steps(GradientDescent(0.1)), expected)
    np.testing.assert_allclose(expected[0], [0.99, -1.97, 0.3, 0.0], rtol=1e-15)


def test_momentum_is_the_textbook_step_and_the_hand_numbers():
    """Heavy ball: v = mu * v + g; p = p - lr * v."""
    expected = textbook_three_steps("momentum", 0.1, momentum=0.9)
    assert_iterates(run_three_steps(Momentum(0.1, momentum=0.9)), expected)
    # step 2 by hand: v = 0.9 * g1 + g2, p = P0 - 0.1 * g1 - 0.1 * v
    np.testing.assert_allclose(expected[1], P0 - 0.1 * GRADS[0] - 0.1 * (0.9 * GRADS[0] + GRADS[1]), rtol=1e-14)


def test_rmsprop_is_the_textbook_step_and_the_hand_numbers():
    """RMSprop: s = rho * s + (1 - rho) * g**2; p = p - lr * g / (sqrt(s) + eps)."""
    expected = textbook_three_steps("rmsprop", 0.01, rho=0.9, eps=1e-8)
    assert_iterates(run_three_steps(RMSprop(0.01, rho=0.9, eps=1e-8)), expected)
    # the first step moves every element with a nonzero gradient by lr / sqrt(0.1) = 3.16 lr
    np.testing.assert_allclose(np.abs(expected[0] - P0)[:3], 0.01 / math.sqrt(0.1), rtol=1e-6)


def test_adam_is_the_textbook_step():
    """Adam's cheaper form gives the textbook's m_hat / v_hat steps; with bias correction the first
    step moves each element by about lr (without it, by about 3.16 lr)."""
    expected = textbook_three_steps("adam", 0.01, beta1=0.9, beta2=0.999, eps=1e-8)
    assert_iterates(run_three_steps(Adam(0.01, beta1=0.9, beta2=0.999, eps=1e-8)), expected)
    np.testing.assert_allclose(np.abs(expected[0] - P0)[:3], 0.01, rtol=1e-5)


def test_adam_large_eps_bias_correction_placement():
    """With a large eps the place where eps enters (after un-biasing v) matters: still the textbook rule."""
    expected = textbook_three_steps("adam", 0.05, beta1=0.8, beta2=0.99, eps=0.5)
    assert_iterates(run_three_steps(Adam(0.05, beta1=0.8, beta2=0.99, eps=0.5)), expected)
    # step 1 by hand: m_hat = g, v_hat = g**2, so p = P0 - lr * g / (|g| + eps)
    g = GRADS[0]
    np.testing.assert_allclose(expected[0], P0 - 0.05 * g / (np.abs(g) + 0.5), rtol=1e-14)


def test_adamw_decays_weights_not_biases():
    """AdamW: a group with ``decay`` is shrunk by (1 - lr*wd) each step before Adam; one without is not."""
    wd = 0.5
    weights = run_three_steps(Adam(0.01, weight_decay=wd), decay=True)
    biases = run_three_steps(Adam(0.01, weight_decay=wd), decay=False)
    assert_iterates(weights, textbook_three_steps("adam", 0.01, weight_decay=wd))
    assert_iterates(biases, textbook_three_steps("adam", 0.01))
    assert not np.array_equal(weights[-1], biases[-1])


def test_sgd_weight_decay_is_the_textbook_step():
    """Decoupled decay also works for plain GD: p = p * (1 - lr*wd) - lr * g."""
    expected = textbook_three_steps("sgd", 0.1, weight_decay=0.2)
    assert_iterates(run_three_steps(GradientDescent(0.1, weight_decay=0.2), decay=True), expected)
    np.testing.assert_allclose(expected[0], P0 * (1 - 0.1 * 0.2) - 0.1 * GRADS[0], rtol=1e-15)


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
        shared.step([ParamGroup("a", a, ga), ParamGroup("b", b, gb)])
        sep_a.step([ParamGroup("a", a2, ga2)])
        sep_b.step([ParamGroup("b", b2, gb2)])
    assert set(shared.state) == {"a", "b"} and set(shared.scratch) == {"a", "b"}
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert not np.shares_memory(shared.scratch["a"], shared.scratch["b"])
    for key in shared.state["a"]:
        assert not np.shares_memory(shared.state["a"][key], shared.state["b"][key])
        assert np.array_equal(shared.state["a"][key], sep_a.state["a"][key])
        assert np.array_equal(shared.state["b"][key], sep_b.state["b"][key])

    snapshot = {k: v.copy() for k, v in shared.state["b"].items()}
    b_before = b.copy()
    shared.step([ParamGroup("a", a, ga)])
    for k, v in snapshot.items():
        assert np.array_equal(shared.state["b"][k], v)
    assert np.array_equal(b, b_before)


def test_adam_states_differ_for_different_gradients():
    """Adam's m and v for two parameters stepped together with different gradients are different."""
    opt = Adam(0.01)
    p, q = np.zeros(3), np.zeros(3)
    opt.step([ParamGroup("p", p, np.array([1.0, 2.0, 3.0])), ParamGroup("q", q, np.array([-1.0, 0.5, 0.0]))])
    np.testing.assert_allclose(opt.state["p"]["m"], [0.1, 0.2, 0.3], rtol=1e-12)
    np.testing.assert_allclose(opt.state["q"]["m"], [-0.1, 0.05, 0.0], rtol=1e-12)
    np.testing.assert_allclose(opt.state["q"]["v"], [1e-3, 2.5e-4, 0.0], rtol=1e-12)


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
            opt.step([ParamGroup("w", w, gw, decay=True), ParamGroup("b", b, gb)])
        results[dtype] = (w, b, opt)
    w, b, opt = results[np.float32]
    assert w.dtype == np.float32 and b.dtype == np.float32
    for state in opt.state.values():
        for key, array in state.items():
            assert array.dtype == np.float32, key
    assert all(array.dtype == np.float32 for array in opt.scratch.values())
    np.testing.assert_allclose(w, results[np.float64][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, results[np.float64][1], rtol=1e-5, atol=1e-6)


def test_one_group_or_two_give_identical_results_without_decay():
    """Adam without weight decay on one group of everything and on weights and biases apart: the same
    parameters, bit for bit (the rules are element-wise); with decay the two groups differ as they should."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 7)).astype(np.float32)
    y = rng.integers(0, 4, 8)
    nets = [Network.from_sizes([7, 6, 5, 4], np.random.default_rng(3)) for _ in range(2)]
    assert np.array_equal(nets[0].flat_params, nets[1].flat_params)
    opts = [Adam(0.01), Adam(0.01)]
    for _ in range(4):
        for net, opt, split in zip(nets, opts, (False, True)):
            loss_and_gradient(net, x, y)
            opt.step(net.parameter_groups(decay_weights=split))
    assert set(opts[0].state) == {"parameters"} and set(opts[1].state) == {"weights", "biases"}
    assert not np.array_equal(nets[0].flat_params, Network.from_sizes([7, 6, 5, 4], np.random.default_rng(3)).flat_params)
    assert np.array_equal(nets[0].flat_params, nets[1].flat_params)
    groups = nets[0].parameter_groups()
    assert [(g.name, g.decay) for g in groups] == [("weights", True), ("biases", False)]
    assert sum(g.param.size for g in groups) == nets[0].num_parameters


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
    opt.step([ParamGroup("w", p, g)])
    opt.lr = 0.5
    opt.step([ParamGroup("w", p, g)])
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
    optimizer.step([ParamGroup("w", param, grad)])
    grad[:] = 0.0
    for _ in range(3000):
        optimizer.step([ParamGroup("w", param, grad)])
        for key, buffer in optimizer.state["w"].items():
            assert subnormal_count(buffer) == 0, (key, optimizer.t, buffer)
    for key, buffer in optimizer.state["w"].items():
        if key != "v":  # Adam's v (beta2 = 0.999) is still far above the threshold
            np.testing.assert_array_equal(buffer, 0.0)
    assert np.all(np.isfinite(param))


def test_without_the_flush_adam_state_does_become_subnormal(monkeypatch):
    """The other side of the test above: the problem is real, so the flush is needed."""
    monkeypatch.setattr(optimizers, "FLUSH_EVERY", 10**9)
    param = np.full(2, 0.5, dtype=np.float32)
    grad = np.array([1e-3, 1.0], dtype=np.float32)
    optimizer = Adam(lr=1e-3)
    optimizer.step([ParamGroup("w", param, grad)])
    grad[:] = 0.0
    for _ in range(800):
        optimizer.step([ParamGroup("w", param, grad)])
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
        groups = net.parameter_groups(decay_weights=False)
        for step in range(900):
            rows = np.arange(step * 32, step * 32 + 32) % 256
            x = x_some if step < 50 else x_blank
            loss_and_gradient(net, x[rows], y[rows])
            optimizer.step(groups)
        results.append((net.flat_params.copy(), optimizer.state["parameters"]["m"].copy()))
    (flushed, m_flushed), (kept, m_kept) = results
    assert subnormal_count(m_kept) > 0 and subnormal_count(m_flushed) == 0  # the flush did act
    np.testing.assert_array_equal(flushed, kept)
