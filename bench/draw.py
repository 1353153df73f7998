"""draw's speed: optimisation steps per second at one size, and the arithmetic of one step (for a GPU).

    python bench/draw.py                         # 256x256, 30 crops, demo CLIP; the demo VQGAN and taming's f16 layout
    python bench/draw.py --clip ViT-B-32 --steps 2   # a real CLIP's crops (random weights)

Times ``--steps`` steps (after one untimed) of one prompt through the same Drawer the command uses, with the
demo CLIP and two random VQGANs: the demo's miniature and vqgan_imagenet_f16_16384's full layout (ch 128,
ch_mult 1 1 2 2 4, 16,384 codes). Counts the floating-point operations of one step (forward and backward)
with torch.utils.flop_counter, the number that carries over to a GPU (see docs/benchmarks.md).
Writes bench/results/draw-<clip>-<W>x<H>-cpu.json and .md.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import torch  # noqa: E402

from interrogator.core.config import load_config  # noqa: E402
from interrogator.models.demo import make_demo_models  # noqa: E402
from interrogator.draw.miniature import REAL_LAYOUT, TINY_LAYOUT, random_vqgan  # noqa: E402
from interrogator.draw.optimize import Drawer  # noqa: E402
from interrogator.draw.prompts import Settings, make_jobs  # noqa: E402
from interrogator.models.clip import load_config_clip  # noqa: E402
from report import header, write_report  # noqa: E402


def step_flops(drawer: Drawer, jobs) -> tuple:
    """Floating-point operations of one step (the loss's forward and its backward), and of its VQGAN part (the
    decode and its backward); the rest is CLIP on the crops."""
    from torch.utils.flop_counter import FlopCounterMode
    features, weights = drawer.texts(jobs)
    generators = [torch.Generator().manual_seed(0) for _ in jobs]
    z = drawer.start(generators).requires_grad_(True)
    with FlopCounterMode(display=False) as step:
        drawer.losses(z, z.detach(), features, weights, generators).sum().backward()
    with FlopCounterMode(display=False) as decode:
        drawer.synth(z).sum().backward()
    return step.get_total_flops(), decode.get_total_flops()


def measure(clip, layout, size, crops: int, steps: int) -> dict:
    vqgan = random_vqgan(layout).requires_grad_(False)
    warm = Settings(width=size[0], height=size[1], steps=1, crops=crops)
    drawer = Drawer(clip, vqgan, warm, "cpu", progress=False)
    jobs = make_jobs(["a castle on a hill|oil painting:0.5"], warm)
    drawer.draw(jobs)  # untimed
    drawer.settings = dataclasses.replace(warm, steps=steps)
    start = time.perf_counter()
    drawer.draw(jobs)
    seconds = time.perf_counter() - start
    total, decode = step_flops(drawer, jobs)
    return {"steps per second": round(steps / seconds, 3), "seconds per step": round(seconds / steps, 3),
            "GFLOP per step": round(total / 1e9, 1), "of which the VQGAN decode and its backward": round(decode / 1e9, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[256, 256])
    parser.add_argument("--crops", type=int, default=30)
    parser.add_argument("--steps", type=int, default=5, help="timed steps for the demo VQGAN (the full layout: 2)")
    parser.add_argument("--clip", default="demo", help="demo, or an open_clip architecture built with random weights")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-draw-"))
    name, path = "demo-tiny-clip", make_demo_models(work).clip_path
    if args.clip != "demo":
        from modes import random_clip
        name, path = args.clip, random_clip(args.clip, work)
    clip = load_config_clip(load_config(None, clip_model=name, clip_path=str(path), device="cpu"))
    result = {**header("cpu", "draw.py"), "size": f"{args.size[0]}x{args.size[1]}", "crops": args.crops,
              "CLIP": name if args.clip == "demo" else f"{name} (random weights)"}
    for name, layout, steps in (("demo VQGAN", TINY_LAYOUT, args.steps), ("f16_16384 layout", REAL_LAYOUT, 2)):
        for key, value in measure(clip, layout, args.size, args.crops, steps).items():
            result[f"{name}: {key}"] = value
    write_report(result, args.out, f"draw-{args.clip}-{args.size[0]}x{args.size[1]}-cpu")


if __name__ == "__main__":
    main()
