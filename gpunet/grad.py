"""The loss and the gradients of all four parameters, in one pass over the samples.

With A = σ(X W1ᵀ + b1), H = A W2ᵀ + b2 and R = H − Y:

    J      = 1/(2m) Σ_i ‖R_i‖²
    ∂J/∂W2 = Rᵀ A / m                      ∂J/∂b2 = Σ_i R_i / m
    Δ      = (R W2) ⊙ S,  S = A ⊙ (1 − A)   (the fused σ(1−σ) term)
    ∂J/∂W1 = Δᵀ X / m                      ∂J/∂b1 = Σ_i Δ_i / m

For one output (p = 1), R W2 is the outer product r w2 and Δ = diag(r) S diag(w2),
so Δ is never formed: ∂J/∂W1 = diag(w2) Sᵀ (r ⊙ X) / m and ∂J/∂b1 = diag(w2) Sᵀ r / m,
which saves two passes over the (m, n) block.

In the seed's notation (p = 1, ω₂,ₖ the k-th entry of W2, ω₁,ₖ the k-th row of
W1), ∂J/∂ω₂,ₖ = 1/m Σ_i r_i σ_ik and ∂J/∂ω₁,ₖ = ω₂,ₖ/m Σ_i r_i σ_ik(1 − σ_ik) x_i:
the seed's derivation has these two labels the wrong way round.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from gpunet.kernels import sigmoid_delta, sigmoid_grad, sigmoid_of_negated
from gpunet.memory import retry_smaller
from gpunet.model import (
    DEFAULT_WORK_BYTES,
    WORK_BUFFERS,
    Params,
    check_data,
    hidden_layer,
    lane_bounds,
    load_chunk,
    output_layer,
    plan_chunks,
)
from gpunet.validation import NonFiniteError

PATHS = ("auto", "gemm", "fused")


class GradientSums:
    """Σ over chunks of samples of ‖R_i‖² and of each gradient's terms.

    Holds the (rows, n) work buffers it reuses from chunk to chunk, so adding a
    chunk allocates nothing of size rows × n.

    On the CPU the first layer works on the inputs with a column of ones,
    X̃ = [X | 1] (rows, d + 1), so that one GEMM does what would otherwise take
    a pass more each way: forward, X̃ [−W1 | −b1]ᵀ = −(X W1ᵀ + b1), bias and sign
    included, and σ is 1 / (1 + e^(that)); backward, X̃ᵀ Δ (d + 1, n) holds the
    sums of ∂W1ᵀ and, in its last row, of ∂b1 (for p = 1, X̃ scaled by r first).
    On a GPU the bias is fused into the σ kernel instead, and X is used as given.
    """

    def __init__(self, params: Params, rows: int) -> None:
        xp, dtype, (n, d) = params.xp, params.dtype, params.w1.shape
        self.params = params
        self.squares = xp.zeros((), dtype=dtype)
        self.count = 0
        self._on_cpu = params.backend == "numpy"
        self._hidden = xp.empty((rows, n), dtype=dtype)
        self._slope = xp.empty((rows, n), dtype=dtype)
        if self._on_cpu:
            self._inputs = xp.empty((rows, d + 1), dtype=dtype)
            self._negated = xp.concatenate([params.w1, params.b1[:, None]], axis=1)
            xp.negative(self._negated, out=self._negated)
            # Summed as X̃ᵀ Δ; the sums of ∂W1 and ∂b1 are views of it.
            self._first = xp.zeros((d + 1, n), dtype=dtype)
            w1, b1 = self._first[:d].T, self._first[d]
        else:
            self._inputs = xp.empty((rows, d), dtype=dtype)  # r ⊙ X for p = 1
            w1, b1 = xp.zeros_like(params.w1), xp.zeros_like(params.b1)
        self.sums = (w1, b1, xp.zeros_like(params.w2), xp.zeros_like(params.b2))
        """The sums of the terms of ∂J/∂W1, b1, W2, b2, in that order."""

    def add(self, X: Any, Y: Any) -> None:
        """Add the terms of one chunk: X (c, d), Y (c, p) in the parameters' dtype, c ≤ rows."""
        params, size = self.params, X.shape[0]
        xp, (_, _, w2, b2) = params.xp, self.sums
        hidden = self._hidden_layer(X)
        residual = output_layer(params, hidden)
        residual -= Y
        # A new scalar: cheaper than adding in place into a 0-d array, per chunk.
        self.squares = self.squares + xp.vdot(residual, residual)
        self.count += size

        w2 += residual.T @ hidden
        b2 += residual.sum(axis=0)
        if residual.shape[1] == 1:
            slope = sigmoid_grad(hidden, out=self._slope[:size])
            self._add_first_layer(slope, X, residual)
        else:
            upstream = xp.matmul(residual, params.w2, out=self._slope[:size])
            self._add_first_layer(sigmoid_delta(upstream, hidden, out=upstream), X)

    def _hidden_layer(self, X: Any) -> Any:
        """A = σ(X W1ᵀ + b1), (c, n), in the hidden buffer."""
        size = X.shape[0]
        if not self._on_cpu:
            return hidden_layer(self.params, X, out=self._hidden[:size])
        inputs = self._inputs[:size]
        inputs[:, :-1] = X
        inputs[:, -1] = 1  # the previous chunk scaled it by r
        negated = np.matmul(inputs, self._negated.T, out=self._hidden[:size])
        return sigmoid_of_negated(negated, out=negated)

    def _add_first_layer(self, delta: Any, X: Any, residual: Any = None) -> None:
        """Add Δᵀ X to the sums of ∂W1 and Σ_i Δ_i to those of ∂b1.

        For p = 1, ``delta`` is S and ``residual`` r: Δ = diag(r) S diag(w2), of which
        diag(r) goes on the inputs' side here and diag(w2) waits for :meth:`result`.
        """
        inputs = self._inputs[: X.shape[0]]
        if self._on_cpu:
            if residual is not None:
                inputs *= residual  # X̃ = [X | 1] becomes [r ⊙ X | r]
            self._first += inputs.T @ delta
            return
        w1, b1, _, _ = self.sums
        if residual is not None:
            w1 += delta.T @ self.params.xp.multiply(X, residual, out=inputs)
            b1 += delta.T @ residual[:, 0]
        else:
            w1 += delta.T @ X
            b1 += delta.sum(axis=0)

    def merge(self, other: GradientSums) -> GradientSums:
        """Add ``other``'s sums (over other samples, same parameters) into these; returns self."""
        for mine, theirs in zip(self.sums, other.sums, strict=True):
            mine += theirs
        self.squares = self.squares + other.squares
        self.count += other.count
        return self

    def __getstate__(self) -> dict[str, Any]:
        # The work buffers are scratch: a pickled GradientSums (a Dask task's result) is
        # its sums alone, and it can merge and give its result but not add chunks.
        keep = ("params", "sums", "squares", "count")
        return {key: value for key, value in self.__dict__.items() if key in keep}

    def result(self, out: Params | None = None) -> tuple[Any, Params]:
        """(J, gradients): the sums divided by m, with diag(w2) applied for p = 1.

        Written into ``out`` when given, else into new arrays.
        """
        params, m = self.params, self.count
        if out is None:
            out = params.zeros_like()
        else:
            _check_out(out, params)
        xp, (w1, b1, w2, b2) = params.xp, self.sums
        xp.divide(w2, m, out=out.w2)
        xp.divide(b2, m, out=out.b2)
        if params.n_outputs == 1:
            scale = params.w2[0] / m
            xp.multiply(w1, scale[:, None], out=out.w1)
            xp.multiply(b1, scale, out=out.b1)
        else:
            xp.divide(w1, m, out=out.w1)
            xp.divide(b1, m, out=out.b1)
        return params.xp.asarray(self.squares / (2 * m)), out


def loss_and_grad(
    params: Params,
    X: Any,
    y: Any,
    *,
    max_work_bytes: int = DEFAULT_WORK_BYTES,
    check_finite: bool = True,
    out: Params | None = None,
    path: str = "auto",
) -> tuple[Any, Params]:
    """The half-MSE loss J and its gradients with respect to W1, b1, W2, b2.

    X: (m, d); y: (m,) or (m, p); any real dtype, cast chunk by chunk to the
    parameters' dtype, which is the dtype of the computation.

    The samples are taken in chunks whose (rows, n) buffers fit in
    ``max_work_bytes`` (and, on the CPU, in cache), allocated once and reused,
    so memory does not grow with m. Out of memory, the pass is retried with
    half the budget until it fits (gpunet.memory, said once as a
    MemoryWarning). On the CPU each core sums an equal, contiguous share of
    the samples and the partial sums are added in lane order, so a result
    is the same from run to run on one machine; it equals the one-shot
    result within rounding. ``check_finite`` rejects NaN and Inf in X and y
    (on a GPU it costs a device-to-host sync per chunk).

    Returns ``(loss, grads)``: the loss as a 0-d array on the parameters'
    backend, and a Params of gradients with the parameters' shapes, written
    into ``out`` when given (a training loop reuses one set of buffers).

    ``path`` chooses the algorithm: "gemm", the chunks above (two GEMMs and the
    fused elementwise kernels per chunk); "fused", gpunet.fused (one CUDA
    kernel pass per sample tile that never stores the hidden layer, or its
    NumPy model on the CPU); "auto" takes "gemm" everywhere for now, since the
    fused kernel has not yet been timed on a GPU against it.
    """
    result, _ = loss_and_grad_fitted(
        params, X, y, max_work_bytes=max_work_bytes, check_finite=check_finite, out=out, path=path
    )
    return result


def loss_and_grad_fitted(
    params: Params,
    X: Any,
    y: Any,
    *,
    max_work_bytes: int = DEFAULT_WORK_BYTES,
    check_finite: bool = True,
    out: Params | None = None,
    path: str = "auto",
) -> tuple[tuple[Any, Params], int]:
    """:func:`loss_and_grad`, and the ``max_work_bytes`` it fitted in.

    The budget is smaller than asked after running out of memory; a training
    loop passes it to the next step, so it runs out once, not at every step.
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}; got {path!r}")
    X, Y = check_data(params, X, y)
    if path == "fused":
        from gpunet import fused

        result = fused.loss_and_grad(params, X, Y, check_finite=check_finite, out=out)
        return result, max_work_bytes
    m = X.shape[0]

    def run(budget: int) -> tuple[Any, Params]:
        return gradient_sums(params, X, Y, budget, check_finite).result(out)

    def describe(budget: int) -> str:
        rows, _ = plan_chunks(params, m, budget)
        return (
            f"the gradient of {m:,} samples x {params.n_hidden:,} hidden units "
            f"({params.dtype}) in chunks of {rows:,} samples (max_work_bytes={budget:,})"
        )

    def smallest() -> int:  # one row a lane
        _, lanes = plan_chunks(params, m, max_work_bytes)
        return WORK_BUFFERS * params.n_hidden * params.dtype.itemsize * lanes

    return retry_smaller(run, params.xp, max_work_bytes, smallest, describe)


def gradient_sums(
    params: Params, X: Any, Y: Any, max_work_bytes: int, check_finite: bool
) -> GradientSums:
    """The sums of :class:`GradientSums` over X (m, d), Y (m, p), checked by check_data.

    Chunked and spread over the CPU's lanes as :func:`loss_and_grad` says;
    the sums of several such calls merge into the sums over all their samples.
    """
    rows, lanes = plan_chunks(params, X.shape[0], max_work_bytes)
    bounds = lane_bounds(X.shape[0], lanes)

    def sum_lane(lane: int) -> GradientSums:
        begin, end = bounds[lane], bounds[lane + 1]
        sums = GradientSums(params, min(rows, end - begin))
        for start in range(begin, end, rows):
            sums.add(*load_chunk(params, X, Y, start, min(rows, end - start), check_finite))
        return sums

    first, *others = _map_lanes(sum_lane, lanes)
    for other in others:
        first.merge(other)
    return first


def _check_out(out: Params, params: Params) -> None:
    if [g.shape for g in out] != [a.shape for a in params]:
        raise ValueError(f"out has shapes {out.shapes}; the parameters have {params.shapes}")


def _map_lanes(function: Callable[[int], GradientSums], lanes: int) -> list[GradientSums]:
    """[function(0), …, function(lanes − 1)], run on threads when lanes > 1.

    NumPy and BLAS release the GIL, so the lanes run on separate cores. Of the
    NaN/Inf errors the lanes meet, the one at the first row is raised.
    """
    if lanes == 1:
        return [function(0)]
    # One BLAS thread per lane: BLAS's own threads on top of the lanes would
    # oversubscribe the cores (measured: up to 10x slower at d = 16 on 2 cores).
    with _blas_threads().limit(limits=1, user_api="blas"):
        futures = [_executor(lanes).submit(function, lane) for lane in range(lanes)]
        for future in futures:
            future.exception()  # wait for every lane before lifting the limit
    errors = [f.exception() for f in futures if isinstance(f.exception(), NonFiniteError)]
    if errors:
        raise min(errors, key=lambda error: error.row)
    return [f.result() for f in futures]


@functools.cache
def _blas_threads() -> ThreadpoolController:
    return ThreadpoolController()


@functools.cache
def _executor(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gpunet")
