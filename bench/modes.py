"""Cost of each interrogation mode per image: the tag stage's seconds and the texts CLIP encodes, in one run.

    python bench/modes.py                 # demo models, the full label lists, 14 images, CPU
    python bench/modes.py --images 7 --flavors 3000 --intermediate 64   # a quick check

Runs the pipeline (captions, CLIP, the mode, embeddings) in every mode on the sample images with the full
label lists (labels cached before timing) and reports, per image: the tag stage's seconds (CLIP image
features, ranking and the mode's own text encoding) and how many texts the mode encoded (the chain's
candidates). The text count, not the CPU time, is what carries over to a GPU: see docs/benchmarks.md.
Writes bench/results/modes-cpu.json and .md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from interrogator.clip import Clip  # noqa: E402
from interrogator.config import load_config, replace  # noqa: E402
from interrogator.demo import make_demo_models  # noqa: E402
from interrogator.modes import MODES  # noqa: E402
from interrogator.pipeline import run  # noqa: E402
from report import header, write_report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=14)
    parser.add_argument("--flavors", type=int, default=0, help="first N flavors (0: all)")
    parser.add_argument("--max-flavors", type=int, default=32)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-modes-"))
    counted = []
    original = Clip.encode_labels

    def counting(self, labels, *a, **k):
        counted.append(len(labels))
        return original(self, labels, *a, **k)
    Clip.encode_labels = counting
    try:
        models = make_demo_models(work / "models")
        dicts = work / "dicts"
        shutil.copytree(REPO / "dicts", dicts)
        if args.flavors:
            lines = (dicts / "flavors.txt").read_text(encoding="utf-8").splitlines()[:args.flavors]
            (dicts / "flavors.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        images = work / "images"
        images.mkdir()
        samples = sorted((REPO / "samples").glob("*.png"))
        for i in range(args.images):
            shutil.copy(samples[i % len(samples)], images / f"{i:04d}.png")
        (work / "c.json").write_text(json.dumps({
            "blip_path": str(models.blip_path), "clip_model": "demo-tiny-clip", "clip_path": str(models.clip_path),
            "embedding_path": str(models.embedding_path), "dicts": str(dicts), "data_path": str(images),
            "label_cache": str(work / "cache"), "batch_size": 7, "max_new_tokens": 6, "device": "cpu",
            "num_workers": 0, "max_flavors": args.max_flavors, "intermediate_count": args.intermediate}))
        base = load_config(work / "c.json")
        result = {**header("cpu", "modes.py"), "images": args.images, "max_flavors": args.max_flavors,
                  "intermediate_count": args.intermediate}
        for mode in MODES:  # the label cache is filled outside the timed runs
            run(replace(base, mode=mode, output=str(work / f"warm-{mode}.csv")), progress=False)
        for mode in MODES:
            counted.clear()
            out = run(replace(base, mode=mode, output=str(work / f"{mode}.csv")), progress=False)
            n = len(out.image_ids)
            result[f"{mode}: tag stage ms per image"] = round(1000 * out.stage_seconds.get("tags", 0.0) / n, 1)
            result[f"{mode}: texts encoded per image"] = round(sum(counted) / n)
    finally:
        Clip.encode_labels = original
        shutil.rmtree(work, ignore_errors=True)
    write_report(result, args.out, "modes-cpu")


if __name__ == "__main__":
    main()
