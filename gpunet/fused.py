"""The fully fused gradient: J and ∂J/∂(W1, b1, W2, b2) without the (m, n) hidden layer.

On a GPU, three kernels of ``kernels/fused_grad.cu`` (loaded with CuPy's
RawModule, float32 and float64):

1. R = σ(X W1ᵀ + b1) W2ᵀ + b2 − Y, (m, p), one thread per sample;
2. the samples are cut into B ranges of ``per_block`` rows (a multiple of
   TILE); block b recomputes σ tile by tile and sums, in sample order, its
   partials of Δᵀ X, Σ Δ, Rᵀ A, Σ R and Σ ‖R‖² (Δ = (R W2) ⊙ A ⊙ (1 − A));
3. the B rows of partials are summed in block order, then divided by m.

No atomics and a fixed order: the result is the same bit for bit from run to
run on one GPU. Memory: X and Y, R (m·p), and B · (n·d + n + p·n + p + 1)
partials — O(m·(d + p)) + O(B·n·d), never O(m·n). It needs d ≤ 16 and p ≤ 4
(per-thread registers), the case it is for: small d, large m.

On the CPU, :func:`host_model` computes the same partition, the same per-block
partials and the same combine order with NumPy (each tile vectorised), so the
tiling and reduction are checked where no GPU is. It is a model, not a fast
path: it computes σ twice, and gpunet.loss_and_grad's two-GEMM path is faster
on the CPU.

Not yet run on a GPU: ``path="auto"`` in gpunet.loss_and_grad picks the
two-GEMM path until the fused kernel has been timed against it.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from gpunet import validation
from gpunet.kernels import HEADER, kernel_source, sigmoid_delta
from gpunet.model import Params, hidden_layer, output_layer

SOURCE = "fused_grad.cu"
TILE = 128
"""Samples staged in shared memory at a time by pass 2."""
MAX_FEATURES, MAX_OUTPUTS = 16, 4
"""The largest d and p the kernels hold in registers (GPUNET_FUSED_MAX_* in the source)."""
THREADS = 256
BLOCKS_PER_SM = 2
HOST_BLOCKS = 264
"""B for the host model: an H200's 132 SMs × BLOCKS_PER_SM."""
SHARED_BYTES = 48 * 1024
"""Dynamic shared memory a kernel may take without opting in to more."""
KERNELS = ("gpunet_fused_residual", "gpunet_fused_partials", "gpunet_fused_combine")


def loss_and_grad(
    params: Params, X: Any, Y: Any, *, check_finite: bool = True, out: Params | None = None
) -> tuple[Any, Params]:
    """J and its gradients by the fused passes; X (m, d), Y (m, p) as check_data gives them.

    On CuPy arrays the kernels run; on NumPy arrays :func:`host_model` does.
    Returns the loss (0-d) and a Params of gradients, written into ``out`` when given.
    """
    check_supported(params)
    if check_finite:
        validation.check_finite(X, "X")
        validation.check_finite(Y, "y")
    if params.backend == "numpy":
        totals = host_model(params, X, Y, HOST_BLOCKS)
    else:
        totals = _device_totals(params, X, Y)
    return _split(params, totals, X.shape[0], out)


def check_supported(params: Params) -> None:
    """ValueError unless d ≤ MAX_FEATURES and p ≤ MAX_OUTPUTS."""
    if params.n_features > MAX_FEATURES or params.n_outputs > MAX_OUTPUTS:
        raise ValueError(
            f"the fused gradient takes up to {MAX_FEATURES} features and {MAX_OUTPUTS} "
            f"outputs; these parameters have {params.n_features} and {params.n_outputs}: "
            "use path='gemm'"
        )


def block_partition(m: int, max_blocks: int, tile: int = TILE) -> tuple[int, int]:
    """(B, per_block): m samples in B ≤ max_blocks ranges of per_block rows, a multiple
    of ``tile``; the last range may be shorter, none is empty."""
    tiles = -(-m // tile)
    per_block = -(-tiles // max(1, min(max_blocks, tiles))) * tile
    return -(-m // per_block), per_block


def partial_size(params: Params) -> int:
    """Entries in one row of partials: [W1 (n·d), b1 (n), W2 (p·n), b2 (p), Σ‖R‖²]."""
    n, d, p = params.n_hidden, params.n_features, params.n_outputs
    return n * d + n + p * n + p + 1


def host_model(params: Params, X: np.ndarray, Y: np.ndarray, max_blocks: int) -> np.ndarray:
    """The kernels' sums on the host: the same partition into blocks and tiles, and the
    partial rows added in block order. Returns the totals, one row of partials long.

    Within a tile the sums are vectorised (NumPy's order, not a GPU thread's);
    everything across tiles and blocks is in the kernels' order.
    """
    m = X.shape[0]
    residual = np.empty((m, params.n_outputs), params.dtype)
    for start in range(0, m, TILE * 64):  # pass 1; its order does not matter
        rows = slice(start, start + TILE * 64)
        residual[rows] = _tile_terms(params, X[rows], Y[rows])[0]
    blocks, per_block = block_partition(m, max_blocks)
    totals = np.zeros(partial_size(params), params.dtype)
    for block in range(blocks):  # pass 2 per block, then pass 3 in block order
        partial = np.zeros_like(totals)
        for start in range(block * per_block, min(m, (block + 1) * per_block), TILE):
            stop = min(start + TILE, (block + 1) * per_block, m)
            partial += _tile_partial(params, X[start:stop], residual[start:stop])
        totals += partial
    return totals


def _tile_terms(params: Params, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, A) for one tile: R = A W2ᵀ + b2 − Y, A = σ(X W1ᵀ + b1)."""
    X = X.astype(params.dtype, copy=False)
    hidden = hidden_layer(params, X)
    residual = output_layer(params, hidden)
    residual -= Y
    return residual, hidden


def _tile_partial(params: Params, X: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """One tile's row of partials from its X and R, σ recomputed as pass 2 does."""
    X = X.astype(params.dtype, copy=False)
    hidden = hidden_layer(params, X)
    delta = sigmoid_delta(residual @ params.w2, hidden)
    return np.concatenate([
        (delta.T @ X).ravel(), delta.sum(axis=0), (residual.T @ hidden).ravel(),
        residual.sum(axis=0), [np.vdot(residual, residual)],
    ])


def _split(params: Params, totals: Any, m: int, out: Params | None) -> tuple[Any, Params]:
    """(J, gradients) from the totals: each sum divided by m, Σ‖R‖² by 2m."""
    grads = out if out is not None else params.zeros_like()
    start = 0
    for gradient in grads:
        gradient[...] = totals[start : start + gradient.size].reshape(gradient.shape)
        gradient /= m
        start += gradient.size
    return totals[start] / (2 * m), grads


def cuda_source() -> str:
    """fused_grad.cu with the header's text in place of its #include, for NVRTC.

    CuPy keys its compile cache on the source text, so an edited header is recompiled.
    """
    source = kernel_source(SOURCE)
    include = f'#include "{HEADER}"'
    if include not in source:
        raise RuntimeError(f"{SOURCE} no longer includes {HEADER}; update gpunet.fused")
    return source.replace(include, kernel_source(HEADER))


@functools.cache
def _module() -> Any:
    import cupy

    names = [f"{kernel}<{ctype}>" for kernel in KERNELS for ctype in ("float", "double")]
    return cupy.RawModule(code=cuda_source(), options=("--std=c++17",), name_expressions=names)


def _kernel(name: str, dtype: np.dtype) -> Any:
    return _module().get_function(f"{name}<{'float' if dtype == np.float32 else 'double'}>")


def _device_totals(params: Params, X: Any, Y: Any) -> Any:
    """The three kernels on CuPy arrays; returns the totals on the device."""
    import cupy

    dtype, size = params.dtype, np.dtype(params.dtype).itemsize
    X, Y = (cupy.ascontiguousarray(a, dtype=dtype) for a in (X, Y))
    w1, b1, w2, b2 = (cupy.ascontiguousarray(a) for a in params)
    (m, d), n, p = X.shape, params.n_hidden, params.n_outputs
    weight_bytes = (n * d + n + p * n) * size
    if weight_bytes > SHARED_BYTES:
        raise ValueError(
            f"the fused gradient holds W1, b1 and W2 in {SHARED_BYTES} bytes of shared "
            f"memory; these take {weight_bytes}: use path='gemm'"
        )
    sms = cupy.cuda.Device().attributes["MultiProcessorCount"]
    residual = cupy.empty((m, p), dtype)
    grid = min(-(-m // THREADS), 8 * sms)
    _kernel("gpunet_fused_residual", dtype)(
        (grid,), (THREADS,), (X, Y, w1, b1, w2, b2, residual, np.int64(m), np.int32(d),
                              np.int32(n), np.int32(p)),
        shared_mem=weight_bytes,
    )
    blocks, per_block = block_partition(m, BLOCKS_PER_SM * sms)
    threads = min(THREADS, -(-n // 32) * 32)
    partials = cupy.empty((blocks, partial_size(params)), dtype)
    _kernel("gpunet_fused_partials", dtype)(
        (blocks, -(-n // threads)), (threads,),
        (X, residual, w1, b1, w2, partials, np.int64(m), np.int32(d), np.int32(n),
         np.int32(p), np.int64(per_block), np.int32(TILE)),
        shared_mem=TILE * (d + p) * size,
    )
    totals = cupy.empty(partials.shape[1], dtype)
    _kernel("gpunet_fused_combine", dtype)(
        (-(-totals.size // THREADS),), (THREADS,),
        (partials, totals, np.int32(blocks), np.int64(totals.size)),
    )
    return totals
