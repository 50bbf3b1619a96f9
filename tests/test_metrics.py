"""R² and MSE agree with scikit-learn's, edge cases included."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numpy_cupy_allclose

from gpunet.metrics import mean_squared_error, r2_score

metrics = pytest.importorskip("sklearn.metrics")
rng = np.random.default_rng(0)
Y, P, W = rng.normal(size=(20, 3)), rng.normal(size=(20, 3)), rng.uniform(size=20)
CASES = {
    "one output": (Y[:, 0], P[:, 0], None),
    "three outputs": (Y, P, None),
    "weighted": (Y, P, W),
    "constant, predicted exactly": (np.ones(5), np.ones(5), None),
    "constant, missed": (np.ones(5), np.arange(5.0), None),
}


@pytest.mark.parametrize("case", CASES)
def test_r2_equals_scikit_learns(case):
    y_true, y_pred, weight = CASES[case]
    expected = metrics.r2_score(y_true, y_pred, sample_weight=weight)
    assert float(r2_score(y_true, y_pred, weight)) == pytest.approx(expected, rel=1e-12)


def test_r2_of_one_sample_is_nan_and_shapes_must_agree():
    assert np.isnan(float(r2_score(np.ones(1), np.ones(1))))
    with pytest.raises(ValueError, match=r"differ in shape: \(20, 3\) and \(20, 1\)"):
        r2_score(Y, P[:, 0])


def test_mse_equals_scikit_learns():
    assert float(mean_squared_error(Y, P)) == pytest.approx(metrics.mean_squared_error(Y, P))


@numpy_cupy_allclose(rtol=1e-12)
def test_same_scores_on_numpy_and_cupy(xp):
    constant = xp.ones((20, 1))
    y_true = xp.concatenate([xp.asarray(Y), constant], axis=1)
    y_pred = xp.concatenate([xp.asarray(P), constant], axis=1)
    return r2_score(y_true, y_pred, xp.asarray(W)), mean_squared_error(y_true, y_pred)
