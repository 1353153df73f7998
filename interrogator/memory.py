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


# ---- choosing the caption batch from GPU memory -------------------------------------------------
MAX_AUTO_BATCH = 1024
MEMORY_BUDGET = 0.85        # share of the card the run may plan to use
OTHER_MODELS_BYTES = 2.5e9  # CLIP ViT-L-14 + MiniLM + label tables + workspace, fp16
KV_OVERHEAD = 1.3           # KV cache growth, logits and vision activations on top of the KV cache


def captioner_weight_bytes(folder: str, dtype_bytes: int) -> float:
    """Weights as loaded: the checkpoint files' size, rescaled from their stored dtype."""
    import json
    from pathlib import Path
    folder = Path(folder)
    stored = sum(p.stat().st_size for p in folder.glob("*") if p.suffix in (".safetensors", ".bin"))
    config = json.loads((folder / "config.json").read_text())
    stored_dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    stored_bytes = 2 if ("16" in stored_dtype) else 4
    return stored * dtype_bytes / stored_bytes


def caption_bytes_per_image(config: dict, new_tokens: int, beams: int, dtype_bytes: int) -> float:
    """The language model's KV cache for one image (query tokens + prompt + new tokens), with overhead."""
    text = config.get("text_config", {})
    layers = text.get("num_hidden_layers", 32)
    hidden = text.get("hidden_size", 2560)
    tokens = config.get("num_query_tokens", 32) + 1 + new_tokens
    return 2 * layers * hidden * tokens * dtype_bytes * beams * KV_OVERHEAD


def auto_batch_size(total_bytes: float, weight_bytes: float, per_image_bytes: float) -> int:
    """The largest power of two whose captioning fits the budget, between 1 and MAX_AUTO_BATCH."""
    room = total_bytes * MEMORY_BUDGET - weight_bytes - OTHER_MODELS_BYTES
    fits = max(1, int(room // per_image_bytes)) if room > 0 else 1
    return min(MAX_AUTO_BATCH, 1 << (fits.bit_length() - 1))
