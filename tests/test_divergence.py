"""Divergence and out of memory: training stops or carries on, never keeping a bad or half step."""

from __future__ import annotations

import re
import types
import warnings

import numpy as np
import pytest

import gpunet
from gpunet import Params, grad
from gpunet.datasets import friedman1
from gpunet.memory import MemoryWarning
from gpunet.train import DivergenceError, TrainConfig, Trainer

BATCH = 16


@pytest.fixture(scope="module")
def data():
    X, y = friedman1(160, seed=4)
    return (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()


def poisoned(data, row=37):
    """The data with one target so large that the loss of its batch overflows to inf."""
    X, y = data
    y = y.copy()
    y[row] = 1e200
    return X, y


def new_trainer(data, **config):
    X, _ = data
    return Trainer(Params.init(X.shape[1], 6, seed=0),
                   TrainConfig(batch_size=BATCH, learning_rate_init=0.01, seed=3, **config))


def state(trainer):
    arrays = {k: np.array(v) for k, v in trainer.optimizer.state_dict().items()
              if hasattr(v, "shape")}
    scalars = {k: v for k, v in trainer.optimizer.state_dict().items() if not hasattr(v, "shape")}
    return trainer.flat.copy(), arrays, scalars


def test_a_diverging_epoch_stops_naming_the_step_and_keeps_the_last_good_epoch(data):
    trainer = new_trainer(data)
    trainer.fit(*data, 3)
    flat, moments, scalars = state(trainer)

    with pytest.raises(DivergenceError) as caught:
        trainer.fit(*poisoned(data), 5)

    # Epoch 4's order comes from (seed, 3): the poisoned row's batch is its bad step.
    order = np.random.default_rng((3, 3)).permutation(160)
    step = int(np.flatnonzero(order == 37)[0]) // BATCH + 1
    error = caught.value
    assert (error.epoch, error.step) == (4, step)
    message = str(error)
    assert f"at step {step} of 10 in epoch 4" in message
    assert "after epoch 3" in message and "lower learning rate" in message
    assert "standardised" in message and "on-divergence skip" in message
    np.testing.assert_array_equal(trainer.flat, flat)
    _, after_moments, after_scalars = state(trainer)
    assert after_scalars == scalars
    for key, value in moments.items():
        np.testing.assert_array_equal(after_moments[key], value)
    assert trainer.history.epochs == 3 and len(trainer.history.loss_curve) == 3
    # and it goes on from there as if nothing had happened
    whole = new_trainer(data)
    whole.fit(*data, 5)
    trainer.fit(*data, 2)
    np.testing.assert_array_equal(trainer.flat, whole.flat)


def test_a_learning_rate_far_too_high_diverges_with_the_advice(data):
    X, y = data
    trainer = Trainer(Params.init(X.shape[1], 6, seed=0),
                      TrainConfig(solver="sgd", learning_rate_init=1e6, momentum=0.0,
                                  batch_size=BATCH))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no NumPy overflow warnings on the way
        with pytest.raises(DivergenceError, match=r"lower learning rate \(now 1e\+06\)"):
            trainer.fit(X, y, 20)
    assert np.isfinite(trainer.flat).all()


def test_skipping_leaves_out_bad_steps_and_counts_them(data):
    trainer = new_trainer(data, on_divergence="skip")
    trainer.fit(*poisoned(data), 4)
    assert trainer.history.skipped_batches == 4  # the poisoned row's batch, once an epoch
    assert np.isfinite(trainer.flat).all()
    assert np.isfinite(trainer.history.loss_curve).all()
    clean = new_trainer(data)
    clean.fit(*data, 4)
    # a tenth of the steps left out: near the clean run, not equal to it
    np.testing.assert_allclose(trainer.history.loss_curve, clean.history.loss_curve, rtol=0.2)
    assert trainer.history.loss_curve != clean.history.loss_curve


def test_when_every_step_is_bad_skipping_stops_too(data):
    X, y = data
    trainer = new_trainer(data, on_divergence="skip")
    flat = trainer.flat.copy()
    with pytest.raises(DivergenceError, match="with 10 of its 10 steps skipped"):
        trainer.fit(X, np.full_like(y, 1e200), 2)
    np.testing.assert_array_equal(trainer.flat, flat)


def count_syncs(host_cupy, monkeypatch):
    """A counter of the device-to-host reads of the CuPy stand-in's arrays."""
    counter = types.SimpleNamespace(n=0)
    for name in ("__bool__", "__float__", "__int__", "item", "get"):
        method = getattr(host_cupy.ndarray, name)

        def counted(self, *args, _method=method, **kwargs):
            counter.n += 1
            return _method(self, *args, **kwargs)

        monkeypatch.setattr(host_cupy.ndarray, name, counted)
    return counter


@pytest.mark.parametrize(("policy", "most_per_epoch"), [("stop", 1), ("skip", 11)])
def test_divergence_is_found_without_a_sync_per_step(host_cupy, monkeypatch, data, policy,
                                                     most_per_epoch):
    X, y = (host_cupy.asarray(a) for a in data)
    syncs = count_syncs(host_cupy, monkeypatch)

    def syncs_for(epochs):
        trainer = Trainer(Params.init(X.shape[1], 6, seed=0, backend="cupy"),
                          TrainConfig(batch_size=BATCH, on_divergence=policy))
        before = syncs.n
        trainer.fit(X, y, epochs)
        return syncs.n - before

    per_epoch = (syncs_for(4) - syncs_for(2)) / 2
    assert per_epoch <= most_per_epoch  # 10 steps an epoch
    if policy == "skip":
        assert per_epoch >= 10


def oom_fake(host_cupy, monkeypatch, fits_rows):
    """Register an out-of-memory error for the CuPy stand-in; gradient chunks of more than
    ``fits_rows`` samples raise it, before any result is written."""

    class OutOfMemoryError(Exception):
        pass

    host_cupy.cuda = types.SimpleNamespace(is_available=lambda: True,
                                           memory=types.SimpleNamespace(
                                               OutOfMemoryError=OutOfMemoryError))
    original = grad.GradientSums.__init__

    def allocate(self, params, rows):
        if rows > fits_rows:
            raise OutOfMemoryError(f"Out of memory allocating {rows} rows")
        original(self, params, rows)

    monkeypatch.setattr(grad.GradientSums, "__init__", allocate)
    return OutOfMemoryError


def test_out_of_memory_retries_with_smaller_chunks_and_says_so_once(host_cupy, monkeypatch):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(4000, 5)), rng.normal(size=4000)
    params = Params.init(5, 64, seed=0, backend="cupy")
    X_d, y_d = host_cupy.asarray(X), host_cupy.asarray(y)
    want_loss, want_grads = gpunet.loss_and_grad(params, X_d, y_d)
    oom_fake(host_cupy, monkeypatch, fits_rows=300)

    with pytest.warns(MemoryWarning, match="out of memory .* 4,000 samples x 64 hidden") as said:
        (loss, grads), budget = grad.loss_and_grad_fitted(params, X_d, y_d)
    assert len(said) == 1
    assert budget < gpunet.model.DEFAULT_WORK_BYTES
    np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-12)
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got.get(), want.get(), rtol=1e-10, atol=1e-15)


def test_training_shrinks_its_chunks_once_not_at_every_step(host_cupy, monkeypatch, data):
    X, y = (host_cupy.asarray(a) for a in data)
    trainer = Trainer(Params.init(X.shape[1], 6, seed=0, backend="cupy"),
                      TrainConfig(batch_size=BATCH))
    oom_fake(host_cupy, monkeypatch, fits_rows=5)
    with pytest.warns(MemoryWarning) as said:
        trainer.fit(X, y, 3)
    assert len(said) == 1
    assert trainer.history.epochs == 3 and np.isfinite(trainer.history.loss_curve).all()


def test_out_of_memory_even_one_row_at_a_time_fails_clearly_and_changes_nothing(
        host_cupy, monkeypatch, data):
    X, y = (host_cupy.asarray(a) for a in data)
    trainer = Trainer(Params.init(X.shape[1], 6, seed=0, backend="cupy"),
                      TrainConfig(batch_size=BATCH))
    trainer.fit(X, y, 1)
    flat = trainer.flat.get().copy()
    oom_fake(host_cupy, monkeypatch, fits_rows=0)
    with pytest.raises(MemoryError, match=r"16 samples x 6 hidden units.*--batch-size"):
        trainer.fit(X, y, 1)
    np.testing.assert_array_equal(trainer.flat.get(), flat)
    assert trainer.history.epochs == 1


def test_the_estimator_keeps_its_last_good_epoch_and_can_skip(data):
    pytest.importorskip("sklearn")
    from gpunet import GPUNetRegressor

    X, y = poisoned(data)
    model = GPUNetRegressor(n_hidden=6, batch_size=BATCH, random_state=0, max_iter=3)
    with pytest.raises(DivergenceError, match="epoch 1"):
        model.fit(X, y)
    assert not hasattr(model, "params_")  # no good epoch: not fitted
    model = GPUNetRegressor(n_hidden=6, batch_size=BATCH, random_state=0, max_iter=3,
                            on_divergence="skip")
    with pytest.warns(Warning, match="maximum iterations"):
        model.fit(X, y)
    assert model._trainer.history.skipped_batches == 3
    assert np.isfinite(model.predict(X)).all()


def test_gpunet_train_stops_saves_the_last_good_model_and_says_what_to_try(tmp_path, capsys):
    from gpunet import checkpoint
    from gpunet.cli import main

    X, y = friedman1(300, n_features=5, seed=0)
    path = tmp_path / "d.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,c,d,e,y", comments="")
    model = tmp_path / "m.npz"
    status = main(["train", str(path), "--optimizer", "sgd", "--lr", "1e6", "--quiet",
                   "--checkpoint", str(model)])
    err = capsys.readouterr().err
    assert status == 2
    assert "gpunet train: error: training diverged: the loss or a gradient became NaN or Inf " \
           "at step" in err
    assert "--on-divergence skip" in err and "lower learning rate (now 1e+06)" in err
    saved_epoch = int(re.search(r"the last good model \(epoch (\d+)\) is in", err)[1])
    trainer, meta = checkpoint.load(model)
    assert meta["step"] == saved_epoch and np.isfinite(trainer.flat).all()
