"""Tables of numbers from files (CSV, NPY, NPZ, Parquet) and built-in sets, split into X and Y.

A table is a list of column names and a float64 array (rows, columns). CSV
and Parquet name their columns; NPY columns are named by index ("0", "1",
...). An NPZ holds arrays ``X`` (m, d) and ``y`` (m,) or (m, p) directly.
"""

from __future__ import annotations

import csv
import dataclasses
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gpunet import npyfile
from gpunet.datasets import friedman1

BUILTIN = ("friedman1", "diabetes")
FORMATS = ".csv, .npy, .npz, .parquet"


class DataError(ValueError):
    """A data file that cannot be read, or columns that are not there."""


def read_table(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Column names and a (rows, columns) float64 array from a CSV, NPY or Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    readers = {".csv": _read_csv, ".npy": _read_npy, ".parquet": _read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unknown format {path.suffix!r}; gpunet reads {FORMATS}")
    try:
        names, table = reader(path)
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text ({error}); expected a CSV file") from None
    except csv.Error as error:
        raise DataError(f"{path} is not a readable CSV file: {error}") from None
    if table.ndim != 2 or table.shape[0] == 0:
        raise DataError(f"{path}: expected a non-empty table (rows, columns); got {table.shape}")
    return names, table


@dataclasses.dataclass
class Data:
    """X (m, d), Y (m, p), their column names, and the rows dropped for holding NaN or Inf.

    Unpacks as ``X, Y, features, targets``.
    """

    X: np.ndarray
    Y: np.ndarray
    features: list[str]
    targets: list[str]
    dropped: int = 0

    def __iter__(self) -> Iterator[Any]:
        return iter((self.X, self.Y, self.features, self.targets))


def load_xy(source: str | Path, targets: list[str] | None = None, *, drop_nan: bool = False
            ) -> Data:
    """X (m, d), Y (m, p) and their column names from a file or a built-in set's name.

    ``targets`` names the target columns; by default the last column is the
    target. An NPZ's X and y are taken as they are. A row holding NaN or Inf
    is an error naming it, or with ``drop_nan`` is dropped (``Data.dropped``
    counts them).
    """
    if targets and (str(source) in BUILTIN or Path(source).suffix.lower() == ".npz"):
        raise DataError(f"--target does not apply to {source}: it holds X and y apart")
    if str(source) in BUILTIN:
        X, y, features = builtin(str(source))
        return Data(X, y.reshape(-1, 1), features, ["y"])
    path = Path(source)
    if path.suffix.lower() == ".npz":
        data = Data(*_read_npz(path))
    else:
        names, table = read_table(path)
        data = Data(*split_columns(names, table, targets, str(path)))
    return finite_rows(data, str(path), drop_nan)


def finite_rows(data: Data, source: str, drop: bool) -> Data:
    """``data`` with no NaN or Inf: rows that hold them dropped (and counted), or an error."""
    bad = ~(np.isfinite(data.X).all(axis=1) & np.isfinite(data.Y).all(axis=1))
    if not bad.any():
        return data
    if drop:
        if bad.all():
            raise DataError(f"{source}: every one of its {len(bad)} rows holds NaN or Inf")
        keep = ~bad
        return Data(data.X[keep], data.Y[keep], data.features, data.targets, int(bad.sum()))
    row = int(np.flatnonzero(bad)[0])
    values = np.concatenate([data.X[row], data.Y[row]])
    column = [*data.features, *data.targets][int(np.flatnonzero(~np.isfinite(values))[0])]
    raise DataError(
        f"{source}, data row {row + 1} (header not counted), column {column!r}: "
        f"{values[~np.isfinite(values)][0]} where a finite number was expected "
        f"({int(bad.sum())} such rows); remove or impute them, or drop them with gpunet train "
        "--drop-nan (load_xy(..., drop_nan=True))"
    )


def split_columns(
    names: list[str], table: np.ndarray, targets: list[str] | None, source: str = "the data"
) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """The table's feature columns and target columns, with their names."""
    if table.shape[1] < 2 and targets is None:
        raise DataError(f"{source} has one column: it needs features and a target")
    targets = targets or [names[-1]]
    missing = [t for t in targets if t not in names]
    if missing:
        raise DataError(
            f"{source} has no column {', '.join(map(repr, missing))}; its columns are "
            f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''}"
        )
    target_idx = [names.index(t) for t in targets]
    feature_idx = [i for i in range(len(names)) if i not in target_idx]
    if not feature_idx:
        raise DataError(f"{source}: every column is a target; leave some as features")
    features = [names[i] for i in feature_idx]
    return table[:, feature_idx], table[:, target_idx], features, list(targets)


def select_features(
    names: list[str], table: np.ndarray, features: list[str], source: str
) -> np.ndarray:
    """The columns ``features`` of a table, in that order (as a model was trained on them)."""
    missing = [f for f in features if f not in names]
    if missing:
        raise DataError(
            f"{source} lacks the model's feature column(s) {', '.join(map(repr, missing[:10]))}"
        )
    return table[:, [names.index(f) for f in features]]


def builtin(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A built-in regression set: X (m, d), y (m,), feature names.

    friedman1: 10 000 samples of Friedman #1 (gpunet.datasets, always there).
    diabetes: scikit-learn's 442 diabetes patients (needs scikit-learn).
    """
    if name == "friedman1":
        X, y = friedman1(10_000, seed=0)
        return X, y, [f"x{i}" for i in range(X.shape[1])]
    if name == "diabetes":
        try:
            from sklearn.datasets import load_diabetes
        except ImportError:
            raise DataError(
                "the diabetes set comes from scikit-learn: pip install 'gpunet[sklearn]'"
            ) from None
        bunch = load_diabetes()
        return bunch.data, bunch.target, list(bunch.feature_names)
    raise DataError(f"no built-in data set {name!r}; there are {', '.join(BUILTIN)}")


def available_builtin() -> list[str]:
    """The built-in sets that this installation can load."""
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        return ["friedman1"]
    return list(BUILTIN)


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """A CSV's columns: a header row of names (or none: columns 0, 1, ...), then numbers.

    An empty cell is a missing value, read as NaN (see :func:`finite_rows`).
    """
    with open(path, newline="", encoding="utf-8") as file:
        rows = [(number, row) for number, row in enumerate(csv.reader(file), start=1) if row]
    if not rows:
        raise DataError(f"{path} is empty; expected a header row and rows of numbers")
    header = rows[0][1]
    has_header = not all(_is_number(cell) for cell in header)
    names = [h.strip() for h in header] if has_header else [str(i) for i in range(len(header))]
    body = rows[1:] if has_header else rows
    if not body:
        raise DataError(f"{path} has a header row but no data rows")
    values = np.empty((len(body), len(names)))
    for index, (number, row) in enumerate(body):
        if len(row) != len(names):
            raise DataError(f"{path}, line {number}: {len(row)} fields; expected {len(names)} "
                            f"({', '.join(names[:8])}{' ...' if len(names) > 8 else ''})")
        for column, (name, cell) in enumerate(zip(names, row, strict=True)):
            if not cell.strip():
                values[index, column] = np.nan
            elif _is_number(cell):
                values[index, column] = float(cell)
            else:
                raise DataError(f"{path}, line {number}, column {name!r}: {cell[:40]!r} is "
                                "not a number")
    return names, values


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_npy(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        array = npyfile.file_array(path)
    except npyfile.NpyError as error:
        raise DataError(f"{path} is not a plain numeric .npy array: it {error}") from None
    if array.ndim != 2:
        raise DataError(f"{path} holds shape {array.shape}; a data .npy is 2-D (rows, columns)")
    return [str(i) for i in range(array.shape[1])], array.astype(np.float64)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = npyfile.member_names(archive)
            if not {"X", "y"} <= set(names):
                raise DataError(
                    f"{path} must hold arrays named X and y; it holds {', '.join(names) or 'none'}"
                )
            X, y = (npyfile.member_array(archive, name).astype(np.float64) for name in "Xy")
    except npyfile.NpyError as error:
        raise DataError(f"{path} is not an .npz of plain numeric arrays: it {error}") from None
    except npyfile.ARCHIVE_ERRORS as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path} is not a readable .npz archive ({error})") from None
    if X.ndim != 2 or y.ndim not in (1, 2) or len(X) != len(y) or len(X) == 0:
        raise DataError(f"{path}: X must be (m, d) and y (m,) or (m, p) with m ≥ 1; "
                        f"got {X.shape}, {y.shape}")
    Y = y.reshape(len(y), -1)
    return X, Y, [str(i) for i in range(X.shape[1])], [f"y{i}" for i in range(Y.shape[1])]


def _read_parquet(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise DataError("reading Parquet needs pyarrow: pip install 'gpunet[data]'") from None
    try:
        table = parquet.read_table(path)
    except Exception as error:  # pyarrow raises its own error types for bad files
        raise DataError(
            f"{path} is not a readable Parquet file (truncated or damaged?): {error}"
        ) from None
    if table.num_columns == 0:
        raise DataError(f"{path} has no columns; expected numeric feature and target columns")
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        try:
            columns.append(np.asarray(column.to_numpy(), dtype=np.float64))
        except (TypeError, ValueError):
            raise DataError(f"{path}, column {name!r} is not numeric ({column.type})") from None
    return list(table.column_names), np.column_stack(columns)


@dataclasses.dataclass
class Scaling:
    """Per-column z-scores, a ↦ (a − mean) / scale; a constant column keeps scale 1.

    A sigmoid network trains well on inputs and targets of unit scale; the
    command line scales both and stores the scaling with the model.
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, table: np.ndarray) -> Scaling:
        scale = table.std(axis=0)
        scale[scale == 0] = 1.0
        return cls(table.mean(axis=0), scale)

    def apply(self, table: np.ndarray) -> np.ndarray:
        return (table - self.mean) / self.scale

    def invert(self, table: np.ndarray) -> np.ndarray:
        return table * self.scale + self.mean

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, values: dict[str, list[float]]) -> Scaling:
        return cls(np.asarray(values["mean"], dtype=np.float64),
                   np.asarray(values["scale"], dtype=np.float64))
