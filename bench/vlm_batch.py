"""The batch speed-up of the VLM captioners: one ``generate`` per batch against one per image, in one run.

    python bench/vlm_batch.py                         # every miniature family, 32 images, batch 16, CPU
    python bench/vlm_batch.py --kinds qwen2_vl --images 64 --batch 32

Builds the miniature captioners (models/miniatures.py: the real classes and processors, random weights),
captions the sample images (repeated to ``--images``) batched and one at a time with the same greedy settings,
checks the answers are identical, and reports images per second of each and their ratio. The models are tiny,
so the ratio shows what batching saves in per-call overhead (processor, generate's set-up, small matrix
products), not a GPU's figure. Writes bench/results/vlm-batch-cpu.json and .md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from interrogator.core.config import load_config  # noqa: E402
from interrogator.models.caption import load_captioner  # noqa: E402
from interrogator.models.miniatures import BUILDERS, build_captioner  # noqa: E402
from report import header, write_report  # noqa: E402


def sample_images(count: int):
    pictures = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((REPO / "samples").glob("*.png"))]
    return [pictures[i % len(pictures)] for i in range(count)]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def measure(kind: str, folder: Path, images, batch: int, new_tokens: int) -> dict:
    settings = load_config(None, blip_path=str(build_captioner(kind, folder)), max_new_tokens=new_tokens,
                           min_new_tokens=new_tokens).captioning
    captioner = load_captioner(settings, "cpu", torch.float32)
    captioner.caption(images[:2])  # warm-up
    batched, batched_s = timed(lambda: [c for i in range(0, len(images), batch)
                                        for c in captioner.caption(images[i:i + batch])])
    alone, alone_s = timed(lambda: [captioner.caption([image])[0] for image in images])
    if batched != alone:
        raise SystemExit(f"{kind}: batched answers differ from one-at-a-time answers")
    return {"batched img/s": round(len(images) / batched_s, 1), "one at a time img/s": round(len(images) / alone_s, 1),
            "speed-up": round(alone_s / batched_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(BUILDERS), help="families, comma-separated")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    images = sample_images(args.images)
    result = header("cpu", "vlm_batch.py")
    result.update({"images": args.images, "batch": args.batch, "new tokens": args.new_tokens})
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            for name, value in measure(kind, Path(tmp) / kind, images, args.batch, args.new_tokens).items():
                result[f"{kind} {name}"] = value
    write_report(result, args.out, "vlm-batch-cpu")


if __name__ == "__main__":
    main()
