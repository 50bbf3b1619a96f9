"""gpunet: a one-hidden-layer sigmoid network, its loss and its gradients, on NumPy or CuPy."""

from gpunet.backend import array_module, get_namespace, resolve_backend, to_backend, to_numpy
from gpunet.grad import loss_and_grad
from gpunet.model import DEFAULT_WORK_BYTES, Params, forward, loss, predict

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_WORK_BYTES",
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
