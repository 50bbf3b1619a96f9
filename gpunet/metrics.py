"""Regression metrics computed where the data is (NumPy or CuPy), as scikit-learn defines them."""

from __future__ import annotations

from typing import Any

from gpunet.backend import get_namespace


def _as_columns(y_true: Any, y_pred: Any) -> tuple[Any, Any]:
    xp = get_namespace(y_true, y_pred)
    Y, P = xp.asarray(y_true), xp.asarray(y_pred)
    Y, P = (a.reshape(a.shape[0], -1) for a in (Y, P))
    if Y.shape != P.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {Y.shape} and {P.shape}")
    return Y, P


def r2_score(y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
    """The coefficient of determination, averaged uniformly over outputs.

    Per output j, with weights w (1 when None) and ȳ_j the weighted mean:

        R²_j = 1 − Σ_i w_i (y_ij − ŷ_ij)² / Σ_i w_i (y_ij − ȳ_j)²

    y_true, y_pred: (m,) or (m, p). A constant y_true gives 1 where it is
    predicted exactly and 0 otherwise; fewer than two samples give NaN, as in
    scikit-learn's ``r2_score``. Returns a 0-d array on the inputs' backend.
    """
    Y, P = _as_columns(y_true, y_pred)
    xp = get_namespace(Y)
    dtype = xp.result_type(Y.dtype, P.dtype, xp.float32)
    if Y.shape[0] < 2:
        return xp.asarray(float("nan"), dtype=dtype)
    w = xp.ones((Y.shape[0], 1), dtype=dtype)
    if sample_weight is not None:
        w = xp.asarray(sample_weight, dtype=dtype).reshape(-1, 1)
    residual = ((Y - P) ** 2 * w).sum(axis=0)
    mean = (Y * w).sum(axis=0) / w.sum()
    total = ((Y - mean) ** 2 * w).sum(axis=0)
    constant = total == 0
    safe_total = total + constant  # 1 where y is constant: no division by zero
    scores = xp.where(constant, (residual == 0).astype(dtype), 1 - residual / safe_total)
    return scores.astype(dtype).mean()


def mean_squared_error(y_true: Any, y_pred: Any) -> Any:
    """MSE = 1/(m p) Σ_ij (y_ij − ŷ_ij)², as a 0-d array on the inputs' backend."""
    Y, P = _as_columns(y_true, y_pred)
    return ((Y - P) ** 2).mean()
