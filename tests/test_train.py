"""Tests for common.nn.train: overfitting a tiny set, determinism, mini-batch coverage, the epoch
loss, divergence, evaluation cadence, learning-rate schedules and bad options."""
from __future__ import annotations

import re

import numpy as np
import pytest

from common.nn.errors import UserError
from common.nn.loss import softmax_cross_entropy
from common.nn.network import Network
from common.nn.optimizers import Adam, GradientDescent, Optimizer
from common.nn.schedules import cosine
from common.nn.train import DivergenceError, iterate_minibatches, starting_loss, train


def random_problem(seed: int = 0, n: int = 50, d: int = 20, k: int = 10, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, k, n)


def test_overfits_random_labels():
    """A 20-32-10 network memorises 50 examples with random labels: 100 % training accuracy."""
    x, y = random_problem(0)
    net = Network.from_sizes([20, 32, 10], np.random.default_rng(1))
    history = train(net, Adam(1e-2), x, y, epochs=150, rng=np.random.default_rng(2), batch_size=10,
                    eval_sets={"train": (x, y)}, eval_every=50, progress=False)
    assert history[-1]["train_accuracy"] == 1.0
    assert np.mean(net.predict(x) == y) == 1.0
    assert history[-1]["loss"] < 0.1 < history[0]["loss"]


def run(seed_net: int, seed_train: int, epochs: int = 4):
    x, y = random_problem(3)
    net = Network.from_sizes([20, 16, 10], np.random.default_rng(seed_net), hidden_dropout=0.2)
    history = train(net, Adam(1e-2), x, y, epochs=epochs, rng=np.random.default_rng(seed_train),
                    batch_size=8, eval_sets={"train": (x, y)}, progress=False)
    return net, history


def strip_times(history):
    return [{k: v for k, v in record.items() if k not in ("seconds", "train_seconds")} for record in history]


def test_training_is_deterministic():
    """Same seeds (with dropout and shuffling): identical histories (timing aside) and bit-identical parameters."""
    net_a, hist_a = run(4, 5)
    net_b, hist_b = run(4, 5)
    assert strip_times(hist_a) == strip_times(hist_b)
    assert np.array_equal(net_a.flat_params, net_b.flat_params)
    for record in hist_a:
        assert {"epoch", "loss", "lr", "train_accuracy", "seconds", "train_seconds"} <= set(record)


def test_different_seeds_differ():
    """A different training seed (shuffling, dropout masks) or network seed gives different results."""
    net_a, hist_a = run(4, 5)
    net_b, hist_b = run(4, 6)
    net_c, _ = run(7, 5)
    assert not np.array_equal(net_a.flat_params, net_b.flat_params)
    assert [r["loss"] for r in hist_a] != [r["loss"] for r in hist_b]
    assert not np.array_equal(net_a.flat_params, net_c.flat_params)


def test_minibatches_cover_every_example_once():
    """N=10, batch 4: sizes [4, 4, 2], every index exactly once, in a shuffled order."""
    batches = list(iterate_minibatches(10, 4, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    orders = [np.concatenate(list(iterate_minibatches(10, 4, np.random.default_rng(s)))) for s in range(5)]
    assert any(not np.array_equal(o, np.arange(10)) for o in orders)


def test_full_batch_yields_all():
    """batch_size >= N yields one batch selecting every example; train with batch_size=None steps once per epoch."""
    batches = list(iterate_minibatches(10, 10, np.random.default_rng(0)))
    assert len(batches) == 1
    np.testing.assert_array_equal(np.arange(10)[batches[0]], np.arange(10))
    x, y = random_problem(1, n=12)
    opt = GradientDescent(0.01)
    train(Network.from_sizes([20, 5, 10], np.random.default_rng(0)), opt, x, y, epochs=3,
          rng=np.random.default_rng(0), batch_size=None, progress=False)
    assert opt.t == 3


class Frozen(Optimizer):
    """An optimizer that never changes anything (to check the loss bookkeeping)."""

    def update(self, param, grad, state):
        pass


@pytest.mark.parametrize("batch_size", [7, 50, 13])
def test_epoch_loss_is_mean_over_examples(batch_size):
    """With frozen parameters, the recorded epoch loss equals the full-data mean loss, also when the
    batch size does not divide N (the last batch must be weighted by its size)."""
    x, y = random_problem(2, dtype=np.float64)
    net = Network.from_sizes([20, 12, 10], np.random.default_rng(3), dtype="float64")
    expected, _ = softmax_cross_entropy(net.forward(x), y)
    history = train(net, Frozen(0.1), x, y, epochs=2, rng=np.random.default_rng(4),
                    batch_size=batch_size, progress=False)
    for record in history:
        assert record["loss"] == pytest.approx(expected, rel=1e-12)


def test_full_batch_is_one_pass_of_the_whole_batch():
    """Full-batch gradient descent (``batch_size=None``) steps with the gradient of all N rows at
    once: one iteration equals a step computed by hand from a single forward and backward pass."""
    x, y = random_problem(4, dtype=np.float64)
    net = Network.from_sizes([20, 16, 12, 10], np.random.default_rng(5), dtype="float64")
    twin = Network.from_sizes([20, 16, 12, 10], np.random.default_rng(5), dtype="float64")
    _, dlogits = softmax_cross_entropy(twin.forward(x, training=True), y)
    twin.backward(dlogits)
    expected = twin.flat_params - 0.1 * twin.flat_grads
    train(net, GradientDescent(0.1), x, y, epochs=1, rng=np.random.default_rng(0), progress=False)
    np.testing.assert_allclose(net.flat_params, expected, rtol=1e-12, atol=1e-15)


def test_divergence_raises_with_epoch_and_advice():
    """Plain GD with lr 1e8 on raw 0-255 pixels blows up: DivergenceError (a UserError) naming the epoch."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 20)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    net = Network.from_sizes([20, 32, 10], np.random.default_rng(1))
    with np.errstate(all="ignore"), pytest.raises(DivergenceError) as info:
        train(net, GradientDescent(1e8), x, y, epochs=10, rng=np.random.default_rng(2), progress=False)
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert re.search(r"\bepoch [1-9]\d*\b", message), message
    assert "lower learning rate" in message
    assert "\n" not in message


def test_divergence_in_the_last_step_is_not_returned():
    """If the final update makes the parameters non-finite, train must raise DivergenceError instead of
    returning a history and a network full of inf/NaN (the loss check alone runs before each step)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 20)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    net = Network.from_sizes([20, 16, 10], np.random.default_rng(1))
    with np.errstate(all="ignore"), pytest.raises(DivergenceError):
        train(net, GradientDescent(1e38), x, y, epochs=1, rng=np.random.default_rng(2),
              eval_sets={"train": (x, y)}, progress=False)


def test_finite_blow_up_is_divergence_too():
    """Adam at lr 1e6 sends the loss to ~1e20 while every number stays finite: still a DivergenceError,
    naming the epoch and the starting loss, not a 'trained' network that answers one class."""
    rng = np.random.default_rng(0)
    x = rng.random((512, 20), dtype=np.float32)
    y = rng.integers(0, 10, 512)
    net = Network.from_sizes([20, 32, 10], np.random.default_rng(1))
    with np.errstate(all="ignore"), pytest.raises(DivergenceError) as info:
        train(net, Adam(lr=1e6), x, y, epochs=3, batch_size=64, rng=np.random.default_rng(2), progress=False)
    message = str(info.value)
    assert "blew up at epoch 1" in message and "starting loss" in message and "lower learning rate" in message
    assert "--" not in message  # the core speaks of networks; the command line adds its option names


def test_no_false_blow_up_alarm_on_ordinary_training():
    """A sensible run is never stopped by the blow-up check: its loss only falls below the starting loss."""
    rng = np.random.default_rng(0)
    x = rng.random((512, 20), dtype=np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    net = Network.from_sizes([20, 32, 10], np.random.default_rng(1))
    history = train(net, Adam(lr=1e-2), x, y, epochs=5, batch_size=64, rng=np.random.default_rng(2), progress=False)
    assert history[-1]["loss"] < history[0]["loss"] < starting_loss(Network.from_sizes([20, 32, 10], np.random.default_rng(1)), x, y)


def test_starting_loss_is_at_least_a_uniform_guess():
    net = Network.from_sizes([20, 8, 10], np.random.default_rng(1), init="normal", init_scale=0.0)
    x = np.ones((4, 20), dtype=np.float32)
    assert starting_loss(net, x, np.zeros(4, dtype=np.int64)) == pytest.approx(np.log(10), rel=1e-6)


def test_eval_every_records_none_between_evaluations():
    """eval_every=3 over 7 epochs: accuracies on epochs 3, 6 and 7 (the last), None on the others."""
    x, y = random_problem(5, n=20)
    history = train(Network.from_sizes([20, 8, 10], np.random.default_rng(0)), Adam(1e-3), x, y,
                    epochs=7, rng=np.random.default_rng(1), batch_size=10, eval_every=3,
                    eval_sets={"train": (x, y), "test": (x[:5], y[:5])}, progress=False)
    assert [r["epoch"] for r in history] == list(range(1, 8))
    for record in history:
        evaluated = record["epoch"] in (3, 6, 7)
        for key in ("train_accuracy", "test_accuracy"):
            assert (record[key] is not None) == evaluated, (record["epoch"], key)
            if evaluated:
                assert 0.0 <= record[key] <= 1.0


def test_bad_arguments_raise_user_error():
    """epochs=0, eval_every=0, batch size 0, empty data, or mismatched labels: UserError."""
    x, y = random_problem(6, n=10)
    net = Network.from_sizes([20, 4, 10], np.random.default_rng(0))
    cases = [dict(epochs=0), dict(epochs=1, eval_every=0), dict(epochs=1, batch_size=0)]
    for kwargs in cases:
        with pytest.raises(UserError):
            train(net, Adam(), x, y, rng=np.random.default_rng(0), progress=False, **kwargs)
    with pytest.raises(UserError):
        train(net, Adam(), x[:0], y[:0], epochs=1, rng=np.random.default_rng(0), progress=False)
    with pytest.raises(UserError):
        train(net, Adam(), x, y[:5], epochs=1, rng=np.random.default_rng(0), progress=False)


def test_lr_schedule_sets_lr_each_epoch():
    """A schedule sets optimizer.lr at the start of every epoch; the history records it."""
    x, y = random_problem(7, n=10)
    schedule = cosine(0.1, 4)
    seen = []

    class Recording(GradientDescent):
        def step(self, parameters):
            seen.append(self.lr)
            super().step(parameters)

    opt = Recording(1.0)
    history = train(Network.from_sizes([20, 4, 10], np.random.default_rng(0)), opt, x, y, epochs=4,
                    rng=np.random.default_rng(0), batch_size=5, lr_schedule=schedule, progress=False)
    expected = [schedule(e) for e in range(4)]
    assert [r["lr"] for r in history] == expected
    assert seen == [lr for lr in expected for _ in range(2)]
    assert expected[0] == 0.1 and expected[-1] < expected[1] < 0.1


def test_progress_line_is_printed(capsys):
    """progress=True prints one line per evaluated epoch with the loss and accuracy."""
    x, y = random_problem(8, n=10)
    train(Network.from_sizes([20, 4, 10], np.random.default_rng(0)), Adam(), x, y, epochs=2,
          rng=np.random.default_rng(0), eval_sets={"train": (x, y)}, progress=True)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[-1].startswith("epoch 2/2") and "loss" in lines[-1] and "train" in lines[-1]
