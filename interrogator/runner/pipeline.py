"""The pipeline: images -> captions -> CLIP features -> label ranking -> prompts -> embeddings -> submission."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..core.config import Config
from ..core.console import bar, quiet_libraries
from ..core.errors import InterrogatorError
from ..core.images import ImageDataset, ImageFile, batch_loader
from ..core.oom import StageBatcher
from ..core.plan import Plan, make_plan
from ..core.record import LEARNED, SUBMISSION_DIM, BatchRecord
from .stages import (Models, load_captioner_stage, load_clip_stage, load_learned, load_sentence, load_tagger_stage,
                     loader_transforms, new_record, run_phases)
from ..core.workdir import WorkDir
from .outputs import TxtWriter, txt_writer

log = logging.getLogger(__name__)

class Stopped(InterrogatorError):
    """A run stopped on request (run_plan's ``stop``), its finished batches saved."""


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
    kaggle_ids: List[str] = field(default_factory=list)  # each image's id in the submission CSV
    written: Dict[str, object] = field(default_factory=dict)  # other formats: path, or txt counts
    ray: Optional[str] = None  # what the Ray engine did (batches written, actors, reused), when it ran
    tagged: Optional[List] = None  # record.ImageTags per image (None where undecodable), with a tagger
    texts: Optional[List[str]] = None  # the caption template's text per image, with a template
    captioned: int = 0  # images left out because their caption file exists (existing_txt skip)

    def summary(self) -> str:
        n = len(self.image_ids)
        total = sum(self.stage_seconds.values())
        lines = [f"images: {n} done, {len(self.failed)} undecodable (fallback prompt)"]
        lines += [f"  undecodable: {i}: {why}" for i, why in sorted(self.failed.items())]
        if self.captioned:
            lines.append(f"skipped {self.captioned} images whose caption file exists (existing_txt: skip)")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} entries named like images: "
                         + ", ".join(f"{name} ({why})" for name, why in self.skipped))
        if self.ray is not None:
            lines.append(f"ray: {self.ray}")
        elif self.resumed_batches:
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


CAPTION = Phase("caption", "caption", ("captioner", "tagger"), True)
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
    txt: Optional[TxtWriter] = None  # writes each batch's caption files as soon as the batch has its texts
    txt_paths: Tuple[Path, ...] = ()
    on_batch: Optional[Callable[[int, int], bool]] = None  # (batches done, of) after each save; True stops there

    def images(self, batch_numbers) -> int:
        return sum(len(self.batches[b]) for b in batch_numbers)

    def todo(self, phases: Sequence[Phase]) -> List[int]:
        """Batches that still need any of these phases."""
        return [b for b in range(len(self.batches))
                if b not in self.records or not all(self.records[b].done(p.name) for p in phases)]

    def loader(self, batch_numbers, caption_transform, clip_transform, tagger_transform):
        """The batches' images decoded and preprocessed (stages.loader_transforms), in order."""
        dataset = ImageDataset(self.files, caption_transform, clip_transform, tagger_transform)
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
        """The batch's record into the work folder, then its caption files (once it has its texts)."""
        record = self.records[b]
        if self.work is not None:
            with self.timer("save"):
                self.work.save(b, record)
        if self.txt is not None and record.final is not None:
            with self.timer("write"):
                self.txt.write([self.txt_paths[i] for i in self.batches[b]], record.final)


def run(config: Config, shard: Optional[Tuple[int, int]] = None, progress: bool = True,
        write: bool = True, strict: bool = False, models: Optional[Models] = None,
        images: Optional[Tuple[int, int, int]] = None, keep_work: bool = False,
        records_only: bool = False) -> RunResult:
    """Run the pipeline on config.data_path; with write, validate and write config.output, resuming
    from the work folder next to it if an earlier run with the same identity was interrupted.

    models: already loaded models to use instead of loading them from the config's paths
    (to reuse them across runs, or for benchmarks); low_memory and resume do not apply to them.
    shard (i, N) or images (lo, hi, total): process only that part of the images (shards.py).
    keep_work: keep the batch records after a successful write, so the next run with the same identity
    reuses every batch (tune caches its captions so).
    records_only: save the batch records of these images in the output's work folder and write nothing else
    (what each process of ``--devices`` does; the parent then writes every output from the records).
    """
    quiet_libraries(logging.getLogger("interrogator").isEnabledFor(logging.DEBUG))
    plan = make_plan(config, shard, images, write=write, models_given=models is not None)
    return run_plan(plan, progress, strict, models, keep_work, records_only)


def run_plan(plan: Plan, progress: bool = True, strict: bool = False, models: Optional[Models] = None,
             keep_work: bool = False, records_only: bool = False,
             on_batch: Optional[Callable[[int, int], bool]] = None) -> RunResult:
    """The phases over a plan's batches (make_plan), then its outputs (``run``'s docstring). ``on_batch(done, of)``:
    called after each batch is saved (a progress report); when it returns True the run raises Stopped there, and
    the same plan run again resumes."""
    config, batches = plan.config, [list(b) for b in plan.batches]
    work = None
    if plan.outputs is not None and plan.key is not None:
        work = WorkDir(config.output, plan.key, plan.first_batch)
        work.adopt(legacy_key(config, plan))
    timer = StageTimer(config.resolved_device())
    batcher = StageBatcher({s: config.stage_batch_size(s) for s in ("caption", "clip", "embed")},
                           config.resolved_device())
    state = RunState(config, list(plan.files), batches, work, timer, batcher, progress, on_batch=on_batch)
    if plan.outputs is not None and plan.outputs.txt and not records_only:
        state.txt, state.txt_paths = txt_writer(config), plan.outputs.txt
    if work is not None:
        with timer("resume"):
            state.records = work.resume(state.files, batches)
    resumed = len(state.todo((EMBED,)))
    cache_hits = _run_schedule(state, models)
    result = assemble(plan, state.records)
    result.stage_seconds, result.label_cache_hits = timer.seconds, cache_hits
    result.loader_workers = config.loader_workers()
    result.resumed_batches = len(batches) - resumed
    result.peak_gpu_bytes = peak_gpu_bytes(config.resolved_device())
    if strict and result.failed:
        names = ", ".join(f"{i} ({why})" for i, why in sorted(result.failed.items()))
        raise InterrogatorError(f"--strict: {len(result.failed)} images could not be decoded: {names}")
    if plan.outputs is not None and not records_only:
        from .outputs import write_all
        with timer("write"):
            result.output, result.written = write_all(plan, result, state.txt)
        if work is not None and not keep_work:
            work.remove()
    return result


def legacy_key(config: Config, plan: Plan) -> str:
    """The key a version before 0.3 gave this run (its unfinished work is adopted, workdir.WorkDir.adopt)."""
    from ..core.identity import digest, run_identity
    return digest(run_identity(config, plan.label_files, legacy=True))


def peak_gpu_bytes(device: str) -> Optional[int]:
    return torch.cuda.max_memory_allocated(torch.device(device)) if device.startswith("cuda") else None


def assemble(plan: Plan, records: Dict[int, BatchRecord]) -> RunResult:
    """Per-image results in imgId order from the finished batch records; the submission vectors blended."""
    from ..learn.blend import blend_vectors
    n = len(plan.files)
    captions, prompts, tags, negatives, tagged, texts = [""] * n, [""] * n, [None] * n, [""] * n, [None] * n, [""] * n
    arrays = {name: np.zeros((n, SUBMISSION_DIM), dtype=np.float32) for name in ("embeddings", *LEARNED)}
    present = {name: bool(records) and all(getattr(r, name) is not None for r in records.values()) for name in LEARNED}
    failed: Dict[str, str] = {}
    for b, members in enumerate(plan.batches):
        record, members = records[b], list(members)
        for pos, i in enumerate(members):
            captions[i], prompts[i], tags[i] = record.captions[pos], record.prompts[pos], record.tags[pos]
            if record.negatives is not None:
                negatives[i] = record.negatives[pos]
            if record.tagged is not None:
                tagged[i] = record.tagged[pos]
            if record.texts is not None:
                texts[i] = record.texts[pos]
        for name, array in arrays.items():
            if name == "embeddings" or present[name]:
                array[members] = getattr(record, name)
        failed.update(record.failed)
    head, bank = (arrays[n] if present[n] else None for n in LEARNED)
    vectors = blend_vectors(plan.config.blend, arrays["embeddings"], head, bank)
    with_negatives = bool(records) and all(r.negatives is not None for r in records.values())
    config = plan.config
    return RunResult(plan.ids, captions, prompts, vectors, tags, negatives if with_negatives else None,
                     arrays["embeddings"], head, bank, failed, skipped=list(plan.skipped), files=list(plan.relative),
                     kaggle_ids=list(plan.kaggle), tagged=tagged if config.tagger_path is not None else None,
                     texts=texts if config.caption_template is not None else None, captioned=plan.captioned)


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
            models.tagger = load_tagger_stage(config)
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
    batches = state.loader(imaged, *loader_transforms(models, config, names))
    for b in todo:
        batch = next(batches) if b in imaged else None
        if b not in state.records:
            state.records[b] = new_record(state.files, state.batches[b], batch)
        record = state.records[b]
        run_phases(models, [p.name for p in group], batch, record, batcher, config, timer)
        for phase in group:
            bars[phase.name].update(len(record.ids))
        state.save(b)
        if state.on_batch is not None and state.on_batch(len(state.records), len(state.batches)):
            raise Stopped(f"stopped after {len(state.records)} of {len(state.batches)} batches; the finished ones are "
                          f"saved, and the same run again resumes from them")
    for shown in bars.values():
        shown.close()


def _done(state: RunState, b: int, phase: Phase) -> bool:
    return b in state.records and state.records[b].done(phase.name)
