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
        "sigmoid_delta": define(
            "T g, T a", "T delta", "delta = gpunet_sigmoid_delta(g, a)", "gpunet_sigmoid_delta"
        ),
        "outer_sigmoid_delta": define(
            "T r, T w, T a",
            "T delta",
            "delta = gpunet_outer_sigmoid_delta(r, w, a)",
            "gpunet_outer_sigmoid_delta",
        ),
    }


def sigmoid(z: Any, out: Any = None) -> Any:
    """σ(z) = 1 / (1 + e^(−z)) on the CPU, without overflow for any finite z.

    With e = e^(−|z|) ≤ 1: σ(z) = 1 / (1 + e) for z ≥ 0 and e / (1 + e) for
    z < 0, the same branches as ``gpunet_sigmoid`` in the CUDA header.
    """
    z = np.asarray(z)
    negative = z < 0  # taken first: ``out`` may be ``z``
    e = np.abs(z, out=out)
    np.negative(e, out=e)
    np.exp(e, out=e)
    numerator = np.where(negative, e, z.dtype.type(1))
    e += 1
    return np.divide(numerator, e, out=e)


def bias_sigmoid(z: Any, bias: Any, out: Any = None) -> Any:
    """The hidden activation A = σ(Z + b1).

    z: (m, n) pre-activations X W1ᵀ; bias: (n,), broadcast over the rows;
    out: (m, n) or None, may be ``z``. Returns A, (m, n).
    """
    if get_namespace(z, bias) is not np:
        return _cuda_kernels()["bias_sigmoid"](z, bias, out)
    shifted = np.add(z, bias, out=out)
    return sigmoid(shifted, out=shifted)


def sigmoid_delta(upstream: Any, hidden: Any, out: Any = None) -> Any:
    """The gradient through σ: Δ = G ⊙ A ⊙ (1 − A).

    upstream: G = R W2, (m, n); hidden: A = σ(Z + b1), (m, n);
    out: (m, n) or None, may be either input. Returns Δ, (m, n).
    """
    if get_namespace(upstream, hidden) is not np:
        return _cuda_kernels()["sigmoid_delta"](upstream, hidden, out)
    return _numpy_sigmoid_delta(upstream, hidden, out)


def outer_sigmoid_delta(residual: Any, w2: Any, hidden: Any, out: Any = None) -> Any:
    """Δ = (R W2) ⊙ A ⊙ (1 − A) for one output (p = 1), the outer product fused.

    residual: R, (m, 1); w2: W2, (1, n); hidden: A, (m, n);
    out: (m, n) or None, may be ``hidden``. Returns Δ, (m, n).
    """
    if get_namespace(residual, w2, hidden) is not np:
        return _cuda_kernels()["outer_sigmoid_delta"](residual, w2, hidden, out)
    return _numpy_sigmoid_delta(residual * w2, hidden, out)


def _numpy_sigmoid_delta(upstream: np.ndarray, hidden: np.ndarray, out: Any) -> np.ndarray:
    # Same order of operations as gpunet_sigmoid_delta: g · (a · (1 − a)).
    slope = np.subtract(hidden.dtype.type(1), hidden)
    slope *= hidden
    return np.multiply(upstream, slope, out=out)
