"""Cost of each interrogation mode per image: the tag stage's seconds, the texts CLIP encodes and the text-tower
token positions it computes, in one run; for ``best`` and ``negative`` with the prefix cache on and off.

    python bench/modes.py                                   # demo models, the full label lists, 14 images, CPU
    python bench/modes.py --clip ViT-B-32 --images 2 --modes best,negative    # a real text tower, random weights
    python bench/modes.py --images 7 --flavors 3000 --intermediate 64        # a quick check

Runs the pipeline (captions, CLIP, the mode, embeddings) on the sample images with the label lists (labels
cached before timing) and reports, per image: the tag stage's seconds (CLIP image features, ranking and the
mode's own text encoding), the texts the mode encoded and the token positions the text tower computed. The
chain modes run twice on the same captions, with the prefix cache (modes.PREFIX_CACHE) on and off, and the
ratios are taken in this one run. Positions, not CPU seconds, carry over to a GPU: see docs/benchmarks.md.
Writes bench/results/modes-<clip>-cpu.json and .md.
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

import interrogator.modes as modes  # noqa: E402
from interrogator.config import load_config, replace  # noqa: E402
from interrogator.demo import make_demo_models  # noqa: E402
from interrogator.pipeline import run  # noqa: E402
from report import header, write_report  # noqa: E402

CHAINS = ("best", "negative")


class Counted(modes.Texts):
    """modes.Texts that adds what it encodes to the bench's totals."""

    totals = {"texts": 0, "positions": 0}

    def features(self, texts):
        Counted.totals["texts"] += len(texts)
        before = self.positions
        out = super().features(texts)
        Counted.totals["positions"] += self.positions - before
        return out

    def candidate_features(self, groups):
        if not self.prefix_cache:
            return super().candidate_features(groups)  # counted in features()
        Counted.totals["texts"] += sum(len(g) for g in groups)
        before = self.positions
        out = super().candidate_features(groups)
        Counted.totals["positions"] += self.positions - before
        return out


def random_clip(arch: str, folder: Path) -> Path:
    """open_clip ``arch`` with random weights, saved as safetensors (no download)."""
    import open_clip
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None)
    path = folder / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def setup(args, work: Path):
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
    clip_model, clip_path = "demo-tiny-clip", models.clip_path
    if args.clip != "demo":
        clip_model, clip_path = args.clip, random_clip(args.clip, work)
    (work / "c.json").write_text(json.dumps({
        "blip_path": str(models.blip_path), "clip_model": clip_model, "clip_path": str(clip_path),
        "embedding_path": str(models.embedding_path), "dicts": str(dicts), "data_path": str(images),
        "label_cache": str(work / "cache"), "batch_size": 7, "max_new_tokens": 6, "device": "cpu",
        "num_workers": 0, "max_flavors": args.max_flavors, "intermediate_count": args.intermediate}))
    return load_config(work / "c.json")


def measure(base, mode: str, work: Path, cache: bool) -> dict:
    modes.PREFIX_CACHE = cache
    Counted.totals.update(texts=0, positions=0)
    out = run(replace(base, mode=mode, output=str(work / f"{mode}-{cache}.csv")), progress=False)
    n = len(out.image_ids)
    return {"ms": 1000 * out.stage_seconds.get("tags", 0.0) / n, "texts": Counted.totals["texts"] / n,
            "positions": Counted.totals["positions"] / n, "prompts": out.prompts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="demo", help="demo, or an open_clip architecture built with random weights")
    parser.add_argument("--modes", default=",".join(modes.MODES))
    parser.add_argument("--images", type=int, default=14)
    parser.add_argument("--flavors", type=int, default=0, help="first N flavors (0: all)")
    parser.add_argument("--max-flavors", type=int, default=32)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-modes-"))
    original = modes.Texts
    modes.Texts = Counted
    try:
        base = setup(args, work)
        result = {**header("cpu", "modes.py"), "clip": args.clip, "images": args.images,
                  "max_flavors": args.max_flavors, "intermediate_count": args.intermediate}
        chosen = args.modes.split(",")
        for mode in chosen:  # the label cache is filled (and captions made) outside the timed runs
            run(replace(base, mode=mode, output=str(work / f"warm-{mode}.csv")), progress=False)
        for mode in chosen:
            runs = {cache: measure(base, mode, work, cache) for cache in ((True, False) if mode in CHAINS else (True,))}
            on = runs[True]
            result[f"{mode}: tag stage ms per image"] = round(on["ms"], 1)
            result[f"{mode}: texts encoded per image"] = round(on["texts"])
            result[f"{mode}: token positions per image"] = round(on["positions"])
            if mode in CHAINS:
                off = runs[False]
                result[f"{mode}: without the prefix cache, tag stage ms per image"] = round(off["ms"], 1)
                result[f"{mode}: without the prefix cache, token positions per image"] = round(off["positions"])
                result[f"{mode}: token positions, fewer by"] = round(off["positions"] / max(on["positions"], 1), 2)
                result[f"{mode}: tag stage, faster by"] = round(off["ms"] / max(on["ms"], 1e-9), 2)
                result[f"{mode}: prompts identical with and without"] = on["prompts"] == off["prompts"]
    finally:
        modes.Texts = original
        shutil.rmtree(work, ignore_errors=True)
    write_report(result, args.out, f"modes-{args.clip}-cpu")


if __name__ == "__main__":
    main()
