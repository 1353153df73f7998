"""The local loop: a plan's batches through the stages on this machine (images -> captions -> CLIP features ->
label ranking -> prompts -> embeddings), each finished batch saved in the work folder, then ``finish``.

Normal and ``low_memory`` runs are two schedules of one loop: every model resident and each batch through
every stage, or one stage group at a time with only its models loaded.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..core.config import Config
from ..core.console import bar, quiet_libraries
from ..core.errors import InterrogatorError
from ..core.images import ImageFile
from ..core.batches import image_batches
from ..core.oom import StageBatcher
from ..core.plan import Plan
from ..core.record import BatchRecord
from ..core.timer import StageTimer
from ..core.workdir import WorkDir
from .finish import CaptionFiles, RunResult, ShardFiles, finish
from .loading import Models, load_models, loader_transforms
from .needs import Needs, needs_of
from .planner import legacy_key, make_plan
from .stages import new_record, run_stages

log = logging.getLogger(__name__)

__all__ = ["run", "run_plan", "RunResult", "Stopped"]


class Stopped(InterrogatorError):
    """A run stopped on request (run_plan's ``on_batch``), its finished batches saved."""


@dataclass(frozen=True)
class Stage:
    """One step of a batch's way through the models."""

    name: str          # as in BatchRecord.done
    bar: str           # progress-bar label
    models: Tuple[str, ...]  # Models fields it needs
    needs_images: bool


CAPTION = Stage("caption", "caption", ("captioner", "tagger"), True)
TAG = Stage("tag", "tags", ("clip", "tables"), True)
EMBED = Stage("embed", "embed", ("sentence",), False)


def stages_of(config: Config) -> Tuple[Stage, ...]:
    """The stages a run of ``config`` goes through: the embed stage only where an output holds vectors."""
    return (CAPTION, TAG, EMBED) if config.embeds() else (CAPTION, TAG)


def schedule(config: Config, low_memory: bool) -> Tuple[Tuple[Stage, ...], ...]:
    """Every model resident and each batch through every stage; or, low_memory, one model at a time and
    every batch through one stage."""
    stages = stages_of(config)
    return tuple((s,) for s in stages) if low_memory else (stages,)


@dataclass
class RunState:
    """What every stage of one run shares: the images, their batches, their records, where records go."""

    config: Config
    files: Sequence[ImageFile]          # the plan's listing (core/listing.py)
    batches: List[range]
    work: Optional[WorkDir]
    timer: StageTimer
    batcher: StageBatcher
    progress: bool
    needs: Needs
    records: Dict[int, BatchRecord] = field(default_factory=dict)
    captions: Optional[CaptionFiles] = None  # each batch's caption files, as soon as the batch has its texts
    shards: Optional[ShardFiles] = None  # each input shard's outputs, as soon as its last batch is done
    on_batch: Optional[Callable[[int, int], bool]] = None  # (images done, of) after each save; True stops there

    def images(self, batch_numbers) -> int:
        return sum(len(self.batches[b]) for b in batch_numbers)

    def todo(self, stages: Sequence[Stage]) -> List[int]:
        """Batches that still need any of these stages."""
        return [b for b in range(len(self.batches))
                if b not in self.records or not all(self.records[b].done(s.name) for s in stages)]

    def loader(self, batch_numbers, transforms):
        """The batches' images decoded and preprocessed (loading.loader_transforms), in order."""
        iterator = image_batches(self.files, [self.batches[b] for b in batch_numbers], transforms,
                                 self.config.loader_workers(), self.config.resolved_device().startswith("cuda"))
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
        if self.captions is not None:
            with self.timer("write"):
                self.captions(b, record)
        if self.shards is not None:
            with self.timer("write"):
                self.shards(self.records, b)


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
    """The stages over a plan's batches (planner.make_plan), then ``finish`` (``run``'s docstring).
    ``on_batch(done, of)``: called with the images done and of how many after each batch is saved (a progress
    report, resumed batches counted); when it returns True the run
    raises Stopped there, and the same plan run again resumes."""
    config, batches = plan.config, list(plan.batches)
    work = None
    if plan.outputs is not None and plan.key is not None:
        work = WorkDir(config.output, plan.key, plan.first_batch)
        work.adopt(legacy_key(plan))
    timer = StageTimer(config.resolved_device())
    state = RunState(config, plan.files, batches, work, timer, StageBatcher.of(config), progress,
                     needs_of(config), on_batch=on_batch)
    if not records_only:
        state.captions = CaptionFiles.of(plan, strict)
        if plan.outputs is not None and plan.outputs.shards:
            stages = stages_of(config)
            state.shards = ShardFiles(plan, work.path / "shards" if work is not None else None, strict,
                                      complete=lambda record: all(record.done(s.name) for s in stages))
    if work is not None:
        with timer("resume"):
            state.records = work.resume(state.files, batches)
    resumed = len(batches) - len(state.todo(stages_of(config)))
    cache_hits = _run_schedule(state, models)
    with timer("write"):
        result = finish(plan, state.records, strict, write=not records_only,
                        txt=state.captions.writer if state.captions else None,
                        remove=[work] if work is not None and not keep_work else [], shards=state.shards)
    result.stage_seconds, result.label_cache_hits = timer.seconds, cache_hits
    result.loader_workers = config.loader_workers()
    result.resumed_batches = resumed
    result.peak_gpu_bytes = peak_gpu_bytes(config.resolved_device())
    return result


def peak_gpu_bytes(device: str) -> Optional[int]:
    return torch.cuda.max_memory_allocated(torch.device(device)) if device.startswith("cuda") else None


def _run_schedule(state: RunState, given: Optional[Models]) -> Dict[str, bool]:
    """Every batch through every stage, group by group of the schedule; each record saved after its group.

    The normal run is one group (all models resident, each batch through every stage); low_memory is
    one group per stage, each model loaded for its stage and freed after it.
    """
    config = state.config
    low_memory = config.low_memory and given is None
    if low_memory and state.needs.sentence and state.todo((EMBED,)):
        with state.timer("load"):
            load_models(config, state.needs.only(("sentence",)))  # its output size is checked before the long stages
    cache_hits: Dict[str, bool] = {}
    for group in schedule(config, low_memory):
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


def _load(state: RunState, group: Sequence[Stage]) -> Models:
    """The models a group of stages needs (the one builder, loading.load_models)."""
    needs = state.needs.only(tuple(m for s in group for m in s.models))
    with state.timer("load"):
        models = load_models(state.config, replace(needs, clip=False))
    if needs.clip:
        with state.timer("labels"):
            ranked = load_models(state.config, needs.only(("clip",)), progress=state.progress)
        models.clip, models.tables, models.head, models.bank = ranked.clip, ranked.tables, ranked.head, ranked.bank
    return models


def _run_group(state: RunState, models: Models, group: Sequence[Stage], todo: List[int]) -> None:
    config, timer, batcher = state.config, state.timer, state.batcher
    bars = {s.name: bar(state.images(todo), s.bar, "img", state.progress, i) for i, s in enumerate(group)}
    clip_images = config.needs_clip()
    imaged = [b for b in todo if any(s.needs_images and (s is not TAG or clip_images) and not _done(state, b, s)
                                     for s in group)]
    names = [s.name for s in group]
    batches = state.loader(imaged, loader_transforms(config, names, models))
    for b in todo:
        batch = next(batches) if b in imaged else None
        if b not in state.records:
            state.records[b] = new_record(state.files, state.batches[b], batch)
        record = state.records[b]
        run_stages(models, names, batch, record, batcher, config, timer)
        for stage in group:
            bars[stage.name].update(len(record.ids))
        state.save(b)
        if state.on_batch is not None and state.on_batch(state.images(state.records), len(state.files)):
            raise Stopped(f"stopped after {len(state.records)} of {len(state.batches)} batches; the finished ones are "
                          f"saved, and the same run again resumes from them")
    for shown in bars.values():
        shown.close()


def _done(state: RunState, b: int, stage: Stage) -> bool:
    return b in state.records and state.records[b].done(stage.name)
