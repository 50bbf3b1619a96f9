"""The training loop: it learns, it repeats exactly, it stops as MLPRegressor does."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import numpy_cupy_allclose

import gpunet
from gpunet import Params, loss_and_grad, predict, validation
from gpunet.datasets import friedman1
from gpunet.metrics import r2_score
from gpunet.train import History, TrainConfig, Trainer


@pytest.fixture(scope="module")
def data():
    X, y = friedman1(300, seed=1)
    return (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()


def train(data, epochs=20, seed=0, hidden=8, **config):
    X, y = data
    params = Params.init(X.shape[1], hidden, seed=seed)
    trainer = Trainer(params, TrainConfig(seed=seed, **config))
    reason = trainer.fit(X, y, epochs)
    return trainer, reason


def test_learns_friedman1(data):
    trainer, _ = train(data, epochs=60, solver="adam", learning_rate_init=0.01, batch_size=32)
    curve = trainer.history.loss_curve
    assert curve[-1] < 0.3 * curve[0]
    X, y = data
    assert float(r2_score(y, predict(trainer.params, X))) > 0.75


def test_a_seed_repeats_a_run_bit_for_bit(data):
    first, _ = train(data, seed=3, batch_size=16)
    again, _ = train(data, seed=3, batch_size=16)
    other, _ = train(data, seed=4, batch_size=16)
    assert first.history.loss_curve == again.history.loss_curve
    for a, b in zip(first.params, again.params, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.history.loss_curve != other.history.loss_curve


def test_trains_the_callers_params_in_place(data):
    X, y = data
    params = Params.init(X.shape[1], 4, seed=0)
    before = float(gpunet.loss(params, X, y))
    Trainer(params, TrainConfig(learning_rate_init=0.01)).fit(X, y, 5)
    assert float(gpunet.loss(params, X, y)) < before


def test_l2_penalises_weights_only(data):
    # One full-batch step of plain gradient descent, by hand:
    # W ← W − η (∂J/∂W + α W / m), b ← b − η ∂J/∂b; the epoch loss is J + α/(2m) Σ‖W‖².
    X, y = data
    alpha, lr, m = 3.0, 0.1, X.shape[0]
    params = Params.init(X.shape[1], 5, seed=0)
    start = params.copy()
    config = TrainConfig(solver="sgd", momentum=0.0, learning_rate_init=lr, alpha=alpha,
                         batch_size=m, shuffle=False)
    trainer = Trainer(params, config)
    trainer.fit(X, y, 1)

    loss, grads = loss_and_grad(start, X, y)
    penalty = alpha / (2 * m) * ((start.w1**2).sum() + (start.w2**2).sum())
    assert trainer.history.loss_curve[0] == pytest.approx(float(loss) + penalty, rel=1e-12)
    np.testing.assert_allclose(params.w1, start.w1 - lr * (grads.w1 + alpha / m * start.w1))
    np.testing.assert_allclose(params.w2, start.w2 - lr * (grads.w2 + alpha / m * start.w2))
    np.testing.assert_allclose(params.b1, start.b1 - lr * grads.b1)
    np.testing.assert_allclose(params.b2, start.b2 - lr * grads.b2)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_matches_mlpregressor_epoch_by_epoch(data, solver):
    neural_network = pytest.importorskip("sklearn.neural_network")
    X, y = data
    settings = dict(solver=solver, learning_rate_init=0.01, batch_size=50, alpha=1e-3)
    params = Params.init(X.shape[1], 7, seed=0)
    start = params.copy()
    trainer = Trainer(params, TrainConfig(shuffle=False, **settings))
    trainer.fit(X, y, 5)

    mlp = neural_network.MLPRegressor(hidden_layer_sizes=(7,), activation="logistic",
                                      shuffle=False, warm_start=True, max_iter=5, tol=0,
                                      **settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 1 and 5 epochs by design
        mlp.set_params(max_iter=1).fit(X, y)  # sets up every attribute, then:
        mlp.coefs_ = [start.w1.T.copy(), start.w2.T.copy()]
        mlp.intercepts_ = [start.b1.copy(), start.b2.copy()]
        mlp.set_params(max_iter=5).fit(X, y)
    np.testing.assert_allclose(trainer.history.loss_curve, mlp.loss_curve_[1:], rtol=1e-10)
    np.testing.assert_allclose(params.w1, mlp.coefs_[0].T, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(params.b2, mlp.intercepts_[1], rtol=1e-8)


def test_stops_after_n_iter_no_change_epochs_without_improvement(data):
    # With tol = 1e9 no epoch improves after the first, so the count passes 3 at epoch 5.
    trainer, reason = train(data, epochs=50, tol=1e9, n_iter_no_change=3)
    assert reason == "converged" and trainer.history.epochs == 5


def test_adaptive_schedule_divides_the_rate_instead_of_stopping(data):
    trainer, reason = train(data, epochs=9, tol=1e9, n_iter_no_change=2,
                            solver="sgd", learning_rate="adaptive", learning_rate_init=0.1)
    assert reason == "max_iter"
    assert trainer.optimizer.learning_rate == pytest.approx(0.1 / 25)


def test_early_stopping_keeps_the_best_weights(data):
    X, y = data
    params = Params.init(X.shape[1], 8, seed=0)
    config = TrainConfig(early_stopping=True, validation_fraction=0.2, learning_rate_init=0.05,
                         n_iter_no_change=4, seed=0)
    trainer = Trainer(params, config)
    reason = trainer.fit(X, y, 100)
    scores = trainer.history.validation_scores
    assert reason == "converged" and len(scores) == trainer.history.epochs
    assert scores.index(max(scores)) < len(scores) - 1  # the last epoch was not the best
    held = np.random.default_rng(0).permutation(len(X))[: math.ceil(0.2 * len(X))]
    assert float(r2_score(y[held], predict(params, X[held]))) == pytest.approx(max(scores))


def test_early_stopping_needs_two_held_out_samples():
    params = Params.init(2, 3, seed=0)
    trainer = Trainer(params, TrainConfig(early_stopping=True, validation_fraction=0.1))
    with pytest.raises(ValueError, match="holds out 1 of 10 samples; it needs at least 2"):
        trainer.fit(np.ones((10, 2)), np.ones(10), 1)


def test_callback_sees_each_epoch_and_can_stop(data):
    reports = []

    def watch(report):
        reports.append(report)
        return report.epoch == 3

    X, y = data
    trainer = Trainer(Params.init(X.shape[1], 4, seed=0))
    assert trainer.fit(X, y, 10, callback=watch) == "callback"
    assert [r.epoch for r in reports] == [1, 2, 3]
    assert [r.loss for r in reports] == trainer.history.loss_curve
    assert reports[0].samples == len(X) and reports[0].seconds > 0


def test_resuming_from_the_history_continues_exactly(data):
    X, y = data
    config = TrainConfig(batch_size=32, solver="sgd", learning_rate="invscaling")
    whole = Trainer(Params.init(X.shape[1], 6, seed=0), config)
    whole.fit(X, y, 6)

    part = Trainer(Params.init(X.shape[1], 6, seed=0), config)
    part.fit(X, y, 4)
    history = History(**vars(part.history))
    rest = Trainer(part.params.copy(), config, history)
    rest.optimizer.load_state_dict(part.optimizer.state_dict())
    rest.fit(X, y, 2)
    assert rest.history.loss_curve == whole.history.loss_curve
    np.testing.assert_array_equal(rest.flat, whole.flat)


def test_data_is_checked_once_per_fit(data, monkeypatch):
    calls = []
    check = validation.check_finite
    monkeypatch.setattr(validation, "check_finite", lambda *a: calls.append(a[1]) or check(*a))
    X, y = data
    Trainer(Params.init(X.shape[1], 4, seed=0), TrainConfig(batch_size=10)).fit(X, y, 3)
    assert calls == ["X", "y"]
    with pytest.raises(ValueError, match=r"X holds NaN or Inf \(first at row 2\)"):
        bad = X.copy()
        bad[2, 1] = np.nan
        Trainer(Params.init(X.shape[1], 4, seed=0)).fit(bad, y, 1)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(batch_size=0), "batch_size must be a positive integer or 'auto'"),
        (dict(alpha=-1.0), "alpha must be non-negative"),
        (dict(validation_fraction=1.0), r"validation_fraction must be in \(0, 1\)"),
        (dict(n_iter_no_change=0), "n_iter_no_change must be at least 1"),
    ],
)
def test_bad_config_is_a_clear_error(config, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**config)


@numpy_cupy_allclose(rtol=1e-9)
def test_same_training_on_numpy_and_cupy(xp):
    X, y = friedman1(200, seed=0)
    params = Params.init(10, 8, seed=0, backend=xp.__name__)
    trainer = Trainer(params, TrainConfig(batch_size=32, learning_rate_init=0.01))
    trainer.fit(xp.asarray(X), xp.asarray(y), 5)
    return xp.asarray(trainer.history.loss_curve), params.w1, params.b2


def test_early_stopping_on_a_given_validation_set(data):
    X, y = data
    config = TrainConfig(early_stopping=True, learning_rate_init=0.05, n_iter_no_change=3)
    trainer = Trainer(Params.init(X.shape[1], 8, seed=0), config)
    trainer.fit(X[:200], y[:200], 50, validation=(X[200:], y[200:]))
    best = max(trainer.history.validation_scores)
    assert float(r2_score(y[200:], predict(trainer.params, X[200:]))) == pytest.approx(best)
    with pytest.raises(ValueError, match="validation data is for early stopping"):
        Trainer(Params.init(X.shape[1], 8, seed=0)).fit(X, y, 1, validation=(X, y))


def test_gathering_in_small_blocks_changes_nothing(data, monkeypatch):
    whole, _ = train(data, epochs=3, batch_size=16)
    monkeypatch.setattr("gpunet.train.DEFAULT_WORK_BYTES", 1000)  # blocks of 16 rows
    blocked, _ = train(data, epochs=3, batch_size=16)
    assert blocked.history.loss_curve == whole.history.loss_curve
    np.testing.assert_array_equal(blocked.flat, whole.flat)
