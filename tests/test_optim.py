"""SGD and Adam: scikit-learn's formulas to the last bit, schedules, state round trips."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numpy_cupy_allclose

from gpunet import Params
from gpunet.optim import SGD, Adam, make_optimizer

SHAPES = [(6, 3), (6,), (1, 6), (1,)]


def arrays(seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) for shape in SHAPES]


def run(optimizer, params, steps, first_grad_seed=1):
    for step in range(steps):
        optimizer.step(params, arrays(first_grad_seed + step))
    return params


OPTIMIZERS = {
    "sgd nesterov": (lambda p: SGD(p, 0.05, momentum=0.8), "SGDOptimizer", (0.05, "constant", 0.8)),
    "sgd classical": (
        lambda p: SGD(p, 0.05, momentum=0.8, nesterov=False),
        "SGDOptimizer",
        (0.05, "constant", 0.8, False),
    ),
    "adam": (lambda p: Adam(p, 0.01, 0.8, 0.99, 1e-7), "AdamOptimizer", (0.01, 0.8, 0.99, 1e-7)),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_updates_equal_scikit_learns_bit_for_bit(name):
    optimizers = pytest.importorskip("sklearn.neural_network._stochastic_optimizers")
    make, sklearn_name, args = OPTIMIZERS[name]
    ours, theirs = arrays(0), arrays(0)
    reference = getattr(optimizers, sklearn_name)(theirs, *args)
    optimizer = make(ours)
    for step in range(5):
        grads = arrays(step + 1)
        optimizer.step(ours, grads)
        reference.update_params(theirs, grads)
    for mine, expected in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(mine, expected)
    assert optimizer.learning_rate == reference.learning_rate


def test_sgd_step_by_hand():
    # v = 0.5·0 − 0.1·2 = −0.2; Nesterov: θ = 1 + 0.5·(−0.2) − 0.1·2 = 0.7
    theta = [np.array([1.0])]
    SGD(theta, 0.1, momentum=0.5).step(theta, [np.array([2.0])])
    assert theta[0][0] == pytest.approx(0.7)


def test_adam_first_step_moves_each_entry_by_the_learning_rate():
    # At t = 1, m̂ = g and v̂ = g², so the step is η g / (|g| + ε) ≈ η sign(g).
    theta = [np.zeros(3)]
    Adam(theta, 0.01, epsilon=0.0).step(theta, [np.array([5.0, -0.1, 2.0])])
    np.testing.assert_allclose(theta[0], [-0.01, 0.01, -0.01], rtol=1e-12)


def test_invscaling_and_adaptive_schedules():
    params = arrays(0)
    sgd = SGD(params, 0.1, lr_schedule="invscaling", power_t=0.5)
    sgd.iteration_ends(99)
    assert sgd.learning_rate == pytest.approx(0.1 / 10)
    assert sgd.trigger_stopping()

    adaptive = SGD(params, 1e-5, lr_schedule="adaptive")
    assert not adaptive.trigger_stopping() and adaptive.learning_rate == pytest.approx(2e-6)
    assert not adaptive.trigger_stopping() and adaptive.learning_rate == pytest.approx(4e-7)
    assert adaptive.trigger_stopping()
    assert Adam(params).trigger_stopping()


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_state_dict_round_trip_continues_exactly(solver):
    through = make_optimizer(p := arrays(0), solver, learning_rate_init=0.01)
    run(through, p, 6)

    q = arrays(0)
    first = make_optimizer(q, solver, learning_rate_init=0.01)
    run(first, q, 3)
    state = {k: v.copy() if hasattr(v, "copy") else v for k, v in first.state_dict().items()}
    second = make_optimizer(q, solver, learning_rate_init=0.5)  # overwritten by the state
    second.load_state_dict(state)
    run(second, q, 3, first_grad_seed=4)
    for a, b in zip(p, q, strict=True):
        np.testing.assert_array_equal(a, b)


def test_state_of_the_wrong_kind_or_shape_is_refused():
    params = arrays(0)
    with pytest.raises(ValueError, match="optimizer state is for 'adam'"):
        SGD(params).load_state_dict(Adam(params).state_dict())
    state = Adam(params).state_dict()
    state["m.0"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"m\.0 holds shape \(2, 2\); .* need shape \(6, 3\)"):
        Adam(params).load_state_dict(state)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: SGD(p, 0.0), "learning_rate_init must be positive"),
        (lambda p: SGD(p, lr_schedule="cosine"), "lr_schedule must be one of"),
        (lambda p: SGD(p, momentum=1.5), r"momentum must be in \[0, 1\]"),
        (lambda p: Adam(p, beta_2=1.0), r"beta_2 must be in \[0, 1\)"),
        (lambda p: make_optimizer(p, "lbfgs", learning_rate_init=0.1), "solver must be"),
    ],
)
def test_bad_settings_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make(arrays(0))


def test_updates_a_params_in_place():
    params = Params.init(3, 4, seed=0)
    before = params.copy()
    Adam(params).step(params, params.copy())
    assert all(not np.array_equal(a, b) for a, b in zip(params, before, strict=True))


@numpy_cupy_allclose(rtol=1e-12)
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_same_steps_on_numpy_and_cupy(solver, xp):
    params = [xp.asarray(a) for a in arrays(0)]
    optimizer = make_optimizer(params, solver, learning_rate_init=0.01)
    for step in range(4):
        optimizer.step(params, [xp.asarray(g) for g in arrays(step + 1)])
    return tuple(params)
