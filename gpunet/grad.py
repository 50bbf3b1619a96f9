"""The loss and the gradients of all four parameters, in one pass over the samples.

With A = σ(X W1ᵀ + b1), H = A W2ᵀ + b2 and R = H − Y:

    J      = 1/(2m) Σ_i ‖R_i‖²
    ∂J/∂W2 = Rᵀ A / m                      ∂J/∂b2 = Σ_i R_i / m
    Δ      = (R W2) ⊙ A ⊙ (1 − A)
    ∂J/∂W1 = Δᵀ X / m                      ∂J/∂b1 = Σ_i Δ_i / m

In the seed's notation (p = 1, ω₂,ₖ the k-th entry of W2, ω₁,ₖ the k-th row
of W1), ∂J/∂ω₂,ₖ = 1/m Σ_i r_i σ_ik and ∂J/∂ω₁,ₖ = ω₂,ₖ/m Σ_i r_i σ_ik(1 − σ_ik) x_i:
the seed's derivation has these two labels the wrong way round.
"""

from __future__ import annotations

from typing import Any

from gpunet.kernels import outer_sigmoid_delta, sigmoid_delta
from gpunet.model import (
    DEFAULT_WORK_BYTES,
    Params,
    chunk_rows,
    hidden_layer,
    output_layer,
    sample_chunks,
)


def loss_and_grad(
    params: Params,
    X: Any,
    y: Any,
    *,
    max_work_bytes: int = DEFAULT_WORK_BYTES,
    check_finite: bool = True,
    out: Params | None = None,
) -> tuple[Any, Params]:
    """The half-MSE loss J and its gradients with respect to W1, b1, W2, b2.

    X: (m, d); y: (m,) or (m, p); any real dtype, cast chunk by chunk to the
    parameters' dtype, which is the dtype of the computation.

    The samples are taken in chunks whose (rows, n) buffers fit in
    ``max_work_bytes``, allocated once and reused, so memory does not grow
    with m; the gradients are sums over chunks and equal the one-shot result
    within rounding. ``check_finite`` rejects NaN and Inf in X and y (on a GPU
    it costs a device-to-host sync per chunk).

    Returns ``(loss, grads)``: the loss as a 0-d array on the parameters'
    backend, and a Params of gradients with the parameters' shapes, written
    into ``out`` when given (a training loop reuses one set of buffers).
    """
    xp = params.xp
    if out is None:
        grads = params.zeros_like()
    else:
        if (out.w1.shape, out.w2.shape) != (params.w1.shape, params.w2.shape):
            raise ValueError(f"out has shapes {out.shapes}; the parameters have {params.shapes}")
        grads = out
        for gradient in grads:
            gradient.fill(0)
    total, m = xp.zeros((), dtype=params.dtype), 0
    rows = chunk_rows(params.n_hidden, params.dtype, max_work_bytes)
    hidden_buffer = upstream_buffer = None
    for X_chunk, Y_chunk in sample_chunks(params, X, y, max_work_bytes, check_finite):
        if hidden_buffer is None:
            rows = min(rows, X_chunk.shape[0])
            hidden_buffer = xp.empty((rows, params.n_hidden), dtype=params.dtype)
        size = X_chunk.shape[0]
        hidden = hidden_layer(params, X_chunk, out=hidden_buffer[:size])
        residual = output_layer(params, hidden)
        residual -= Y_chunk
        total += (residual * residual).sum()
        m += size

        grads.w2 += residual.T @ hidden
        grads.b2 += residual.sum(axis=0)
        if params.n_outputs == 1:
            delta = outer_sigmoid_delta(residual, params.w2, hidden, out=hidden)
        else:
            if upstream_buffer is None:
                upstream_buffer = xp.empty_like(hidden_buffer)
            upstream = xp.matmul(residual, params.w2, out=upstream_buffer[:size])
            delta = sigmoid_delta(upstream, hidden, out=hidden)
        grads.w1 += delta.T @ X_chunk
        grads.b1 += delta.sum(axis=0)

    for gradient in grads:
        gradient /= m
    return total / (2 * m), grads
