"""gpunet: a one-hidden-layer sigmoid network, its loss and its gradients, on NumPy or CuPy."""

from gpunet.backend import array_module, get_namespace, resolve_backend, to_backend, to_numpy
from gpunet.grad import loss_and_grad
from gpunet.model import DEFAULT_WORK_BYTES, Params, forward, loss, predict

__version__ = "0.1.0"


def __getattr__(name: str):
    # GPUNetRegressor needs scikit-learn, an optional dependency: import it on first use only.
    if name == "GPUNetRegressor":
        from gpunet.estimator import GPUNetRegressor

        return GPUNetRegressor
    raise AttributeError(f"module 'gpunet' has no attribute {name!r}")


__all__ = [
    "DEFAULT_WORK_BYTES",
    "GPUNetRegressor",
    "Params",
    "__version__",
    "array_module",
    "forward",
    "get_namespace",
    "loss",
    "loss_and_grad",
    "predict",
    "resolve_backend",
    "to_backend",
    "to_numpy",
]
