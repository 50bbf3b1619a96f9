"""Stochastic optimizers, as scikit-learn's ``neural_network._stochastic_optimizers`` defines them.

Both update parameters in place on their own device: a Params, or any
sequence of arrays (the training loop passes one flat buffer that holds all
four, so a step is a handful of array operations whatever the network). Their
moments live beside the parameters; only the learning rate, a Python float, is
on the host. The formulas and their order of operations are scikit-learn's, so
the same gradients give the same parameters to the last bit.

SGD with momentum μ and learning rate η, per parameter θ with gradient g:

    v ← μ v − η g
    θ ← θ + v                   (classical momentum)
    θ ← θ + μ v − η g           (Nesterov's momentum)

Adam (Kingma & Ba, 2014) at step t:

    m ← β₁ m + (1 − β₁) g       v ← β₂ v + (1 − β₂) g²
    η_t = η √(1 − β₂ᵗ) / (1 − β₁ᵗ)
    θ ← θ − η_t m / (√v + ε)

Learning-rate schedules (SGD only, as in scikit-learn): ``constant``;
``invscaling``, η = η₀ / (t + 1)^power_t with t the samples seen so far, set at
the end of each epoch; ``adaptive``, η divided by 5 each time training stops
improving, until η ≤ 1e-6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from gpunet.backend import backend_of, get_namespace, to_backend

Arrays = Sequence[Any]
"""Parameters or gradients: a Params, or any sequence of same-backend arrays."""

SCHEDULES = ("constant", "invscaling", "adaptive")
MIN_ADAPTIVE_LEARNING_RATE = 1e-6


class Optimizer:
    """What SGD and Adam share: the learning rate and the end-of-epoch hooks."""

    kind = ""
    _moments: tuple[str, ...] = ()

    def __init__(self, learning_rate_init: float) -> None:
        if not learning_rate_init > 0:
            raise ValueError(f"learning_rate_init must be positive; got {learning_rate_init!r}")
        self.learning_rate_init = float(learning_rate_init)
        self.learning_rate = float(learning_rate_init)

    def step(self, params: Arrays, grads: Arrays) -> None:
        """Update ``params`` in place from ``grads`` (same shapes, same device)."""
        raise NotImplementedError

    def iteration_ends(self, samples_seen: int) -> None:
        """Called at the end of each epoch with the number of samples trained on so far."""

    def trigger_stopping(self) -> bool:
        """Training stopped improving: True to stop, False to carry on (with a new rate)."""
        return True

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state: Python scalars, and its moments as device arrays
        named ``"<moment>.<i>"`` for the i-th parameter array (``"velocity.0"``, ``"m.3"``)."""
        state = {key: value for key, value in vars(self).items() if key not in self._moments}
        for moment in self._moments:
            for i, array in enumerate(getattr(self, moment)):
                state[f"{moment}.{i}"] = array
        return {"kind": self.kind, **state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; arrays are copied onto the moments' device."""
        if state.get("kind") != self.kind:
            raise ValueError(
                f"optimizer state is for {state.get('kind')!r} but this optimizer is {self.kind!r}"
            )
        for moment in self._moments:
            for i, array in enumerate(getattr(self, moment)):
                saved = state.get(f"{moment}.{i}")
                if saved is None or tuple(saved.shape) != array.shape:
                    found = "nothing" if saved is None else f"shape {tuple(saved.shape)}"
                    raise ValueError(
                        f"optimizer state {moment}.{i} holds {found}; the parameters "
                        f"need shape {array.shape}"
                    )
                array[...] = to_backend(saved, backend_of(array)).astype(array.dtype)
        for key, value in state.items():
            if key != "kind" and "." not in key:
                setattr(self, key, value)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (classical or Nesterov's)."""

    kind = "sgd"
    _moments = ("velocity",)

    def __init__(
        self,
        params: Arrays,
        learning_rate_init: float = 0.1,
        lr_schedule: str = "constant",
        momentum: float = 0.9,
        nesterov: bool = True,
        power_t: float = 0.5,
    ) -> None:
        super().__init__(learning_rate_init)
        if lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}; got {lr_schedule!r}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1]; got {momentum!r}")
        self.lr_schedule = lr_schedule
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.power_t = float(power_t)
        self.velocity = _zeros_like(params)

    def step(self, params: Arrays, grads: Arrays) -> None:
        mu, lr = self.momentum, self.learning_rate
        for value, grad, velocity in zip(params, grads, self.velocity, strict=True):
            velocity *= mu
            velocity -= lr * grad
            if self.nesterov:
                value += mu * velocity - lr * grad
            else:
                value += velocity

    def iteration_ends(self, samples_seen: int) -> None:
        if self.lr_schedule == "invscaling":
            self.learning_rate = self.learning_rate_init / (samples_seen + 1) ** self.power_t

    def trigger_stopping(self) -> bool:
        if self.lr_schedule != "adaptive" or self.learning_rate <= MIN_ADAPTIVE_LEARNING_RATE:
            return True
        self.learning_rate /= 5.0
        return False


class Adam(Optimizer):
    """Adam: per-parameter steps from running means of the gradient and its square."""

    kind = "adam"
    _moments = ("m", "v")

    def __init__(
        self,
        params: Arrays,
        learning_rate_init: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
    ) -> None:
        super().__init__(learning_rate_init)
        for name, beta in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0 <= beta < 1:
                raise ValueError(f"{name} must be in [0, 1); got {beta!r}")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.t = 0
        self.m = _zeros_like(params)
        self.v = _zeros_like(params)

    def step(self, params: Arrays, grads: Arrays) -> None:
        self.t += 1
        b1, b2 = self.beta_1, self.beta_2
        self.learning_rate = (
            self.learning_rate_init * math.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        )
        xp = get_namespace(*params)
        for value, grad, m, v in zip(params, grads, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * grad
            v *= b2
            v += (1 - b2) * (grad * grad)
            value -= self.learning_rate * m / (xp.sqrt(v) + self.epsilon)


def _zeros_like(arrays: Arrays) -> list[Any]:
    return [get_namespace(a).zeros_like(a) for a in arrays]


def make_optimizer(
    params: Arrays,
    solver: str,
    *,
    learning_rate_init: float,
    lr_schedule: str = "constant",
    momentum: float = 0.9,
    nesterov: bool = True,
    power_t: float = 0.5,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
) -> Optimizer:
    """The optimizer named ``solver`` ("sgd" or "adam") for ``params``."""
    if solver == "sgd":
        return SGD(params, learning_rate_init, lr_schedule, momentum, nesterov, power_t)
    if solver == "adam":
        return Adam(params, learning_rate_init, beta_1, beta_2, epsilon)
    raise ValueError(f"solver must be 'sgd' or 'adam'; got {solver!r}")
