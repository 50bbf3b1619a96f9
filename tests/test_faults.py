"""Faults: kill -9 at any moment, a full disk, racing writers and threads lose nothing."""

from __future__ import annotations

import errno
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import KILL_REPORT

from gpunet import Params, checkpoint
from gpunet.checkpoint import CheckpointWriteError
from gpunet.cli import main
from gpunet.datasets import friedman1
from gpunet.train import TrainConfig, Trainer

EPOCHS = 40
KILLS = 8
TRAIN = ["--hidden", "16", "--batch-size", "32", "--no-early-stopping", "--checkpoint-every", "1"]


def gpunet(*argv, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "gpunet", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def first_epoch_line(child):
    """Wait for the run's first ``epoch`` line: training has begun."""
    for line in iter(child.stdout.readline, ""):
        if line.startswith("epoch"):
            return line
    raise AssertionError(f"the run printed no epoch: {child.communicate()[1]}")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    X, y = friedman1(3000, n_features=5, seed=3)
    path = folder / "train.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="a,b,c,d,e,target",
               comments="")
    return path


def test_kill_9_at_random_points_loses_only_the_current_epoch(table, tmp_path):
    """Train with a checkpoint each epoch, SIGKILL at a random moment, resume: the checkpoint
    always loads, holds at least every epoch reported before the kill, and the resumed run
    ends with the same bits as one that was never killed."""
    reference = tmp_path / "reference.npz"
    whole = gpunet("train", str(table), "--epochs", str(EPOCHS), *TRAIN,
                   "--checkpoint", str(reference))
    first_epoch_line(whole)
    started = time.perf_counter()
    _, err = whole.communicate()
    assert whole.returncode == 0, err
    training = time.perf_counter() - started  # from the first epoch's line to the end
    want, _ = checkpoint.load(reference)

    survived = []
    for seed in range(KILLS):
        path = tmp_path / f"run{seed}.npz"
        child = gpunet("train", str(table), "--epochs", str(EPOCHS), *TRAIN,
                       "--checkpoint", str(path))
        reported = [first_epoch_line(child)]
        time.sleep(random.Random(seed).uniform(0, 0.7 * training))
        child.send_signal(signal.SIGKILL)
        reported += child.communicate()[0].splitlines()
        last = max(int(m[1]) for line in reported if (m := re.match(r"epoch +(\d+)", line)))
        assert child.returncode == -signal.SIGKILL, "the run ended before it was killed"

        _, meta = checkpoint.load(path)  # always a whole checkpoint
        # A kill after the last epoch (while the process exits) leaves the final checkpoint.
        assert last <= meta["step"] <= EPOCHS
        if meta["step"] < EPOCHS:
            resumed = gpunet("train", str(table), "--resume", str(path), "--checkpoint",
                             str(path), "--epochs", str(EPOCHS - meta["step"]), "--quiet")
            _, err = resumed.communicate()
            assert resumed.returncode == 0, err
        got, _ = checkpoint.load(path)
        np.testing.assert_array_equal(got.flat, want.flat)
        assert got.history == want.history
        survived.append((seed, meta["step"]))
    KILL_REPORT.append(f"{len(survived)} of {KILLS} kill -9s survived; killed after epochs "
                       f"{[step for _, step in survived]} of {EPOCHS}, each resumed to the "
                       "same bits as an unkilled run")
    assert len(survived) == KILLS


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from gpunet import Params, checkpoint
    from gpunet.train import Trainer
    path, tag = sys.argv[1], int(sys.argv[2])
    trainer = Trainer(Params.init(300, 200, seed=0))
    for i in range(1, 10**6):
        trainer.flat[...] = tag * 10**6 + i
        trainer.history.epochs = i
        checkpoint.save(path, trainer, extra={"tag": tag})
        print(i, flush=True)
""")


def check_whole(path):
    """The file at ``path`` is one writer's one save: every array holds its one marker."""
    trainer, meta = checkpoint.load(path)
    marker = meta["extra"]["tag"] * 10**6 + meta["step"]
    assert np.all(trainer.flat == marker)
    for name in ("m.0", "v.0"):
        assert trainer.optimizer.state_dict()[name].shape == trainer.flat.shape
    return meta["extra"]["tag"]


def test_two_processes_writing_one_checkpoint_never_leave_a_mixed_file(tmp_path):
    """Two processes save to one path as fast as they can while it is read, then are killed
    at random moments mid-write: every read, and the file left, is one whole save."""
    path = tmp_path / "shared.npz"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(tag)],
                                stdout=subprocess.PIPE, text=True) for tag in (1, 2)]
    for writer in writers:
        writer.stdout.readline()  # each has saved once
    tags, reads = set(), 0
    deadline = time.perf_counter() + 3
    while time.perf_counter() < deadline:
        tags.add(check_whole(path))
        reads += 1
    rng = random.Random(0)
    for writer in writers:
        time.sleep(rng.uniform(0, 0.05))
        writer.send_signal(signal.SIGKILL)
        writer.communicate()
    check_whole(path)
    assert tags == {1, 2} and reads > 10
    # a killed save leaves at most its own temporary file, never the checkpoint's name
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "shared.npz"]
    assert all(re.fullmatch(r"\.shared\.npz\.\w+\.tmp", name) for name in leftovers)


def full_disk_after(monkeypatch, saves):
    """np.savez in gpunet.checkpoint: ``saves`` work, then each writes a little and fails with
    ENOSPC, as a full disk does."""
    real = np.savez
    count = {"n": 0}

    def savez(file, **arrays):
        count["n"] += 1
        if count["n"] <= saves:
            return real(file, **arrays)
        file.write(b"PK\x03\x04 a partial archive")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.np, "savez", savez)


def test_a_full_disk_leaves_the_previous_checkpoint_intact_and_says_so(tmp_path, monkeypatch):
    X, y = friedman1(100, seed=0)
    trainer = Trainer(Params.init(10, 4, seed=0), TrainConfig(batch_size=20))
    trainer.fit(X, y, 2)
    path = tmp_path / "model.npz"
    checkpoint.save(path, trainer)
    before = path.read_bytes()
    trainer.fit(X, y, 1)
    full_disk_after(monkeypatch, saves=0)
    with pytest.raises(CheckpointWriteError, match=r"No space left on device.*previous "
                       r"checkpoint there is intact") as caught:
        checkpoint.save(path, trainer)
    assert caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert checkpoint.load(path)[1]["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary file left


def test_gpunet_train_on_a_full_disk_keeps_training_and_the_last_checkpoint(
        table, tmp_path, monkeypatch, capsys):
    path = tmp_path / "model.npz"
    full_disk_after(monkeypatch, saves=3)
    status = main(["train", str(table), "--epochs", "6", *TRAIN, "--quiet",
                   "--checkpoint", str(path)])
    err = capsys.readouterr().err
    assert status == 2
    assert re.search(r"warning: epoch 4: .*No space left on device.*previous checkpoint there "
                     r"is intact.*\(last saved: epoch 3\); training goes on", err)
    assert "error: [Errno 28] could not write the checkpoint" in err
    assert checkpoint.load(path)[1]["step"] == 3


def test_kernels_compile_once_when_threads_start_training_together(host_cupy, monkeypatch):
    """The first uses of the kernels from eight threads at once define each kernel once and
    compile it once per dtype (the stand-in's definitions and first calls are slowed down, to
    give a race every chance)."""
    real_kernel = host_cupy.ElementwiseKernel
    compiles = []

    class SlowKernel(real_kernel):
        def __init__(self, *args, **kwargs):
            time.sleep(0.05)
            super().__init__(*args, **kwargs)
            self.compiled = set()

        def __call__(self, *args):
            if args[0].dtype not in self.compiled:
                time.sleep(0.05)
                compiles.append((self.function, args[0].dtype.name))
                self.compiled.add(args[0].dtype)
            return super().__call__(*args)

    host_cupy.ElementwiseKernel = SlowKernel
    X, y = friedman1(64, seed=0)
    barrier = threading.Barrier(8)
    errors = []

    def train(dtype):
        try:
            trainer = Trainer(Params.init(10, 4, seed=0, dtype=dtype, backend="cupy"))
            X_d, y_d = host_cupy.asarray(X, dtype=dtype), host_cupy.asarray(y, dtype=dtype)
            barrier.wait()
            trainer.fit(X_d, y_d, 2)
        except BaseException as error:  # reported below, with the thread's error
            errors.append(error)

    threads = [threading.Thread(target=train, args=(dtype,))
               for dtype in [np.float32, np.float64] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(host_cupy.kernels_built) == sorted(set(host_cupy.kernels_built))
    assert len(compiles) == len(set(compiles)), compiles
    assert {dtype for _, dtype in compiles} == {"float32", "float64"}
