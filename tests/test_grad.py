"""Loss and gradients: finite differences, an independent reference, chunking, numerics."""

from __future__ import annotations

import itertools
import math
import tracemalloc

import numpy as np
import pytest
from conftest import numpy_cupy_allclose

import gpunet
from gpunet import Params, loss_and_grad
from gpunet.gradcheck import gradient_errors, numerical_grad
from gpunet.lanes import lane_chunks, plan_chunks, row_bytes

# (m, d, n, p): the seed's scalar x and single output, then wider cases.
SHAPES = [(20, 1, 5, 1), (30, 4, 6, 3), (1, 3, 4, 2), (25, 3, 1, 1), (16, 2, 3, 1)]


def random_problem(m, d, n, p, seed=0, dtype=np.float64, one_d_y=False):
    rng = np.random.default_rng(seed)
    params = Params.init(d, n, p, dtype=dtype, seed=seed, backend="numpy")
    # Larger weights than the initialisation, so σ is exercised away from ½.
    params = Params(*(rng.normal(0, 1.5, a.shape).astype(dtype) for a in params))
    X = rng.normal(size=(m, d))
    Y = rng.normal(size=(m,)) if one_d_y else rng.normal(size=(m, p))
    return params, X, Y


def full_batch_adam_losses(params, X, Y, epochs):
    """(trained copy of params, losses) of ``epochs`` full-batch Adam steps (lr 0.01) in memory."""
    from gpunet.optim import make_optimizer

    local = params.copy()
    optimizer = make_optimizer(local, "adam", learning_rate_init=0.01)
    losses = []
    for _ in range(epochs):
        loss, grads = loss_and_grad(local, X, Y)
        optimizer.step(local, grads)
        losses.append(float(loss))
    return local, losses


def reference_loss_and_grad(params, X, Y):
    """The seed's sums, written out per sample i, hidden unit k and output j, in float64.

    h_j(x) = Σ_k ω₂,jk σ(ω₁,k · x + b₁,k) + b₂,j;  r_ij = h_j(x_i) − y_ij
    ∂J/∂ω₂,jk = 1/m Σ_i r_ij σ_ik          ∂J/∂b₂,j = 1/m Σ_i r_ij
    ∂J/∂ω₁,k  = 1/m Σ_i (Σ_j r_ij ω₂,jk) σ_ik (1 − σ_ik) x_i
    ∂J/∂b₁,k  = 1/m Σ_i (Σ_j r_ij ω₂,jk) σ_ik (1 − σ_ik)
    """
    w1, b1, w2, b2 = (np.asarray(a, dtype=np.float64) for a in params)
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64).reshape(len(X), -1)
    m, (n, d), p = len(X), w1.shape, w2.shape[0]
    g_w1, g_b1, g_w2, g_b2 = np.zeros((n, d)), np.zeros(n), np.zeros((p, n)), np.zeros(p)
    total = 0.0
    for i in range(m):
        s = [1 / (1 + math.exp(-(float(w1[k] @ X[i]) + b1[k]))) for k in range(n)]
        r = [sum(w2[j, k] * s[k] for k in range(n)) + b2[j] - Y[i, j] for j in range(p)]
        total += sum(rj * rj for rj in r)
        for j in range(p):
            g_b2[j] += r[j]
            for k in range(n):
                g_w2[j, k] += r[j] * s[k]
        for k in range(n):
            back = sum(r[j] * w2[j, k] for j in range(p)) * s[k] * (1 - s[k])
            g_b1[k] += back
            g_w1[k] += back * X[i]
    return total / (2 * m), [g / m for g in (g_w1, g_b1, g_w2, g_b2)]


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(np.linalg.norm(actual), np.linalg.norm(expected), 1e-300)
    return np.linalg.norm(actual - expected) / scale


def test_hand_worked_example():
    # W1 = 0, b1 = 0 → a = σ(0) = 1/2;  h = 2 · 1/2 + 1 = 2;  r = h − y = 2 − 3 = −1
    # J = r²/2 = 1/2;  ∂W2 = r·a = −1/2;  ∂b2 = r = −1
    # Δ = r · w2 · a(1 − a) = −1 · 2 · 1/4 = −1/2;  ∂W1 = Δ·x = −1/2 · 1;  ∂b1 = Δ = −1/2
    params = Params(np.zeros((1, 1)), np.zeros(1), np.array([[2.0]]), np.array([1.0]))
    loss, grads = loss_and_grad(params, np.array([[1.0]]), np.array([3.0]))
    assert float(loss) == 0.5
    assert grads.w2.tolist() == [[-0.5]] and grads.b2.tolist() == [-1.0]
    assert grads.w1.tolist() == [[-0.5]] and grads.b1.tolist() == [-0.5]


@pytest.mark.parametrize("m,d,n,p", SHAPES)
def test_gradients_match_finite_differences(m, d, n, p):
    params, X, Y = random_problem(m, d, n, p, seed=m + d + n + p)
    errors = gradient_errors(params, X, Y)
    assert max(errors.values()) <= 1e-6, errors


def test_seed_case_with_one_dimensional_y_matches_finite_differences():
    params, X, y = random_problem(40, 1, 8, 1, seed=7, one_d_y=True)
    errors = gradient_errors(params, X, y)
    assert max(errors.values()) <= 1e-6, errors


def test_seed_labels_are_swapped():
    # The seed labels ω₂'s gradient with the σ(1−σ)·x formula: that formula is ω₁'s.
    params, X, y = random_problem(30, 1, 4, 1, seed=8, one_d_y=True)
    fd = numerical_grad(params, X, y)
    _, grads = loss_and_grad(params, X, y)
    residual = gpunet.predict(params, X) - y
    s = 1 / (1 + np.exp(-(X @ params.w1.T + params.b1)))
    seed_w2_formula = params.w2[0] / len(X) * ((residual[:, None] * s * (1 - s)) * X).sum(0)
    assert relative_error(grads.w1[:, 0], seed_w2_formula) < 1e-12
    assert relative_error(fd.w1[:, 0], seed_w2_formula) < 1e-6
    assert relative_error(fd.w2[0], seed_w2_formula) > 0.1


@pytest.mark.parametrize("m,d,n,p", SHAPES)
def test_matches_independent_reference(m, d, n, p):
    params, X, Y = random_problem(m, d, n, p, seed=1)
    loss, grads = loss_and_grad(params, X, Y)
    ref_loss, ref_grads = reference_loss_and_grad(params, X, Y)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        assert relative_error(got, want) < 1e-12


@pytest.mark.parametrize("m,d,n,p", SHAPES)
def test_float32_agrees_with_float64_reference(m, d, n, p):
    params, X, Y = random_problem(m, d, n, p, seed=2)
    loss, grads = loss_and_grad(params.astype(np.float32), X, Y)
    ref_loss, ref_grads = reference_loss_and_grad(params.astype(np.float32), X, Y)
    assert loss.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        assert relative_error(got, want) < 1e-5


@pytest.mark.parametrize("p", [1, 3])
@pytest.mark.parametrize("budget", [1, 64 * 8 * 7, 10**9])
def test_chunked_equals_one_shot(p, budget):
    params, X, Y = random_problem(1000, 5, 7, p, seed=3)
    loss, grads = loss_and_grad(params, X, Y, max_work_bytes=10**12)
    chunked_loss, chunked = loss_and_grad(params, X, Y, max_work_bytes=budget)
    assert float(chunked_loss) == pytest.approx(float(loss), rel=1e-13)
    for got, want in zip(chunked, grads, strict=True):
        assert relative_error(got, want) < 1e-13


@pytest.mark.parametrize("lanes", [1, 2, 3])
@pytest.mark.parametrize("m", [1, 2, 10, 999, 16384, 100_003])
@pytest.mark.parametrize("budget", [4 * 7 * 8, 10**5, 10**9])
def test_cpu_lanes_share_the_samples_evenly_within_the_budget(monkeypatch, lanes, m, budget):
    monkeypatch.setattr(gpunet.lanes, "cpu_lanes", lambda: lanes)
    params = Params.init(5, 7, seed=0)
    rows, used = plan_chunks(params, m, budget)
    assert used <= lanes and (used == lanes or m < lanes * rows)
    assert rows * used * row_bytes(params) <= max(budget, used * row_bytes(params))
    chunks = lane_chunks(m, rows, used)
    flat = [r for lane in chunks for r in lane]  # every sample once, in order:
    assert flat[0].start == 0 and flat[-1].stop == m
    assert all(a.stop == b.start for a, b in itertools.pairwise(flat))
    shares = [lane[-1].stop - lane[0].start for lane in chunks]
    assert max(shares) - min(shares) <= 1
    for lane in chunks:  # equal chunks within a lane but for the last, not much shorter
        sizes = [r.stop - r.start for r in lane]
        assert max(sizes) == sizes[0] <= rows and sizes[-1] >= rows - len(sizes)


def fresh_gradient(params, X, Y):
    """The gradient from new buffers (never a thread's reused ones), for comparison."""
    from gpunet.grad import gradient_sums
    from gpunet.model import check_data

    return gradient_sums(params, *check_data(params, X, Y), 2**28, True).result()


@pytest.mark.parametrize("p", [1, 2])
def test_a_minibatch_gradient_reusing_the_threads_buffers_is_the_fresh_one(p):
    results, expected = [], []
    for seed in range(4):  # same shapes, other values: each call reuses the last one's buffers
        params, X, Y = random_problem(16 + seed, 3, 5, p, seed=seed)
        results.append(loss_and_grad(params, X, Y))
        expected.append(fresh_gradient(params, X, Y))
    for (loss, grads), (want_loss, want_grads) in zip(results, expected, strict=True):
        assert float(loss) == float(want_loss)  # and earlier results were not overwritten
        for got, want in zip(grads, want_grads, strict=True):
            np.testing.assert_array_equal(got, want)


def test_threads_do_not_share_reused_buffers():
    import concurrent.futures

    problems = [random_problem(40, 3, 6, 1, seed=seed) for seed in range(8)]
    expected = [fresh_gradient(*problem) for problem in problems]

    def repeatedly(index):
        return [loss_and_grad(*problems[index]) for _ in range(50)][-1]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for (loss, grads), (want_loss, want_grads) in zip(
                pool.map(repeatedly, range(8)), expected, strict=True):
            assert float(loss) == float(want_loss)
            for got, want in zip(grads, want_grads, strict=True):
                np.testing.assert_array_equal(got, want)


def test_lanes_give_the_same_bits_every_run_and_other_lane_counts_within_rounding(monkeypatch):
    params, X, Y = random_problem(5000, 4, 16, 1, seed=7)
    budget = 4 * 16 * 8 * 200  # chunks of a few hundred rows: several per lane
    monkeypatch.setattr(gpunet.lanes, "cpu_lanes", lambda: 3)
    runs = [loss_and_grad(params, X, Y, max_work_bytes=budget) for _ in range(5)]
    for loss, grads in runs[1:]:
        assert float(loss) == float(runs[0][0])
        for got, want in zip(grads, runs[0][1], strict=True):
            np.testing.assert_array_equal(got, want)
    monkeypatch.setattr(gpunet.lanes, "cpu_lanes", lambda: 1)
    one_loss, one_lane = loss_and_grad(params, X, Y, max_work_bytes=budget)
    assert float(one_loss) == pytest.approx(float(runs[0][0]), rel=1e-13)
    for got, want in zip(runs[0][1], one_lane, strict=True):
        assert relative_error(got, want) < 1e-13


def test_gradients_are_c_contiguous():
    params, X, Y = random_problem(50, 4, 6, 1, seed=5)
    _, grads = loss_and_grad(params, X, Y)
    assert all(g.flags.c_contiguous for g in grads)


@pytest.mark.parametrize("m", [20_000, 80_000])
def test_working_memory_is_bounded_by_the_budget(m):
    params, X, Y = random_problem(m, 8, 64, 1, seed=4)
    budget = 2**20
    tracemalloc.start()
    loss_and_grad(params, X, Y, max_work_bytes=budget)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # NumPy reports its allocations to tracemalloc; X alone is 1.3 to 5 MB here.
    assert peak < 1.5 * budget


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_overflow_for_pre_activations_up_to_1e4(dtype):
    # Rows of X scaled so that Z = X W1ᵀ + b1 reaches ±1e4.
    params = Params(np.array([[1.0], [-1.0]]), np.zeros(2), np.array([[1.0, 1.0]]), np.zeros(1))
    params = params.astype(dtype)
    X = np.array([[1e4], [-1e4], [0.0], [-0.0], [700.0], [-750.0]])
    y = np.arange(6.0)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grads = loss_and_grad(params, X, y)
        values = gpunet.predict(params, X)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(values))
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_loss_alone_and_predict_agree_with_loss_and_grad():
    params, X, Y = random_problem(50, 3, 4, 2, seed=5)
    loss, _ = loss_and_grad(params, X, Y)
    assert float(gpunet.loss(params, X, Y)) == pytest.approx(float(loss), rel=1e-14)
    H = gpunet.forward(params, X)
    assert H.shape == (50, 2) and gpunet.predict(params, X).shape == (50, 2)
    assert float(((H - Y) ** 2).sum() / 100) == pytest.approx(float(loss), rel=1e-12)


def test_one_output_predicts_one_dimensional():
    params, X, _ = random_problem(10, 3, 4, 1, one_d_y=True)
    assert gpunet.predict(params, X).shape == (10,)
    assert gpunet.forward(params, X).shape == (10, 1)


def test_data_in_another_dtype_is_cast_chunk_by_chunk_to_the_parameters_dtype():
    params, X, Y = random_problem(100, 3, 4, 1, seed=6)
    low = params.astype(np.float32)
    Y_int = np.round(10 * Y).astype(np.int64)
    loss, grads = loss_and_grad(low, X.astype(np.float64), Y_int)
    assert loss.dtype == np.float32 and grads.w1.dtype == np.float32
    expected, _ = loss_and_grad(low, X.astype(np.float32), Y_int.astype(np.float32))
    assert float(loss) == float(expected)


def test_initialisation_is_seeded_glorot_uniform():
    params = Params.init(6, 10, 2, seed=0, dtype=np.float32, backend="numpy")
    again = Params.init(6, 10, 2, seed=0, dtype=np.float32, backend="numpy")
    for a, b in zip(params, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert params.shapes == {"w1": (10, 6), "b1": (10,), "w2": (2, 10), "b2": (2,)}
    assert params.dtype == np.float32
    assert np.abs(params.w1).max() <= math.sqrt(2 / (6 + 10))
    assert np.abs(params.w2).max() <= math.sqrt(2 / (10 + 2))


# The same bodies on NumPy and on CuPy: GPU tests.

@pytest.mark.parametrize("p", [1, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@numpy_cupy_allclose(rtol=2e-4, atol=1e-6)
def test_loss_and_grad_backends_agree(p, dtype, xp):
    params, X, Y = random_problem(5000, 16, 64, p, seed=9, dtype=dtype)
    params = params.to("numpy" if xp is np else "cupy")
    loss, grads = loss_and_grad(params, xp.asarray(X, dtype), xp.asarray(Y, dtype),
                                max_work_bytes=2**18)
    return (loss, *grads)


@numpy_cupy_allclose(rtol=1e-12)
def test_gpu_float64_gradients_match_finite_differences(xp):
    params, X, Y = random_problem(30, 1, 6, 1, seed=10, one_d_y=True)
    params = params.to("numpy" if xp is np else "cupy")
    _, grads = loss_and_grad(params, xp.asarray(X), xp.asarray(Y))
    fd = numerical_grad(params, X, Y)
    for name, got, want in zip("w1 b1 w2 b2".split(), grads, fd, strict=True):
        assert relative_error(gpunet.to_numpy(got), want) <= 1e-6, name
    return grads.w1
