"""CUDA out-of-memory fallback: halve a stage's batch and retry, down to 1, and remember what worked."""
from __future__ import annotations

import gc
import logging
from typing import Callable, Dict, List, Sequence, TypeVar

import torch

log = logging.getLogger(__name__)
T = TypeVar("T")


class StageBatcher:
    """Runs a stage over sub-batches no larger than its working size, halving that size on OOM."""

    def __init__(self, sizes: Dict[str, int]):
        self.sizes = dict(sizes)

    def run(self, stage: str, items, fn: Callable, concat: Callable[[List], T]) -> T:
        """fn(items[i:j]) over consecutive slices; results joined with concat, in order."""
        n = len(items)
        results, start = [], 0
        while start < n:
            size = self.sizes[stage]
            try:
                results.append(fn(items[start:start + size]))
                start += size
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                self.sizes[stage] = size // 2
                log.warning("%s: CUDA out of memory at batch %d; retrying at %d for the rest of the run",
                            stage, size, size // 2)
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        return concat(results)


def concat_lists(parts: Sequence[list]) -> list:
    return [x for part in parts for x in part]
