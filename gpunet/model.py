"""The network's parameters, their initialisation, the forward pass and the loss.

    h(x) = W2 · σ(W1 · x + b1) + b2          σ(z) = 1 / (1 + e^(−z))
    J    = 1/(2m) · Σ_i ‖y_i − h(x_i)‖²

Shapes: X (m, d), Y (m, p), W1 (n, d), b1 (n,), W2 (p, n), b2 (p,).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from gpunet import validation
from gpunet.backend import backend_of, get_namespace, to_backend
from gpunet.kernels import bias_sigmoid, sigmoid_of_negated
from gpunet.lanes import DEFAULT_WORK_BYTES, lane_chunks, map_lanes, plan_chunks
from gpunet.validation import check_features, check_float_dtype, check_targets

PARAM_NAMES = ("w1", "b1", "w2", "b2")

@dataclasses.dataclass
class Params:
    """The four parameter arrays of the network, on one backend, in one dtype.

    w1: (n, d), b1: (n,), w2: (p, n), b2: (p,), float32 or float64.
    Their dtype decides the dtype of the computation. Gradients come back as a
    Params of the same shapes.
    """

    w1: Any
    b1: Any
    w2: Any
    b2: Any

    def __post_init__(self) -> None:
        arrays = dict(zip(PARAM_NAMES, self, strict=True))
        get_namespace(*arrays.values())  # one backend for all four
        dtypes = {name: a.dtype for name, a in arrays.items()}
        if len(set(dtypes.values())) != 1:
            raise TypeError(f"parameters must share one dtype; got {dtypes}")
        check_float_dtype(self.w1.dtype, "parameter dtype")
        n, p = self.w1.shape[0] if self.w1.ndim == 2 else -1, self.w2.shape[0]
        expected = {
            "w1": ("(n_hidden, n_features)", self.w1.ndim == 2 and min(self.w1.shape) >= 1),
            "b1": (f"({n},)", self.b1.shape == (n,)),
            "w2": (f"(n_outputs, {n})", self.w2.ndim == 2 and p >= 1 and self.w2.shape[1] == n),
            "b2": (f"({p},)", self.b2.shape == (p,)),
        }
        for name, (shape, ok) in expected.items():
            if not ok:
                raise ValueError(
                    f"{name} must have shape {shape}; got {arrays[name].shape} "
                    f"(shapes: {self.shapes})"
                )

    @classmethod
    def init(
        cls,
        n_features: int,
        n_hidden: int,
        n_outputs: int = 1,
        *,
        dtype: Any = np.float64,
        seed: int | np.random.Generator | None = None,
        backend: str | None = None,
    ) -> Params:
        """Glorot-uniform initialisation with scikit-learn's factor for logistic units.

        Each layer's weights and biases are drawn from U(−r, r) with
        r = √(2 / (fan_in + fan_out)), as MLPRegressor(activation='logistic')
        does. The draw is made on the host from ``seed``, so one seed gives the
        same network on every backend.
        """
        sizes = {"n_features": n_features, "n_hidden": n_hidden, "n_outputs": n_outputs}
        for name, size in sizes.items():
            if not isinstance(size, (int, np.integer)) or size < 1:
                raise ValueError(f"{name} must be a positive integer; got {size!r}")
        dtype = check_float_dtype(dtype)
        rng = np.random.default_rng(seed)

        def layer(fan_in: int, fan_out: int) -> tuple[np.ndarray, np.ndarray]:
            bound = np.sqrt(2.0 / (fan_in + fan_out))
            weights = rng.uniform(-bound, bound, (fan_out, fan_in))
            return weights, rng.uniform(-bound, bound, fan_out)

        w1, b1 = layer(n_features, n_hidden)
        w2, b2 = layer(n_hidden, n_outputs)
        host = cls(*(a.astype(dtype) for a in (w1, b1, w2, b2)))
        return host.to(backend)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.w1, self.b1, self.w2, self.b2))

    @property
    def xp(self) -> ModuleType:
        """The array module the parameters live in (numpy or cupy)."""
        return get_namespace(self.w1)

    @property
    def backend(self) -> str:
        return backend_of(self.w1)

    @property
    def dtype(self) -> np.dtype:
        return self.w1.dtype

    @property
    def n_features(self) -> int:
        return self.w1.shape[1]

    @property
    def n_hidden(self) -> int:
        return self.w1.shape[0]

    @property
    def n_outputs(self) -> int:
        return self.w2.shape[0]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: a.shape for name, a in zip(PARAM_NAMES, self, strict=True)}

    def to(self, backend: str | None) -> Params:
        """The parameters on ``backend`` ("numpy", "cupy", "auto", or None for
        GPUNET_BACKEND or auto); arrays are copied only if they move."""
        return Params(*(to_backend(a, backend) for a in self))

    def astype(self, dtype: Any) -> Params:
        """The parameters cast to ``dtype`` (float32 or float64)."""
        dtype = check_float_dtype(dtype)
        return Params(*(a.astype(dtype, copy=False) for a in self))

    def copy(self) -> Params:
        return Params(*(a.copy() for a in self))

    def zeros_like(self) -> Params:
        xp = self.xp
        return Params(*(xp.zeros_like(a) for a in self))


def hidden_layer(params: Params, X: Any, out: Any = None) -> Any:
    """A = σ(X W1ᵀ + b1): X (m, d) in the parameters' dtype → A (m, n), into ``out`` if given."""
    if params.n_features == 1:  # an outer product; NumPy's matmul is 4x slower at k = 1
        z = params.xp.multiply(X, params.w1.T, out=out)
    else:
        z = params.xp.matmul(X, params.w1.T, out=out)
    return bias_sigmoid(z, params.b1, out=z)


class HiddenLayer:
    """A = σ(X W1ᵀ + b1) for chunks of up to ``rows`` samples, into buffers it holds.

    It also gives the chunk beside a column of ones, X̃ = [X | 1] (rows, d + 1),
    with which the backward pass gets the sums of ∂W1 and ∂b1 from one GEMM
    (gpunet.grad). On the CPU the forward pass uses X̃ too: one GEMM gives
    U = X̃ [−W1 | −b1]ᵀ = −(X W1ᵀ + b1), the bias and the sign included, and
    σ = 1 / (1 + e^U) takes three passes where adding the bias and negating
    would take two more (at d = 1 the GEMM with k = 2 is also 3x faster than
    NumPy's outer product). On a GPU: X W1ᵀ, then the fused bias_sigmoid
    kernel, one pass.
    """

    def __init__(self, params: Params, rows: int) -> None:
        xp, dtype, (n, d) = params.xp, params.dtype, params.w1.shape
        self.on_cpu = params.backend == "numpy"
        self.activations = xp.empty((rows, n), dtype=dtype)
        self._inputs = xp.empty((rows, d + 1), dtype=dtype)
        if self.on_cpu:
            self._negated = xp.empty((n, d + 1), dtype=dtype)
        self.use(params)

    def use(self, params: Params) -> None:
        """Compute with ``params`` from now on, shaped as those the layer was made for."""
        self.params = params
        if self.on_cpu:
            np.negative(params.w1, out=self._negated[:, :-1])
            np.negative(params.b1, out=self._negated[:, -1])

    def __call__(self, X: Any) -> Any:
        """A for X (c, d) in the parameters' dtype, c ≤ rows: a (c, n) view of ``activations``."""
        out = self.activations[: X.shape[0]]
        if not self.on_cpu:
            return hidden_layer(self.params, X, out=out)
        inputs = self._augment(X)
        return sigmoid_of_negated(np.matmul(inputs, self._negated.T, out=out), out=out)

    def inputs(self, X: Any) -> Any:
        """X̃ = [X | 1], (c, d + 1), for the chunk X the layer was last called on.

        A view of a buffer the caller may change until the next chunk: on the
        CPU the one the forward pass filled, on a GPU filled now.
        """
        return self._inputs[: X.shape[0]] if self.on_cpu else self._augment(X)

    def _augment(self, X: Any) -> Any:
        inputs = self._inputs[: X.shape[0]]
        inputs[:, :-1] = X
        inputs[:, -1] = 1
        return inputs


def output_layer(params: Params, hidden: Any) -> Any:
    """H = A W2ᵀ + b2: A (m, n) → H (m, p)."""
    out = hidden @ params.w2.T
    out += params.b2
    return out


def forward(params: Params, X: Any, *, max_work_bytes: int = DEFAULT_WORK_BYTES) -> Any:
    """The network's outputs H = W2 σ(W1 X + b1) + b2 for X (m, d): H (m, p).

    Computed in chunks of samples (gpunet.lanes) so the (m, n) hidden layer is never whole.
    """
    X = check_features(X, params.n_features, params.xp)
    out = params.xp.empty((X.shape[0], params.n_outputs), dtype=params.dtype)

    def lane(chunks: list[slice]) -> None:
        layer = HiddenLayer(params, chunks[0].stop - chunks[0].start)
        for chunk in chunks:
            out[chunk] = output_layer(params, layer(X[chunk].astype(params.dtype, copy=False)))

    map_lanes(lane, lane_chunks(X.shape[0], *plan_chunks(params, X.shape[0], max_work_bytes)))
    return out


def predict(params: Params, X: Any, *, max_work_bytes: int = DEFAULT_WORK_BYTES) -> Any:
    """Predictions for X (m, d): (m,) when p = 1, as scikit-learn's regressors give; else (m, p)."""
    out = forward(params, X, max_work_bytes=max_work_bytes)
    return out.ravel() if params.n_outputs == 1 else out


def loss(
    params: Params,
    X: Any,
    y: Any,
    *,
    max_work_bytes: int = DEFAULT_WORK_BYTES,
    check_finite: bool = True,
) -> Any:
    """J = 1/(2m) Σ_i ‖y_i − h(x_i)‖² for X (m, d), y (m,) or (m, p).

    Returns a 0-d array on the parameters' backend (``float(...)`` brings it
    to the host); no gradient is computed.
    """
    X, Y = check_data(params, X, y)

    def lane(chunks: list[slice]) -> Any:
        layer, squares = HiddenLayer(params, chunks[0].stop - chunks[0].start), 0
        for chunk in chunks:
            X_chunk, Y_chunk = load_chunk(params, X, Y, chunk, check_finite)
            residual = output_layer(params, layer(X_chunk))
            residual -= Y_chunk
            squares = squares + params.xp.vdot(residual, residual)
        return squares

    total, *others = map_lanes(lane, lane_chunks(X.shape[0], *plan_chunks(
        params, X.shape[0], max_work_bytes)))
    for squares in others:
        total = total + squares
    return params.xp.asarray(total / (2 * X.shape[0]))


def check_data(params: Params, X: Any, y: Any) -> tuple[Any, Any]:
    """X (m, d) and Y (m, p) as arrays of the parameters' backend, their shapes checked."""
    X = check_features(X, params.n_features, params.xp)
    return X, check_targets(y, X.shape[0], params.n_outputs, params.xp)


def load_chunk(params: Params, X: Any, Y: Any, rows: slice, finite: bool) -> tuple[Any, Any]:
    """Rows ``rows`` of X and Y, cast to the parameters' dtype.

    Checked for NaN and Inf when ``finite``. Casting chunk by chunk keeps a
    float64 X from being copied whole.
    """
    X_chunk, Y_chunk = X[rows], Y[rows]
    if finite:
        validation.check_finite(X_chunk, "X", rows.start)
        validation.check_finite(Y_chunk, "y", rows.start)
    return X_chunk.astype(params.dtype, copy=False), Y_chunk.astype(params.dtype, copy=False)
