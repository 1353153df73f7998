"""The end of a run, written once: the records assembled into one ``RunResult`` in imgId order, the strict
check, every output format, the clean-up of the record stores. The local loop, ``--devices``, ``--shard`` +
``merge`` and Ray only get the records (from memory or from a ``RecordStore``) and call ``finish``.

A record store is where an engine keeps finished batches: the work folder (``core.workdir.WorkDir``) or Ray's
per-batch Parquet files (``engines.ray_engine.BatchFiles``). Both answer ``load(batch)`` with the checked
record or None, and ``collect`` applies the one resume rule (``core.workdir.resume``) to any of them.
There are two per-batch hooks: ``CaptionFiles``, a batch's caption files, written as soon as it has its texts, and
``ShardFiles``, an input shard's outputs (shard_outputs.py), written as soon as its last batch is done.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional, Protocol, Sequence, Set, Tuple

import numpy as np

from ..core.atomic import write_bytes
from ..core.errors import InterrogatorError
from ..core.identity import file_digest
from ..core.owned import LEDGER, record_written
from ..core.plan import Outputs, Plan
from ..core.record import LEARNED, SUBMISSION_DIM, BatchRecord
from ..core.workdir import WorkDir, resume
from ..learn.blend import blend_vectors
from .outputs import TxtWriter, rows_of, txt_writer, write_all
from .shard_outputs import shards_folder, write_shard_parquet, write_wds

LOADER_HINT_SHARE = 0.2  # the summary suggests more loader workers when decoding waits exceed this share
LOADER_HINT_MIN_SECONDS = 10.0


@dataclass
class RunResult:
    """What a run produced, in imgId order."""

    image_ids: List[str]
    captions: List[str]
    prompts: List[str]
    embeddings: Optional[np.ndarray]  # what the submission holds: the blend (blend.py), or the prompts'
    # embeddings; None where the run embeds nothing (no output holds vectors, Config.embeds)
    tags: List = field(default_factory=list)  # record.Tags per image (None where undecodable)
    negatives: Optional[List[str]] = None  # negative prompts, when the config asks for them
    prompt_embeddings: Optional[np.ndarray] = None  # the sentence model's embeddings of the prompts
    head: Optional[np.ndarray] = None  # a learned head's predictions, when the blend uses one
    bank: Optional[np.ndarray] = None  # the retrieval bank's, likewise
    failed: Dict[str, str] = field(default_factory=dict)
    stage_seconds: Dict[str, float] = field(default_factory=dict)
    worker_seconds: Dict[str, float] = field(default_factory=dict)  # Ray: the actors' seconds per stage, summed
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
    files_written: List[Path] = field(default_factory=list)  # every file the outputs put on disk (outputs.Written)

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
        if self.worker_seconds:
            lines.append("actors' seconds per stage, summed over their batches: "
                         + ", ".join(f"{k} {v:.2f}" for k, v in self.worker_seconds.items()))
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




def assemble(plan: Plan, records: Dict[int, BatchRecord]) -> RunResult:
    """Per-image results in imgId order from the finished batch records; the submission vectors blended (none
    where the run embeds nothing)."""
    n, embeds = len(plan.files), plan.config.embeds()
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
            if embeds if name == "embeddings" else present[name]:
                array[members] = getattr(record, name)
        failed.update(record.failed)
    head, bank = (arrays[n] if present[n] else None for n in LEARNED)
    prompt_vectors = arrays["embeddings"] if embeds else None
    vectors = blend_vectors(plan.config.blend, prompt_vectors, head, bank) if embeds else None
    with_negatives = bool(records) and all(r.negatives is not None for r in records.values())
    config = plan.config
    return RunResult(plan.ids, captions, prompts, vectors, tags, negatives if with_negatives else None,
                     prompt_vectors, head, bank, failed, skipped=list(plan.skipped), files=list(plan.relative),
                     kaggle_ids=list(plan.kaggle), tagged=tagged if config.tagger_path is not None else None,
                     texts=texts if config.caption_template is not None else None, captioned=plan.captioned)


class RecordStore(Protocol):
    """Where an engine keeps finished batches: ``core.workdir.WorkDir``, ``engines.ray_engine.BatchFiles``."""

    def load(self, batch: int) -> Optional[BatchRecord]:
        """The batch's checked record, or None where it is absent or cannot be read back."""


def collect(plan: Plan, load: Callable[[int], Optional[BatchRecord]],
            verified: Collection[int] = ()) -> Tuple[Dict[int, BatchRecord], List[int]]:
    """The records of a store (``load``) that the resume rule keeps (workdir.resume: ``verified`` batches are not
    hashed again), and the batches that have none."""
    records = resume(load, plan.files, plan.batches, verified)
    return records, [b for b in range(len(plan.batches)) if b not in records]


def finish(plan: Plan, records: Dict[int, BatchRecord], strict: bool = False, write: bool = True,
           txt: Optional[TxtWriter] = None, remove: Sequence[WorkDir] = (),
           shards: Optional["ShardFiles"] = None) -> RunResult:
    """The end of every run: the records (one per batch of the plan) assembled, ``--strict`` checked, every
    format of the plan written (``write`` and the plan has outputs; ``txt``: the writer that already wrote
    caption files batch by batch; ``shards``: the hook that already wrote some input shards' outputs), then the
    stores in ``remove`` removed. Nothing is written when the strict check fails."""
    result = assemble(plan, records)
    if strict and result.failed:
        names = ", ".join(f"{i} ({why})" for i, why in sorted(result.failed.items()))
        raise InterrogatorError(f"--strict: {len(result.failed)} images could not be decoded: {names}")
    if write and plan.outputs is not None:
        written = write_all(plan, result, txt)
        result.output, result.written, result.files_written = written.submission, written.formats, written.files
        if plan.outputs.shards:
            per_shard = (shards or ShardFiles(plan)).rest(records)
            outputs = [p for p in per_shard if p.name != LEDGER]  # the ledgers of what the tool wrote are not outputs
            result.written["per shard"] = f"{len(outputs)} files in {shards_folder(plan.config.output)}"
            result.files_written += per_shard
        for store in remove:
            store.remove()
    return result


@dataclass
class CaptionFiles:
    """The per-batch hook: a finished batch's caption files (the plan's txt paths), once it has its texts."""

    plan: Plan
    writer: Optional[TxtWriter]

    @classmethod
    def of(cls, plan: Plan, strict: bool = False) -> "CaptionFiles":
        """The hook of a plan with caption files; a hook that writes nothing under ``--strict``, where nothing is
        written before the check passes (``finish`` then writes the caption files with the other formats)."""
        wanted = plan.outputs is not None and bool(plan.outputs.txt) and not strict
        return cls(plan, txt_writer(plan.config.writing, plan.config.tag_separator) if wanted else None)

    def __call__(self, batch: int, record: Optional[BatchRecord]) -> None:
        if self.writer is not None and record is not None and record.final is not None:
            self.writer.write([self.plan.outputs.txt[i] for i in self.plan.batches[batch]], record.final)


@dataclass(frozen=True)
class ShardSpan:
    """One input shard's part of a plan: its positions [lo, hi) in plan.files and its batches [first, last)
    (batches never cross input shards: core.shards.Layout)."""

    shard: Path
    lo: int
    hi: int
    first: int
    last: int

    def part(self, plan: Plan) -> Plan:
        """The plan of this shard's images alone, its batches counted from 0."""
        batches = tuple(tuple(i - self.lo for i in plan.batches[b]) for b in range(self.first, self.last))
        cut = slice(self.lo, self.hi)
        return dataclasses.replace(plan, files=plan.files[cut], relative=plan.relative[cut], kaggle=plan.kaggle[cut],
                                   skipped=(), batches=batches, captioned=0, earlier=None)

    def alone(self, plan: Plan) -> Plan:
        """``part``, with this shard's outputs and no other: all a Ray worker needs to write them."""
        shards = {kind: {self.shard: by_shard[self.shard]} for kind, by_shard in plan.outputs.shards.items()
                  if self.shard in by_shard}
        return dataclasses.replace(self.part(plan), outputs=Outputs(None, {}, (), shards))


def shard_spans(plan: Plan) -> List[ShardSpan]:
    spans: List[ShardSpan] = []
    for b, members in enumerate(plan.batches):
        shard = plan.files[members[0]].path
        if spans and spans[-1].shard == shard:
            spans[-1] = dataclasses.replace(spans[-1], hi=members[-1] + 1, last=b + 1)
        else:
            spans.append(ShardSpan(shard, members[0], members[-1] + 1, b, b + 1))
    return spans


class ShardFiles:
    """The per-batch hook of the outputs per input shard (plan.outputs.shards): an input shard's files, written from
    its own batches' records as soon as every one of them is ``complete``, and with ``marks`` (a folder of the
    work folder) each file's mark: the digests of the input shard and of the file. A rerun after a kill finds
    the marks and leaves those files as they are, unless either changed since. ``rest`` writes the others.
    Under ``--strict`` nothing is written before ``finish``'s check."""

    def __init__(self, plan: Plan, marks: Optional[Path] = None, strict: bool = False,
                 complete: Callable[[BatchRecord], bool] = lambda record: True, fresh: Collection[Path] = ()):
        """``fresh``: input shards whose files and marks this run wrote (Ray's actors), taken as written without
        hashing them again; every other mark is checked against the digests of the shard and its files."""
        self.plan, self.marks, self.live, self.complete = plan, marks, not strict, complete
        self.targets: Dict[Path, List[Tuple[str, Path]]] = {}
        for kind, by_shard in (plan.outputs.shards if plan.outputs is not None else {}).items():
            for shard, target in by_shard.items():
                self.targets.setdefault(shard, []).append((kind, target))
        self.spans = {s.shard: s for s in shard_spans(plan) if s.shard in self.targets}
        self.of_batch = {b: s for s in self.spans.values() for b in range(s.first, s.last)}
        self.done: Set[Path] = {shard for shard in self.spans if shard in fresh or self.marked(shard)}

    def mark_file(self, target: Path) -> Path:
        return self.marks / f"{target.name}.json"

    def marked(self, shard: Path) -> bool:
        """The shard's files are on disk as this run wrote them, from the shard as it is now."""
        if self.marks is None:
            return False
        try:
            marks = [json.loads(self.mark_file(t).read_text()) for _, t in self.targets[shard]]
            source = file_digest(shard)
            return all(m["input"] == source and m["output"] == file_digest(t) and m["path"] == str(t)
                       for m, (_, t) in zip(marks, self.targets[shard]))
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def __call__(self, records: Dict[int, BatchRecord], batch: int) -> None:
        span = self.of_batch.get(batch)
        if self.live and span is not None and span.shard not in self.done and all(
                b in records and self.complete(records[b]) for b in range(span.first, span.last)):
            self.write(span, records)

    def write(self, span: ShardSpan, records: Dict[int, BatchRecord]) -> None:
        result = assemble(span.part(self.plan), {b - span.first: records[b] for b in range(span.first, span.last)})
        rows = rows_of(result)
        files = []
        for kind, target in self.targets[span.shard]:
            if kind == "shard-parquet":
                files.append(write_shard_parquet(target, rows, result.embeddings))
            else:
                files.append(write_wds(span.shard, target, {r.file: r for r in rows},
                                       self.plan.config.wds_caption_extension))
        record_written(files)
        if self.marks is not None:
            source = file_digest(span.shard)
            for target in files:
                mark = {"input": source, "output": file_digest(target), "path": str(target)}
                write_bytes(self.mark_file(target), json.dumps(mark).encode("utf-8"))
        self.done.add(span.shard)

    def rest(self, records: Dict[int, BatchRecord]) -> List[Path]:
        """The files of every shard not written yet; every shard output of the plan, with their ledgers."""
        for shard, span in self.spans.items():
            if shard not in self.done:
                self.write(span, records)
        files = [t for targets in self.targets.values() for _, t in targets]
        return files + sorted({Path(os.path.realpath(t)).parent / LEDGER for t in files})
