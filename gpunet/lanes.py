"""How a pass over the samples is cut into chunks and spread over the CPU's cores.

A pass (the gradient, the loss, the forward pass) computes the (rows, n) hidden
layer of one chunk of samples at a time in buffers it allocates once, so its
memory does not grow with m. On a GPU one lane takes the largest chunks the
budget allows. On the CPU there is one lane per core, a thread that takes an
equal, contiguous share of the samples in cache-sized chunks, with BLAS held to
one thread; the lanes' results are combined in lane order, so a result is the
same from run to run on one machine.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from threadpoolctl import ThreadpoolController

from gpunet.backend import cpu_block_bytes, cpu_lanes
from gpunet.validation import NonFiniteError

if TYPE_CHECKING:
    from gpunet.model import Params

Item = TypeVar("Item")
Result = TypeVar("Result")

DEFAULT_WORK_BYTES = 256 * 2**20
"""The default bound on the working set of a pass over the samples."""

ROWS_PER_FEATURE = 2
"""On the CPU a chunk holds at least this many samples per feature: at large d the GEMMs
take most of a step and run better on longer chunks than the cache rule gives (measured
at d = 784, n = 1024: chunks of 512 rows 3-5 % slower than 1024 to 4096, which were alike)."""

WORK_BUFFERS = 4
"""(rows, n) arrays a chunk needs at most at once, beside one (rows, d + 1): the hidden
layer, the slope or delta, and the temporaries of the NumPy fallbacks."""


def row_bytes(params: Params) -> int:
    """Bytes of work buffers one sample of a chunk takes: WORK_BUFFERS × n + d + 1 items."""
    return params.dtype.itemsize * (WORK_BUFFERS * params.n_hidden + params.n_features + 1)


def plan_chunks(params: Params, n_samples: int, max_work_bytes: int) -> tuple[int, int]:
    """(rows, lanes): samples per chunk, and lanes that compute chunks at once.

    On a GPU one lane takes the largest chunks whose buffers (:func:`row_bytes`)
    fit in ``max_work_bytes``. On the CPU one lane per core
    (backend.cpu_lanes), each with chunks whose (rows, n) buffers fit the caches
    (backend.cpu_block_bytes) so that each pass over a chunk reads the cache,
    not memory, and at least ROWS_PER_FEATURE rows per feature; the budget is
    shared between the lanes. Each lane takes an equal share of the samples
    (:func:`lane_chunks`) in chunks made equal within it, so that the lanes
    finish together (measured at m = 16384, d = 784 on 2 lanes: 3 chunks of
    6272 rows dealt round the lanes took 361 ms, 2 of 8192 rows 311 ms).
    """
    if max_work_bytes <= 0:
        raise ValueError(f"max_work_bytes must be positive; got {max_work_bytes}")
    on_cpu = params.backend == "numpy"
    lanes = cpu_lanes() if on_cpu else 1
    rows = int(max_work_bytes) // (lanes * row_bytes(params))
    if on_cpu:
        cache_rows = cpu_block_bytes() // (params.n_hidden * params.dtype.itemsize)
        rows = min(rows, max(cache_rows, ROWS_PER_FEATURE * params.n_features))
    rows = max(1, min(rows, n_samples))
    # A chunk is the unit of a lane's work: lanes only for two chunks or more,
    # so a small batch is not split into pieces smaller than a thread's start-up.
    lanes = min(lanes, -(-n_samples // rows))
    share = -(-n_samples // lanes)
    return -(-share // -(-share // rows)), lanes


def lane_chunks(n_samples: int, rows: int, lanes: int) -> list[list[slice]]:
    """Each lane's chunks of samples: slices of at most ``rows``, the first the longest.

    The lanes' shares are contiguous, in order, and differ by one sample at most.
    """
    bounds = [n_samples * lane // lanes for lane in range(lanes + 1)]
    return [[slice(start, min(start + rows, end)) for start in range(begin, end, rows)]
            for begin, end in itertools.pairwise(bounds)]


def map_lanes(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """[function(item) for item in items], each on its own thread when there are several.

    NumPy and BLAS release the GIL, so the lanes run on separate cores. Of the
    NaN/Inf errors the lanes meet, the one at the first row is raised.
    """
    if len(items) == 1:
        return [function(items[0])]
    # One BLAS thread per lane: BLAS's own threads on top of the lanes would
    # oversubscribe the cores (measured: up to 10x slower at d = 16 on 2 cores).
    with _blas_threads().limit(limits=1, user_api="blas"):
        futures = [_executor(len(items)).submit(function, item) for item in items]
        for future in futures:
            future.exception()  # wait for every lane before lifting the limit
    errors = [f.exception() for f in futures if isinstance(f.exception(), NonFiniteError)]
    if errors:
        raise min(errors, key=lambda error: error.row)
    return [f.result() for f in futures]


@functools.cache
def _blas_threads() -> ThreadpoolController:
    return ThreadpoolController()


@functools.cache
def _executor(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gpunet")
