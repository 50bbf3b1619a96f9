"""Minibatch training: epochs of shuffled batches, an L2 penalty, and when to stop.

Each step takes a batch B of the training samples and minimises

    J_B(θ) = 1/(2|B|) Σ_{i∈B} ‖h(x_i) − y_i‖²  +  α/(2|B|) (‖W1‖² + ‖W2‖²)

(biases are not penalised), so ∂J_B/∂W = ∂J/∂W + (α/|B|) W, as in
scikit-learn's MLPRegressor. The epoch's loss is the mean of J_B weighted by
|B|; it is summed on the device and read by the host once per epoch, which is
the only sync in the loop. Stopping follows MLPRegressor: when the training
loss (or, with early stopping, the validation R²) has not improved by ``tol``
for more than ``n_iter_no_change`` epochs, the optimizer stops or, with the
adaptive schedule, divides its learning rate by 5.

The order of each epoch's samples is drawn on the host from (seed, epoch), so
a run is repeatable, resuming at epoch k continues exactly, and NumPy and
CuPy see the same batches.

Divergence (a loss or gradient that turns NaN or Inf) is found without a sync
per step: the epoch's loss is read anyway, and it is made NaN when any step's
loss was, or when the parameters are not finite at the epoch's end (a bad
gradient makes them so at once). Each epoch starts from a device copy of the
parameters and the optimizer's state; a diverged epoch, or one interrupted
by any error, puts them back, so the model keeps the last good epoch. Only
then, on the failure path, is the epoch replayed step by step to name the
first bad step in the error. ``on_divergence="skip"`` instead checks every
step on the host (one sync per step, the price of deciding before the update)
and skips steps whose loss or gradient is not finite, counting them.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from gpunet import model, validation
from gpunet.backend import get_namespace, to_numpy
from gpunet.grad import loss_and_grad_fitted
from gpunet.metrics import r2_score
from gpunet.model import DEFAULT_WORK_BYTES, Params, predict
from gpunet.optim import Arrays, Optimizer, make_optimizer

DIVERGENCE_POLICIES = ("stop", "skip")


class DivergenceError(RuntimeError):
    """The loss or a gradient became NaN or Inf; the model holds the last good epoch's parameters.

    ``epoch`` is the epoch that diverged, ``step`` its first bad step (1-based).
    """

    def __init__(self, message: str, epoch: int, step: int | None) -> None:
        super().__init__(message)
        self.epoch, self.step = epoch, step


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train; the names and defaults are MLPRegressor's.

    solver: "adam" or "sgd", with learning_rate_init and, for SGD, the
    schedule ``learning_rate`` ("constant", "invscaling", "adaptive"), power_t,
    momentum and nesterovs_momentum; for Adam beta_1, beta_2, epsilon (see
    gpunet.optim). batch_size: samples per step, or "auto" for min(200, m);
    larger is clipped to m. alpha: the L2 penalty on the weights. tol,
    n_iter_no_change: see the module. early_stopping: hold out
    ``validation_fraction`` of the samples, stop on their R², and end with the
    best weights seen. shuffle: a new sample order each epoch. seed: the split
    and the orders are drawn from it. on_divergence: "stop" (raise
    DivergenceError, keeping the last good epoch) or "skip" (leave out steps
    whose loss or gradient is NaN or Inf, counted in History.skipped_batches).
    """

    solver: str = "adam"
    learning_rate_init: float = 0.001
    learning_rate: str = "constant"
    power_t: float = 0.5
    momentum: float = 0.9
    nesterovs_momentum: bool = True
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    batch_size: int | str = "auto"
    alpha: float = 1e-4
    tol: float = 1e-4
    n_iter_no_change: int = 10
    early_stopping: bool = False
    validation_fraction: float = 0.1
    shuffle: bool = True
    seed: int = 0
    on_divergence: str = "stop"

    def __post_init__(self) -> None:
        size = self.batch_size
        if size != "auto" and (isinstance(size, (bool, str)) or not size >= 1):
            raise ValueError(f"batch_size must be a positive integer or 'auto'; got {size!r}")
        rules = (
            ("on_divergence", self.on_divergence in DIVERGENCE_POLICIES,
             f"one of {DIVERGENCE_POLICIES}"),
            ("alpha", self.alpha >= 0, "non-negative"),
            ("tol", self.tol >= 0, "non-negative"),
            ("n_iter_no_change", self.n_iter_no_change >= 1, "at least 1"),
            ("validation_fraction", 0 < self.validation_fraction < 1, "in (0, 1)"),
        )
        for name, ok, rule in rules:
            if not ok:
                raise ValueError(f"{name} must be {rule}; got {getattr(self, name)!r}")

    def make_optimizer(self, params: Arrays) -> Optimizer:
        """The configured optimizer for ``params``."""
        return make_optimizer(
            params,
            self.solver,
            learning_rate_init=self.learning_rate_init,
            lr_schedule=self.learning_rate,
            momentum=self.momentum,
            nesterov=self.nesterovs_momentum,
            power_t=self.power_t,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
        )


@dataclasses.dataclass
class History:
    """What training has done so far: with the parameters, the optimizer and the
    config, all that resuming needs."""

    epochs: int = 0
    samples_seen: int = 0
    loss_curve: list[float] = dataclasses.field(default_factory=list)
    validation_scores: list[float] = dataclasses.field(default_factory=list)
    best_loss: float = math.inf
    best_validation_score: float = -math.inf
    no_improvement_count: int = 0
    skipped_batches: int = 0


@dataclasses.dataclass(frozen=True)
class EpochReport:
    """What the callback sees after each epoch.

    ``validation_score`` (R² on the held-out samples) is None without early stopping.
    """

    epoch: int
    loss: float
    validation_score: float | None
    learning_rate: float
    samples: int
    seconds: float


Callback = Callable[[EpochReport], Any]


class Trainer:
    """Trains ``params`` in place; see the module for the loss and stopping.

    The four arrays are moved into one contiguous buffer, weights first
    ([W1, W2, b1, b2] flattened), and ``params`` is rebound to views of it, so
    the optimizer and the L2 term each make a few array operations per step
    instead of a few per parameter. ``params`` keeps seeing the trained values.
    ``best_params`` holds a copy of the best weights while early stopping;
    when :meth:`fit` ends by putting them in place, ``latest_params`` keeps
    the weights they replaced, and the next fit goes on from those, so that
    resuming continues exactly where training stopped.
    """

    def __init__(
        self,
        params: Params,
        config: TrainConfig | None = None,
        history: History | None = None,
        best_params: Params | None = None,
        latest_params: Params | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.history = history or History()
        self.best_params = best_params
        self.latest_params = latest_params
        self.params = params
        self._pack()
        self.optimizer = self.config.make_optimizer([self.flat])
        # The gradient's work budget, halved for good after running out of memory.
        self.max_work_bytes = model.DEFAULT_WORK_BYTES

    def _pack(self) -> None:
        views, self.flat = packed(self.params)
        self.params.w1, self.params.b1, self.params.w2, self.params.b2 = views
        self.grads, self.flat_grads = packed(self.params.zeros_like())
        n_weights = self.params.w1.size + self.params.w2.size
        self.weights, self.weight_grads = self.flat[:n_weights], self.flat_grads[:n_weights]

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickling and deep copies store views apart from their buffer: join them again.
        self.__dict__.update(state)
        self._pack()

    def fit(
        self,
        X: Any,
        y: Any,
        max_iter: int,
        callback: Callback | None = None,
        validation: tuple[Any, Any] | None = None,
    ) -> str:
        """Run up to ``max_iter`` epochs on X (m, d), y (m,) or (m, p).

        ``callback(report)`` is called after each epoch; a truthy return stops
        training. ``validation``, (X_val, y_val), is the held-out set for early
        stopping, instead of a ``validation_fraction`` of X. Returns why
        training ended: "converged" (no improvement, see the module),
        "max_iter" or "callback".
        """
        if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
            raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}")
        X, Y = self._checked(X, y)
        if validation is None:
            X, Y, X_val, Y_val = self._split(X, Y)
        elif not self.config.early_stopping:
            raise ValueError("validation data is for early stopping: set early_stopping=True")
        else:
            X_val, Y_val = self._checked(*validation)
        if X_val is not None and self.best_params is None:
            self.best_params = self.params.copy()
        if self.latest_params is not None:
            _assign(self.params, self.latest_params)
            self.latest_params = None
        reason = "max_iter"
        for _ in range(max_iter):
            start = time.perf_counter()
            loss, score, skipped = self._good_epoch(X, Y, X_val, Y_val)
            converged = self._record(loss, score, X.shape[0], skipped)
            report = EpochReport(
                self.history.epochs, loss, score, self.optimizer.learning_rate,
                X.shape[0], time.perf_counter() - start,
            )
            asked_to_stop = callback is not None and bool(callback(report))
            if converged or asked_to_stop:
                reason = "converged" if converged else "callback"
                break
        if X_val is not None:
            self.latest_params = self.params.copy()
            _assign(self.params, self.best_params)
        return reason

    def batch_size(self, n_samples: int) -> int:
        size = self.config.batch_size
        return min(200, n_samples) if size == "auto" else min(int(size), n_samples)

    def _checked(self, X: Any, y: Any) -> tuple[Any, Any]:
        """X, Y validated once, finite, in the parameters' dtype and backend."""
        xp, dtype = self.params.xp, self.params.dtype
        X = validation.check_features(X, self.params.n_features, xp)
        Y = validation.check_targets(y, X.shape[0], self.params.n_outputs, xp)
        validation.check_finite(X, "X")
        validation.check_finite(Y, "y")
        return X.astype(dtype, copy=False), Y.astype(dtype, copy=False)

    def _split(self, X: Any, Y: Any) -> tuple[Any, Any, Any, Any]:
        """(X, Y) for training and, with early stopping, a held-out set drawn from the seed."""
        if not self.config.early_stopping:
            return X, Y, None, None
        m = X.shape[0]
        n_val = math.ceil(self.config.validation_fraction * m)
        if n_val < 2 or n_val >= m:
            raise ValueError(
                f"early stopping holds out {n_val} of {m} samples; it needs at least 2 "
                "and leaves at least 1 to train on: change validation_fraction or add samples"
            )
        order = self.params.xp.asarray(np.random.default_rng(self.config.seed).permutation(m))
        train, held = order[n_val:], order[:n_val]
        return X[train], Y[train], X[held], Y[held]

    def _good_epoch(
        self, X: Any, Y: Any, X_val: Any, Y_val: Any
    ) -> tuple[float, float | None, int]:
        """One epoch that did not diverge: (loss, validation R² or None, steps skipped).

        On any error, the parameters and the optimizer go back to where the
        epoch started; see the module for how divergence is found.
        """
        saved = self.flat.copy(), _copied(self.optimizer.state_dict())
        try:
            # NaN and Inf are found and reported here; NumPy's warnings would only be noise.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                loss, skipped = self._epoch(X, Y, self.config.on_divergence == "skip")
                score = (r2_score(Y_val, predict(self.params, X_val))
                         if X_val is not None else None)
                loss, score = _to_host(loss, score)
                if not math.isfinite(loss):
                    self._restore(saved)
                    raise self._diverged(X, Y, skipped)
        except BaseException:
            self._restore(saved)
            raise
        return loss, score, len(skipped)

    def _restore(self, saved: tuple[Any, dict[str, Any]]) -> None:
        self.flat[...] = saved[0]
        self.optimizer.load_state_dict(saved[1])

    def _diverged(self, X: Any, Y: Any, skipped: list[int]) -> DivergenceError:
        """The error for a diverged epoch; in stop mode the epoch is replayed, checking each
        step, to name the first bad one."""
        epoch = self.history.epochs + 1
        batches = -(-X.shape[0] // self.batch_size(X.shape[0]))
        if self.config.on_divergence == "skip":
            step, where = None, f"in epoch {epoch}, with {len(skipped)} of its {batches} steps " \
                "skipped"
        else:
            bad = self._epoch(X, Y, check_steps=True)[1]
            step = bad[0] if bad else None  # None: the update, not a step's values, overflowed
            where = f"at step {step} of {batches} in epoch {epoch}" if step else f"in epoch {epoch}"
        return DivergenceError(
            f"training diverged: the loss or a gradient became NaN or Inf {where}; the "
            f"parameters are kept as they were after epoch {epoch - 1}. Try a lower learning "
            f"rate (now {self.config.learning_rate_init:g}), inputs and targets standardised "
            "to mean 0 and variance 1, or skipping such steps (on_divergence='skip'; "
            "gpunet train --on-divergence skip)",
            epoch, step,
        )

    def _epoch(self, X: Any, Y: Any, check_steps: bool) -> tuple[Any, list[int]]:
        """One pass over the samples in batches: the epoch's loss as a 0-d device array, and
        the steps skipped (1-based).

        Σ_B |B| J_B / m = (Σ_B |B| J(B) + α/2 Σ_B (‖W1‖² + ‖W2‖²)) / m, the squared
        norms taken before each step, as MLPRegressor does; m counts the samples
        of the steps taken. The sum is made NaN (+ 0 · Σθ) when the parameters
        are not finite at the end. ``check_steps`` skips steps whose loss or
        gradient is not finite, at the cost of a sync per step.
        """
        xp, alpha = self.params.xp, self.config.alpha
        batch = self.batch_size(X.shape[0])
        total = xp.zeros((), dtype=self.params.dtype)
        squares = xp.zeros((), dtype=self.params.dtype)
        skipped: list[int] = []
        kept = step = 0
        for X_block, Y_block in self._blocks(X, Y, batch):
            for start in range(0, X_block.shape[0], batch):
                X_batch, Y_batch = X_block[start : start + batch], Y_block[start : start + batch]
                step += 1
                (loss, _), self.max_work_bytes = loss_and_grad_fitted(
                    self.params, X_batch, Y_batch, max_work_bytes=self.max_work_bytes,
                    check_finite=False, out=self.grads,
                )
                if check_steps and not bool(
                    xp.isfinite(loss) & xp.isfinite(self.flat_grads).all()
                ):
                    skipped.append(step)
                    continue
                size = X_batch.shape[0]
                kept += size
                total = total + loss * size  # new scalars: cheaper than 0-d in-place adds
                if alpha:
                    squares = squares + xp.vdot(self.weights, self.weights)
                    self.weight_grads += (alpha / size) * self.weights
                self.optimizer.step([self.flat], [self.flat_grads])
        if kept == 0:
            return xp.full((), math.nan, dtype=self.params.dtype), skipped
        return (total + 0.5 * alpha * squares) / kept + 0 * self.flat.sum(), skipped

    def _blocks(self, X: Any, Y: Any, batch: int) -> Iterator[tuple[Any, Any]]:
        """X and Y in this epoch's order, a block of whole batches at a time.

        The order is drawn on the host from (seed, epoch). One gather per block
        rather than per batch saves calls; blocks of at most DEFAULT_WORK_BYTES
        keep the copy small beside the data.
        """
        if not self.config.shuffle:
            yield X, Y
            return
        m = X.shape[0]
        rng = np.random.default_rng((self.config.seed, self.history.epochs))
        order = self.params.xp.asarray(rng.permutation(m))
        row_bytes = (X.shape[1] + Y.shape[1]) * X.itemsize
        rows = max(1, DEFAULT_WORK_BYTES // row_bytes // batch) * batch
        for start in range(0, m, rows):
            chosen = order[start : start + rows]
            yield X[chosen], Y[chosen]

    def _record(self, loss: float, score: float | None, n_samples: int, skipped: int) -> bool:
        """Book-keep one epoch as MLPRegressor does; True when training should stop."""
        history, tol = self.history, self.config.tol
        history.epochs += 1
        history.skipped_batches += skipped
        history.samples_seen += n_samples
        history.loss_curve.append(loss)
        if score is None:
            improved = loss <= history.best_loss - tol
            history.best_loss = min(history.best_loss, loss)
        else:
            history.validation_scores.append(score)
            improved = score >= history.best_validation_score + tol
            if score > history.best_validation_score:
                history.best_validation_score = score
                _assign(self.best_params, self.params)
        history.no_improvement_count = 0 if improved else history.no_improvement_count + 1
        self.optimizer.iteration_ends(history.samples_seen)
        if history.no_improvement_count > self.config.n_iter_no_change:
            if self.optimizer.trigger_stopping():
                return True
            history.no_improvement_count = 0
        return False


def packed(params: Params) -> tuple[Params, Any]:
    """A contiguous copy of ``params``, [W1, W2, b1, b2] flattened, and a Params of its views."""
    xp = params.xp
    arrays = (params.w1, params.w2, params.b1, params.b2)
    flat = xp.concatenate([a.ravel() for a in arrays])
    ends = np.cumsum([a.size for a in arrays])
    w1, w2, b1, b2 = (
        flat[end - a.size : end].reshape(a.shape) for a, end in zip(arrays, ends, strict=True)
    )
    return Params(w1, b1, w2, b2), flat


def _assign(target: Params, source: Params) -> None:
    """Copy ``source``'s values into ``target``'s arrays, in place."""
    for into, values in zip(target, source, strict=True):
        into[...] = values


def _copied(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state with its arrays copied, so later steps do not change it."""
    return {key: value.copy() if hasattr(value, "shape") else value
            for key, value in state.items()}


def _to_host(loss: Any, score: Any) -> tuple[float, float | None]:
    """The epoch's loss and validation score as Python floats, in one device-to-host copy."""
    if score is None:
        return float(loss), None
    both = to_numpy(get_namespace(loss).stack([loss, score.astype(loss.dtype)]))
    return float(both[0]), float(both[1])
