"""CUDA out-of-memory fallback: halve a stage's batch and retry, down to 1, and remember what worked."""
from __future__ import annotations

import gc
import logging
from typing import Callable, Dict, List, Sequence, TypeVar

import torch

from .config import Config

log = logging.getLogger(__name__)
T = TypeVar("T")
STAGES = ("caption", "clip", "embed")  # the stages with a batch size of their own (config keys <stage>_batch_size)


def release_cuda_memory(device: str) -> None:
    """Collect garbage and return the CUDA allocator's cached blocks on ``device`` (and only there)."""
    gc.collect()
    if str(device).startswith("cuda") and torch.cuda.is_available():
        with torch.cuda.device(torch.device(device)):
            torch.cuda.empty_cache()


class StageBatcher:
    """Runs a stage over sub-batches no larger than its working size, halving that size on OOM."""

    def __init__(self, sizes: Dict[str, int], device: str = "cpu"):
        self.sizes = dict(sizes)
        self.device = device

    @classmethod
    def of(cls, config: Config) -> "StageBatcher":
        """The one factory: the config's caption, clip and embed batch sizes on its device."""
        return cls({s: config.stage_batch_size(s) for s in STAGES}, config.resolved_device())

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
                release_cuda_memory(self.device)
        return concat(results)


def concat_lists(parts: Sequence[list]) -> list:
    return [x for part in parts for x in part]
