"""Choosing the caption batch size from the GPU's memory."""
from __future__ import annotations

import json
from pathlib import Path

MAX_AUTO_BATCH = 1024
MEMORY_BUDGET = 0.85        # share of the card the run may plan to use
OTHER_MODELS_BYTES = 2.5e9  # CLIP ViT-L-14 + MiniLM + label tables + workspace, fp16
VLM_IMAGE_TOKENS = 1280     # image and prompt tokens planned per image for a VLM (Qwen2-VL at about 1000x1000 px)
KV_OVERHEAD = 1.3           # KV cache growth, logits and vision activations on top of the KV cache


def captioner_weight_bytes(folder: str, dtype_bytes: int) -> float:
    """Weights as loaded: the checkpoint files' size, rescaled from their stored dtype."""
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
    if config.get("model_type") in ("blip-2", "blip"):
        tokens = config.get("num_query_tokens", 32) + 1 + new_tokens
    else:  # a VLM's image tokens depend on the image and the processor: plan for many
        tokens = VLM_IMAGE_TOKENS + new_tokens
    return 2 * layers * hidden * tokens * dtype_bytes * beams * KV_OVERHEAD


def auto_batch_size(total_bytes: float, weight_bytes: float, per_image_bytes: float) -> int:
    """The largest power of two whose captioning fits the budget, between 1 and MAX_AUTO_BATCH."""
    room = total_bytes * MEMORY_BUDGET - weight_bytes - OTHER_MODELS_BYTES
    fits = max(1, int(room // per_image_bytes)) if room > 0 else 1
    return min(MAX_AUTO_BATCH, 1 << (fits.bit_length() - 1))
