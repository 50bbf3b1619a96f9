"""Bad input gets a ValueError or TypeError that names the argument, what was expected and given."""

from __future__ import annotations

import numpy as np
import pytest

import gpunet
from gpunet import Params, loss_and_grad


@pytest.fixture
def params():
    return Params.init(3, 4, 2, seed=0, backend="numpy")


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(10, 3)), rng.normal(size=(10, 2))


@pytest.mark.parametrize(
    "X, Y, error, message",
    [
        (np.ones((10, 3)), np.ones((9, 2)), ValueError, r"X has 10, y has 9"),
        (np.ones((10, 4)), np.ones((10, 2)), ValueError, r"X has 4 features .* W1 expects 3"),
        (np.ones((10, 3)), np.ones((10, 3)), ValueError, r"y has 3 outputs .* W2 has 2 rows"),
        (np.ones((10, 3)), np.ones(10), ValueError, r"y has 1 outputs .* W2 has 2 rows"),
        (np.ones((0, 3)), np.ones((0, 2)), ValueError, r"at least one sample; got shape \(0, 3\)"),
        (np.ones(3), np.ones((1, 2)), ValueError, r"X must be 2-D.*got shape \(3,\)"),
        (np.ones((2, 3, 1)), np.ones((2, 2)), ValueError, r"X must be 2-D"),
        (np.ones((10, 3)), np.ones((10, 2, 1)), ValueError, r"y must be 1-D .* or 2-D"),
        (np.full((10, 3), "a"), np.ones((10, 2)), TypeError, r"X must hold real numbers.*<U1"),
        (np.ones((10, 3), complex), np.ones((10, 2)), TypeError, r"X must hold real .*complex128"),
        (np.ones((10, 3)), np.ones((10, 2), complex), TypeError, r"y must hold real .*complex"),
        (np.ones((10, 3), object), np.ones((10, 2)), TypeError, r"X must hold real .*object"),
    ],
)
def test_bad_shapes_and_dtypes(params, X, Y, error, message):
    for function in (loss_and_grad, gpunet.loss):
        with pytest.raises(error, match=message):
            function(params, X, Y)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("target", ["X", "y"])
def test_nan_or_inf_in_the_data_names_the_row(params, data, bad, target):
    X, Y = (a.copy() for a in data)
    (X if target == "X" else Y)[7, 1] = bad
    with pytest.raises(ValueError, match=rf"{target} holds NaN or Inf \(first at row 7\)"):
        loss_and_grad(params, X, Y)
    with pytest.raises(ValueError, match=r"first at row 7"):
        loss_and_grad(params, X, Y, max_work_bytes=3 * 4 * 4 * 8)  # chunks of 3 rows


def test_finite_data_at_the_edge_of_the_range_passes_the_check():
    from gpunet.validation import NonFiniteError, check_finite

    huge = np.full((4, 3), np.finfo(np.float32).max, dtype=np.float32)
    huge[1] *= -1
    check_finite(huge, "X")  # a sum would overflow; every entry is finite
    huge[2, 0] = -np.inf
    with pytest.raises(NonFiniteError, match=r"first at row 2"):
        check_finite(huge, "X")


def test_check_finite_false_skips_the_check(params, data):
    X, Y = data
    X = X.copy()
    X[0, 0] = np.nan
    with np.errstate(invalid="ignore"):
        loss, _ = loss_and_grad(params, X, Y, check_finite=False)
    assert np.isnan(float(loss))


def test_lists_are_accepted_as_array_likes(params, data):
    X, Y = data
    loss, _ = loss_and_grad(params, X.tolist(), Y.tolist())
    assert float(loss) == float(loss_and_grad(params, X, Y)[0])


def test_parameters_in_mixed_dtypes_are_an_error():
    w1, b1, w2, b2 = Params.init(3, 4, seed=0, backend="numpy")
    with pytest.raises(TypeError, match=r"parameters must share one dtype.*float32"):
        Params(w1, b1, w2.astype(np.float32), b2)


@pytest.mark.parametrize("dtype", [np.float16, np.int64, complex])
def test_parameter_dtype_must_be_float32_or_float64(dtype):
    with pytest.raises(TypeError, match=r"float32 or float64"):
        Params.init(3, 4, dtype=dtype, backend="numpy")
    with pytest.raises(TypeError, match=r"float32 or float64"):
        Params(*(a.astype(dtype) for a in Params.init(3, 4, seed=0, backend="numpy")))


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((4, 3), (5,), (1, 4), (1,)), r"b1 must have shape \(4,\); got \(5,\)"),
        (((4, 3), (4,), (1, 5), (1,)), r"w2 must have shape \(n_outputs, 4\); got \(1, 5\)"),
        (((4, 3), (4,), (2, 4), (1,)), r"b2 must have shape \(2,\); got \(1,\)"),
        (((4,), (4,), (1, 4), (1,)), r"w1 must have shape \(n_hidden, n_features\); got \(4,\)"),
    ],
)
def test_inconsistent_parameter_shapes(shapes, message):
    with pytest.raises(ValueError, match=message):
        Params(*(np.zeros(s) for s in shapes))


@pytest.mark.parametrize("size", [0, -1, 2.5])
def test_init_sizes_must_be_positive_integers(size):
    with pytest.raises(ValueError, match=r"n_hidden must be a positive integer"):
        Params.init(3, size, backend="numpy")


def test_max_work_bytes_must_be_positive(params, data):
    with pytest.raises(ValueError, match=r"max_work_bytes must be positive; got 0"):
        loss_and_grad(params, *data, max_work_bytes=0)


class FakeCupyArray(np.ndarray):
    """An array whose type says it comes from CuPy, to test the backend checks without a GPU."""


FakeCupyArray.__module__ = "cupy._core.core"


def test_data_on_another_backend_than_the_parameters_is_an_error(params, data):
    X, Y = data
    with pytest.raises(TypeError, match=r"X is a cupy array but the parameters are on numpy"):
        loss_and_grad(params, X.view(FakeCupyArray), Y)
    with pytest.raises(TypeError, match=r"y is a cupy array .* params.to\('cupy'\)"):
        loss_and_grad(params, X, Y.view(FakeCupyArray))


def test_parameters_on_mixed_backends_are_an_error():
    w1, b1, w2, b2 = Params.init(3, 4, seed=0, backend="numpy")
    with pytest.raises(TypeError, match=r"different backends \(NumPy and CuPy\)"):
        Params(w1.view(FakeCupyArray), b1, w2, b2)
