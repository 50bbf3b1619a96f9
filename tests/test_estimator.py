"""GPUNetRegressor: scikit-learn's estimator checks, MLPRegressor's attributes and habits."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="GPUNetRegressor needs scikit-learn (pip install .[test])")
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

import gpunet
from gpunet.datasets import friedman1
from gpunet.estimator import GPUNetRegressor

# check_array_api_input is skipped by scikit-learn itself unless SCIPY_ARRAY_API=1 is set;
# GPUNetRegressor takes CuPy arrays directly (tested below), not through the array API.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@parametrize_with_checks([GPUNetRegressor()])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def data():
    X, y = friedman1(300, seed=0)
    return (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()


def quick(**settings):
    return GPUNetRegressor(**{"n_hidden": 16, "learning_rate_init": 0.01, "max_iter": 40,
                              "random_state": 0, **settings})


def test_importing_gpunet_does_not_import_scikit_learn():
    code = ("import sys, gpunet, gpunet.train, gpunet.checkpoint, gpunet.cli; "
            "print('sklearn' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
    assert gpunet.GPUNetRegressor is GPUNetRegressor


def test_fits_and_exposes_mlpregressor_attributes(data):
    X, y = data
    model = quick().fit(X, y)
    assert model.score(X, y) > 0.75
    assert model.n_features_in_ == 10 and model.n_outputs_ == 1
    assert len(model.loss_curve_) == model.n_iter_ == 40 and model.t_ == 40 * len(X)
    assert model.best_loss_ == min(model.loss_curve_) and model.validation_scores_ is None
    (w1t, w2t), (b1, b2) = model.coefs_, model.intercepts_
    assert w1t.shape == (10, 16) and w2t.shape == (16, 1) and b1.shape == (16,)
    hidden = 1 / (1 + np.exp(-(X @ w1t + b1)))
    np.testing.assert_allclose(model.predict(X), (hidden @ w2t + b2).ravel(), rtol=1e-10)


def test_random_state_repeats_a_fit(data):
    X, y = data
    a, b = quick().fit(X, y), quick().fit(X, y)
    assert a.loss_curve_ == b.loss_curve_
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_partial_fit_goes_on_one_epoch_at_a_time(data):
    X, y = data
    model = quick()
    for _ in range(3):
        model.partial_fit(X, y)
    assert model.n_iter_ == 1 and len(model.loss_curve_) == 3 and model.t_ == 3 * len(X)
    assert model.loss_curve_[2] < model.loss_curve_[0]
    with pytest.raises(ValueError, match="does not support early_stopping"):
        quick(early_stopping=True).partial_fit(X, y)


def test_warm_start_continues_from_the_fitted_weights(data):
    X, y = data
    model = quick(warm_start=True, max_iter=10).fit(X, y)
    first = list(model.loss_curve_)
    model.fit(X, y)
    assert model.loss_curve_[:10] == first and len(model.loss_curve_) == 20
    assert model.loss_curve_[10] < first[0]
    cold = quick(max_iter=10).fit(X, y)
    cold.fit(X, y)
    assert cold.loss_curve_ == first  # without warm_start, fit starts over


def test_early_stopping_reports_validation_scores(data):
    X, y = data
    model = quick(early_stopping=True, max_iter=200, n_iter_no_change=3).fit(X, y)
    assert len(model.validation_scores_) == model.n_iter_ < 200
    assert model.best_validation_score_ == max(model.validation_scores_)
    assert model.best_loss_ is None


def test_pandas_in_multi_output_and_float32(data):
    pd = pytest.importorskip("pandas")
    X, y = data
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(10)])
    targets = pd.DataFrame({"a": y, "b": -y})
    model = quick(dtype="float32").fit(frame, targets)
    assert list(model.feature_names_in_) == list(frame.columns)
    predicted = model.predict(frame)
    assert predicted.shape == (300, 2) and predicted.dtype == np.float32
    assert model.score(frame, targets) > 0.7


def test_verbose_prints_each_epoch_and_callback_can_stop(data, capsys):
    X, y = data
    seen = []
    model = quick(verbose=True, callback=lambda r: seen.append(r.epoch) or r.epoch == 4)
    model.fit(X, y)
    assert seen == [1, 2, 3, 4] and model.n_iter_ == 4
    assert capsys.readouterr().out.startswith("Iteration 1, loss = ")


def test_max_iter_reached_warns_as_mlpregressor_does(data):
    X, y = data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quick(max_iter=2).fit(X, y)
    assert [w.category for w in caught] == [ConvergenceWarning]


@pytest.mark.gpu
def test_cupy_in_cupy_out_and_numpy_on_the_gpu(data):
    import cupy

    X, y = data
    on_cpu = quick().fit(X, y)
    model = quick().fit(cupy.asarray(X), cupy.asarray(y))
    predicted = model.predict(cupy.asarray(X))
    assert isinstance(predicted, cupy.ndarray) and model.params_.backend == "cupy"
    np.testing.assert_allclose(predicted.get(), on_cpu.predict(X), rtol=1e-6, atol=1e-9)
    assert model.score(cupy.asarray(X), cupy.asarray(y)) == pytest.approx(on_cpu.score(X, y))

    numpy_in = quick(backend="cupy").fit(X, y)
    assert numpy_in.params_.backend == "cupy" and isinstance(numpy_in.predict(X), np.ndarray)
