"""Property-based tests (hypothesis) of the gradient and the loaders, and a bounded fuzz run of
every loader: arbitrary shapes, dtypes, values and bytes give the right answer or a documented
error (DataError, CheckpointError), never a crash or another exception."""

from __future__ import annotations

import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import expit

from gpunet import Params, checkpoint, loss_and_grad, npyfile
from gpunet.checkpoint import CheckpointError
from gpunet.datafiles import DataError, load_xy, read_table
from gpunet.train import TrainConfig, Trainer
from gpunet.validation import NonFiniteError

PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=1000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def dense_reference(params, X, Y):
    """J and ∂J/∂θ from the formulas in one dense pass in float64, and for each gradient the
    same sums taken over absolute values: the scale its rounding error is relative to."""
    w1, b1, w2, b2 = (np.asarray(a, np.float64) for a in params)
    m = len(X)
    A = expit(X @ w1.T + b1)
    R = A @ w2.T + b2 - Y
    S = A * (1 - A)
    # 1 − a loses digits as a → 1: its error is eps·a, not eps·(1 − a), hence S + A.
    delta, delta_abs = (R @ w2) * S, (abs(R) @ abs(w2)) * (S + A)
    grads = [delta.T @ X / m, delta.sum(0) / m, R.T @ A / m, R.sum(0) / m]
    scales = [delta_abs.T @ abs(X) / m, delta_abs.sum(0) / m, abs(R).T @ A / m,
              abs(R).sum(0) / m]
    return (R * R).sum() / (2 * m), grads, scales


@st.composite
def problems(draw):
    m, d, n, p = (draw(st.integers(1, top)) for top in (40, 4, 6, 3))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    values = st.floats(-50, 50, allow_nan=False, width=32)
    X = draw(hnp.arrays(np.float64, (m, d), elements=values))
    Y = draw(hnp.arrays(np.float64, (m, p), elements=values))
    weights = [draw(hnp.arrays(np.float64, shape, elements=st.floats(-4, 4, width=32)))
               for shape in ((n, d), (n,), (p, n), (p,))]
    budget = draw(st.sampled_from([1, 1000, 2**28]))
    return Params(*(w.astype(dtype) for w in weights)), X, Y, budget


@PROPERTY
@given(problems())
def test_the_gradient_matches_the_formulas_for_any_shape_dtype_values_and_chunking(problem):
    params, X, Y, budget = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # σ's e^(−z) overflows to 0 by design
        loss, grads = loss_and_grad(params, X, Y, max_work_bytes=budget)
    X32, Y32 = (a.astype(params.dtype).astype(np.float64) for a in (X, Y))  # what it computes on
    want_loss, want, scales = dense_reference(params, X32, Y32)
    eps = np.finfo(params.dtype).eps
    terms = X.shape[0] + X.shape[1] + params.n_hidden + params.n_outputs
    assert abs(float(loss) - want_loss) <= 8 * terms * eps * (want_loss + 1)
    for got, expected, scale in zip(grads, want, scales, strict=True):
        assert got.dtype == params.dtype and got.shape == expected.shape
        assert np.all(np.isfinite(got))
        np.testing.assert_array_less(abs(got - expected), 8 * terms * eps * (scale + 1e-30))


@PROPERTY
@given(problems(), st.data())
def test_nan_or_inf_anywhere_in_the_data_is_refused_naming_its_row(problem, data):
    params, X, Y, budget = problem
    target = data.draw(st.sampled_from(["X", "y"]))
    array = X if target == "X" else Y
    row = data.draw(st.integers(0, len(array) - 1))
    array[row, data.draw(st.integers(0, array.shape[1] - 1))] = data.draw(
        st.sampled_from([np.nan, np.inf, -np.inf]))
    with pytest.raises(NonFiniteError, match=f"{target} holds NaN or Inf") as caught:
        loss_and_grad(params, X, Y, max_work_bytes=budget)
    assert caught.value.row == row


NUMERIC_DTYPES = [np.dtype(t).newbyteorder(order) for t in
                  ("?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8")
                  for order in "<>"]


@PROPERTY
@given(hnp.arrays(st.sampled_from(NUMERIC_DTYPES), hnp.array_shapes(min_dims=0, max_dims=3)),
       st.booleans())
def test_an_npy_of_any_numeric_dtype_shape_and_order_reads_as_np_load_reads_it(array, fortran):
    array = np.asfortranarray(array) if fortran else array
    buffer = io.BytesIO()
    np.save(buffer, array)
    size = len(buffer.getvalue())
    buffer.seek(0)
    got = npyfile.read_array(buffer, size)
    assert got.dtype == array.dtype.newbyteorder("=") and got.shape == array.shape
    np.testing.assert_array_equal(got, array)


names = st.text("abcdefghij_ ", min_size=1, max_size=6).map(str.strip).filter(
    lambda name: name and not name.replace("_", "").isdigit())


@PROPERTY
@given(st.lists(names, min_size=2, max_size=5, unique=True), st.data())
def test_a_csv_of_any_finite_numbers_reads_back_exactly(columns, data):
    table = data.draw(hnp.arrays(np.float64, (data.draw(st.integers(1, 20)), len(columns)),
                                 elements=st.floats(allow_nan=False, allow_infinity=False)))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.csv"
        path.write_text(",".join(columns) + "\n"
                        + "".join(",".join(map(repr, row.tolist())) + "\n" for row in table))
        got_names, got = read_table(path)
    assert got_names == columns
    np.testing.assert_array_equal(got, table)


def mutations(valid: bytes):
    """``valid`` with bytes flipped, cut short, inserted, or replaced by arbitrary bytes."""
    size = len(valid)
    flips = st.lists(st.tuples(st.integers(0, size - 1), st.integers(1, 255)), min_size=1,
                     max_size=8).map(lambda flips: _flipped(valid, flips))
    cuts = st.integers(0, size - 1).map(lambda n: valid[:n])
    inserts = st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=64)).map(
        lambda at: valid[: at[0]] + at[1] + valid[at[0]:])
    return st.one_of(flips, cuts, inserts, st.binary(max_size=512))


def _flipped(valid, flips):
    raw = bytearray(valid)
    for at, bits in flips:
        raw[at] ^= bits
    return bytes(raw)


def valid_files():
    """One valid file of each format gpunet reads, as bytes."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        rng = np.random.default_rng(0)
        table = rng.normal(size=(6, 3))
        files = {".csv": b"a,b,y\n" + b"".join(",".join(map(repr, r.tolist())).encode() + b"\n"
                                                for r in table)}
        buffer = io.BytesIO()
        np.save(buffer, table)
        files[".npy"] = buffer.getvalue()
        np.savez(folder / "d.npz", X=table[:, :2], y=table[:, 2])
        files[".npz"] = (folder / "d.npz").read_bytes()
        trainer = Trainer(Params.init(2, 3, seed=0), TrainConfig(batch_size=3))
        trainer.fit(table[:, :2], table[:, 2], 1)
        checkpoint.save(folder / "m.npz", trainer, extra={"note": "fuzz"})
        files["checkpoint"] = (folder / "m.npz").read_bytes()
        try:
            import pyarrow
            from pyarrow import parquet

            parquet.write_table(pyarrow.table({"a": table[:, 0], "y": table[:, 1]}),
                                folder / "d.parquet")
            files[".parquet"] = (folder / "d.parquet").read_bytes()
        except ImportError:
            pass
    return files


VALID = valid_files()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("kind", sorted(VALID))
def test_fuzz_loaders_raise_only_their_documented_errors(kind, fuzz_dir):
    """Mutated and random files: each loads (and is then valid data) or raises its loader's
    documented error; nothing else escapes, nothing hangs, nothing crashes."""
    suffix = ".npz" if kind == "checkpoint" else kind
    path = fuzz_dir / f"fuzz{suffix}"
    expected = CheckpointError if kind == "checkpoint" else DataError

    @FUZZ
    @given(mutations(VALID[kind]))
    def run(contents):
        assume(kind != "checkpoint" or contents != VALID[kind])
        path.write_bytes(contents)
        try:
            if kind == "checkpoint":
                trainer, _ = checkpoint.load(path)  # then it is a whole, consistent model
                assert trainer.flat.size == sum(a.size for a in trainer.params)
            else:
                data = load_xy(path)
                assert data.X.ndim == 2 and np.isfinite(data.X).all()
        except expected:
            pass

    run()
