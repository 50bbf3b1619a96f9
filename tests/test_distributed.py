"""Dask: on a LocalCluster of 2 worker processes, the distributed gradient equals the
single-process one, training reaches the same loss, and a lost worker changes nothing."""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import pytest
from test_grad import full_batch_adam_losses, random_problem, relative_error

import gpunet
from gpunet.optim import make_optimizer

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed_dask = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

from gpunet import distributed  # noqa: E402  (needs Dask)

# The workers unpickle this module's helpers by value: tests/ is not on their path.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client():
    with distributed_dask.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster, distributed_dask.Client(cluster) as client:
        yield client


def as_dask(X, Y, rows):
    return da.from_array(X, chunks=(rows, -1)), da.from_array(Y, chunks=(rows, -1))


@pytest.mark.parametrize("p", [1, 3])
def test_gradient_equals_single_process(client, p):
    params, X, Y = random_problem(20_011, 5, 16, p, seed=10 + p)
    loss, grads = distributed.loss_and_grad(params, *as_dask(X, Y, 997))  # 21 uneven blocks
    want_loss, want_grads = gpunet.loss_and_grad(params, X, Y)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-12)
    for got, want in zip(grads, want_grads, strict=True):
        assert relative_error(got, want) < 1e-12
    assert len(client.scheduler_info()["workers"]) == 2


def test_tree_of_block_sums_weights_blocks_by_size(client):
    # Blocks of 1 and 4000 rows: an unweighted mean of per-block gradients would be far off.
    params, X, Y = random_problem(4001, 3, 8, 1, seed=12)
    X_dask = da.concatenate([da.from_array(X[:1]), da.from_array(X[1:], chunks=(4000, 3))])
    loss, grads = distributed.loss_and_grad(params, X_dask, Y[:, 0], split_every=2)
    want_loss, want_grads = gpunet.loss_and_grad(params, X, Y)
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-12)
    assert relative_error(grads.w1, want_grads.w1) < 1e-12


def test_full_batch_training_reaches_the_local_loss(client):
    params, X, Y = random_problem(6000, 4, 8, 1, seed=13)
    local, expected = full_batch_adam_losses(params, X, Y, 4)
    remote = params.copy()
    losses = distributed.fit(
        remote, *as_dask(X, Y, 1000), make_optimizer(remote, "adam", learning_rate_init=0.01), 4
    )
    np.testing.assert_allclose(losses, expected, rtol=1e-12)
    assert float(gpunet.loss(remote, X, Y)) == pytest.approx(float(gpunet.loss(local, X, Y)),
                                                            rel=1e-12)


def test_minibatch_training_matches_one_process(client):
    params, X, _ = random_problem(6000, 4, 8, 1, seed=14)
    y = np.sin(X).sum(axis=1)

    def train(scheduler):
        trained = params.copy()
        optimizer = make_optimizer(trained, "adam", learning_rate_init=0.01)
        with dask.config.set(scheduler=scheduler):
            return distributed.fit(trained, *as_dask(X, y[:, None], 1500), optimizer, 2,
                                   batch_size=200), trained

    (losses, trained), (local_losses, local) = train(client), train("sync")
    np.testing.assert_allclose(losses, local_losses, rtol=1e-12)
    for got, want in zip(trained, local, strict=True):
        assert relative_error(got, want) < 1e-12
    assert losses[-1] < 0.5 * float(gpunet.loss(params, X, y))


def slowly(block):
    time.sleep(0.15)
    return block


def test_a_worker_killed_mid_computation_does_not_change_the_result(client):
    params, X, Y = random_problem(12_000, 4, 8, 2, seed=15)
    X_dask, Y_dask = as_dask(X, Y, 500)
    graph = distributed.gradient_sums_graph(params, X_dask.map_blocks(slowly), Y_dask)
    with dask.config.set(scheduler="sync"):
        want_loss, want_grads = graph.compute().result()

    pids = client.run(os.getpid)
    future = client.compute(graph)
    victim = wait_for_results_on_a_worker(client)
    assert not future.done(), "the computation ended before a worker could be killed"
    os.kill(pids[victim], signal.SIGKILL)  # the Nanny starts a new worker in its place
    loss, grads = future.result(timeout=60).result()

    assert victim not in client.scheduler_info()["workers"]
    assert float(loss) == pytest.approx(float(want_loss), rel=1e-12)
    for got, want in zip(grads, want_grads, strict=True):
        assert relative_error(got, want) < 1e-12


def wait_for_results_on_a_worker(client, timeout=30.0):
    """The address of a worker that holds finished tasks of the running computation."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = client.has_what()
        for worker, keys in held.items():
            if len(keys) >= 2:
                return worker
        time.sleep(0.02)
    raise AssertionError("no worker finished a task in time")
