"""Which array module computes: NumPy on the CPU or CuPy on a CUDA GPU.

Functions take their array module from their inputs (:func:`get_namespace`),
as ``cupy.get_array_module`` does; the only state kept here is a cache of
whether a GPU is present.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

BACKENDS = ("numpy", "cupy")
ENV_VAR = "GPUNET_BACKEND"
CUPY_INSTALL_HINT = (
    "install CuPy for your CUDA version with `pip install gpunet[cuda12]` or "
    "`pip install gpunet[cuda13]`, or choose backend='numpy'"
)


@functools.cache
def _cupy_or_none() -> ModuleType | None:
    try:
        import cupy
    except ImportError:
        return None
    return cupy


@functools.cache
def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device.

    ``import cupy`` succeeds on machines without a GPU (CuPy ≥ 13), so the
    device check is what decides.
    """
    cupy = _cupy_or_none()
    if cupy is None:
        return False
    try:
        return bool(cupy.cuda.is_available())
    except Exception:  # a broken driver or runtime: treat as no GPU
        return False


def resolve_backend(name: str | None = None) -> str:
    """The backend to use: ``"numpy"`` or ``"cupy"``.

    ``name`` is ``"numpy"``, ``"cupy"``, ``"auto"`` or None; None reads the
    environment variable GPUNET_BACKEND and falls back to ``"auto"``.
    ``"auto"`` picks CuPy where it imports and a GPU is present, else NumPy.
    """
    requested = name if name is not None else os.environ.get(ENV_VAR, "auto")
    choice = requested.strip().lower()
    if choice == "auto":
        return "cupy" if gpu_available() else "numpy"
    if choice not in BACKENDS:
        source = "backend" if name is not None else ENV_VAR
        raise ValueError(f"{source} must be one of 'auto', 'numpy', 'cupy'; got {requested!r}")
    if choice == "cupy" and not gpu_available():
        reason = "CuPy is not installed" if _cupy_or_none() is None else "CuPy sees no CUDA device"
        raise RuntimeError(f"backend 'cupy' was requested but {reason}: {CUPY_INSTALL_HINT}")
    return choice


def array_module(name: str | None = None) -> ModuleType:
    """The array module (``numpy`` or ``cupy``) for a backend name, see resolve_backend."""
    return _cupy_or_none() if resolve_backend(name) == "cupy" else np


def is_cupy_array(array: Any) -> bool:
    """True for a ``cupy.ndarray``, without importing CuPy."""
    if type(array) is np.ndarray:
        return False  # the common case, decided without string work
    return type(array).__module__.split(".")[0] == "cupy"


def backend_of(array: Any) -> str:
    """``"cupy"`` for a CuPy array, ``"numpy"`` for anything else."""
    return "cupy" if is_cupy_array(array) else "numpy"


def get_namespace(*arrays: Any) -> ModuleType:
    """The array module of ``arrays``: CuPy if they are CuPy arrays, else NumPy.

    Raises TypeError when CuPy and NumPy arrays are mixed: gpunet never moves
    data between host and device behind the caller's back.
    """
    for array in arrays:  # the common case, all NumPy, decided fast: this runs often per step
        if type(array) is not np.ndarray:
            break
    else:
        return np
    backends = {backend_of(a) for a in arrays if a is not None}
    if len(backends) > 1:
        raise TypeError(
            "arrays are on different backends (NumPy and CuPy); move them to one "
            "with gpunet.to_backend(array, 'numpy' | 'cupy') or params.to(...)"
        )
    return _cupy_or_none() if backends == {"cupy"} else np


def to_backend(array: Any, backend: str | None) -> Any:
    """``array`` as an array of ``backend`` (see resolve_backend); a copy only if it moves."""
    target = resolve_backend(backend)
    if target == "numpy":
        return to_numpy(array)
    return _cupy_or_none().asarray(array)


def to_numpy(array: Any) -> np.ndarray:
    """``array`` as a NumPy array, copied from the device if it is a CuPy array."""
    return array.get() if is_cupy_array(array) else np.asarray(array)


@functools.cache
def cpu_block_bytes() -> int:
    """Bytes of one (rows, n) work buffer on the CPU: twice a core's L2 cache.

    Chunks that size keep the dozen passes over a chunk in the caches (L2,
    then the shared L3) and make few enough NumPy calls that the lanes seldom
    wait for each other's GIL. Measured on a 2-core EPYC (1 MiB L2, idle):
    2 x L2 was fastest at d <= 64, up to 2.2x faster than L2 / 2.
    GPUNET_CPU_BLOCK_BYTES overrides it.
    """
    override = os.environ.get("GPUNET_CPU_BLOCK_BYTES")
    return int(override) if override else 2 * _l2_cache_bytes()


@functools.cache
def cpu_lanes() -> int:
    """Chunks the CPU computes at once: the cores this process may use.

    GPUNET_NUM_THREADS overrides it; results depend on it within rounding only.
    """
    override = os.environ.get("GPUNET_NUM_THREADS")
    if override:
        return max(1, int(override))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _l2_cache_bytes() -> int:
    """A core's L2 cache size as Linux reports it; 1 MiB where it does not."""
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip()
                return int(size[:-1]) * 1024 if size.endswith("K") else int(size)
        except (OSError, ValueError):
            break
    return 2**20


def cpu_name() -> str:
    """The processor's model name, as the operating system reports it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def info() -> dict[str, str]:
    """The backend ``auto`` picks, the device, and the versions that matter."""
    from gpunet import __version__

    report = {
        "gpunet": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "backend (auto)": resolve_backend("auto"),
        f"{ENV_VAR}": os.environ.get(ENV_VAR, "(unset)"),
    }
    cupy = _cupy_or_none()
    report["cupy"] = cupy.__version__ if cupy is not None else "not installed"
    if gpu_available():
        device = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(device.id)
        free, total = cupy.cuda.runtime.memGetInfo()
        report["device"] = f"{props['name'].decode()} (cuda:{device.id})"
        report["compute capability"] = device.compute_capability
        report["device memory"] = f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB"
        report["cuda runtime"] = str(cupy.cuda.runtime.runtimeGetVersion())
        report["cuda driver"] = str(cupy.cuda.runtime.driverGetVersion())
    else:
        report["device"] = f"CPU ({cpu_name()}, {os.cpu_count()} cores)"
    return report
