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

Where clip-interrogator 0.6.0 is importable (an optional benchmark dependency: ``pip install --no-deps
clip-interrogator==0.6.0``), the same ``best`` and ``negative`` jobs run through it in the same run, on the same
CLIP weights, label lists and captions, one image at a time as it runs (its label tables filled before timing, as
its cache download fills them).
Writes bench/results/modes-<clip>-cpu.json and .md.
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

import interrogator.runner.modes as modes  # noqa: E402
from interrogator.core.config import load_config, replace  # noqa: E402
from interrogator.models.demo import make_demo_models  # noqa: E402
from interrogator.runner.pipeline import run  # noqa: E402
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


def reference(base):
    """clip-interrogator 0.6.0 on the config's CLIP, label lists and device, or None where it is not installed."""
    try:
        from clip_interrogator import Config as CiConfig, Interrogator
    except ImportError:
        return None
    import clip_interrogator.clip_interrogator as ci_module
    import numpy as np
    from interrogator.models.clip import load_config_clip
    clip = load_config_clip(base)

    def from_cache(table, desc, digest, name):
        """Its label tables as its cache download gives them (fp16 embeddings of its own label lists), encoded
        here with this project's exact encoder instead of its 77-token batches (which take an hour at ViT-B-32
        size on this CPU and are not timed either way)."""
        table.embeds = list(clip.encode_labels(list(table.labels)).float().cpu().numpy().astype(np.float16))
        return True
    ci_module.LabelTable._load_cached = from_cache
    config = CiConfig(caption_model_name=None, clip_model_name=f"{clip.name}/local", cache_path=None,
                      download_cache=False, data_path=str(base.dicts), device="cpu", quiet=True,
                      flavor_intermediate_count=base.intermediate_count)
    config.clip_model, config.clip_preprocess = clip.model, clip.preprocess
    return Interrogator(config)


def measure_reference(ci, base, mode: str, captions) -> dict:
    """Seconds per image of clip-interrogator's ``interrogate`` (best) or ``interrogate_negative``."""
    from PIL import Image
    images = sorted(Path(base.data_path).glob("*.png"))
    prompts, start = [], time.perf_counter()
    for path, caption in zip(images, captions):
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        if mode == "best":
            prompts.append(ci.interrogate(rgb, max_flavors=base.max_flavors, caption=caption))
        else:
            prompts.append(ci.interrogate_negative(rgb, max_flavors=base.max_flavors))
    return {"ms": 1000 * (time.perf_counter() - start) / len(images), "prompts": prompts}


def measure(base, mode: str, work: Path, cache: bool) -> dict:
    modes.PREFIX_CACHE = cache
    Counted.totals.update(texts=0, positions=0)
    # the base's max_flavors in every mode, as clip-interrogator is called with it (a mode's own default aside)
    out = run(replace(base, mode=mode, max_flavors=base.max_flavors, output=str(work / f"{mode}-{cache}.csv")),
              progress=False)
    n = len(out.image_ids)
    return {"ms": 1000 * out.stage_seconds.get("chain", 0.0) / n, "texts": Counted.totals["texts"] / n,
            "positions": Counted.totals["positions"] / n, "prompts": out.prompts,
            "captions": out.captions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="demo", help="demo, or an open_clip architecture built with random weights")
    parser.add_argument("--modes", default=",".join(modes.MODES))
    parser.add_argument("--images", type=int, default=14)
    parser.add_argument("--flavors", type=int, default=0, help="first N flavors (0: all)")
    parser.add_argument("--max-flavors", type=int, default=32)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--no-reference", action="store_true", help="skip clip-interrogator even where installed")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-modes-"))
    original = modes.Texts
    modes.Texts = Counted
    try:
        base = setup(args, work)
        result = {**header("cpu", "modes.py"), "clip": args.clip, "images": args.images,
                  "max_flavors": args.max_flavors, "intermediate_count": args.intermediate}
        chosen, chains = args.modes.split(","), {}
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
                chains[mode] = on
        ci = None if args.no_reference or not chains else reference(base)
        result["clip-interrogator 0.6.0"] = "not installed" if ci is None else "same run, same CLIP and captions"
        for mode, on in chains.items() if ci is not None else ():
            theirs = measure_reference(ci, base, mode, on["captions"])
            result[f"{mode}: clip-interrogator 0.6.0 ms per image"] = round(theirs["ms"], 1)
            result[f"{mode}: faster than clip-interrogator by"] = round(theirs["ms"] / max(on["ms"], 1e-9), 2)
            same = sum(a == b for a, b in zip(on["prompts"], theirs["prompts"]))
            result[f"{mode}: prompts identical to clip-interrogator's"] = f"{same} of {len(theirs['prompts'])}"
    finally:
        modes.Texts = original
        shutil.rmtree(work, ignore_errors=True)
    write_report(result, args.out, f"modes-{args.clip}-cpu")


if __name__ == "__main__":
    main()
