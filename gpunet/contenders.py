"""The implementations of one gradient step that the benchmark races: gpunet and its peers.

Each contender computes, for the same weights and data,

    J = 1/(2m) Σ_i ‖h(x_i) − y_i‖²,   h(x) = W2 σ(W1 x + b1) + b2,

and its gradients with respect to W1 (n, d), b1 (n,), W2 (p, n), b2 (p,), written
the way a user of that library would write it (autograd where the library has
it), and a training step: the gradient and a plain SGD update θ ← θ − lr ∂J/∂θ.

A contender holds its own copy of the parameters in its own layout and on its
own device. The benchmark drives it through a few methods: ``load`` the
parameters, ``stage`` each input set on the device, then ``gradient`` and
``train_step`` on a staged set, ``wait`` for a result, and ``to_host`` to bring a
gradient back in gpunet's layout for the cross-check.
"""

from __future__ import annotations

import abc
import functools
import inspect
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gpunet import backend
from gpunet.grad import loss_and_grad
from gpunet.model import Params

PEERS_HINT = "pip install gpunet[peers]"

Timer = Callable[[Callable[[], Any]], float]
"""Runs a step and returns the seconds it took on the device, its result waited for."""


class Contender(abc.ABC):
    """One implementation of the loss + gradient step, on one device ("cpu" or "gpu")."""

    name: str
    device: str

    @abc.abstractmethod
    def missing(self) -> str | None:
        """Why this contender cannot run here (what to install), or None if it can."""

    @abc.abstractmethod
    def load(self, params: Params, lr: float) -> None:
        """Take a copy of ``params`` (host, float32 or float64) in the contender's layout."""

    @abc.abstractmethod
    def stage(self, X: np.ndarray, Y: np.ndarray) -> Any:
        """X (m, d) and Y (m, p) on the contender's device, in its array type."""

    @abc.abstractmethod
    def gradient(self, data: Any) -> Any:
        """The loss and the four gradients on staged ``data``, as the library returns them."""

    @abc.abstractmethod
    def train_step(self, data: Any) -> Any:
        """The gradient and an SGD update of the held parameters; returns something to wait on."""

    @abc.abstractmethod
    def to_host(self, result: Any) -> tuple[float, Params]:
        """A :meth:`gradient` result as (J, gradients in gpunet's layout on the host)."""

    def wait(self, result: Any) -> None:  # noqa: B027 - synchronous libraries need nothing
        """Block until ``result`` is computed (asynchronous libraries override this)."""

    def timer(self) -> Timer:
        """Wall-clock time of a step, its result waited for."""
        return functools.partial(host_time, wait=self.wait)

    @abc.abstractmethod
    def release(self) -> None:
        """Drop the parameters and anything cached on the device."""


def host_time(run: Callable[[], Any], wait: Callable[[Any], None]) -> float:
    start = time.perf_counter()
    wait(run())
    return time.perf_counter() - start


def cupy_event_time(run: Callable[[], Any]) -> float:
    """GPU time of ``run`` between two CUDA events on the current stream."""
    import cupy

    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    run()
    stop.record()
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) / 1e3


def torch_event_time(run: Callable[[], Any]) -> float:
    """GPU time of ``run`` between two CUDA events on torch's current stream."""
    import torch

    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    start.record()
    run()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / 1e3


class Gpunet(Contender):
    """gpunet's own ``loss_and_grad`` on NumPy (CPU) or CuPy (GPU), without the finiteness check."""

    def __init__(self, array_backend: str = "numpy") -> None:
        self.backend = array_backend
        self.name = f"gpunet-{array_backend}"
        self.device = "cpu" if array_backend == "numpy" else "gpu"

    def missing(self) -> str | None:
        if self.backend == "cupy" and not backend.gpu_available():
            return f"no CUDA GPU seen by CuPy ({backend.CUPY_INSTALL_HINT})"
        return None

    def load(self, params: Params, lr: float) -> None:
        self.params, self.lr = params.to(self.backend).copy(), lr

    def stage(self, X: np.ndarray, Y: np.ndarray) -> Any:
        xp = backend.array_module(self.backend)
        return xp.asarray(X), xp.asarray(Y)

    def gradient(self, data: Any) -> Any:
        X, Y = data
        return loss_and_grad(self.params, X, Y, check_finite=False)

    def train_step(self, data: Any) -> Any:
        loss, grads = self.gradient(data)
        for value, grad in zip(self.params, grads, strict=True):
            value -= self.lr * grad
        return loss

    def to_host(self, result: Any) -> tuple[float, Params]:
        loss, grads = result
        return float(loss), grads.to("numpy")

    def timer(self) -> Timer:
        return cupy_event_time if self.device == "gpu" else super().timer()

    def release(self) -> None:
        self.params = None
        if self.device == "gpu":
            backend.array_module("cupy").get_default_memory_pool().free_all_blocks()


@functools.cache
def _torch_loss() -> Callable[..., Any]:
    """J(W1, b1, W2, b2, X, Y) in PyTorch, as a PyTorch user writes it."""
    import torch
    import torch.nn.functional as F

    def loss(w1: Any, b1: Any, w2: Any, b2: Any, X: Any, Y: Any) -> Any:
        hidden = torch.sigmoid(F.linear(X, w1, b1))
        residual = F.linear(hidden, w2, b2) - Y
        return residual.square().sum() / (2 * X.shape[0])

    return loss


class Torch(Contender):
    """PyTorch autograd of the same loss, eager or through ``torch.compile``.

    The gradient is ``torch.autograd.grad`` of the loss; the training step is
    what a PyTorch user writes: ``zero_grad``, ``backward``, ``torch.optim.SGD``'s
    ``step``. With ``compiled``, the loss function goes through ``torch.compile``
    (AOTAutograd compiles its backward too) and the optimizer step stays eager.
    It is compiled once per network shape and dtype, with the batch dimension
    marked dynamic, so a sweep over m does not recompile.
    """

    def __init__(self, device: str = "cpu", compiled: bool = False) -> None:
        self.device, self.compiled = device, compiled
        self.name = "torch.compile" if compiled else "torch-eager"
        self.compiled_for: tuple[Any, ...] | None = None

    def missing(self) -> str | None:
        try:
            import torch
        except ImportError:
            return f"PyTorch is not installed ({PEERS_HINT})"
        if self.device == "gpu" and not torch.cuda.is_available():
            return "PyTorch sees no CUDA device"
        return None

    def load(self, params: Params, lr: float) -> None:
        import torch

        self.torch_device = "cuda" if self.device == "gpu" else "cpu"
        self.params = [
            torch.tensor(value, device=self.torch_device, requires_grad=True) for value in params
        ]
        self.optimizer = torch.optim.SGD(self.params, lr=lr)
        network = (tuple(params.shapes.values()), params.dtype)
        if not self.compiled:
            self.loss = _torch_loss()
        elif network != self.compiled_for:
            torch.compiler.reset()  # one graph cached at a time: the recompile limit is never hit
            self.loss, self.compiled_for = torch.compile(_torch_loss()), network

    def stage(self, X: np.ndarray, Y: np.ndarray) -> Any:
        import torch

        staged = tuple(torch.as_tensor(a, device=self.torch_device) for a in (X, Y))
        if self.compiled:
            for tensor in staged:
                torch._dynamo.mark_dynamic(tensor, 0)
        return staged

    def gradient(self, data: Any) -> Any:
        import torch

        loss = self.loss(*self.params, *data)
        return loss, torch.autograd.grad(loss, self.params)

    def train_step(self, data: Any) -> Any:
        self.optimizer.zero_grad()
        loss = self.loss(*self.params, *data)
        loss.backward()
        self.optimizer.step()
        return loss

    def to_host(self, result: Any) -> tuple[float, Params]:
        loss, grads = result
        return float(loss.detach()), Params(*(g.detach().cpu().numpy() for g in grads))

    def timer(self) -> Timer:
        return torch_event_time if self.device == "gpu" else super().timer()

    def release(self) -> None:
        self.params = self.optimizer = None
        if self.device == "gpu":
            import torch

            torch.cuda.empty_cache()


@functools.cache
def _jax() -> Any:
    # JAX takes 75 % of GPU memory when it starts unless told otherwise, which
    # would starve the contenders that run beside it.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 arrays stay float64
    return jax


@functools.cache
def _jax_steps() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """jit(value_and_grad(J)) and jit of the SGD step built on it."""
    jax = _jax()

    def loss(params: tuple[Any, ...], X: Any, Y: Any) -> Any:
        w1, b1, w2, b2 = params
        hidden = jax.nn.sigmoid(X @ w1.T + b1)
        residual = hidden @ w2.T + b2 - Y
        return (residual * residual).sum() / (2 * X.shape[0])

    value_and_grad = jax.value_and_grad(loss)

    def sgd_step(params: tuple[Any, ...], X: Any, Y: Any, lr: Any) -> Any:
        value, grads = value_and_grad(params, X, Y)
        return value, tuple(p - lr * g for p, g in zip(params, grads, strict=True))

    return jax.jit(value_and_grad), jax.jit(sgd_step)


class Jax(Contender):
    """``jax.jit(jax.value_and_grad(J))`` on JAX's CPU or GPU device.

    On a GPU, JAX's default float32 matmul precision lets XLA use TF32.
    """

    name = "jax.jit"

    def __init__(self, device: str = "cpu") -> None:
        self.device = device

    def missing(self) -> str | None:
        try:
            jax = _jax()
        except ImportError:
            return f"JAX is not installed ({PEERS_HINT})"
        platform = "gpu" if self.device == "gpu" else "cpu"
        try:
            jax.devices(platform)
        except RuntimeError:
            return f"JAX has no {platform} device"
        return None

    def load(self, params: Params, lr: float) -> None:
        jax = _jax()
        self.jax_device = jax.devices("gpu" if self.device == "gpu" else "cpu")[0]
        self.params = tuple(jax.device_put(value, self.jax_device) for value in params)
        self.lr = jax.device_put(np.asarray(lr, dtype=params.dtype), self.jax_device)

    def stage(self, X: np.ndarray, Y: np.ndarray) -> Any:
        jax = _jax()
        return jax.device_put(X, self.jax_device), jax.device_put(Y, self.jax_device)

    def gradient(self, data: Any) -> Any:
        return _jax_steps()[0](self.params, *data)

    def train_step(self, data: Any) -> Any:
        loss, self.params = _jax_steps()[1](self.params, *data, self.lr)
        return loss, self.params

    def wait(self, result: Any) -> None:
        _jax().block_until_ready(result)

    def to_host(self, result: Any) -> tuple[float, Params]:
        loss, grads = result
        return float(loss), Params(*(np.asarray(g) for g in grads))

    def release(self) -> None:
        self.params = None


class Sklearn(Contender):
    """scikit-learn MLPRegressor's backpropagation (its private ``_backprop``).

    A regressor with logistic hidden units, identity output, squared_error loss
    and alpha = 0, whose coefs_ are set to the same weights (coefs_[0] = W1ᵀ,
    coefs_[1] = W2ᵀ). Its loss is mean((y − h)²)/2 over the m·p entries, J/p;
    its gradients are those of J.
    """

    name = "sklearn"
    device = "cpu"

    def missing(self) -> str | None:
        try:
            import sklearn.neural_network  # noqa: F401
        except ImportError:
            return f"scikit-learn is not installed ({PEERS_HINT})"
        return None

    def load(self, params: Params, lr: float) -> None:
        from sklearn.neural_network import MLPRegressor

        model = MLPRegressor(hidden_layer_sizes=(params.n_hidden,), activation="logistic", alpha=0)
        model.coefs_ = [params.w1.T.copy(), params.w2.T.copy()]
        model.intercepts_ = [params.b1.copy(), params.b2.copy()]
        model.n_layers_, model.n_outputs_, model.out_activation_ = 3, params.n_outputs, "identity"
        self.model, self.lr = model, lr
        self.coef_grads = [np.empty_like(c) for c in model.coefs_]
        self.intercept_grads = [np.empty_like(b) for b in model.intercepts_]
        # scikit-learn 1.7 added sample_weight to this private method.
        self.weighted = "sample_weight" in inspect.signature(model._backprop).parameters

    def stage(self, X: np.ndarray, Y: np.ndarray) -> Any:
        return X, Y

    def gradient(self, data: Any) -> Any:
        X, Y = data
        weights = (None,) if self.weighted else ()
        activations, deltas = [X, None, None], [None, None]
        return self.model._backprop(
            X, Y, *weights, activations, deltas, self.coef_grads, self.intercept_grads
        )

    def train_step(self, data: Any) -> Any:
        loss, coef_grads, intercept_grads = self.gradient(data)
        for value, grad in zip(
            self.model.coefs_ + self.model.intercepts_, coef_grads + intercept_grads, strict=True
        ):
            value -= self.lr * grad
        return loss

    def to_host(self, result: Any) -> tuple[float, Params]:
        loss, (w1, w2), (b1, b2) = result
        p = self.model.n_outputs_
        return float(loss) * p, Params(w1.T.copy(), b1.copy(), w2.T.copy(), b2.copy())

    def release(self) -> None:
        self.model = None


def all_contenders(device: str) -> list[Contender]:
    """Every contender for ``device`` ("cpu" or "gpu"), gpunet first, installed or not."""
    if device == "gpu":
        return [Gpunet("cupy"), Torch("gpu"), Torch("gpu", compiled=True), Jax("gpu")]
    return [Gpunet("numpy"), Torch("cpu"), Torch("cpu", compiled=True), Jax("cpu"), Sklearn()]
