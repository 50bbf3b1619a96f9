"""Out of memory: which errors mean it, and retrying a pass over the samples in smaller chunks.

A pass over the samples (gpunet.grad) holds (rows, n) work buffers sized to a
budget, ``max_work_bytes``. When the device runs out of memory, the pass is
run again from the start with half the budget, until it fits or a chunk is a
single row. A pass writes its results only at its end, so a failed attempt
leaves nothing half-done: no gradient is used, and no parameter changed,
before a pass completes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

Result = TypeVar("Result")


class MemoryWarning(RuntimeWarning):
    """Out of memory: gpunet carries on with smaller chunks of samples."""


def out_of_memory_errors(xp: ModuleType) -> tuple[type[BaseException], ...]:
    """The exceptions that mean the host or ``xp``'s device has run out of memory."""
    errors: list[type[BaseException]] = [MemoryError]
    device_error = getattr(getattr(getattr(xp, "cuda", None), "memory", None),
                           "OutOfMemoryError", None)
    if isinstance(device_error, type) and issubclass(device_error, BaseException):
        errors.append(device_error)
    return tuple(errors)


def free_cached_blocks(xp: ModuleType) -> None:
    """Give the memory pool's cached blocks back to the device (CuPy), so a retry can use them."""
    pool = getattr(xp, "get_default_memory_pool", None)
    if pool is not None:
        pool().free_all_blocks()


def retry_smaller(
    run: Callable[[int], Result],
    xp: ModuleType,
    max_work_bytes: int,
    smallest: Callable[[], int],
    describe: Callable[[int], str],
) -> tuple[Result, int]:
    """``run(budget)`` for budget = max_work_bytes, then halved after each out-of-memory error.

    ``smallest()`` is the budget below which chunks cannot shrink (one row),
    asked for only when memory runs out;
    ``describe(budget)`` says what was being computed and how large it was.
    Returns (result, the budget that fitted). Shrinking is said once, as a
    MemoryWarning; running out at the smallest budget raises MemoryError
    naming the sizes and what to lower.
    """
    budget = max_work_bytes
    while True:
        try:
            result = run(budget)
        except out_of_memory_errors(xp) as error:
            free_cached_blocks(xp)
            floor = smallest()
            if budget <= floor:
                raise MemoryError(
                    f"out of memory computing {describe(budget)}, even one sample at a time "
                    f"({type(error).__name__}: {error}); lower the batch size (--batch-size), "
                    "the hidden units (--hidden) or use float32 (--dtype float32), or free "
                    "memory that other processes hold on the device"
                ) from None
            budget = max(floor, budget // 2)
            continue
        if budget != max_work_bytes:
            warnings.warn(
                f"out of memory computing {describe(max_work_bytes)}; carrying on with "
                f"max_work_bytes={budget:,} (chunks of fewer samples, a little slower)",
                MemoryWarning,
                stacklevel=3,
            )
        return result, budget
