"""A stand-in for CuPy on a machine without a GPU, to run gpunet's GPU code path on the host.

Its arrays are NumPy arrays whose type says it is CuPy's, and its
``ElementwiseKernel`` runs the operation on the functions of
kernels/gpunet_math.cuh compiled for the host. So the parts of the GPU path
that are Python (the dispatch to the kernels, their parameter lists and bodies,
the ``out`` buffers, arrays staying on the device) run in every test run. The
CUDA compile is tested by nvcc, and real CuPy on a GPU by the ``gpu`` tests.
"""

from __future__ import annotations

import ctypes
import re
import types

import numpy as np


class ndarray(np.ndarray):
    """A NumPy array that gpunet.backend takes for a CuPy one."""

    def get(self) -> np.ndarray:
        return np.array(self).view(np.ndarray)


ndarray.__module__ = "cupy._core.core"


def _on_device(value):
    if type(value) is np.ndarray:
        return value.view(ndarray)
    return value


class HostCuPy(types.ModuleType):
    """The ``cupy`` module: NumPy's functions returning device arrays, and ElementwiseKernel."""

    def __init__(self, library: ctypes.CDLL, header: str) -> None:
        super().__init__("cupy")
        self.__version__ = "0-host"
        self.ndarray = ndarray
        self.cuda = types.SimpleNamespace(is_available=lambda: True)
        self.kernels_built: list[str] = []
        module = self

        class ElementwiseKernel:
            def __init__(self, in_params, out_params, operation, name, preamble=""):
                assert preamble == header, "the preamble must be the header's text"
                self.inputs = [p.split()[-1] for p in in_params.split(",")]
                (self.output,) = [p.split()[-1] for p in out_params.split(",")]
                match = re.fullmatch(r"\s*(\w+) = gpunet_(\w+)\(([\w, ]+)\)\s*", operation)
                assert match and match[1] == self.output, f"unexpected body {operation!r}"
                self.function, arguments = match[2], [a.strip() for a in match[3].split(",")]
                self.order = [self.inputs.index(a) for a in arguments]
                module.kernels_built.append(name)

            def __call__(self, *args):
                if len(args) not in (len(self.inputs), len(self.inputs) + 1):
                    raise TypeError(f"Wrong number of arguments for {self.function}")
                if not all(isinstance(a, ndarray) for a in args):
                    raise TypeError("kernel arguments must be cupy.ndarray")
                inputs = args[: len(self.inputs)]
                dtypes = {a.dtype for a in inputs}
                if len(dtypes) != 1:
                    raise TypeError(f"type T is bound to more than one dtype: {dtypes}")
                shape = np.broadcast_shapes(*(a.shape for a in inputs))
                given = len(args) > len(inputs)
                out = args[-1] if given else np.empty(shape, *dtypes).view(ndarray)
                if out.shape != shape:
                    raise ValueError(f"out has shape {out.shape}, the inputs broadcast to {shape}")
                dtype = out.dtype
                flat = [
                    np.ascontiguousarray(np.broadcast_to(inputs[i], shape), dtype)
                    for i in self.order
                ]
                result = np.empty(shape, dtype)
                ctype = ctypes.POINTER(ctypes.c_float if dtype == np.float32 else ctypes.c_double)
                host = getattr(library, f"{self.function}_{dtype.name}")
                pointers = (a.ctypes.data_as(ctype) for a in (*flat, result))
                host(*pointers, ctypes.c_long(result.size))
                out[...] = result
                return out

        self.ElementwiseKernel = ElementwiseKernel

    def __getattr__(self, name):
        function = getattr(np, name)
        if not callable(function):
            return function
        return lambda *args, **kwargs: _on_device(function(*args, **kwargs))

    def asnumpy(self, array):
        return np.array(array).view(np.ndarray)
