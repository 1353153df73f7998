"""Ray engine scaling on this machine: the demo pipeline on generated images, single-machine run against
Ray Data with 1 and 2 CPU actors, in one run.

    python bench/ray_scaling.py                       # 1,024 generated 256x256 PNGs, batch 16
    python bench/ray_scaling.py --images 200 --size 64   # a quick check

The images are generated (smooth random colour fields, PNG), so decoding costs what real files cost. Each
run starts from an empty output (no resume); the Ray runs share one local cluster started before timing.
Reports img/s of each and the ratio to the single-machine run. Writes bench/results/ray-scaling.json and .md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from interrogator.engines.ray_engine import connect, run_ray  # noqa: E402  (sets Ray's environment first)
from interrogator.core.config import load_config, replace  # noqa: E402
from interrogator.models.demo import make_demo_models  # noqa: E402
from interrogator.runner.pipeline import run  # noqa: E402
from report import header, write_report  # noqa: E402


def generate(folder: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC).save(folder / f"{i:07d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--flavors", type=int, default=3000)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        models = make_demo_models(work / "models")
        dicts = work / "dicts"
        dicts.mkdir()
        for name in ("mediums", "movements", "flavors"):
            lines = (REPO / "dicts" / f"{name}.txt").read_text(encoding="utf-8").splitlines()
            (dicts / f"{name}.txt").write_text("\n".join(lines[:args.flavors]) + "\n", encoding="utf-8")
        generate(work / "images", args.images, args.size)
        (work / "config.json").write_text(json.dumps({
            "blip_path": str(models.blip_path), "clip_model": "demo-tiny-clip", "clip_path": str(models.clip_path),
            "embedding_path": str(models.embedding_path), "dicts": str(dicts), "data_path": str(work / "images"),
            "label_cache": str(work / "cache"), "batch_size": args.batch_size, "max_new_tokens": 6,
            "device": "cpu", "num_workers": 1}))
        config = load_config(work / "config.json")
        result = {**header("cpu", "ray_scaling.py"), "images": args.images, "image_size": args.size,
                  "batch": args.batch_size}
        run(replace(config, output=str(work / "warm.csv")), progress=False)  # label cache filled, files cached
        start = time.perf_counter()
        run(replace(config, output=str(work / "single.csv")), progress=False)
        single = args.images / (time.perf_counter() - start)
        result["single_machine_img_s"] = round(single, 2)
        connect(num_cpus=2, object_store_memory=300 * 1024 ** 2)
        for actors in (1, 2):
            start = time.perf_counter()
            out = work / f"ray{actors}.csv"
            run_ray(config, str(work / f"pq{actors}"), csv=str(out), actors=actors, progress=False)
            rate = args.images / (time.perf_counter() - start)
            result[f"ray_{actors}_actor_img_s"] = round(rate, 2)
            result[f"ray_{actors}_actor_vs_single"] = round(rate / single, 2)
            result[f"ray_{actors}_actor_csv_identical"] = out.read_bytes() == (work / "single.csv").read_bytes()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_report(result, args.out, "ray-scaling")


if __name__ == "__main__":
    main()
