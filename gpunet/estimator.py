"""GPUNetRegressor: the network as a scikit-learn regressor, trained on NumPy or CuPy.

It mirrors MLPRegressor(activation="logistic") with one hidden layer: the same
parameters, defaults, loss, L2 term, optimizers and stopping rules, so a
pipeline can swap one for the other. Needs scikit-learn
(``pip install gpunet[sklearn]``); ``import gpunet`` alone does not import it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as error:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        "GPUNetRegressor needs scikit-learn: pip install 'gpunet[sklearn]'"
    ) from error

from gpunet.backend import backend_of, is_cupy_array, to_backend, to_numpy
from gpunet.metrics import r2_score
from gpunet.model import Params, predict
from gpunet.train import DivergenceError, EpochReport, TrainConfig, Trainer
from gpunet.validation import FLOAT_DTYPES, check_float_dtype


class GPUNetRegressor(RegressorMixin, BaseEstimator):
    """A one-hidden-layer sigmoid network regressor, h(x) = W2 σ(W1 x + b1) + b2.

    Minimises the squared error J = 1/(2m) Σ‖h(x) − y‖² plus α/(2m) (‖W1‖² + ‖W2‖²)
    over minibatches, as MLPRegressor(hidden_layer_sizes=(n_hidden,),
    activation="logistic") does; the parameters from ``solver`` to
    ``n_iter_no_change`` mean what they mean there.

    backend: where to compute: "numpy", "cupy", "auto", or None (the default)
    for wherever X is. Predictions come back on X's backend: CuPy in, CuPy out.
    dtype: float32 or float64; None keeps X's float dtype (float64 otherwise).
    callback: called with a gpunet.train.EpochReport after each epoch; a
    truthy return stops training. on_divergence: "stop" raises
    gpunet.train.DivergenceError when the loss or a gradient turns NaN or Inf,
    keeping the last good epoch's model (fitted, if one epoch was); "skip"
    leaves out such steps (see gpunet.train).

    Fitted attributes, as MLPRegressor's: coefs_ ([W1ᵀ (d, n), W2ᵀ (n, p)]),
    intercepts_ ([b1, b2]), loss_, loss_curve_, best_loss_ (None with early
    stopping), validation_scores_ (R² per epoch, None without early stopping),
    best_validation_score_, n_iter_ (epochs in the last call), t_ (samples
    trained on), n_features_in_, feature_names_in_ (pandas input), n_outputs_,
    and params_ (the gpunet.Params, on the compute backend).
    """

    def __init__(
        self,
        n_hidden: int = 100,
        *,
        solver: str = "adam",
        alpha: float = 1e-4,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 1e-3,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        backend: str | None = None,
        dtype: Any = None,
        callback: Callable[[EpochReport], Any] | None = None,
        on_divergence: str = "stop",
    ) -> None:
        self.n_hidden = n_hidden
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.dtype = dtype
        self.callback = callback
        self.on_divergence = on_divergence

    def fit(self, X: Any, y: Any) -> GPUNetRegressor:
        """Train on X (m, d) and y (m,) or (m, p) for up to ``max_iter`` epochs.

        Starts from new weights unless ``warm_start`` and already fitted.
        """
        return self._fit(X, y, incremental=False)

    def partial_fit(self, X: Any, y: Any) -> GPUNetRegressor:
        """One epoch over X and y, continuing from the current weights and optimizer."""
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        return self._fit(X, y, incremental=True)

    def predict(self, X: Any) -> Any:
        """Predictions for X (m, d): (m,) for one output, else (m, p), on X's backend."""
        check_is_fitted(self, "params_")
        params = self.params_
        if is_cupy_array(X):
            self._check_n_features(X)
        else:
            X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        out = predict(params, to_backend(X, params.backend))
        return out if is_cupy_array(X) else to_numpy(out)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of the predictions for X against y (uniform average over outputs),
        computed on X's backend."""
        predicted = self.predict(X)
        backend = backend_of(predicted)
        y = to_backend(y if is_cupy_array(y) else np.asarray(y), backend)
        if sample_weight is not None:
            sample_weight = to_backend(np.asarray(to_numpy(sample_weight)), backend)
        return float(r2_score(y, predicted, sample_weight))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _fit(self, X: Any, y: Any, incremental: bool) -> GPUNetRegressor:
        max_iter = self.max_iter
        integer = isinstance(max_iter, (int, np.integer)) and not isinstance(max_iter, bool)
        if not integer or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}")
        continuing = hasattr(self, "params_") and (incremental or self.warm_start)
        X, Y = self._validated(X, y, reset=not continuing)
        if not continuing:
            self._seed = int(check_random_state(self.random_state).randint(2**31 - 1))
            params = Params.init(X.shape[1], self.n_hidden, Y.shape[1], dtype=X.dtype,
                                 seed=self._seed, backend=backend_of(X))
            trainer = Trainer(params, self._config())
        elif Y.shape[1] != self.params_.n_outputs:
            raise ValueError(
                f"y has {Y.shape[1]} outputs but the fitted network has "
                f"{self.params_.n_outputs}; fit it afresh (warm_start=False)"
            )
        elif incremental:
            trainer = self._trainer
        else:  # warm start: new optimizer, the history goes on, as in MLPRegressor
            old = self._trainer
            trainer = Trainer(self.params_, self._config(), old.history, old.best_params)
        self._warn_if_batch_is_clipped(X.shape[0])
        epochs_before = trainer.history.epochs
        try:
            reason = trainer.fit(X, Y, 1 if incremental else self.max_iter,
                                 self._epoch_callback())
        except DivergenceError:
            if trainer.history.epochs:  # the model is the last good epoch's
                self._publish(trainer, trainer.history.epochs - epochs_before)
            raise
        if reason == "max_iter" and not incremental:
            warnings.warn(
                f"GPUNetRegressor: maximum iterations ({self.max_iter}) reached and the "
                "optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._publish(trainer, trainer.history.epochs - epochs_before)
        return self

    def _config(self) -> TrainConfig:
        return TrainConfig(
            solver=self.solver,
            learning_rate_init=self.learning_rate_init,
            learning_rate=self.learning_rate,
            power_t=self.power_t,
            momentum=self.momentum,
            nesterovs_momentum=self.nesterovs_momentum,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            batch_size=self.batch_size,
            alpha=self.alpha,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            early_stopping=self.early_stopping,
            validation_fraction=self.validation_fraction,
            shuffle=self.shuffle,
            seed=self._seed,
            on_divergence=self.on_divergence,
        )

    def _validated(self, X: Any, y: Any, reset: bool) -> tuple[Any, Any]:
        """X (m, d) and Y (m, p), checked, on the compute backend and in the compute dtype."""
        if is_cupy_array(X):
            if X.ndim != 2:
                raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
            if reset:
                self.n_features_in_ = X.shape[1]
            self._check_n_features(X)
            Y = y if is_cupy_array(y) else to_backend(np.asarray(y), "cupy")
        else:
            X, Y = validate_data(self, X, y, reset=reset, y_numeric=True, multi_output=True,
                                 dtype=(np.float64, np.float32))
        if reset:
            default = X.dtype if X.dtype in FLOAT_DTYPES else np.float64
            dtype = check_float_dtype(default if self.dtype is None else self.dtype)
            backend = backend_of(X) if self.backend is None else self.backend
        else:
            dtype, backend = self.params_.dtype, self.params_.backend
        X, Y = to_backend(X, backend), to_backend(Y, backend)
        Y = Y.reshape(-1, 1) if Y.ndim == 1 else Y
        return X.astype(dtype, copy=False), Y.astype(dtype, copy=False)

    def _check_n_features(self, X: Any) -> None:
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has shape {X.shape}, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )

    def _epoch_callback(self) -> Callable[[EpochReport], Any] | None:
        if not self.verbose:
            return self.callback

        def report(epoch: EpochReport) -> Any:
            print(f"Iteration {epoch.epoch}, loss = {epoch.loss:.8f}")
            if epoch.validation_score is not None:
                print(f"Validation score: {epoch.validation_score:f}")
            return self.callback(epoch) if self.callback is not None else None

        return report

    def _warn_if_batch_is_clipped(self, n_samples: int) -> None:
        if self.batch_size != "auto" and not 1 <= self.batch_size <= n_samples:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. "
                "It is going to be clipped",
                stacklevel=4,
            )

    def _publish(self, trainer: Trainer, n_iter: int) -> None:
        """Set the fitted attributes, named and laid out as MLPRegressor's."""
        history, params = trainer.history, trainer.params
        self._trainer = trainer
        self.params_ = params
        self.n_iter_ = n_iter
        self.t_ = history.samples_seen
        self.n_outputs_ = params.n_outputs
        self.loss_curve_ = list(history.loss_curve)
        self.loss_ = self.loss_curve_[-1]
        self.coefs_ = [params.w1.T, params.w2.T]
        self.intercepts_ = [params.b1, params.b2]
        if self.early_stopping:
            self.validation_scores_ = list(history.validation_scores)
            self.best_validation_score_ = history.best_validation_score
            self.best_loss_ = None
        else:
            self.validation_scores_ = self.best_validation_score_ = None
            self.best_loss_ = history.best_loss
