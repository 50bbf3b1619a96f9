"""Checking the analytic gradients against central finite differences of the loss."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpunet.grad import loss_and_grad
from gpunet.model import PARAM_NAMES, Params, loss


def numerical_grad(params: Params, X: Any, y: Any, step: float = 1e-6) -> Params:
    """∂J/∂θ_j ≈ (J(θ + h e_j) − J(θ − h e_j)) / 2h for every entry θ_j of every parameter.

    Takes 2 · (number of parameters) loss evaluations: meant for small networks,
    in float64. Computed on the host, whatever the parameters' backend.
    """
    host = params.to("numpy").copy()
    X, y = np.asarray(_to_host(X)), np.asarray(_to_host(y))
    grads = host.zeros_like()
    for value, grad in zip(host, grads, strict=True):
        flat_value, flat_grad = value.reshape(-1), grad.reshape(-1)
        for j in range(flat_value.size):
            original = flat_value[j]
            flat_value[j] = original + step
            above = float(loss(host, X, y))
            flat_value[j] = original - step
            below = float(loss(host, X, y))
            flat_value[j] = original
            flat_grad[j] = (above - below) / (2 * step)
    return grads


def gradient_errors(params: Params, X: Any, y: Any, step: float = 1e-6) -> dict[str, float]:
    """Relative error ‖g − g_fd‖ / max(‖g‖, ‖g_fd‖) of each analytic gradient, by parameter name."""
    _, analytic = loss_and_grad(params, X, y)
    numerical = numerical_grad(params, X, y, step)
    errors = {}
    for name, exact, approx in zip(PARAM_NAMES, analytic.to("numpy"), numerical, strict=True):
        scale = max(np.linalg.norm(exact), np.linalg.norm(approx), np.finfo(float).tiny)
        errors[name] = float(np.linalg.norm(exact - approx) / scale)
    return errors


def _to_host(array: Any) -> Any:
    return array.get() if hasattr(array, "get") else array
