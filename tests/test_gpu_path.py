"""gpunet's GPU code path, run on the host through the CuPy stand-in of tests/host_cupy.py.

These run everywhere: they check the Python side of the GPU path (dispatch,
kernel parameter lists and bodies, ``out`` buffers, results staying on the
device). The ``gpu`` tests run the same path on a real GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_grad import random_problem, relative_error

import gpunet
from gpunet import kernels

DTYPES = [np.float32, np.float64]


def on_device(host_cupy, *arrays):
    return [host_cupy.asarray(a) for a in arrays]


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_ops_dispatch_to_the_kernels_and_match_numpy(host_cupy, dtype):
    rng = np.random.default_rng(0)
    z, g = (rng.normal(0, 4, (50, 8)).astype(dtype) for _ in range(2))
    b = rng.normal(size=8).astype(dtype)
    a = kernels.sigmoid(z + b)
    z_d, g_d, b_d, a_d = on_device(host_cupy, z, g, b, a)
    tol = {"rtol": 4 * np.finfo(dtype).eps, "atol": np.finfo(dtype).tiny}

    cases = [
        (kernels.bias_sigmoid(z_d, b_d), kernels.bias_sigmoid(z, b)),
        (kernels.sigmoid_grad(a_d), kernels.sigmoid_grad(a)),
        (kernels.sigmoid_delta(g_d, a_d), kernels.sigmoid_delta(g, a)),
    ]
    for got, want in cases:
        assert isinstance(got, host_cupy.ndarray) and got.dtype == dtype
        np.testing.assert_allclose(host_cupy.asnumpy(got), want, **tol)
    assert sorted(host_cupy.kernels_built) == [
        "gpunet_bias_sigmoid", "gpunet_sigmoid_delta", "gpunet_sigmoid_grad"
    ]


def test_fused_ops_write_into_out_on_the_device(host_cupy):
    rng = np.random.default_rng(1)
    z, b = on_device(host_cupy, rng.normal(size=(6, 4)), rng.normal(size=4))
    expected = kernels.sigmoid(host_cupy.asnumpy(z) + host_cupy.asnumpy(b))
    assert kernels.bias_sigmoid(z, b, out=z) is z
    np.testing.assert_allclose(host_cupy.asnumpy(z), expected, rtol=1e-15)
    assert kernels.sigmoid_grad(z, out=z) is z


def test_kernels_are_built_once(host_cupy):
    a = host_cupy.asarray(np.full((3, 3), 0.5))
    for _ in range(3):
        kernels.sigmoid_grad(a)
        kernels.sigmoid_grad(a.astype(np.float32))
    assert len(host_cupy.kernels_built) == 3  # defined once; CuPy compiles per dtype


@pytest.mark.parametrize("p", [1, 3])
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_loss_and_grad_on_the_device_match_numpy(host_cupy, p, dtype, tolerance):
    params, X, Y = random_problem(700, 5, 9, p, seed=p, dtype=dtype)
    expected_loss, expected = gpunet.loss_and_grad(params, X, Y)

    device_params = params.to("cupy")
    X_d, Y_d = on_device(host_cupy, X, Y)
    loss, grads = gpunet.loss_and_grad(device_params, X_d, Y_d, max_work_bytes=4 * 9 * 8 * 64)
    assert device_params.backend == "cupy" and loss.dtype == dtype
    for got, want in zip(grads, expected, strict=True):
        assert isinstance(got, host_cupy.ndarray), "gradients must stay on the device"
        assert relative_error(host_cupy.asnumpy(got), want) < tolerance
    assert float(loss) == pytest.approx(float(expected_loss), rel=tolerance)
    assert isinstance(gpunet.predict(device_params, X_d), host_cupy.ndarray)


def test_auto_backend_picks_the_gpu(host_cupy):
    assert gpunet.resolve_backend("auto") == "cupy"
    assert gpunet.Params.init(2, 3, seed=0).backend == "cupy"


def test_nan_on_the_device_is_found(host_cupy):
    params = gpunet.Params.init(2, 3, seed=0, backend="cupy")
    X = np.ones((20, 2))
    X[13, 1] = np.nan
    with pytest.raises(ValueError, match=r"X holds NaN or Inf \(first at row 13\)"):
        gpunet.loss_and_grad(params, *on_device(host_cupy, X, np.ones(20)))
