"""Built-in data: deterministic synthetic regression problems of any size."""

from __future__ import annotations

import numpy as np


def friedman1(
    n_samples: int = 1000,
    n_features: int = 10,
    *,
    noise: float = 1.0,
    seed: int | None = 0,
    dtype: type = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Friedman's regression problem #1 (Friedman, 1991), the same as scikit-learn's.

    X ~ U(0, 1)^(m × d), d ≥ 5, of which the first five features matter:

        y = 10 sin(π x₁ x₂) + 20 (x₃ − ½)² + 10 x₄ + 5 x₅ + noise · N(0, 1)

    Returns X (m, d) and y (m,); the same seed gives the same data.
    """
    if n_features < 5:
        raise ValueError(f"n_features must be at least 5 for friedman1; got {n_features}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be at least 1; got {n_samples}")
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(n_samples, n_features))
    y = (
        10 * np.sin(np.pi * X[:, 0] * X[:, 1])
        + 20 * (X[:, 2] - 0.5) ** 2
        + 10 * X[:, 3]
        + 5 * X[:, 4]
        + noise * rng.standard_normal(n_samples)
    )
    return X.astype(dtype), y.astype(dtype)
