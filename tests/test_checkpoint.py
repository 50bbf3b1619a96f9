"""Checkpoints: exact resume, no code on load, atomic writes, clear errors."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import gpunet
from gpunet import Params, checkpoint
from gpunet.checkpoint import CheckpointError
from gpunet.datasets import friedman1
from gpunet.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def data():
    X, y = friedman1(200, seed=2)
    return (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()


def new_trainer(data, **config):
    X, _ = data
    return Trainer(Params.init(X.shape[1], 6, seed=0), TrainConfig(batch_size=32, seed=5, **config))


@pytest.mark.parametrize(
    "config",
    [
        dict(solver="adam"),
        dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.1),
        dict(solver="sgd", learning_rate="adaptive", tol=1e9, n_iter_no_change=1),
        # the 4th epoch is not the best: the checkpoint holds the best and the latest weights
        dict(early_stopping=True, validation_fraction=0.2, learning_rate_init=0.1, tol=0.0),
    ],
    ids=["adam", "sgd-invscaling", "sgd-adaptive", "early-stopping"],
)
def test_resume_equals_uninterrupted_training_bit_for_bit(data, tmp_path, config):
    X, y = data
    whole = new_trainer(data, **config)
    whole.fit(X, y, 7)

    first = new_trainer(data, **config)
    first.fit(X, y, 4)
    if first.config.early_stopping:
        scores = first.history.validation_scores
        assert scores[-1] < max(scores)
        np.testing.assert_array_equal(first.params.w1, first.best_params.w1)
    checkpoint.save(tmp_path / "run.npz", first, extra={"note": "four epochs"})
    resumed, meta = checkpoint.load(tmp_path / "run.npz")
    resumed.fit(X, y, 3)

    assert resumed.history == whole.history
    np.testing.assert_array_equal(resumed.flat, whole.flat)
    assert resumed.optimizer.state_dict().keys() == whole.optimizer.state_dict().keys()
    assert meta["step"] == 4 and meta["extra"] == {"note": "four epochs"}
    assert meta["gpunet"] == gpunet.__version__ and meta["dtype"] == "float64"
    assert meta["shapes"]["params/w1"] == [6, 10] and meta["loss"] == first.history.loss_curve[-1]


def test_a_pickle_in_a_checkpoint_is_never_run(data, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    trainer = new_trainer(data)
    checkpoint.save(tmp_path / "good.npz", trainer)
    with np.load(tmp_path / "good.npz") as archive:
        entries = dict(archive)
    for name in ("params/w1", "meta"):
        crafted = {**entries, name: np.array([Payload()], dtype=object)}
        path = tmp_path / f"crafted-{name.replace('/', '-')}.npz"
        np.savez(path, **crafted)  # np.savez pickles object arrays
        with pytest.raises(CheckpointError, match="holds pickled Python objects"):
            checkpoint.load(path)
        assert not marker.exists()


def test_writes_are_atomic(data, tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    trainer = new_trainer(data)
    checkpoint.save(path, trainer)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    trainer.fit(*data, 1)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, trainer)
    assert path.read_bytes() == before  # the old checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]  # no temporary left


def test_loads_on_the_numpy_backend_by_name(data, tmp_path):
    checkpoint.save(tmp_path / "m.npz", new_trainer(data))
    trainer, _ = checkpoint.load(tmp_path / "m.npz", backend="numpy")
    assert trainer.params.backend == "numpy" and np.shares_memory(trainer.params.w1, trainer.flat)


@pytest.mark.gpu
def test_a_cpu_checkpoint_resumes_on_the_gpu(data, tmp_path):
    import cupy

    X, y = data
    cpu = new_trainer(data)
    cpu.fit(X, y, 2)
    checkpoint.save(tmp_path / "m.npz", cpu)
    gpu, _ = checkpoint.load(tmp_path / "m.npz", backend="cupy")
    assert isinstance(gpu.params.w1, cupy.ndarray)
    gpu.fit(cupy.asarray(X), cupy.asarray(y), 2)
    cpu.fit(X, y, 2)
    np.testing.assert_allclose(gpu.flat.get(), cpu.flat, rtol=1e-9)


def rewrite(path, change):
    with np.load(path) as archive:
        entries = dict(archive)
    meta = json.loads(str(entries["meta"]))
    change(entries, meta)
    entries["meta"] = np.array(json.dumps(meta))
    np.savez(path, **entries)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "not a complete .npz archive"),
        (lambda p: p.write_bytes(b"not a zip file at all"), "not a complete .npz archive"),
        (lambda p: np.savez(p, w=np.ones(3)), "not a gpunet checkpoint: it has no 'meta'"),
        (lambda p: rewrite(p, lambda e, m: m.update(format_version=99)), "checkpoint format 99"),
        (
            lambda p: rewrite(p, lambda e, m: e.update({"params/w1": np.ones((2, 2))})),
            r"array 'params/w1' holds shape \(2, 2\); expected \(6, 10\)",
        ),
        (
            lambda p: rewrite(p, lambda e, m: m["config"].update(solver="sgd")),
            "do not fit together: optimizer state is for 'adam'",
        ),
        (lambda p: p.unlink(), "no such checkpoint file"),
    ],
    ids=["truncated", "garbage", "foreign-npz", "future-format", "wrong-shape", "wrong-optimizer",
         "missing"],
)
def test_bad_files_get_clear_errors(data, tmp_path, damage, message):
    path = tmp_path / "m.npz"
    checkpoint.save(path, new_trainer(data))
    damage(path)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(path)


def test_corrupt_bytes_inside_an_entry_are_caught(data, tmp_path):
    path = tmp_path / "m.npz"
    checkpoint.save(path, new_trainer(data))
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("params/w1.npy")
    raw = bytearray(path.read_bytes())
    raw[info.header_offset + 100] ^= 0xFF  # inside the stored w1 data: the CRC no longer holds
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load(path)
