"""Choosing the backend, and moving arrays and parameters between backends."""

from __future__ import annotations

import types

import numpy as np
import pytest

import gpunet
from gpunet import backend


@pytest.fixture
def fake_cupy(monkeypatch):
    """Pretend CuPy imports; ``fake_cupy.devices`` says whether it sees a GPU."""
    fake = types.SimpleNamespace(__name__="cupy", __version__="14.0.0", devices=False)
    fake.cuda = types.SimpleNamespace(is_available=lambda: fake.devices)
    monkeypatch.setattr(backend, "_cupy_or_none", lambda: fake)
    backend.gpu_available.cache_clear()
    yield fake
    backend.gpu_available.cache_clear()


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setattr(backend, "_cupy_or_none", lambda: None)
    backend.gpu_available.cache_clear()
    yield
    backend.gpu_available.cache_clear()


def test_auto_picks_numpy_where_cupy_imports_without_a_gpu(fake_cupy):
    assert backend.resolve_backend("auto") == "numpy"
    assert backend.array_module("auto") is np


def test_auto_picks_cupy_where_a_gpu_is_present(fake_cupy):
    fake_cupy.devices = True
    assert backend.resolve_backend("auto") == "cupy"
    assert backend.array_module(None) is fake_cupy


def test_environment_variable_chooses_when_no_argument_does(fake_cupy, monkeypatch):
    fake_cupy.devices = True
    monkeypatch.setenv("GPUNET_BACKEND", "numpy")
    assert backend.resolve_backend() == "numpy"
    assert backend.resolve_backend("cupy") == "cupy"  # an argument wins over the variable
    monkeypatch.setenv("GPUNET_BACKEND", " CuPy ")
    assert backend.resolve_backend() == "cupy"


def test_explicit_cupy_without_cupy_says_how_to_install(no_cupy):
    with pytest.raises(RuntimeError, match=r"CuPy is not installed.*gpunet\[cuda12\].*cuda13"):
        backend.resolve_backend("cupy")


def test_explicit_cupy_without_a_gpu_says_so(fake_cupy):
    with pytest.raises(RuntimeError, match=r"CuPy sees no CUDA device"):
        backend.resolve_backend("cupy")
    with pytest.raises(RuntimeError, match=r"backend 'cupy' was requested"):
        gpunet.Params.init(2, 3, backend="cupy")


@pytest.mark.parametrize("name, source", [("tpu", "backend"), ("", "backend")])
def test_unknown_backend_is_an_error(name, source):
    with pytest.raises(ValueError, match=rf"{source} must be one of 'auto', 'numpy', 'cupy'"):
        backend.resolve_backend(name)


def test_unknown_backend_in_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("GPUNET_BACKEND", "torch")
    with pytest.raises(ValueError, match=r"GPUNET_BACKEND must be one of .* got 'torch'"):
        backend.resolve_backend()


def test_numpy_arrays_stay_on_numpy():
    a = np.arange(3.0)
    assert backend.to_backend(a, "numpy") is a
    assert backend.get_namespace(a, None) is np
    params = gpunet.Params.init(2, 3, seed=0, backend="numpy")
    assert params.to("numpy").w1 is params.w1 and params.backend == "numpy"


def test_info_reports_backend_device_and_versions(no_cupy):
    report = backend.info()
    assert report["backend (auto)"] == "numpy"
    assert report["cupy"] == "not installed"
    assert report["numpy"] == np.__version__ and report["gpunet"] == gpunet.__version__
    assert report["device"].startswith("CPU")


@pytest.mark.gpu
def test_params_and_arrays_round_trip_through_the_gpu():
    import cupy

    params = gpunet.Params.init(3, 4, 2, seed=0, backend="numpy")
    on_gpu = params.to("cupy")
    assert on_gpu.backend == "cupy" and isinstance(on_gpu.w1, cupy.ndarray)
    for a, b in zip(params, on_gpu.to("numpy"), strict=True):
        np.testing.assert_array_equal(a, b)
    assert isinstance(backend.to_backend(np.ones(2), "cupy"), cupy.ndarray)
    assert backend.get_namespace(on_gpu.w1) is cupy
    assert gpunet.Params.init(3, 4, seed=0, backend="auto").backend == "cupy"
