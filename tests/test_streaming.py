"""Streaming: the gradient over chunks read from .npy memmaps, HDF5 and Parquet equals the
in-memory one, memory stays bounded, errors name the row in the whole stream."""

from __future__ import annotations

import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from test_grad import full_batch_adam_losses, random_problem, relative_error

import gpunet
from gpunet import Params, streaming
from gpunet.optim import make_optimizer
from gpunet.validation import NonFiniteError


def saved_npy(tmp_path, X, Y):
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", Y)
    return tmp_path / "X.npy", tmp_path / "y.npy"


def assert_same_gradient(params, source, X, Y, rtol=1e-12):
    loss, grads = streaming.loss_and_grad(params, source)
    want_loss, want_grads = gpunet.loss_and_grad(params, X, Y)
    assert float(loss) == pytest.approx(float(want_loss), rel=rtol)
    for got, want in zip(grads, want_grads, strict=True):
        assert relative_error(got, want) < rtol


@pytest.mark.parametrize("p", [1, 3])
def test_memmap_gradient_equals_in_memory(tmp_path, p):
    params, X, Y = random_problem(5003, 4, 16, p, seed=p)
    source = streaming.ArraySource.from_npy(*saved_npy(tmp_path, X, Y), rows=700)
    assert isinstance(source.X, np.memmap)
    assert_same_gradient(params, source, X, Y)


def test_float32_data_with_float32_parameters(tmp_path):
    params, X, Y = random_problem(3000, 5, 8, 1, seed=3)
    params, X, Y = params.astype(np.float32), X.astype(np.float32), Y.astype(np.float32)
    source = streaming.ArraySource.from_npy(*saved_npy(tmp_path, X, Y[:, 0]), rows=1000)
    assert_same_gradient(params, source, X, Y, rtol=1e-5)


def test_hdf5_gradient_equals_in_memory(tmp_path):
    h5py = pytest.importorskip("h5py")
    params, X, Y = random_problem(4001, 3, 8, 2, seed=4)
    with h5py.File(tmp_path / "data.h5", "w") as file:
        file.create_dataset("features", data=X, chunks=(500, 3))
        file.create_dataset("targets", data=Y)
    source = streaming.ArraySource.from_hdf5(tmp_path / "data.h5", "features", "targets", 900)
    assert_same_gradient(params, source, X, Y)


def test_parquet_row_groups_gradient_equals_in_memory(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    params, X, Y = random_problem(3001, 3, 8, 1, seed=5)
    columns = {f"x{j}": X[:, j] for j in range(3)} | {"target": Y[:, 0]}
    pq.write_table(pa.table(columns), tmp_path / "data.parquet", row_group_size=400)
    source = streaming.ParquetSource(tmp_path / "data.parquet", ["x0", "x1", "x2"], ["target"])
    assert source.file.num_row_groups == 8 and source.n_samples == 3001
    assert_same_gradient(params, source, X, Y)
    with pytest.raises(ValueError, match=r"no column\(s\) \['x9'\]"):
        streaming.ParquetSource(tmp_path / "data.parquet", ["x9"], ["target"])


def test_non_finite_data_names_the_row_in_the_stream(tmp_path):
    params, X, Y = random_problem(1000, 2, 4, 1, seed=6)
    X[777, 1] = np.nan
    source = streaming.ArraySource(X, Y, rows=100)
    with pytest.raises(NonFiniteError, match="X holds NaN or Inf \\(first at row 777\\)"):
        streaming.loss_and_grad(params, source)
    loss, _ = streaming.loss_and_grad(params, source, check_finite=False)  # no check: NaN flows
    assert np.isnan(float(loss))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_memmap_pages_are_released(tmp_path):
    # 48 MiB of X read through a memmap: without MADV_DONTNEED the file's pages would
    # stay mapped and count in RSS (RssFile) until the memmap is closed.
    m = 3 * 2**18  # X is m × 8 float64: 48 MiB
    X = np.ones((m, 8), np.float64)
    paths = saved_npy(tmp_path, X, np.ones(m))
    del X
    params = Params.init(8, 2, dtype=np.float64, seed=0)
    source = streaming.ArraySource.from_npy(*paths, rows=2**16)
    before = rss_file_kib()
    streaming.loss_and_grad(params, source)
    assert rss_file_kib() - before < 16 * 1024


def rss_file_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("RssFile"))


def test_peak_allocation_does_not_grow_with_m(tmp_path):
    peaks = {}
    for m in (20_000, 160_000):
        params, X, Y = random_problem(m, 8, 16, 1, seed=7)
        folder = tmp_path / str(m)
        folder.mkdir()
        source = streaming.ArraySource.from_npy(*saved_npy(folder, X, Y), rows=5000)
        del X, Y
        tracemalloc.start()
        streaming.loss_and_grad(params, source)
        peaks[m] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # A few chunks and the lanes' work buffers (about 5 MB), not X (10 MB at m = 160 000).
    assert peaks[160_000] < 1.1 * peaks[20_000] + 2**16
    assert peaks[160_000] < 160_000 * 8 * 8 * 3 / 4


def test_prefetch_reads_ahead_on_another_thread_and_passes_errors_on():
    readers, read = [], [threading.Event() for _ in range(3)]

    def items():
        for i in range(3):
            readers.append(threading.current_thread().name)
            read[i].set()
            yield i
        raise OSError("disk gone")

    used = []
    with pytest.raises(OSError, match="disk gone"):
        for i in streaming.prefetch(items()):
            if i + 1 < len(read):  # the next item is read while this one is in use
                assert read[i + 1].wait(timeout=10), f"item {i + 1} was not read ahead"
            used.append(i)
    assert used == [0, 1, 2]
    assert all(name.startswith("gpunet-read") for name in readers)


def test_empty_source_is_an_error():
    params, *_ = random_problem(10, 2, 3, 1)
    with pytest.raises(ValueError, match="gave no samples"):
        streaming.loss_and_grad(params, [])


def test_full_batch_fit_follows_in_memory_gradient_descent(tmp_path):
    params, X, Y = random_problem(2000, 3, 8, 1, seed=8)
    source = streaming.ArraySource.from_npy(*saved_npy(tmp_path, X, Y), rows=300)
    local, expected = full_batch_adam_losses(params, X, Y, 5)
    streamed = params.copy()
    losses = streaming.fit(
        streamed, source, make_optimizer(streamed, "adam", learning_rate_init=0.01), 5
    )
    np.testing.assert_allclose(losses, expected, rtol=1e-12)
    for got, want in zip(streamed, local, strict=True):
        assert relative_error(got, want) < 1e-12


def test_minibatch_fit_lowers_the_loss(tmp_path):
    params, X, _ = random_problem(3000, 3, 8, 1, seed=9)
    y = np.sin(X).sum(axis=1)
    source = streaming.ArraySource.from_npy(*saved_npy(tmp_path, X, y), rows=1000)
    start = float(gpunet.loss(params, X, y))
    losses = streaming.fit(
        params, source, make_optimizer(params, "adam", learning_rate_init=0.01), 5,
        batch_size=100,
    )
    assert len(losses) == 5 and losses[-1] < 0.5 * start
    assert float(gpunet.loss(params, X, y)) < 0.5 * start


class FakeEvent:
    """A CUDA event of the stand-in: it logs when the host waits on it."""

    def __init__(self, log, name):
        self.log, self.name = log, name

    def synchronize(self):
        self.log.append(f"wait {self.name}")


def test_gpu_path_copies_through_two_pinned_slots(host_cupy, monkeypatch):
    # The Python side of the GPU streaming path, on the CuPy stand-in: chunks are staged
    # in pinned buffers, copied on a second stream, and a slot is refilled only after the
    # host has waited for the event that ends the turn that last used it.
    import sys
    import types

    log, turns = [], iter(range(100))

    class Stream:
        def __init__(self, non_blocking=False):
            self.name = "copy" if non_blocking else "compute"

        def record(self):
            event = FakeEvent(log, f"{self.name} {next(turns)}")
            if self.name == "compute":
                log.append(f"record {event.name}")
            return event

        def wait_event(self, event):
            log.append(f"{self.name} waits for {event.name}")

    compute = Stream()
    monkeypatch.setattr(host_cupy.cuda, "Stream", Stream, raising=False)
    monkeypatch.setattr(host_cupy.cuda, "get_current_stream", lambda: compute, raising=False)
    monkeypatch.setattr(host_cupy.ndarray, "set",
                        lambda self, host, stream=None: np.copyto(self, host), raising=False)
    pinned = types.ModuleType("cupyx")
    pinned.empty_pinned = lambda size, dtype: np.empty(size, dtype)
    monkeypatch.setitem(sys.modules, "cupyx", pinned)

    params, X, Y = random_problem(1000, 3, 8, 1, seed=16)
    loss, grads = streaming.loss_and_grad(params.to("cupy"), streaming.ArraySource(X, Y, 300))
    want_loss, want_grads = gpunet.loss_and_grad(params, X, Y)
    assert isinstance(loss, host_cupy.ndarray)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-12)
    for got, want in zip(grads, want_grads, strict=True):
        assert relative_error(host_cupy.asnumpy(got), want) < 1e-12
    # Four chunks (300, 300, 300, 100 rows), X and Y each: the compute stream waits for
    # each copy, a turn ends with an event on it, and chunks 2 and 3 refill the slots of
    # chunks 0 and 1 only once the host has waited for the end of those turns.
    def turn(first_copy, waits_for=None):
        wait = [f"wait compute {waits_for}"] if waits_for is not None else []
        copies = [f"compute waits for copy {first_copy + i}" for i in range(2)]
        return [*wait, *copies, f"record compute {first_copy + 2}"]

    assert log == [*turn(0), *turn(3), *turn(6, waits_for=2), *turn(9, waits_for=5)]
