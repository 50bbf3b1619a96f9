"""Bad and hostile files: each gives one clear error naming the file and what was expected,
no loader runs code, and a crafted header cannot make gpunet allocate what the file lacks."""

from __future__ import annotations

import json
import re
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format

import gpunet
from gpunet import Params, checkpoint
from gpunet.checkpoint import CheckpointError
from gpunet.cli import main
from gpunet.datafiles import DataError, load_xy
from gpunet.train import Trainer

HEADER = "a,b,target\n"


def npy_bytes(array, **kwargs):
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, **kwargs)
    return buffer.getvalue()


def crafted_npy(shape, dtype="<f8", data=b"\0" * 64):
    """An .npy whose header claims ``shape`` and whose data is only ``data``."""
    import io

    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def parquet_bytes(tmp_path, **columns):
    pyarrow = pytest.importorskip("pyarrow")
    from pyarrow import parquet

    path = tmp_path / "whole.parquet"
    parquet.write_table(pyarrow.table(columns), path)
    return path.read_bytes()


def npz_bytes(tmp_path, **arrays):
    path = tmp_path / "whole.npz"
    np.savez(path, **arrays)
    return path.read_bytes()


CASES = {
    # name: (file name, contents (bytes, or a function of tmp_path), extra CLI args, message)
    "ragged-row": ("d.csv", HEADER + "1,2,3\n4,5\n", [], r"d\.csv, line 3: 2 fields; expected 3"),
    "text-cell": ("d.csv", HEADER + "1,2,3\n4,five,6\n", [],
                  r"d\.csv, line 3, column 'b': 'five' is not a number"),
    "no-such-target": ("d.csv", HEADER + "1,2,3\n", ["--target", "price"],
                       r"d\.csv has no column 'price'; its columns are a, b, target"),
    "empty": ("d.csv", "", [], r"d\.csv is empty; expected a header row"),
    "header-only": ("d.csv", HEADER, [], r"d\.csv has a header row but no data rows"),
    "nan-cell": ("d.csv", HEADER + "1,2,3\n4,nan,6\n", [],
                 r"d\.csv, data row 2 \(header not counted\), column 'b': nan .*--drop-nan"),
    "empty-cell": ("d.csv", HEADER + "1,2,3\n4,5,\n", [], r"data row 2 .* column 'target'"),
    "not-utf8": ("d.csv", b"a,b\n\xff\xfe,1\n", [], r"d\.csv is not UTF-8 text"),
    "npy-text": ("d.npy", npy_bytes(np.array([["a", "b"]])), [], r"holds <U1 values; expected "
                 r"plain numbers"),
    "npy-complex": ("d.npy", npy_bytes(np.ones((3, 2), complex)), [], r"holds complex128"),
    "npy-objects": ("d.npy", npy_bytes(np.array([[{}, 1]], dtype=object), allow_pickle=True),
                    [], r"holds pickled Python objects \(object\), which are never loaded"),
    "npy-1d": ("d.npy", npy_bytes(np.ones(5)), [], r"d\.npy holds shape \(5,\); a data \.npy is "
               r"2-D"),
    "npy-truncated": ("d.npy", npy_bytes(np.ones((10, 3)))[:-8], [],
                      r"d\.npy is not a plain numeric \.npy array: it claims shape "
                      r"\(10, 3\) of float64 "
                      r"\(240 bytes\) but at most 232"),
    "npy-trailing": ("d.npy", npy_bytes(np.ones((10, 3))) + b"x", [], r"bytes after its data"),
    "npy-garbage": ("d.npy", b"\x93NUMPY\x01\x00{'descr'", [], r"header is damaged"),
    "npz-no-y": ("d.npz", lambda t: npz_bytes(t, X=np.ones((3, 2))), [],
                 r"must hold arrays named X and y; it holds X"),
    "npz-lengths": ("d.npz", lambda t: npz_bytes(t, X=np.ones((3, 2)), y=np.ones(4)), [],
                    r"X must be \(m, d\) and y \(m,\) or \(m, p\) with m ≥ 1; "
                    r"got \(3, 2\), \(4,\)"),
    "npz-truncated": ("d.npz", lambda t: npz_bytes(t, X=np.ones((3, 2)), y=np.ones(3))[:-30],
                      [], r"d\.npz is not a readable \.npz archive"),
    "parquet-truncated": ("d.parquet", lambda t: parquet_bytes(t, a=[1.0, 2], y=[3.0, 4])[:-40],
                          [], r"d\.parquet is not a readable Parquet file \(truncated or damaged"),
    "parquet-text": ("d.parquet", lambda t: parquet_bytes(t, a=["x", "y"], y=[3.0, 4]), [],
                     r"d\.parquet, column 'a' is not numeric \(string\)"),
    "unknown-format": ("d.xlsx", b"PK", [], r"unknown format '\.xlsx'; gpunet reads \.csv"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_bad_data_file_is_one_clear_error(tmp_path, capsys, case):
    name, contents, args, message = CASES[case]
    if callable(contents):
        contents = contents(tmp_path)
    path = tmp_path / name
    path.write_bytes(contents.encode() if isinstance(contents, str) else contents)
    with pytest.raises(DataError, match=message):
        load_xy(path, args[1:] or None)
    assert main(["train", str(path), *args, "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpunet train: error: ") and err.count("\n") == 1, err
    assert str(path) in err


def test_drop_nan_drops_and_counts_the_rows(tmp_path, capsys):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(200, 3))
    table[[5, 50, 150], [0, 2, 1]] = [np.nan, np.inf, np.nan]
    path = tmp_path / "d.csv"
    np.savetxt(path, table, delimiter=",", header="a,b,target", comments="")
    lines = path.read_text().splitlines()
    lines[100] = lines[100].split(",", 1)[0] + ",,1.0"  # an empty cell too
    path.write_text("\n".join(lines) + "\n")

    data = load_xy(path, drop_nan=True)
    assert data.dropped == 4 and data.X.shape == (196, 2) and np.isfinite(data.X).all()
    with pytest.raises(DataError, match=r"data row 6 .* column 'a': nan where a finite "
                       r"number was expected \(4 such rows\)"):
        load_xy(path)
    assert main(["train", str(path), "--drop-nan", "--epochs", "2", "--quiet"]) == 0
    assert "dropped 4 of 200 rows holding NaN or Inf" in capsys.readouterr().out


def test_predict_refuses_rows_it_cannot_predict(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text(HEADER + "".join(f"{i},{i % 3},{i % 5}\n" for i in range(30)))
    model = tmp_path / "m.npz"
    assert main(["train", str(path), "--epochs", "1", "--quiet", "--checkpoint", str(model)]) == 0
    new = tmp_path / "new.csv"
    new.write_text("a,b\n1,2\n3,nan\n")
    assert main(["predict", str(model), str(new)]) == 2
    assert re.search(r"new\.csv, data row 2 .* column 'b': nan", capsys.readouterr().err)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.npz"
    checkpoint.save(path, Trainer(Params.init(10, 6, seed=0)))
    return path


def rebuilt(path, members):
    """Rewrite the checkpoint with some members' raw bytes (or the metadata) replaced."""
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    for name, value in members.items():
        if name == "meta":
            meta = json.loads(str(np.load(path)["meta"]))
            value(meta)
            value = npy_bytes(np.array(json.dumps(meta)))
        entries[name if name.endswith(".npy") else name + ".npy"] = value
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def huge_shapes(meta):
    n, d, p = 10**6, 10**6, 1
    size = n * (d + p) + n + p
    shapes = {"params/w1": [n, d], "params/b1": [n], "params/w2": [p, n], "params/b2": [p]}
    shapes.update({key: [size] for key in meta["shapes"] if key.startswith("optimizer/")})
    meta["shapes"] = shapes


def test_a_checkpoint_claiming_a_huge_network_is_refused_before_allocating(saved):
    """Metadata and headers agree on a 10⁶ x 10⁶ W1 (8 TB); the file holds 64 bytes of it."""
    rebuilt(saved, {"meta": huge_shapes,
                    "params/w1": crafted_npy((10**6, 10**6)),
                    "params/b1": crafted_npy((10**6,)),
                    "params/w2": crafted_npy((1, 10**6))})
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"claims shape \(1000000, 1000000\) of "
                           r"float64 \(8,000,000,000,000 bytes\) but at most 64 bytes"):
            checkpoint.load(saved)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_a_data_npy_claiming_10_to_the_12_elements_is_refused_before_allocating(tmp_path):
    path = tmp_path / "big.npy"
    path.write_bytes(crafted_npy((10**6, 10**6)))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"claims shape \(1000000, 1000000\) of float64 "
                           r"\(8,000,000,000,000 bytes\) but at most 64 bytes"):
            load_xy(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"meta": lambda m: m["shapes"].update({"params/b1": [7]})},
         r"gives params/b1 shape \(7,\); a 10-6-1 network needs \(6,\)"),
        ({"meta": lambda m: m["shapes"].update({"params/w1": [-6, 10]})},
         r"shapes are not lists of sizes"),
        ({"meta": lambda m: m["shapes"].update({"evil/x": [1]})},
         r"the arrays .* do not match the metadata"),
        ({"params/w1": npy_bytes(np.array([[print]] * 6 * 10, dtype=object).reshape(6, 10),
                                 allow_pickle=True)},
         r"holds pickled Python objects.*it was not loaded"),
        ({"params/b1": npy_bytes(np.ones(6, np.float32))},
         r"the arrays are \['float32', 'float64'\] but the metadata says float64"),
        ({"meta.npy": npy_bytes(np.array(b"bytes, not text"))},
         r"array 'meta' holds \|S15 values; expected text"),
    ],
    ids=["inconsistent-shapes", "negative-size", "extra-array", "pickled-object", "mixed-dtype",
         "meta-not-text"],
)
def test_a_crafted_checkpoint_is_refused_with_the_reason(saved, members, message):
    rebuilt(saved, members)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load(saved)


def test_no_loader_can_unpickle():
    """gpunet never unpickles: no pickle import, no np.load (which can), no allow_pickle=True."""
    source = Path(gpunet.__file__).parent
    forbidden = re.compile(r"import pickle|from pickle|allow_pickle=True|np\.load\(|"
                           r"numpy\.load\(|marshal|shelve|\beval\(|\bexec\(|dill|cloudpickle")
    found = [f"{path.name}: {line.strip()}" for path in sorted(source.glob("*.py"))
             for line in path.read_text().splitlines() if forbidden.search(line)]
    assert not found
