"""An ordered map over chunks of work in DataLoader worker processes.

DataLoader workers are safe to start from a process that already runs torch (a plain fork pool
deadlocked here inside a run); the results come back in order, as from ``map``.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator, Optional, TypeVar

T = TypeVar("T")
MAX_WORKERS = 8


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """Workers for a map_chunks: the usable cores, at most MAX_WORKERS."""
    return min(usable_cores(), MAX_WORKERS)


class _Chunks:
    """A map-style dataset (DataLoader needs only __len__ and __getitem__; torch is imported where it runs)."""

    def __init__(self, fn: Callable[[int], T], count: int):
        self.fn, self.count = fn, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> T:
        return self.fn(i)


def map_chunks(fn: Callable[[int], T], count: int, workers: Optional[int] = None) -> Iterator[T]:
    """fn(0), ..., fn(count - 1) in order; in worker processes when there are 2 or more workers and chunks.

    Under the spawn start method (macOS, Windows) ``fn`` is pickled: pass a module-level function
    or a ``functools.partial`` of one.
    """
    workers = min(default_workers() if workers is None else workers, count)
    if workers < 2:
        return map(fn, range(count))
    import torch  # lazy: slow to import, and the command line's parsers need none
    return iter(torch.utils.data.DataLoader(_Chunks(fn, count), batch_size=None, num_workers=workers))
