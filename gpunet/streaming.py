"""Exact gradients and training over data larger than memory, read chunk by chunk.

A source is an iterable of (X_chunk (c, d), Y_chunk (c,) or (c, p)) NumPy
arrays that can be iterated again for each pass: :class:`ArraySource` over
anything with a shape and row slicing (a read-only memmap of an .npy
file, an HDF5 dataset, a Zarr array) and
:class:`ParquetSource` over a Parquet file's row groups.

The gradient is the same sum as in memory: each chunk adds its terms to a
:class:`gpunet.grad.GradientSums` and the sums are divided by m once at the end,

    J = 1/(2m) Σ_chunks Σ_i ‖R_i‖²        ∂J/∂θ = 1/m Σ_chunks (the chunk's Σ_i terms),

so it equals the in-memory gradient within rounding. The next chunk is read
(and checked for NaN and Inf) by a background thread while the current one is
computed; on a GPU it is then copied through pinned host memory on a second
CUDA stream. Peak memory is a few chunks, whatever m is.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from gpunet import grad, npyfile, validation
from gpunet.grad import GradientSums, gradient_sums
from gpunet.model import DEFAULT_WORK_BYTES, Params, check_data
from gpunet.optim import Optimizer

CHUNK_BYTES = 64 * 2**20
"""The default size of one chunk of X and y as read from storage."""

Chunk = tuple[np.ndarray, np.ndarray]
T = TypeVar("T")


class ArraySource:
    """Consecutive blocks of ``rows`` samples from X (m, d) and y (m,) or (m, p).

    X and y are anything with ``shape`` whose row slices read into NumPy
    arrays: NumPy memmaps, h5py datasets, Zarr arrays. The pages a memmap
    chunk was read from are handed back to the kernel after the copy, so the
    process's resident memory does not grow with the file.
    """

    def __init__(self, X: Any, y: Any, rows: int | None = None) -> None:
        if len(X.shape) != 2 or X.shape[0] != y.shape[0]:
            raise ValueError(
                f"X must be (m, d) and y (m,) or (m, p) with the same m; "
                f"got X {X.shape} and y {y.shape}"
            )
        if rows is not None and rows < 1:
            raise ValueError(f"rows must be a positive integer or None; got {rows}")
        row_bytes = (X.shape[1] * X.dtype.itemsize) + int(np.prod(y.shape[1:])) * y.dtype.itemsize
        self.X, self.y = X, y
        self.rows = rows if rows is not None else max(1, CHUNK_BYTES // row_bytes)

    @classmethod
    def from_npy(
        cls, x_path: str | Path, y_path: str | Path, rows: int | None = None
    ) -> ArraySource:
        """X and y from two .npy files, opened as read-only memmaps."""
        return cls(npyfile.file_memmap(x_path), npyfile.file_memmap(y_path), rows)

    @classmethod
    def from_hdf5(
        cls, path: str | Path, x: str = "X", y: str = "y", rows: int | None = None
    ) -> ArraySource:
        """X and y from two datasets of an HDF5 file (``pip install 'gpunet[stream]'``)."""
        try:
            import h5py
        except ImportError as error:
            raise ImportError(
                "reading HDF5 needs h5py: pip install 'gpunet[stream]'"
            ) from error
        file = h5py.File(path, "r")
        return cls(file[x], file[y], rows)

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    def __iter__(self) -> Iterator[Chunk]:
        for start in range(0, self.n_samples, self.rows):
            stop = min(start + self.rows, self.n_samples)
            yield _read(self.X, start, stop), _read(self.y, start, stop)


class ParquetSource:
    """The row groups of a Parquet file, ``features`` as X (c, d), ``targets`` as Y (c, p).

    One row group is one chunk: write the file with row groups of a size that
    fits in memory a few times over (pyarrow's ``row_group_size``).
    """

    def __init__(self, path: str | Path, features: list[str], targets: list[str]) -> None:
        try:
            import pyarrow.parquet as pq
        except ImportError as error:
            raise ImportError(
                "reading Parquet needs pyarrow: pip install 'gpunet[stream]'"
            ) from error
        self.file = pq.ParquetFile(path)
        missing = set(features + targets) - set(self.file.schema_arrow.names)
        if missing:
            raise ValueError(
                f"{path} has no column(s) {sorted(missing)}; its columns are "
                f"{self.file.schema_arrow.names}"
            )
        self.features, self.targets = list(features), list(targets)

    @property
    def n_samples(self) -> int:
        return self.file.metadata.num_rows

    def __iter__(self) -> Iterator[Chunk]:
        for group in range(self.file.num_row_groups):
            table = self.file.read_row_group(group, columns=self.features + self.targets)
            columns = [table.column(name).to_numpy() for name in table.column_names]
            d = len(self.features)
            yield np.column_stack(columns[:d]), np.column_stack(columns[d:])


def loss_and_grad(
    params: Params,
    source: Iterable[Chunk],
    *,
    max_work_bytes: int = DEFAULT_WORK_BYTES,
    check_finite: bool = True,
    out: Params | None = None,
) -> tuple[Any, Params]:
    """J and ∂J/∂(W1, b1, W2, b2) over every sample of ``source``, as gpunet.loss_and_grad.

    Each chunk is computed as in memory (chunked again to ``max_work_bytes``
    and spread over the CPU's cores); ``check_finite`` checks it on the host,
    in the reading thread, and names the row in the whole stream.
    """
    total: GradientSums | None = None
    for X, Y in _to_device(params, prefetch(_checked(source, check_finite))):
        sums = gradient_sums(params, *check_data(params, X, Y), max_work_bytes, False)
        total = sums if total is None else total.merge(sums)
    if total is None:
        raise ValueError("the source gave no samples; check its path and row groups")
    return total.result(out)


def fit(
    params: Params,
    source: Iterable[Chunk],
    optimizer: Optimizer,
    epochs: int,
    *,
    batch_size: int | None = None,
    max_work_bytes: int = DEFAULT_WORK_BYTES,
) -> list[float]:
    """Train ``params`` in place over ``epochs`` passes of ``source``; the loss of each pass.

    With ``batch_size=None`` each epoch is one step on the exact full-batch
    gradient, and its loss is J before that step. Otherwise each chunk is cut
    into batches in stored order (shuffle the file beforehand), one step each,
    and the epoch's loss is the mean of the batches' J weighted by their size.
    ``optimizer`` is one of gpunet.optim's, made for ``params``.
    """
    grads = params.zeros_like()
    losses = []
    for _ in range(epochs):
        if batch_size is None:
            loss, _ = loss_and_grad(params, source, max_work_bytes=max_work_bytes, out=grads)
            optimizer.step(params, grads)
            losses.append(float(loss))
            continue
        total, count = params.xp.zeros((), params.dtype), 0
        for X, Y in _to_device(params, prefetch(_checked(source, True))):
            for start in range(0, X.shape[0], batch_size):
                X_batch, Y_batch = X[start : start + batch_size], Y[start : start + batch_size]
                loss, _ = grad.loss_and_grad(
                    params, X_batch, Y_batch, max_work_bytes=max_work_bytes,
                    check_finite=False, out=grads,
                )
                optimizer.step(params, grads)
                total += loss * X_batch.shape[0]
                count += X_batch.shape[0]
        losses.append(float(total) / count)
    return losses


def prefetch(items: Iterable[T]) -> Iterator[T]:
    """The items of ``items``, each produced by a background thread while the caller
    works on the one before (one item ahead). Errors reach the caller in order."""
    iterator = iter(items)
    end = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpunet-read") as reader:
        pending = reader.submit(next, iterator, end)
        while (item := pending.result()) is not end:
            pending = reader.submit(next, iterator, end)
            yield item


def _checked(source: Iterable[Chunk], check_finite: bool) -> Iterator[Chunk]:
    """The chunks, checked for NaN and Inf with rows counted over the whole stream."""
    offset = 0
    for X, Y in source:
        if check_finite:
            validation.check_finite(X, "X", offset)
            validation.check_finite(Y, "y", offset)
        offset += X.shape[0]
        yield X, Y


def _read(array: Any, start: int, stop: int) -> np.ndarray:
    """Rows start:stop of ``array`` read into memory; a memmap's pages are released after."""
    chunk = np.array(array[start:stop])
    if isinstance(array, np.memmap) and array._mmap is not None:
        _release_pages(array._mmap, array[start:stop])
    return chunk


def _release_pages(mapping: mmap.mmap, view: np.ndarray) -> None:
    """MADV_DONTNEED the pages under ``view``: the file stays in the page cache, but they
    no longer count in this process's resident memory (which would otherwise grow to the
    file's size)."""
    base = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
    start = view.ctypes.data - base
    aligned = start - start % mmap.PAGESIZE
    mapping.madvise(mmap.MADV_DONTNEED, aligned, start + view.nbytes - aligned)


def _to_device(params: Params, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
    """The chunks on the parameters' backend: as they are for NumPy; for CuPy, copied
    by :class:`PinnedCopier`."""
    if params.backend == "numpy":
        yield from chunks
        return
    copier = PinnedCopier(params.dtype)
    for X, Y in chunks:
        yield copier(X), copier(Y)
        copier.turn_ends()


class PinnedCopier:
    """Host chunks to the GPU through pinned buffers on a copy stream, two slots deep.

    The copy of chunk k + 1 runs on its own stream while the current stream
    computes on chunk k; the current stream waits for a copy's event before
    using its data, and a slot is refilled only once the work queued on the
    chunk it held two turns ago has finished. Each call takes one array of the
    turn (X, then Y); :meth:`turn_ends` is called after the caller has queued
    its work on them.

    Untested on a GPU: written against CuPy's documented API
    (cupyx.empty_pinned, ndarray.set(stream=), Stream.record, wait_event).
    """

    def __init__(self, dtype: np.dtype) -> None:
        import cupy
        import cupyx

        self.cupy, self.cupyx, self.dtype = cupy, cupyx, dtype
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.slots: list[dict[str, Any]] = [{"arrays": [], "free": None} for _ in range(2)]
        self.turn, self.index = 0, 0

    def __call__(self, host: np.ndarray) -> Any:
        slot = self.slots[self.turn % 2]
        if self.index == 0 and slot["free"] is not None:
            slot["free"].synchronize()  # the GPU is done with what this slot held
        if self.index == len(slot["arrays"]) or slot["arrays"][self.index][0].size < host.size:
            pinned = self.cupyx.empty_pinned(host.size, self.dtype)
            device = self.cupy.empty(host.size, self.dtype)
            slot["arrays"][self.index : self.index + 1] = [(pinned, device)]
        pinned, device = slot["arrays"][self.index]
        self.index += 1
        staged = pinned[: host.size].reshape(host.shape)
        np.copyto(staged, host, casting="same_kind")
        target = device[: host.size].reshape(host.shape)
        target.set(staged, stream=self.stream)
        self.cupy.cuda.get_current_stream().wait_event(self.stream.record())
        return target

    def turn_ends(self) -> None:
        self.slots[self.turn % 2]["free"] = self.cupy.cuda.get_current_stream().record()
        self.turn, self.index = self.turn + 1, 0
