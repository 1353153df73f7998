"""Wall seconds per stage of a run (what the summary's "seconds per stage" line shows)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Dict

import torch


class StageTimer:
    """Wall seconds per stage; CUDA work is synchronised at each stage's end so time lands where it belongs."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.device = torch.device(device) if self.cuda else None
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
