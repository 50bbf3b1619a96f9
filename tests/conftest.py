"""Shared fixtures: GPU tests are marked ``gpu`` and skipped, with the reason, where no GPU is."""

from __future__ import annotations

import functools
import inspect
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gpunet import backend

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "kernels"
HARNESS = Path(__file__).resolve().parent / "kernel_harness.cu"


KILL_REPORT: list[str] = []
"""Lines the fault tests append, printed in the run's summary (tests/test_faults.py)."""


def pytest_terminal_summary(terminalreporter):
    for line in KILL_REPORT:
        terminalreporter.write_line(f"kill-at-random-points: {line}")


def _no_gpu_reason() -> str | None:
    if backend.gpu_available():
        return None
    if backend._cupy_or_none() is None:
        return "no GPU: CuPy is not installed (pip install gpunet[cuda13])"
    return "no GPU: CuPy is installed but sees no CUDA device"


def pytest_collection_modifyitems(config, items):
    reason = _no_gpu_reason()
    if reason is None:
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


def numpy_cupy_allclose(rtol: float = 1e-7, atol: float = 0.0):
    """Run the test body once with ``xp=numpy`` and once with ``xp=cupy``; compare the results.

    The body takes the array module as ``xp`` and returns an array or a tuple
    of arrays, as in CuPy's own tests. Marked ``gpu``.
    """

    def decorator(body):
        @pytest.mark.gpu
        @functools.wraps(body)
        def test(*args, **kwargs):
            import cupy

            expected = body(*args, xp=np, **kwargs)
            actual = body(*args, xp=cupy, **kwargs)
            if not isinstance(expected, tuple):
                expected, actual = (expected,), (actual,)
            assert len(actual) == len(expected)
            for got, want in zip(actual, expected, strict=True):
                assert isinstance(got, cupy.ndarray), "the CuPy run must return CuPy arrays"
                np.testing.assert_allclose(cupy.asnumpy(got), want, rtol=rtol, atol=atol)

        signature = inspect.signature(body)
        test.__signature__ = signature.replace(
            parameters=[p for name, p in signature.parameters.items() if name != "xp"]
        )
        return test

    return decorator


@pytest.fixture(scope="session")
def host_kernels(tmp_path_factory):
    """kernels/gpunet_math.cuh compiled for the host by g++, as a ctypes library."""
    import ctypes

    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler (g++) on PATH to compile the kernel header for the host")
    library = tmp_path_factory.mktemp("host_kernels") / "libgpunet_math.so"
    command = [compiler, "-O2", "-shared", "-fPIC", "-x", "c++", f"-I{KERNELS}", str(HARNESS)]
    result = subprocess.run([*command, "-o", str(library)], capture_output=True, text=True)
    assert result.returncode == 0, f"the kernel header fails on g++ for the host:\n{result.stderr}"
    return ctypes.CDLL(str(library))


@pytest.fixture
def host_cupy(host_kernels, monkeypatch):
    """``import cupy`` gives the host stand-in of tests/host_cupy.py, with a 'GPU' present."""
    import sys

    from host_cupy import HostCuPy

    from gpunet import kernels

    fake = HostCuPy(host_kernels, kernels.kernel_source())
    monkeypatch.setitem(sys.modules, "cupy", fake)
    caches = (backend._cupy_or_none, backend.gpu_available, kernels._cuda_kernels)
    for cache in caches:
        cache.cache_clear()
    kernels._launched.clear()
    yield fake
    for cache in caches:
        cache.cache_clear()
    kernels._launched.clear()
