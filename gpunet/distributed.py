"""Data-parallel gradients and training on Dask (``pip install 'gpunet[dask]'``).

X is a dask array (m, d) of NumPy or CuPy blocks of rows, y (m,) or (m, p).
Each block b adds its terms into a :class:`gpunet.grad.GradientSums` (its
m_b samples' Σ‖R_i‖² and gradient sums, on the device where the block lives),
and the per-block sums are added up a tree of fixed shape, ``split_every`` at
a node, in block order:

    J = 1/(2m) Σ_b Σ_{i∈b} ‖R_i‖²        ∂J/∂θ = 1/m Σ_b (Σ_{i∈b} terms),  m = Σ_b m_b

so each block counts by its size, the result equals the single-process
gradient within rounding, and it is the same from run to run whichever
workers compute which blocks. Dask schedules the tasks, moves the parameters
to the workers (one graph key, fetched once by each worker that needs it)
and, when a worker is lost, recomputes what it held; no task changes its
inputs, so a recomputed task gives the same bits.

It runs on whichever scheduler is active: a ``dask.distributed.Client`` on a
LocalCluster, on dask-cuda's LocalCUDACluster (one worker per GPU, CuPy blocks:
``X.map_blocks(cupy.asarray)``), on any Dask cluster, or Dask's local threads.
"""

from __future__ import annotations

import copy
from typing import Any

from gpunet import backend
from gpunet.grad import GradientSums, gradient_sums
from gpunet.model import DEFAULT_WORK_BYTES, Params, check_data
from gpunet.optim import Optimizer

try:
    import dask
    import dask.array as da
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError(
        "gpunet.distributed needs Dask: pip install 'gpunet[dask]'"
    ) from error

SPLIT_EVERY = 8
"""Per-block sums added at each node of the reduction tree."""


def loss_and_grad(
    params: Params,
    X: Any,
    y: Any,
    *,
    split_every: int = SPLIT_EVERY,
    max_work_bytes: int = DEFAULT_WORK_BYTES,
    check_finite: bool = True,
) -> tuple[Any, Params]:
    """J and ∂J/∂(W1, b1, W2, b2) over the dask arrays X (m, d) and y, computed by Dask.

    ``params`` lives on the client (NumPy); each block's task takes it to the
    block's backend. ``max_work_bytes`` and ``check_finite`` apply per block as
    in gpunet.loss_and_grad. Returns the loss and gradients on the parameters'
    backend.
    """
    (sums,) = dask.compute(gradient_sums_graph(params, X, y, split_every=split_every,
                                               max_work_bytes=max_work_bytes,
                                               check_finite=check_finite))
    return _on_client(params, sums).result()


def gradient_sums_graph(
    params: Params,
    X: Any,
    y: Any,
    *,
    rows: tuple[slice, ...] | None = None,
    split_every: int = SPLIT_EVERY,
    max_work_bytes: int = DEFAULT_WORK_BYTES,
    check_finite: bool = True,
) -> Any:
    """A dask Delayed of the GradientSums over X, y (or, per block b, its rows ``rows[b]``)."""
    X_blocks, Y_blocks = _row_blocks(X, y)
    if rows is None:
        rows = (slice(None),) * len(X_blocks)
    shared = dask.delayed(params, pure=True)
    parts = [
        dask.delayed(_block_sums, pure=True)(shared, X_block, Y_block, part, max_work_bytes,
                                             check_finite)
        for X_block, Y_block, part in zip(X_blocks, Y_blocks, rows, strict=True)
        if part.start is None or part.start < part.stop
    ]
    if not parts:
        raise ValueError("no rows to sum: X has no samples or the batch is empty")
    while len(parts) > 1:
        parts = [
            dask.delayed(_merged, pure=True)(*parts[i : i + split_every])
            for i in range(0, len(parts), split_every)
        ]
    return parts[0]


def fit(
    params: Params,
    X: Any,
    y: Any,
    optimizer: Optimizer,
    epochs: int,
    *,
    batch_size: int | None = None,
    split_every: int = SPLIT_EVERY,
    max_work_bytes: int = DEFAULT_WORK_BYTES,
) -> list[float]:
    """Train ``params`` in place, data-parallel; the loss of each epoch.

    X and y are persisted once, so each block stays on its worker; every step
    sends the parameters out and brings one GradientSums back, and the
    optimizer (one of gpunet.optim's, made for ``params``) steps on the client.

    ``batch_size=None``: one step per epoch on the exact full-batch gradient,
    the loss being J before the step. Otherwise each step's batch takes from
    every block b a run of about batch_size · m_b / m rows, in stored order
    (shuffle beforehand), so every worker works on every step; the epoch's
    loss is the mean of the batches' J weighted by their size.
    """
    X, Y = dask.persist(*_aligned(X, y))
    sizes = X.chunks[0]
    schedule = [(slice(None),) * len(sizes)] if batch_size is None else _batches(sizes, batch_size)
    losses = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for rows in schedule:
            graph = gradient_sums_graph(params, X, Y, rows=rows, split_every=split_every,
                                        max_work_bytes=max_work_bytes, check_finite=False)
            (sums,) = dask.compute(graph)
            loss, grads = _on_client(params, sums).result()
            optimizer.step(params, grads)
            total += float(loss) * sums.count
            count += sums.count
        losses.append(total / count)
    return losses


def _batches(sizes: tuple[int, ...], batch_size: int) -> list[tuple[slice, ...]]:
    """Per step, the rows each block gives: block b gives runs of max(1, round(B m_b / m))."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}")
    m = sum(sizes)
    shares = [max(1, round(batch_size * size / m)) for size in sizes]
    steps = max(-(-size // share) for size, share in zip(sizes, shares, strict=True))
    return [
        tuple(slice(min(s * share, size), min((s + 1) * share, size))
              for size, share in zip(sizes, shares, strict=True))
        for s in range(steps)
    ]


def _aligned(X: Any, y: Any) -> tuple[Any, Any]:
    """X as a dask array in blocks of rows, and Y (m, p) in the same blocks."""
    if not isinstance(X, da.Array):
        raise TypeError(
            f"X must be a dask array; got {type(X).__name__}: "
            "wrap it with dask.array.from_array(X, chunks=(rows, -1))"
        )
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (m, d); got shape {X.shape}")
    X = X.rechunk({1: -1})
    Y = y if isinstance(y, da.Array) else da.from_array(y, chunks=(X.chunks[0], *y.shape[1:]))
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} samples but y has {Y.shape[0]}")
    Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y
    return X, Y.rechunk((X.chunks[0], -1))


def _row_blocks(X: Any, y: Any) -> tuple[list[Any], list[Any]]:
    X, Y = _aligned(X, y)
    return list(X.to_delayed().ravel()), list(Y.to_delayed().ravel())


def _block_sums(
    params: Params, X: Any, Y: Any, rows: slice, max_work_bytes: int, check_finite: bool
) -> GradientSums:
    """The sums over rows ``rows`` of one block, on the block's backend (a Dask task)."""
    params = params.to(backend.backend_of(X))
    X, Y = check_data(params, X[rows], Y[rows])
    return gradient_sums(params, X, Y, max_work_bytes, check_finite)


def _merged(*parts: GradientSums) -> GradientSums:
    """The sum of ``parts`` in order, in a new object: a task never changes its inputs,
    which Dask may hold, hand to another task, or recompute from."""
    total = copy.deepcopy(parts[0])
    for part in parts[1:]:
        total.merge(part)
    return total


def _on_client(params: Params, sums: GradientSums) -> GradientSums:
    """``sums`` with its arrays on the parameters' backend, where result() divides by m."""
    if sums.params.backend == params.backend:
        return sums
    moved = copy.copy(sums)
    moved.params = params
    moved.sums = tuple(backend.to_backend(a, params.backend) for a in sums.sums)
    moved.squares = backend.to_backend(sums.squares, params.backend)
    return moved
