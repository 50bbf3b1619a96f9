"""The fused elementwise ops of the gradient, on the GPU and on the CPU.

Each op has a CUDA version, a CuPy ``ElementwiseKernel`` whose body calls the
``__host__ __device__`` functions of ``kernels/gpunet_math.cuh``, and a NumPy
version of the same math. The op picks one from the array module of its
inputs; this is the only place in gpunet that branches on the backend.

Every op takes ``out=`` and may write over one of its inputs (same shape),
so the gradient can reuse its (m, n) buffers.
"""

from __future__ import annotations

import functools
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from gpunet.backend import get_namespace

HEADER = "gpunet_math.cuh"
_SOURCE_DIRS = (
    # Inside an installed wheel, the kernel sources travel in the package.
    ("package", lambda: Path(str(resources.files("gpunet"))) / "cuda_sources"),
    # In a source checkout (and an editable install) they sit at the top level.
    ("checkout", lambda: Path(__file__).resolve().parent.parent / "kernels"),
)


def kernel_dir() -> Path:
    """The folder that holds the CUDA sources gpunet loads at run time."""
    for _, locate in _SOURCE_DIRS:
        folder = locate()
        if (folder / HEADER).is_file():
            return folder
    searched = ", ".join(str(locate()) for _, locate in _SOURCE_DIRS)
    raise FileNotFoundError(
        f"gpunet's CUDA sources ({HEADER}) were not found in {searched}; "
        "reinstall gpunet with `pip install --force-reinstall gpunet`"
    )


def kernel_source(name: str = HEADER) -> str:
    """The text of one CUDA source file from :func:`kernel_dir`."""
    return (kernel_dir() / name).read_text(encoding="utf-8")


# functools.cache holds no lock while its function runs, and CuPy compiles a
# kernel on its first launch for each dtype: threads that start training at
# once would each define and compile the kernels. First uses take this lock.
_FIRST_USE = threading.Lock()
_launched: set[tuple[str, str]] = set()


@functools.cache
def _cuda_kernels() -> dict[str, Any]:
    """The CuPy kernels, defined once; CuPy compiles each once per dtype.

    The header's text is the preamble, so CuPy's on-disk cache is keyed on the
    source itself and an edited header is recompiled.
    """
    import cupy

    header = kernel_source()

    def define(params: str, result: str, body: str, name: str) -> Any:
        return cupy.ElementwiseKernel(params, result, body, name, preamble=header)

    return {
        "bias_sigmoid": define(
            "T z, T b", "T a", "a = gpunet_bias_sigmoid(z, b)", "gpunet_bias_sigmoid"
        ),
        "sigmoid_grad": define(
            "T a", "T slope", "slope = gpunet_sigmoid_grad(a)", "gpunet_sigmoid_grad"
        ),
        "sigmoid_delta": define(
            "T g, T a", "T delta", "delta = gpunet_sigmoid_delta(g, a)", "gpunet_sigmoid_delta"
        ),
    }


def sigmoid(z: Any, out: Any = None) -> Any:
    """σ(z) = 1 / (1 + e^(−z)) on the CPU, as ``gpunet_sigmoid`` computes it on the GPU.

    For z below about −88.7 (float32) or −709.8 (float64), e^(−z) overflows to
    +inf and σ(z) = 1 / inf = 0, where the true value is below the smallest
    normal number; that overflow is expected and not reported.
    """
    e = np.negative(z, out=out)
    return sigmoid_of_negated(e, out=e)


def sigmoid_of_negated(u: Any, out: Any = None) -> Any:
    """σ(−u) = 1 / (1 + e^u) on the CPU: σ of a pre-activation given with its sign flipped.

    For a GEMM that gives u = −(X W1ᵀ + b1) directly (the sign and the bias
    folded into its weights), which saves the two passes that σ(z) and σ(z + b)
    spend on −z and −(z + b). u: any shape; out: same shape or None, may be u.
    """
    with np.errstate(over="ignore"):  # e^u = +inf gives 1 / inf = 0, the right limit
        e = np.exp(u, out=out)
    e += 1
    return np.divide(e.dtype.type(1), e, out=e)


def bias_sigmoid(z: Any, bias: Any, out: Any = None) -> Any:
    """The hidden activation A = σ(Z + b1).

    z: (m, n) pre-activations X W1ᵀ; bias: (n,), broadcast over the rows;
    out: (m, n) or None, may be ``z``. Returns A, (m, n).
    """
    if get_namespace(z, bias) is not np:
        return _launch("bias_sigmoid", z, bias, out=out)
    e = np.subtract(-bias, z, out=out)  # −(z + b) in one pass
    return sigmoid_of_negated(e, out=e)


def sigmoid_grad(hidden: Any, out: Any = None) -> Any:
    """The fused σ(1−σ) term: S = A ⊙ (1 − A), σ'(z) from A = σ(z).

    hidden: A, (m, n); out: (m, n) or None, may be ``hidden``. Returns S, (m, n).
    """
    if get_namespace(hidden) is not np:
        return _launch("sigmoid_grad", hidden, out=out)
    if out is None or np.shares_memory(out, hidden):
        return np.multiply(hidden, 1 - hidden, out=out)
    np.subtract(hidden.dtype.type(1), hidden, out=out)
    out *= hidden
    return out


def sigmoid_delta(upstream: Any, hidden: Any, out: Any = None) -> Any:
    """The gradient through σ: Δ = G ⊙ A ⊙ (1 − A).

    upstream: G = R W2, (m, n); hidden: A = σ(Z + b1), (m, n);
    out: (m, n) or None, may be either input. Returns Δ, (m, n).
    """
    if get_namespace(upstream, hidden) is not np:
        return _launch("sigmoid_delta", upstream, hidden, out=out)
    # Same order of operations as gpunet_sigmoid_delta: g · (a · (1 − a)).
    return np.multiply(upstream, sigmoid_grad(hidden), out=out)


def _launch(name: str, *inputs: Any, out: Any) -> Any:
    """Run one CuPy kernel; CuPy allocates the output unless one is given.

    The first launch of each kernel for each dtype (which defines and compiles
    it) happens under a lock, so that kernels compile once whatever the threads.
    """
    arguments = (*inputs, *(() if out is None else (out,)))
    key = (name, str(inputs[0].dtype))
    if key in _launched:
        return _cuda_kernels()[name](*arguments)
    with _FIRST_USE:
        result = _cuda_kernels()[name](*arguments)
        _launched.add(key)
    return result
