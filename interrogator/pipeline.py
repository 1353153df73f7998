"""The pipeline: images -> captions -> CLIP features -> label ranking -> prompts -> embeddings -> submission."""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .caption import check_captioner_folder
from .config import Config
from .errors import ConfigError, InterrogatorError
from .images import ImageDataset, ImageFile, batch_loader, list_images
from .memory import StageBatcher
from .stages import (SUBMISSION_DIM, Models, batch_record, caption_stage, embed_stage, load_captioner_stage,
                     load_clip_stage, load_sentence, prompt_stage, tag_stage)
from .submission import write_submission
from .workdir import WorkDir, run_key

log = logging.getLogger(__name__)

LOADER_HINT_SHARE = 0.2  # the summary suggests more loader workers when decoding waits exceed this share
LOADER_HINT_MIN_SECONDS = 10.0


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
    resumed_batches: int = 0
    peak_gpu_bytes: Optional[int] = None
    loader_workers: Optional[int] = None
    output: Optional[Path] = None

    def summary(self) -> str:
        n = len(self.image_ids)
        total = sum(self.stage_seconds.values())
        lines = [f"images: {n} done, {len(self.failed)} undecodable (fallback prompt)"]
        lines += [f"  undecodable: {i}: {why}" for i, why in sorted(self.failed.items())]
        if self.resumed_batches:
            lines.append(f"resumed: {self.resumed_batches} finished batches reused from the work folder")
        lines.append("seconds per stage: " + ", ".join(f"{k} {v:.2f}" for k, v in self.stage_seconds.items())
                     + f" (total {total:.2f}, {n / total if total else 0:.1f} img/s)")
        waited = self.stage_seconds.get("decode", 0.0)
        if total >= LOADER_HINT_MIN_SECONDS and waited > LOADER_HINT_SHARE * total:
            lines.append(f"the models waited {waited:.1f} s ({waited / total:.0%}) for image decoding "
                         f"({self.loader_workers} workers): more num_workers helps if cores are idle")
        if self.label_cache_hits:
            lines.append("label tables: " + ", ".join(f"{k} {'cache hit' if hit else 'encoded'}"
                                                      for k, hit in self.label_cache_hits.items()))
        if self.peak_gpu_bytes is not None:
            lines.append(f"peak GPU memory: {self.peak_gpu_bytes / 1e9:.2f} GB")
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


@dataclass
class RunState:
    """What every phase of one run shares: the images, their batches, and where finished work goes."""

    config: Config
    files: List[ImageFile]
    batches: List[List[int]]
    work: Optional[WorkDir]
    timer: StageTimer
    batcher: StageBatcher
    progress: bool
    done: Dict[int, tuple] = field(default_factory=dict)  # batch number -> (record, embeddings)

    def ids(self, b: int) -> List[str]:
        return [self.files[i].image_id for i in self.batches[b]]

    def images(self, batch_numbers) -> int:
        return sum(len(self.batches[b]) for b in batch_numbers)

    def loader(self, batch_numbers, caption_transform, clip_transform):
        dataset = ImageDataset(self.files, caption_transform, clip_transform)
        loader = batch_loader(dataset, [self.batches[b] for b in batch_numbers], self.config.loader_workers(),
                              pin_memory=self.config.resolved_device().startswith("cuda"))
        iterator = iter(loader)
        while True:
            with self.timer("decode"):
                batch = next(iterator, None)
            if batch is None:
                return
            yield batch

    def finish(self, b: int, record: dict, vectors: np.ndarray) -> None:
        self.done[b] = (record, vectors)
        if self.work is not None:
            self.work.save_done(b, record, vectors)


def shard_files(files: List[ImageFile], shard: Tuple[int, int], batch_size: int) -> List[ImageFile]:
    """Shard i of n: a contiguous run of whole batches, so each batch is the one a single run would make."""
    index, count = shard
    if not (count >= 1 and 0 <= index < count):
        raise ConfigError(f"shard must be i/N with 0 <= i < N, got {index}/{count}")
    batches = math.ceil(len(files) / batch_size)
    lo, hi = index * batches // count, (index + 1) * batches // count
    return files[lo * batch_size:hi * batch_size]


def check_output_writable(output: str) -> None:
    folder = Path(output).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"config key 'output': cannot write in folder {folder}: "
                          f"{exc.strerror or exc}") from None


def check_inputs(config: Config, write: bool) -> List[ImageFile]:
    """Everything that can be checked before a model loads; returns the images."""
    if config.demo:
        from .demo import ensure_demo_models
        ensure_demo_models(config)
    config.require_paths("data_path", "blip_path", "clip_path", "embedding_path", "dicts")
    if config.embedding_dir is not None:
        config.require_paths("embedding_dir")
    check_captioner_folder(config.blip_path)
    for name in ("mediums", "movements", "flavors"):
        if not (Path(config.dicts) / f"{name}.txt").is_file():
            raise ConfigError(f"config key 'dicts': missing label file {Path(config.dicts) / (name + '.txt')}")
    if write:
        check_output_writable(config.output)
    return list_images(config.data_path)


def run(config: Config, shard: Optional[Tuple[int, int]] = None, progress: bool = True,
        write: bool = True, strict: bool = False, models: Optional[Models] = None) -> RunResult:
    """Run the pipeline on config.data_path; with write, validate and write config.output, resuming
    from the work folder next to it if an earlier run of the same config and images was interrupted.

    models: already loaded models to use instead of loading them from the config's paths
    (to reuse them across runs, or for benchmarks); low_memory does not apply to them.
    """
    if models is None:
        files = check_inputs(config, write)
    else:
        files = list_images(config.data_path)
        if write:
            check_output_writable(config.output)
    batch_size = config.stage_batch_size("caption")
    if shard is not None:
        files = shard_files(files, shard, batch_size)
    ids = [f.image_id for f in files]
    batches = [list(range(i, min(i + batch_size, len(files)))) for i in range(0, len(files), batch_size)]
    work = WorkDir(config.output, run_key(config.to_dict(), files, batch_size)) if write else None
    device = config.resolved_device()
    timer = StageTimer(device)
    batcher = StageBatcher({s: config.stage_batch_size(s) for s in ("caption", "clip", "embed")})
    state = RunState(config, files, batches, work, timer, batcher, progress,
                     work.finished(batches, ids) if work is not None else {})
    pending = [b for b in range(len(batches)) if b not in state.done]
    cache_hits = {}
    if pending and models is not None:
        cache_hits = _run_batches(state, models, pending)
    elif pending:
        cache_hits = (_run_low_memory if config.low_memory else _run_together)(state, pending)

    result = _assemble(ids, batches, state.done)
    result.stage_seconds, result.label_cache_hits = timer.seconds, cache_hits
    result.loader_workers = config.loader_workers()
    result.resumed_batches = len(batches) - len(pending)
    result.peak_gpu_bytes = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    if strict and result.failed:
        names = ", ".join(f"{i} ({why})" for i, why in sorted(result.failed.items()))
        raise InterrogatorError(f"--strict: {len(result.failed)} images could not be decoded: {names}")
    if write:
        with timer("write"):
            result.output = write_submission(ids, result.embeddings, config.output)
        work.remove()
    return result


def _assemble(ids: List[str], batches: List[List[int]], done: Dict[int, tuple]) -> RunResult:
    """Per-image results in imgId order from the finished batch records."""
    captions, prompts = [""] * len(ids), [""] * len(ids)
    embeddings = np.zeros((len(ids), SUBMISSION_DIM), dtype=np.float32)
    failed: Dict[str, str] = {}
    for b, members in enumerate(batches):
        record, vectors = done[b]
        for pos, i in enumerate(members):
            captions[i], prompts[i] = record["captions"][pos], record["prompts"][pos]
        embeddings[members] = vectors
        failed.update(record["failed"])
    return RunResult(ids, captions, prompts, embeddings, failed)


def _run_together(state: RunState, pending: List[int]) -> Dict[str, bool]:
    """All models resident; each batch goes through every stage."""
    models, config = Models(), state.config
    with state.timer("load"):
        models.sentence = load_sentence(config)
        models.captioner = load_captioner_stage(config)
    with state.timer("labels"):
        models.clip, models.tables = load_clip_stage(config, state.progress)
    return _run_batches(state, models, pending)


def _run_batches(state: RunState, models: Models, pending: List[int]) -> Dict[str, bool]:
    """Each pending batch through every stage, with all models resident."""
    config, timer, batcher = state.config, state.timer, state.batcher
    bars = _stage_bars(("caption", "tags", "embed"), state.images(pending), state.progress)
    batches = state.loader(pending, models.captioner.transform, models.clip.preprocess)
    for b, batch in zip(pending, batches):
        with timer("caption"):
            captions = caption_stage(models, batch, batcher)
        bars["caption"].update(len(batch.indices))
        with timer("tags"):
            tags = tag_stage(models, batch, batcher, config)
        with timer("prompt"):
            record = batch_record(state.files, state.batches[b], batch, captions, tags,
                             prompt_stage(models, captions, tags), config.fallback_prompt)
        bars["tags"].update(len(batch.indices))
        with timer("embed"):
            vectors = embed_stage(models, record["prompts"], batcher)
        bars["embed"].update(len(batch.indices))
        state.finish(b, record, vectors)
    _close(bars)
    return {name: t.from_cache for name, t in models.tables.items()}


def _run_low_memory(state: RunState, pending: List[int]) -> Dict[str, bool]:
    """One model at a time: caption every pending batch, free; tag and prompt, free; embed, free.

    Each phase saves its per-batch results in the work folder, so a rerun skips what a killed run finished.
    """
    models, config, timer, batcher = Models(), state.config, state.timer, state.batcher
    prompted = _saved_phase(state, "prompted", pending)
    captioned = _saved_phase(state, "captioned", [b for b in pending if b not in prompted])
    to_caption = [b for b in pending if b not in prompted and b not in captioned]
    to_tag = [b for b in pending if b not in prompted]
    with timer("load"):
        load_sentence(config)  # its output size is checked before the long phases

    if to_caption:
        with timer("load"):
            models.captioner = load_captioner_stage(config)
        bars = _stage_bars(("caption",), state.images(to_caption), state.progress)
        for b, batch in zip(to_caption, state.loader(to_caption, models.captioner.transform, None)):
            with timer("caption"):
                captioned[b] = {"ids": state.ids(b), "captions": caption_stage(models, batch, batcher)}
            _save_phase(state, b, "captioned", captioned[b])
            bars["caption"].update(len(batch.indices))
        _close(bars)
        models.free()

    cache_hits = {}
    if to_tag:
        with timer("labels"):
            models.clip, models.tables = load_clip_stage(config, state.progress)
        bars = _stage_bars(("tags",), state.images(to_tag), state.progress)
        for b, batch in zip(to_tag, state.loader(to_tag, None, models.clip.preprocess)):
            with timer("tags"):
                tags = tag_stage(models, batch, batcher, config)
            captions = captioned[b]["captions"]
            with timer("prompt"):
                prompted[b] = batch_record(state.files, state.batches[b], batch, captions, tags,
                                      prompt_stage(models, captions, tags), config.fallback_prompt)
            _save_phase(state, b, "prompted", prompted[b])
            bars["tags"].update(len(batch.indices))
        _close(bars)
        cache_hits = {name: t.from_cache for name, t in models.tables.items()}
        models.free()

    with timer("load"):
        models.sentence = load_sentence(config)
    bars = _stage_bars(("embed",), state.images(pending), state.progress)
    for b in pending:
        with timer("embed"):
            vectors = embed_stage(models, prompted[b]["prompts"], batcher)
        bars["embed"].update(len(state.batches[b]))
        state.finish(b, prompted[b], vectors)
    _close(bars)
    models.free()
    return cache_hits


def _saved_phase(state: RunState, phase: str, batch_numbers) -> Dict[int, dict]:
    """Records of a low_memory phase that an earlier run saved for these batches (ids must match)."""
    if state.work is None:
        return {}
    saved = {b: state.work.load_text(b, phase) for b in batch_numbers}
    return {b: r for b, r in saved.items() if r is not None and r.get("ids") == state.ids(b)}


def _save_phase(state: RunState, batch: int, phase: str, record: dict) -> None:
    if state.work is not None:
        state.work.save_text(batch, phase, record)


def _stage_bars(stages, total: int, enabled: bool):
    return {stage: tqdm(total=total, desc=stage, unit="img", position=i, disable=not enabled, leave=True)
            for i, stage in enumerate(stages)}


def _close(bars) -> None:
    for bar in bars.values():
        bar.close()
