"""The loss and the gradients of all four parameters, in one pass over the samples.

With A = σ(X W1ᵀ + b1), H = A W2ᵀ + b2 and R = H − Y:

    J      = 1/(2m) Σ_i ‖R_i‖²
    ∂J/∂W2 = Rᵀ A / m                      ∂J/∂b2 = Σ_i R_i / m
    Δ      = (R W2) ⊙ S,  S = A ⊙ (1 − A)   (the fused σ(1−σ) term)
    ∂J/∂W1 = Δᵀ X / m                      ∂J/∂b1 = Σ_i Δ_i / m

For one output (p = 1), R W2 is the outer product r w2 and Δ = diag(r) S diag(w2),
so Δ is never formed: ∂J/∂W1 = diag(w2) Sᵀ (r ⊙ X) / m and ∂J/∂b1 = diag(w2) Sᵀ r / m,
which saves two passes over the (m, n) block. Both come from one GEMM, with
X̃ = [X | 1]: [∂J/∂W1 | ∂J/∂b1]ᵀ = X̃ᵀ Δ / m (for p = 1, (diag(r) X̃)ᵀ S diag(w2) / m).

In the seed's notation (p = 1, ω₂,ₖ the k-th entry of W2, ω₁,ₖ the k-th row of
W1), ∂J/∂ω₂,ₖ = 1/m Σ_i r_i σ_ik and ∂J/∂ω₁,ₖ = ω₂,ₖ/m Σ_i r_i σ_ik(1 − σ_ik) x_i:
the seed's derivation has these two labels the wrong way round.
"""

from __future__ import annotations

import threading
from typing import Any

from gpunet.kernels import sigmoid_delta, sigmoid_grad
from gpunet.lanes import lane_chunks, map_lanes, plan_chunks, row_bytes
from gpunet.memory import retry_smaller
from gpunet.model import (
    DEFAULT_WORK_BYTES,
    HiddenLayer,
    Params,
    check_data,
    load_chunk,
    output_layer,
)

PATHS = ("auto", "gemm", "fused")


class GradientSums:
    """Σ over chunks of samples of ‖R_i‖² and of each gradient's terms.

    Holds the (rows, n) work buffers it reuses from chunk to chunk, so adding a
    chunk allocates nothing of size rows × n.

    The first layer's terms are summed as X̃ᵀ Δ (d + 1, n), X̃ = [X | 1] from
    gpunet.model.HiddenLayer: its first d rows are the sums of ∂W1ᵀ and its
    last those of ∂b1, from one GEMM (for p = 1, Δ's diag(r) is put on X̃,
    [r ⊙ X | r], and diag(w2) waits for :meth:`result`).
    """

    def __init__(self, params: Params, rows: int) -> None:
        xp, dtype, (n, d) = params.xp, params.dtype, params.w1.shape
        self.params = params
        self.squares = xp.zeros((), dtype=dtype)
        self.count = 0
        self._layer = HiddenLayer(params, rows)
        self._slope = xp.empty((rows, n), dtype=dtype)
        self._first = xp.zeros((d + 1, n), dtype=dtype)
        w2, b2 = xp.zeros_like(params.w2), xp.zeros_like(params.b2)
        self.sums = (self._first[:d].T, self._first[d], w2, b2)
        """The sums of the terms of ∂J/∂W1, b1, W2, b2, in that order."""

    def fits(self, params: Params, rows: int) -> bool:
        """Whether these buffers can sum chunks of ``rows`` samples for ``params``."""
        mine = self.params
        return (self._slope.shape[0] >= rows and params.w1.shape == mine.w1.shape
                and params.w2.shape == mine.w2.shape and params.dtype == mine.dtype
                and params.backend == mine.backend)

    def reset(self, params: Params) -> GradientSums:
        """Sums of nothing yet, for ``params`` (see :meth:`fits`), in the same buffers."""
        self.params = params
        self._layer.use(params)
        for total in (self._first, *self.sums[2:]):  # the sums of ∂W1 and ∂b1 view _first
            total.fill(0)
        self.squares, self.count = params.xp.zeros((), dtype=params.dtype), 0
        return self

    def add(self, X: Any, Y: Any) -> None:
        """Add the terms of one chunk: X (c, d), Y (c, p) in the parameters' dtype, c ≤ rows."""
        params, size = self.params, X.shape[0]
        xp, (_, _, w2, b2) = params.xp, self.sums
        hidden = self._layer(X)
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

    def _add_first_layer(self, delta: Any, X: Any, residual: Any = None) -> None:
        """Add X̃ᵀ Δ, the terms of ∂W1ᵀ and ∂b1; for p = 1 ``delta`` is S and Δ = diag(r) S."""
        inputs = self._layer.inputs(X)
        if residual is not None:
            inputs *= residual  # [X | 1] becomes [r ⊙ X | r]
        self._first += inputs.T @ delta

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
        return xp.asarray(self.squares / (2 * m)), out


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
        return gradient_sums(params, X, Y, budget, check_finite, transient=True).result(out)

    def describe(budget: int) -> str:
        rows, _ = plan_chunks(params, m, budget)
        return (
            f"the gradient of {m:,} samples x {params.n_hidden:,} hidden units "
            f"({params.dtype}) in chunks of {rows:,} samples (max_work_bytes={budget:,})"
        )

    def smallest() -> int:  # one row a lane
        _, lanes = plan_chunks(params, m, max_work_bytes)
        return row_bytes(params) * lanes

    return retry_smaller(run, params.xp, max_work_bytes, smallest, describe)


def gradient_sums(
    params: Params, X: Any, Y: Any, max_work_bytes: int, check_finite: bool,
    *, transient: bool = False,
) -> GradientSums:
    """The sums of :class:`GradientSums` over X (m, d), Y (m, p), checked by check_data.

    Chunked and spread over the CPU's lanes as :func:`loss_and_grad` says;
    the sums of several such calls merge into the sums over all their samples.
    ``transient``: the caller is done with the sums before this thread asks
    for more, so a one-lane pass on the CPU may reuse this thread's buffers.
    """
    rows, lanes = plan_chunks(params, X.shape[0], max_work_bytes)
    reuse = transient and lanes == 1 and params.backend == "numpy"

    def sum_lane(chunks: list[slice]) -> GradientSums:
        size = chunks[0].stop - chunks[0].start
        sums = _thread_sums(params, size) if reuse else GradientSums(params, size)
        for chunk in chunks:
            sums.add(*load_chunk(params, X, Y, chunk, check_finite))
        return sums

    first, *others = map_lanes(sum_lane, lane_chunks(X.shape[0], rows, lanes))
    for other in others:
        first.merge(other)
    return first


_thread = threading.local()


def _thread_sums(params: Params, rows: int) -> GradientSums:
    """This thread's GradientSums, reset for ``params``; a new one that it keeps if none fits.

    For a training step's minibatch, whose pass is one chunk on the calling
    thread: making a GradientSums took 7 of the 46 us of a step's gradient
    (batch 32, d = 10, n = 32, float64), resetting one takes 3. The thread
    holds it after the call: buffers for one CPU chunk (a few MiB, or a few
    times W1's size at large d) and a reference to the last parameters.
    """
    held = getattr(_thread, "sums", None)
    if held is not None and held.fits(params, rows):
        return held.reset(params)
    _thread.sums = GradientSums(params, rows)
    return _thread.sums


def _check_out(out: Params, params: Params) -> None:
    if [g.shape for g in out] != [a.shape for a in params]:
        raise ValueError(f"out has shapes {out.shapes}; the parameters have {params.shapes}")
