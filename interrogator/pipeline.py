"""The pipeline: images -> captions -> CLIP features -> label ranking -> prompts -> embeddings -> submission."""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .caption import load_captioner
from .clip import load_clip
from .config import Config
from .embed import embed_prompts, load_sentence_model
from .images import ImageDataset, ImageFile, batch_loader, list_images
from .labels import LabelCache, load_tables
from .prompt import build_prompt
from .submission import write_submission

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run produced, in imgId order."""

    image_ids: List[str]
    captions: List[str]
    prompts: List[str]
    embeddings: np.ndarray
    failed: Dict[str, str] = field(default_factory=dict)
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    label_cache_hits: Dict[str, bool] = field(default_factory=dict)
    output: Optional[Path] = None

    def summary(self) -> str:
        n = len(self.image_ids)
        total = sum(self.stage_seconds.values())
        lines = [f"images: {n} done, {len(self.failed)} undecodable (fallback prompt)"]
        lines += [f"  undecodable: {i}: {why}" for i, why in sorted(self.failed.items())]
        lines.append("seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in self.stage_seconds.items())
                     + f" (total {total:.2f}, {n / total if total else 0:.1f} img/s)")
        lines.append("label tables: " + ", ".join(f"{k} {'cache hit' if hit else 'encoded'}"
                                                  for k, hit in self.label_cache_hits.items()))
        if self.output is not None:
            lines.append(f"submission: {self.output}")
        return "\n".join(lines)


class StageTimer:
    """Wall seconds per stage; CUDA work is synchronised at each stage's end so time lands where it belongs."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def shard_files(files: List[ImageFile], shard: Tuple[int, int], batch_size: int) -> List[ImageFile]:
    """Shard i of n: a contiguous run of whole batches, so each batch is the one a single run would make."""
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"shard must be i/N with 0 <= i < N, got {index}/{count}")
    batches = math.ceil(len(files) / batch_size)
    lo, hi = index * batches // count, (index + 1) * batches // count
    return files[lo * batch_size:hi * batch_size]


def check_inputs(config: Config) -> None:
    """Every path the run needs, before any model loads."""
    config.require_paths("data_path", "blip_path", "clip_path", "embedding_path", "dicts")
    if config.embedding_dir is not None:
        config.require_paths("embedding_dir")


def run(config: Config, shard: Optional[Tuple[int, int]] = None, progress: bool = True,
        write: bool = True) -> RunResult:
    """Run the whole pipeline on config.data_path and (if write) write the submission to config.output."""
    if config.demo:
        from .demo import ensure_demo_models
        ensure_demo_models(config)
    check_inputs(config)
    batch_size = config.stage_batch_size("caption")
    files = list_images(config.data_path)
    if shard is not None:
        files = shard_files(files, shard, batch_size)
    device, dtype = config.resolved_device(), config.torch_dtype()
    timer = StageTimer(device)

    with timer("load"):
        captioner = load_captioner(config.blip_path, device, dtype, config.load_in_8bit,
                                   config.max_new_tokens, config.min_new_tokens, config.num_beams)
        clip = load_clip(config.clip_model, config.clip_path, device, dtype)
        sentence = load_sentence_model(config.embedding_path, device, config.embedding_dir,
                                       fp16=dtype == torch.float16)
    with timer("labels"):
        tables = load_tables(clip, config.dicts, LabelCache(config.label_cache),
                             progress_factory=_bar_factory(progress))

    n = len(files)
    captions: List[str] = [""] * n
    prompts: List[str] = [""] * n
    embeddings = np.zeros((n, 0), dtype=np.float32)
    failed: Dict[str, str] = {}
    dataset = ImageDataset(files, captioner.transform, clip.preprocess)
    loader = batch_loader(dataset, batch_size, config.num_workers, pin_memory=device.startswith("cuda"))
    bars = {stage: tqdm(total=n, desc=stage, unit="img", position=i, disable=not progress, leave=True)
            for i, stage in enumerate(("caption", "tags", "embed"))}
    batches = iter(loader)
    while True:
        with timer("decode"):
            batch = next(batches, None)
        if batch is None:
            break
        ok = batch.ok
        with timer("caption"):
            batch_captions = captioner.caption(batch.caption_pixels[ok])
        bars["caption"].update(len(batch.indices))
        with timer("clip"):
            features = clip.encode_images(batch.clip_pixels[ok], config.stage_batch_size("clip"))
        with timer("rank"):
            mediums = tables["mediums"].top(features, 1, config.chunk_size)
            movements = tables["movements"].top(features, 1, config.chunk_size)
            flavors = tables["flavors"].top(features, config.max_flavors, config.chunk_size)
        bars["tags"].update(len(batch.indices))
        with timer("prompt"):
            batch_prompts = [build_prompt(c, m[0], v[0], f, clip.count_tokens, clip.context_length)
                             for c, m, v, f in zip(batch_captions, mediums, movements, flavors)]
            for pos, caption, prompt in zip(ok, batch_captions, batch_prompts):
                captions[batch.indices[pos]], prompts[batch.indices[pos]] = caption, prompt
            for pos, error in enumerate(batch.errors):
                if error:
                    image = files[batch.indices[pos]]
                    log.warning("%s: %s; using the fallback prompt", image.path.name, error)
                    failed[image.image_id] = error
                    prompts[batch.indices[pos]] = config.fallback_prompt
        with timer("embed"):
            vectors = embed_prompts(sentence, [prompts[i] for i in batch.indices], config.stage_batch_size("embed"))
            if embeddings.shape[1] == 0:
                embeddings = np.zeros((n, vectors.shape[1]), dtype=np.float32)
            embeddings[batch.indices] = vectors
        bars["embed"].update(len(batch.indices))
    for bar in bars.values():
        bar.close()

    ids = [f.image_id for f in files]
    result = RunResult(ids, captions, prompts, embeddings, failed, timer.seconds,
                       {name: t.from_cache for name, t in tables.items()})
    if write:
        with timer("write"):
            result.output = write_submission(ids, embeddings, config.output)
        result.stage_seconds = timer.seconds
    return result


def _bar_factory(enabled: bool):
    def make(name: str, total: int):
        return tqdm(total=total, desc=f"encode {name}", unit="label", disable=not enabled)
    return make
