"""The pipeline: images -> captions -> CLIP features -> label ranking -> prompts -> embeddings -> submission."""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .atomic import TEMP_EXTRA, atomic_write, name_max
from .caption import check_captioner_folder
from .clip_checkpoint import resolve_clip
from .config import Config
from .console import bar, quiet_libraries
from .errors import ConfigError, InterrogatorError
from .identity import digest, run_identity
from .images import FolderScan, ImageDataset, ImageFile, batch_loader, scan_folder
from .labels import read_labels, table_files
from .oom import StageBatcher
from .shards import select
from .record import LEARNED, SUBMISSION_DIM, BatchRecord
from .stages import (Models, caption_phase, embed_phase, load_captioner_stage, load_clip_stage, load_learned,
                     load_sentence, new_record, tag_phase)
from .submission import first_id_lost_in_csv, write_submission
from .workdir import WorkDir, work_root

log = logging.getLogger(__name__)

LOADER_HINT_SHARE = 0.2  # the summary suggests more loader workers when decoding waits exceed this share
LOADER_HINT_MIN_SECONDS = 10.0


@dataclass
class RunResult:
    """What a run produced, in imgId order."""

    image_ids: List[str]
    captions: List[str]
    prompts: List[str]
    embeddings: np.ndarray  # what the submission holds: the blend (blend.py), or the prompts' embeddings
    tags: List = field(default_factory=list)  # record.Tags per image (None where undecodable)
    negatives: Optional[List[str]] = None  # negative prompts, when the config asks for them
    prompt_embeddings: Optional[np.ndarray] = None  # the sentence model's embeddings of the prompts
    head: Optional[np.ndarray] = None  # a learned head's predictions, when the blend uses one
    bank: Optional[np.ndarray] = None  # the retrieval bank's, likewise
    failed: Dict[str, str] = field(default_factory=dict)
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    label_cache_hits: Dict[str, bool] = field(default_factory=dict)
    resumed_batches: int = 0
    peak_gpu_bytes: Optional[int] = None
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (name, why): entries named like images
    loader_workers: Optional[int] = None
    output: Optional[Path] = None
    files: List[str] = field(default_factory=list)  # each image's path relative to data_path
    written: Dict[str, object] = field(default_factory=dict)  # other formats: path, or txt counts

    def summary(self) -> str:
        n = len(self.image_ids)
        total = sum(self.stage_seconds.values())
        lines = [f"images: {n} done, {len(self.failed)} undecodable (fallback prompt)"]
        lines += [f"  undecodable: {i}: {why}" for i, why in sorted(self.failed.items())]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} entries named like images: "
                         + ", ".join(f"{name} ({why})" for name, why in self.skipped))
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
        for name, what in self.written.items():
            if isinstance(what, dict):
                what = ", ".join(f"{v} {k}" for k, v in what.items())
            lines.append(f"{name}: {what}")
        return "\n".join(lines)


class StageTimer:
    """Wall seconds per stage; CUDA work is synchronised at each stage's end so time lands where it belongs."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.device = torch.device(device) if self.cuda else None
        self.seconds: Dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


@dataclass(frozen=True)
class Phase:
    """One step of a batch's way through the models."""

    name: str          # as in BatchRecord.done
    bar: str           # progress-bar label
    models: Tuple[str, ...]  # Models fields it needs
    needs_images: bool


CAPTION = Phase("caption", "caption", ("captioner",), True)
TAG = Phase("tag", "tags", ("clip", "tables"), True)
EMBED = Phase("embed", "embed", ("sentence",), False)
TOGETHER = ((CAPTION, TAG, EMBED),)  # every model resident; each batch through every phase
LOW_MEMORY = ((CAPTION,), (TAG,), (EMBED,))  # one model at a time; every batch through one phase


@dataclass
class RunState:
    """What every phase of one run shares: the images, their batches, their records, where records go."""

    config: Config
    files: List[ImageFile]
    batches: List[List[int]]
    work: Optional[WorkDir]
    timer: StageTimer
    batcher: StageBatcher
    progress: bool
    records: Dict[int, BatchRecord] = field(default_factory=dict)

    def images(self, batch_numbers) -> int:
        return sum(len(self.batches[b]) for b in batch_numbers)

    def todo(self, phases: Sequence[Phase]) -> List[int]:
        """Batches that still need any of these phases."""
        return [b for b in range(len(self.batches))
                if b not in self.records or not all(self.records[b].done(p.name) for p in phases)]

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

    def save(self, b: int) -> None:
        if self.work is not None:
            with self.timer("save"):
                self.work.save(b, self.records[b])


def mode_label_files(config: Config) -> List[Path]:
    """The label files the config's mode reads (the seed mode: mediums, movements, flavors)."""
    from .stages import table_names
    return table_files(config.dicts, table_names(config))


def check_output(output: str) -> None:
    """The output can be written: not a folder, its folder writable, and its temp and work names not too long."""
    path = Path(output)
    if path.is_dir():
        raise ConfigError(f"config key 'output': {path} is a folder; name a file such as {path / 'submission.csv'}")
    longest = max(len(os.fsencode(path.name)) + TEMP_EXTRA, len(os.fsencode(work_root(path).name)))
    folder = path.parent
    blocker = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"config key 'output': cannot write in folder {folder}: {blocker} is a file")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        limit = name_max(folder)
        if longest > limit:
            raise ConfigError(f"config key 'output': the name {path.name!r} is too long: its temp and work "
                              f"names need {longest} bytes, the file system allows {limit}")
        atomic_write(folder / f".write-test-{os.getpid()}", lambda f: None).unlink()
    except OSError as exc:
        raise ConfigError(f"config key 'output': cannot write in folder {folder}: "
                          f"{exc.strerror or exc}") from exc


def check_inputs(config: Config, write: bool) -> FolderScan:
    """Everything that can be checked before a model loads; returns the images."""
    if config.demo:
        from .demo import ensure_demo_models
        ensure_demo_models(config)
    config.require_paths("data_path", "blip_path", "clip_path", "embedding_path", "dicts")
    config.check_dtype()
    if config.embedding_dir is not None:
        config.require_paths("embedding_dir")
    check_captioner_folder(config.blip_path)
    check_learned(config, resolve_clip(config.clip_model, config.clip_path).identity(config.clip_path))
    for path in mode_label_files(config):
        read_labels(path)
    if write:
        check_output(config.output)
    scan = scan_images(config)
    if "kaggle" in config.formats:
        from .outputs import kaggle_ids
        check_ids(scan.files, kaggle_ids([f.image_id for f in scan.files], config.recursive))
    return scan


def scan_images(config: Config) -> FolderScan:
    """The images of data_path: ids are file stems, or with ``recursive`` relative paths below it."""
    from .images import scan_tree
    return scan_tree(config.data_path) if config.recursive else scan_folder(config.data_path)


def check_learned(config: Config, clip_weights: str) -> None:
    """A head or bank the blend uses must come from this CLIP's weights (checked before any model loads)."""
    if config.blend_weight("head") > 0:
        from .head import check_clip, read_spec
        check_clip(read_spec(config.head_path), clip_weights, f"config key 'head_path': the head in {config.head_path}")
    if config.blend_weight("bank") > 0:
        from .bank import check_bank_clip
        check_bank_clip(config.bank_path, clip_weights)


def check_ids(files: Sequence[ImageFile], ids: Sequence[str]) -> None:
    """Every id must come back unchanged from the written CSV; else an error naming the file."""
    bad = first_id_lost_in_csv(list(ids))
    if bad is not None:
        name = next(f.path.name for f, i in zip(files, ids) if i == bad)
        raise ConfigError(f"config key 'data_path': the file name {name!r} does not come back unchanged "
                          f"from the submission CSV; rename it")


def run(config: Config, shard: Optional[Tuple[int, int]] = None, progress: bool = True,
        write: bool = True, strict: bool = False, models: Optional[Models] = None,
        images: Optional[Tuple[int, int, int]] = None, keep_work: bool = False) -> RunResult:
    """Run the pipeline on config.data_path; with write, validate and write config.output, resuming
    from the work folder next to it if an earlier run with the same identity was interrupted.

    models: already loaded models to use instead of loading them from the config's paths
    (to reuse them across runs, or for benchmarks); low_memory and resume do not apply to them.
    shard (i, N) or images (lo, hi, total): process only that part of the images (shards.py).
    keep_work: keep the batch records after a successful write, so the next run with the same identity
    reuses every batch (tune caches its captions so).
    """
    quiet_libraries(logging.getLogger("interrogator").isEnabledFor(logging.DEBUG))
    config.check_blend()
    if models is None:
        scan = check_inputs(config, write)
    else:
        scan = scan_images(config)
        if write:
            check_output(config.output)
    batch_size = config.stage_batch_size("caption")
    files = select(scan.files, batch_size, shard, images)
    batches = [list(range(i, min(i + batch_size, len(files)))) for i in range(0, len(files), batch_size)]
    work = None
    if write and models is None:
        work = WorkDir(config.output, digest(run_identity(config, mode_label_files(config))))
    timer = StageTimer(config.resolved_device())
    batcher = StageBatcher({s: config.stage_batch_size(s) for s in ("caption", "clip", "embed")},
                           config.resolved_device())
    state = RunState(config, files, batches, work, timer, batcher, progress)
    if work is not None:
        with timer("resume"):
            state.records = work.resume(files, batches)
    resumed = len(state.todo((EMBED,)))
    cache_hits = _run_schedule(state, models)

    result = _assemble([f.image_id for f in files], batches, state.records, config.blend)
    result.stage_seconds, result.label_cache_hits = timer.seconds, cache_hits
    result.loader_workers = config.loader_workers()
    result.resumed_batches = len(batches) - resumed
    result.skipped = scan.skipped
    result.peak_gpu_bytes = peak_gpu_bytes(config.resolved_device())
    if strict and result.failed:
        names = ", ".join(f"{i} ({why})" for i, why in sorted(result.failed.items()))
        raise InterrogatorError(f"--strict: {len(result.failed)} images could not be decoded: {names}")
    result.files = [f.path.relative_to(config.data_path).as_posix() if config.recursive else f.path.name
                    for f in files]
    if write:
        from .outputs import kaggle_ids, rows_of, write_outputs
        with timer("write"):
            if "kaggle" in config.formats:
                result.output = write_submission(kaggle_ids(result.image_ids, config.recursive), result.embeddings,
                                                 config.output)
            rows = rows_of(result.image_ids, result.files, result.captions, result.tags, result.prompts,
                           result.failed, result.negatives)
            result.written = write_outputs(config.formats, rows, result.embeddings, config)
        if work is not None and not keep_work:
            work.remove()
    return result


def peak_gpu_bytes(device: str) -> Optional[int]:
    return torch.cuda.max_memory_allocated(torch.device(device)) if device.startswith("cuda") else None


def _assemble(ids: List[str], batches: List[List[int]], records: Dict[int, BatchRecord],
              blend: Optional[Sequence[float]] = None) -> RunResult:
    """Per-image results in imgId order from the finished batch records; the submission vectors blended."""
    from .blend import blend_vectors
    captions, prompts, tags, negatives = [""] * len(ids), [""] * len(ids), [None] * len(ids), [""] * len(ids)
    arrays = {name: np.zeros((len(ids), SUBMISSION_DIM), dtype=np.float32) for name in ("embeddings", *LEARNED)}
    present = {name: bool(records) and all(getattr(r, name) is not None for r in records.values()) for name in LEARNED}
    failed: Dict[str, str] = {}
    for b, members in enumerate(batches):
        record = records[b]
        for pos, i in enumerate(members):
            captions[i], prompts[i], tags[i] = record.captions[pos], record.prompts[pos], record.tags[pos]
            if record.negatives is not None:
                negatives[i] = record.negatives[pos]
        for name, array in arrays.items():
            if name == "embeddings" or present[name]:
                array[members] = getattr(record, name)
        failed.update(record.failed)
    head, bank = (arrays[n] if present[n] else None for n in LEARNED)
    vectors = blend_vectors(blend, arrays["embeddings"], head, bank)
    with_negatives = bool(records) and all(r.negatives is not None for r in records.values())
    return RunResult(ids, captions, prompts, vectors, tags, negatives if with_negatives else None,
                     arrays["embeddings"], head, bank, failed)


def _run_schedule(state: RunState, given: Optional[Models]) -> Dict[str, bool]:
    """Every batch through every phase, group by group of the schedule; each record saved after its group.

    The normal run is one group (all models resident, each batch through every phase); low_memory is
    one group per phase, each model loaded for its phase and freed after it.
    """
    config = state.config
    low_memory = config.low_memory and given is None
    if low_memory and state.todo((EMBED,)):
        with state.timer("load"):
            load_sentence(config)  # its output size is checked before the long phases
    cache_hits: Dict[str, bool] = {}
    for group in (LOW_MEMORY if low_memory else TOGETHER):
        todo = state.todo(group)
        if not todo:
            continue
        models = given or _load(state, group)
        if models.tables:
            cache_hits = {name: t.from_cache for name, t in models.tables.items()}
        _run_group(state, models, group, todo)
        if given is None and low_memory:
            models.free(config.resolved_device())
    return cache_hits


def _load(state: RunState, group: Sequence[Phase]) -> Models:
    """The models a group of phases needs (the sentence model first: it is the quickest to fail)."""
    models, config, needed = Models(), state.config, {m for p in group for m in p.models}
    with state.timer("load"):
        if "sentence" in needed:
            models.sentence = load_sentence(config)
        if "captioner" in needed:
            models.captioner = load_captioner_stage(config)
    if "clip" in needed and config.needs_clip():
        with state.timer("labels"):
            models.clip, models.tables = load_clip_stage(config, state.progress)
        models.head, models.bank = load_learned(config, models.clip)
    return models


def _run_group(state: RunState, models: Models, group: Sequence[Phase], todo: List[int]) -> None:
    config, timer, batcher = state.config, state.timer, state.batcher
    bars = {p.name: bar(state.images(todo), p.bar, "img", state.progress, i) for i, p in enumerate(group)}
    clip_images = config.needs_clip()
    imaged = [b for b in todo if any(p.needs_images and (p is not TAG or clip_images) and not _done(state, b, p)
                                     for p in group)]
    names = {p.name for p in group}
    batches = state.loader(imaged, models.captioner.transform if "caption" in names else None,
                           models.clip.preprocess if "tag" in names and clip_images else None)
    for b in todo:
        batch = next(batches) if b in imaged else None
        if b not in state.records:
            state.records[b] = new_record(state.files, state.batches[b], batch)
        record = state.records[b]
        for phase in group:
            if not record.done(phase.name):
                if phase is CAPTION:
                    with timer("caption"):
                        caption_phase(models, batch, record, batcher)
                elif phase is TAG:
                    tag_phase(models, batch, record, batcher, config, timer)
                else:
                    with timer("embed"):
                        embed_phase(models, record, batcher)
            bars[phase.name].update(len(record.ids))
        state.save(b)
    for shown in bars.values():
        shown.close()


def _done(state: RunState, b: int, phase: Phase) -> bool:
    return b in state.records and state.records[b].done(phase.name)
