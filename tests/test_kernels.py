"""The fused ops: the CUDA header on the host, nvcc for sm_90, NumPy against CuPy."""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
import warnings

import numpy as np
import pytest
from conftest import HARNESS, KERNELS, numpy_cupy_allclose

from gpunet import kernels

DTYPES = [np.float32, np.float64]
# Both signs of zero, the edges of each exponent range, and |z| up to 1e4.
EDGE_Z = [0.0, -0.0, 1e-30, -1e-30, 1.0, -1.0, 15.0, -15.0, 40.0, -40.0, 88.0, -88.0,
          104.0, -104.0, 709.0, -709.0, 745.0, -745.0, 1e4, -1e4]
ULPS = 4  # glibc's exp and NumPy's SIMD exp differ by a few units in the last place


def pre_activations(dtype, size=4000, seed=0):
    rng = np.random.default_rng(seed)
    spread = np.concatenate([rng.normal(0, 5, size // 2), rng.uniform(-1e4, 1e4, size // 2)])
    return np.concatenate([np.array(EDGE_Z), spread]).astype(dtype)


def call_host(library, name, dtype, *inputs):
    """out = f(inputs...) with the header's function compiled for the host."""
    ctype = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    arrays = [np.ascontiguousarray(x, dtype=dtype) for x in inputs]
    out = np.empty_like(arrays[0])
    function = getattr(library, f"{name}_{np.dtype(dtype).name}")
    pointers = [a.ctypes.data_as(ctypes.POINTER(ctype)) for a in (*arrays, out)]
    function(*pointers, ctypes.c_long(out.size))
    return out


def assert_ulp_close(actual, expected, dtype):
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(actual, expected, rtol=ULPS * eps, atol=np.finfo(dtype).tiny)


@pytest.mark.parametrize("dtype", DTYPES)
def test_header_sigmoid_matches_numpy_fallback(host_kernels, dtype):
    z = pre_activations(dtype)
    assert_ulp_close(call_host(host_kernels, "sigmoid", dtype, z), kernels.sigmoid(z), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_header_ops_match_numpy_fallback(host_kernels, dtype):
    rng = np.random.default_rng(1)
    z, b = pre_activations(dtype), rng.normal(size=1).astype(dtype)
    g = rng.normal(size=z.size).astype(dtype)
    a = kernels.sigmoid(z)
    bias = np.broadcast_to(b, z.shape)
    assert_ulp_close(call_host(host_kernels, "bias_sigmoid", dtype, z, bias),
                     kernels.bias_sigmoid(z, b), dtype)
    assert_ulp_close(call_host(host_kernels, "sigmoid_delta", dtype, g, a),
                     kernels.sigmoid_delta(g, a), dtype)
    assert_ulp_close(
        call_host(host_kernels, "sigmoid_grad", dtype, a), kernels.sigmoid_grad(a), dtype
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_is_exact_at_the_edges(host_kernels, dtype):
    z = np.array([0.0, -0.0, 1e4, -1e4, -50.0], dtype=dtype)
    # σ(±0) = 1/2; σ(1e4) rounds to 1; σ(−1e4) = e^−1e4 underflows to 0;
    # σ(−50) = e^−50 / (1 + e^−50) ≈ 1.929e−22, representable in both dtypes.
    expected = np.array([0.5, 0.5, 1.0, 0.0, 1.0 / (1.0 + math.exp(50.0))])
    for result in (kernels.sigmoid(z), call_host(host_kernels, "sigmoid", dtype, z)):
        assert result.dtype == dtype
        np.testing.assert_allclose(result, expected, rtol=ULPS * np.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_never_warns_nor_leaves_zero_to_one(dtype):
    z = pre_activations(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is right
            a = kernels.sigmoid(z)
    assert np.all((a >= 0) & (a <= 1))
    assert np.all(np.diff(a[np.argsort(z, kind="stable")]) >= 0), "σ must be monotone"


def test_fallback_ops_write_in_place():
    rng = np.random.default_rng(2)
    z, b = rng.normal(size=(5, 3)), rng.normal(size=3)
    expected = kernels.sigmoid(z + b)
    out = kernels.bias_sigmoid(z, b, out=z)
    assert out is z
    np.testing.assert_array_equal(z, expected)

    g, a = rng.normal(size=(5, 3)), kernels.sigmoid(rng.normal(size=(5, 3)))
    expected = g * (a * (1 - a))
    assert kernels.sigmoid_delta(g, a, out=a) is a
    np.testing.assert_allclose(a, expected, rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_of_negated_is_sigmoid_of_minus_u_in_place(dtype):
    u = pre_activations(dtype)
    expected = kernels.sigmoid(-u)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            assert kernels.sigmoid_of_negated(u, out=u) is u
    np.testing.assert_array_equal(u, expected)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_cuda_sources_compile_for_sm90(tmp_path):
    cubin = tmp_path / "kernels.cubin"
    command = ["nvcc", "-arch=sm_90", "-cubin", "-Werror", "all-warnings", f"-I{KERNELS}",
               str(HARNESS), "-o", str(cubin)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"kernels/ does not compile for sm_90:\n{result.stderr}"
    assert cubin.stat().st_size > 0


# The same bodies on NumPy and on CuPy (the CuPy style): GPU tests.

@pytest.mark.parametrize("dtype", DTYPES)
@numpy_cupy_allclose(rtol=1e-6)
def test_bias_sigmoid_backends_agree(dtype, xp):
    z = xp.asarray(pre_activations(dtype).reshape(-1, 4))
    b = xp.asarray(np.array([-3.0, -0.0, 0.5, 1e3], dtype=dtype))
    return kernels.bias_sigmoid(z, b)


@pytest.mark.parametrize("dtype", DTYPES)
@numpy_cupy_allclose(rtol=1e-6)
def test_bias_sigmoid_in_place_backends_agree(dtype, xp):
    z = xp.asarray(pre_activations(dtype).reshape(-1, 4))
    b = xp.asarray(np.array([-3.0, -0.0, 0.5, 1e3], dtype=dtype))
    return kernels.bias_sigmoid(z, b, out=z)


@pytest.mark.parametrize("dtype", DTYPES)
@numpy_cupy_allclose(rtol=1e-6, atol=1e-30)
def test_sigmoid_delta_backends_agree(dtype, xp):
    rng = np.random.default_rng(3)
    g = xp.asarray(rng.normal(size=(64, 32)).astype(dtype))
    a = xp.asarray(kernels.sigmoid(pre_activations(dtype, size=64 * 32 - len(EDGE_Z)))
                   .reshape(64, 32))
    return kernels.sigmoid_delta(g, a), kernels.sigmoid_delta(g, a.copy(), out=a)


@pytest.mark.parametrize("dtype", DTYPES)
@numpy_cupy_allclose(rtol=1e-6, atol=1e-30)
def test_sigmoid_grad_backends_agree(dtype, xp):
    a = xp.asarray(kernels.sigmoid(pre_activations(dtype)))
    return kernels.sigmoid_grad(a), kernels.sigmoid_grad(a.copy(), out=a)
