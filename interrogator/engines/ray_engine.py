"""The pipeline on Ray Data, for folders of millions of images and clusters (``submit --engine ray``).

The same stages as the single-machine run, arranged as Ray Data's streaming batch inference:

- one row per pipeline batch (the same batches of ``caption`` batch size over the same sorted image list), so
  every model sees exactly the batches it sees in a single run, read, hashed, decoded and preprocessed in a CPU
  ``map_batches`` stage of plain tasks (ray_read.py: loose files by path; WebDataset and Parquet shards by Ray
  Data's own ``read_webdataset`` and ``read_parquet``), which Ray runs in parallel with the models;
- captioning, tagging, prompt assembly and embedding in a stateful actor class (``InterrogateActor``: the
  one batch function, ``stages.run_stages``, on models from the one loader, ``stages.load_models``), one model
  copy per actor, one actor per GPU by default (CPU actors when the cluster has no GPU); Ray replaces an actor that
  dies and retries its batch (actor pools default to unlimited restarts and task retries);
- the label tables encoded once by the driver (or read from the label cache) and shared with every actor
  through the object store.

The driver starts from the plan (plan.make_plan) a single run makes. Each finished batch is one Parquet file,
``<parquet_dir>/<key>/batch-NNNNNN.parquet``, written by the actor through the project's atomic writer: the
batch record (record.BatchRecord) as one row per image with ``batch``, ``digest`` and the fields of the
``parquet`` output format (outputs.py: ``imgId``, ``file`` (the path relative to data_path), ``caption``,
``medium``, ``movement``, ``artist``, ``trending``, ``flavors``, ``prompt``, ``failed`` (the reason, or empty),
``negative_prompt`` when asked for, and ``embedding``, 384 float32 as a plain fixed-size list, where the run
embeds (Config.embeds); with a blend also ``prompt_embedding``, ``head`` and ``bank``). ``key`` is the single-machine resume key, and a file is read back
through the record's checked load and reused by the single run's rule (identity.unchanged), so a killed job
loses at most the batches in flight. After the run the driver reads back every batch file, but does not
read the images again: the digests of the batches made in this run come from the bytes the reader just read,
and those of the batches reused were checked when the run began. With an output path, every format of the config is written from the
records by the single run's writers (outputs.write_all), byte-identical to it on the same device type.

With outputs per input shard (``shard-parquet``, ``wds``: runner/shard_outputs.py), the actor that lands the last
batch file of an input shard writes that shard's outputs, from the shard's own plan (``ShardWork``: each in the
object store) and its batch files, and marks them (finish.ShardFiles) in ``<parquet_dir>/<key>/shards/``; the
driver writes only those no actor wrote, and takes the marks the actors report as written in this run without
hashing the shards again (a mark from an earlier run is checked against the digests).
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from ..core.atomic import atomic_write, sweep_temps
from ..core.config import Config, OutputSettings, replace
from ..core.console import bars_enabled, quiet_libraries
from ..core.errors import InterrogatorError
from ..core.images import ImageFile
from ..core.samples import input_kind
from ..core.oom import StageBatcher
from ..core.plan import check_folder
from ..core.record import SUBMISSION_DIM, BatchRecord, RecordError, Tags
from ..core.timer import StageTimer
from ..learn.blend import blend_vectors
from ..runner.finish import CaptionFiles, RunResult, ShardFiles, collect, finish, shard_spans
from ..runner.loading import load_models, loader_transforms
from ..runner.needs import needs_of
from ..runner.pipeline import stages_of
from ..runner.outputs import arrow_table, rows_of, vector_column
from ..runner.planner import make_plan
from ..runner.stages import new_record, run_stages
from .ray_read import offset_dataset, shard_dataset
import torch
import pandas as pd

log = logging.getLogger(__name__)

LOCAL_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                 "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
DECODE_CPUS = 0.5  # per decode task; the actors' CPUs are kept below the cluster's minus this (else decoding starves)
COLUMNS = ("batch", "digest", "imgId", "file", "caption", "medium", "movement", "artist", "trending", "flavors",
           "prompt", "failed")
OPTIONAL = ("embedding", "negative_prompt", "prompt_embedding", "head", "bank",  # embeds; negative_prompt; a blend
            "tags", "tag_scores", "rating", "rating_score", "text")  # with a tagger; with a caption template
VECTOR_COLUMNS = ("embedding", "prompt_embedding", "head", "bank")


def set_ray_environment() -> None:
    """Settings Ray reads when it is imported: no usage stats, no auth token, a local cluster on 127.0.0.1."""
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)


set_ray_environment()  # before anything imports ray


def _ray():
    try:
        import ray  # lazy: the [ray] extra
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise InterrogatorError("--engine ray needs Ray Data: pip install -e '.[ray]'") from exc
    if not logging.getLogger("interrogator").isEnabledFor(logging.DEBUG):
        logging.getLogger("ray").setLevel(logging.WARNING)
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # the executor's plan, timing and bar notices
    return ray


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None,
            object_store_memory: Optional[int] = None) -> None:
    """Join the cluster at ``address`` (or RAY_ADDRESS), else start a local one (no dashboard, usage stats off)."""
    ray = _ray()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    debug = logging.getLogger("interrogator").isEnabledFor(logging.DEBUG)
    with driver_log_level(debug):
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=debug)
            return
        short = tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None)  # socket paths <= 107
        ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=object_store_memory,
                 _temp_dir=short, logging_level=logging.WARNING, log_to_driver=debug)


@contextmanager
def driver_log_level(debug: bool):
    """Ray's own lines on this console, only with --debug. Without it, the workers' output stays in their log
    files (``log_to_driver``: their errors still reach the driver as exceptions, and undecodable images are in the
    summary), and this process's core worker, started by ``ray.init``, prints only fatal lines: Ray Data makes it
    print an error-level line for every actor pool (ray-project/ray#57733)."""
    if debug or "RAY_BACKEND_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["RAY_BACKEND_LOG_LEVEL"] = "fatal"
    try:
        yield
    finally:
        del os.environ["RAY_BACKEND_LOG_LEVEL"]


# ---- one batch's file: a writer of the batch record -------------------------------------------
def batch_file(folder: Path, batch: int) -> Path:
    return folder / f"batch-{batch:06d}.parquet"


def record_table(batch: int, record, relative: Sequence[str], blend):
    """One batch's record as rows (outputs.arrow_table) with its batch number and digests first; with a blend,
    the prompt embeddings and the head's and bank's predictions too, so that the record reads back whole."""
    import pyarrow as pa  # lazy: the [ray] extra
    vectors = None if record.embeddings is None else blend_vectors(blend, record.embeddings, record.head, record.bank)
    rows = rows_of(RunResult(record.ids, record.captions, record.prompts, vectors, record.tags, record.negatives,
                             failed=record.failed, files=list(relative), tagged=record.tagged, texts=record.texts))
    table = arrow_table(rows, vectors, {"batch": pa.array([batch] * len(rows), pa.int32()),
                                        "digest": list(record.digests)})
    if blend is not None and vectors is not None:
        for name in ("prompt_embedding", "head", "bank"):
            value = record.embeddings if name == "prompt_embedding" else getattr(record, name)
            if value is not None:
                table = table.append_column(name, vector_column(value))
    return table


def read_batch(path: Path):
    """A batch file as the record.BatchRecord it was written from; RecordError for anything that is not one
    this engine wrote whole (checked as the work folder's records are)."""
    import pyarrow.parquet as pq  # lazy: the [ray] extra
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise RecordError(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    names = table.column_names
    extra = [n for n in names if n not in COLUMNS]
    if tuple(n for n in names if n in COLUMNS) != COLUMNS or set(extra) - set(OPTIONAL):
        raise RecordError(f"columns {names}")
    col = {name: table.column(name).to_pylist() for name in names if name not in VECTOR_COLUMNS}
    failed = {i: why for i, why in zip(col["imgId"], col["failed"]) if why}
    tags = [None if i in failed else Tags(m, v, list(f), a, t) for i, m, v, f, a, t in
            zip(col["imgId"], col["medium"], col["movement"], col["flavors"], col["artist"], col["trending"])]
    arrays = {n: _array(table, n) for n in ("head", "bank") if n in names}
    if "embedding" in names:
        arrays["embeddings"] = _array(table, "prompt_embedding" if "prompt_embedding" in names else "embedding")
    header = {"ids": col["imgId"], "digests": col["digest"], "failed": failed, "captions": col["caption"],
              "tags": [None if t is None else t.__dict__ for t in tags], "prompts": col["prompt"],
              "negatives": col.get("negative_prompt")}
    if "tags" in col:
        header["tagged"] = [None if i in failed else {"tags": [[t, s] for t, s in zip(names, scores)],
                                                      "rating": rating, "rating_score": score}
                            for i, names, scores, rating, score in zip(col["imgId"], col["tags"], col["tag_scores"],
                                                                       col["rating"], col["rating_score"])]
    if "text" in col:
        header["texts"] = col["text"]
    return BatchRecord.checked(header, arrays)


def _array(table, name: str) -> np.ndarray:
    column = table.column(name).combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(table), SUBMISSION_DIM)


class BatchFiles:
    """Ray's per-batch Parquet files under ``<parquet_dir>/<key>/``, read as batch records for the resume rule."""

    def __init__(self, folder: Path):
        self.folder = folder

    def load(self, batch: int):
        path = batch_file(self.folder, batch)
        if not path.exists():
            return None
        try:
            return read_batch(path)
        except RecordError as exc:
            log.warning("ray output: %s cannot be read back (%s); redoing that batch", path.name, exc)
            return None


# ---- the model stage (the reader stage: ray_read.py) -------------------------------------------
class InterrogateActor:
    """GPU (or CPU) stage: the models loaded once per actor from the config; each call runs the one batch
    function (stages.run_stages) on whole batches and writes each batch's record as its Parquet file."""

    def __init__(self, config: Config, tables, out: str, threads: int, shards: Sequence = ()):
        quiet_libraries()
        ray = _ray()
        if isinstance(tables, list):  # [ObjectRef]: the tables stay in the object store, not in the actor's spec
            tables = ray.get(tables[0])
        self.shards: Optional[ShardWork] = shards[0] if shards else None  # [ShardWork]: its refs stay refs
        if config.resolved_device().startswith("cuda"):
            config = replace(config, device="cuda")  # the GPU Ray gave this actor is its only visible one
        else:
            torch.set_num_threads(threads)  # a CPU's sums depend on the thread count: the driver's, as a single run
        self.config, self.out = config, Path(out)
        self.models = load_models(config, needs_of(config, data=False), tables)
        self.batcher = StageBatcher.of(config)

    def run_batch(self, number: int, files: List[ImageFile], relative: List[str], batch) -> Tuple[dict, str]:
        """One batch through the stages, its file written; the seconds of each stage, and the input shard whose
        outputs it wrote ('' for none)."""
        import pyarrow.parquet as pq  # lazy: the [ray] extra
        timer = StageTimer(self.config.resolved_device())
        record = new_record(files, range(len(files)), batch)
        run_stages(self.models, [s.name for s in stages_of(self.config)], batch, record, self.batcher, self.config,
                   timer)
        table = record_table(number, record, relative, self.config.blend)
        with timer("save"):
            atomic_write(batch_file(self.out, number), lambda f: pq.write_table(table, f))
            shard = self.write_shard(number)
        return timer.seconds, shard

    def write_shard(self, number: int) -> str:
        """The outputs of the batch's input shard, where every batch file of that shard is now here and passes
        the resume rule; else nothing (the actor that lands its last batch, or the driver, writes them). Two
        actors landing a shard's last batches at once both write the same bytes, each file atomically. Returns
        the shard's path where it wrote them, else ''."""
        if self.shards is None or number not in self.shards.of_batch:
            return ""
        part, first = _ray().get(self.shards.jobs[self.shards.of_batch[number]])
        if not all(batch_file(self.out, first + k).exists() for k in range(len(part.batches))):
            return ""
        store = BatchFiles(self.out)
        records, missing = collect(part, lambda k: store.load(first + k))
        if missing:
            return ""
        ShardFiles(part, marks=self.out / "shards").rest(records)
        return str(part.files[0].path)

    def __call__(self, rows: Dict[str, np.ndarray]) -> dict:
        seconds, shards = [], []
        for number, payload in zip(rows["batch"], rows["payload"]):
            files, relative, batch = pickle.loads(payload)
            spent, shard = self.run_batch(int(number), files, relative, batch)
            seconds.append(json.dumps(spent))
            shards.append(shard)
        return {"batch": np.asarray(rows["batch"]), "seconds": np.asarray(seconds), "reread": rows["reread"],
                "shard": np.asarray(shards)}


# ---- the driver -------------------------------------------------------------------------------
def default_parquet_dir(writing: OutputSettings) -> str:
    """Beside the config's output: ``<output stem>.parquet/``."""
    output = Path(writing.output)
    return str(output.with_name(f"{output.stem}.parquet"))


@dataclass(frozen=True)
class ShardWork:
    """What the actors need to write each input shard's outputs: the shard of each batch (an index into ``jobs``),
    and per shard an ObjectRef of (its own plan, finish.ShardSpan.alone; the number of its first batch)."""

    of_batch: Dict[int, int]
    jobs: List


def shard_work(plan, strict: bool) -> Optional[ShardWork]:
    """The plan's ShardWork; None without outputs per input shard, or under --strict (nothing is written before
    the driver's check)."""
    if strict or plan.outputs is None or not plan.outputs.shards:
        return None
    ray = _ray()
    spans = [s for s in shard_spans(plan) if any(s.shard in by_shard for by_shard in plan.outputs.shards.values())]
    return ShardWork({b: n for n, s in enumerate(spans) for b in range(s.first, s.last)},
                     [ray.put((s.alone(plan), s.first)) for s in spans])


def default_actors() -> int:
    ray = _ray()
    return max(1, int(ray.cluster_resources().get("GPU", 0)) or 1)


def check_parquet_dir(parquet_dir: str) -> None:
    """The Parquet folder can be made and written (one line now, not a traceback from an actor)."""
    path = Path(parquet_dir)
    if path.exists() and not path.is_dir():
        raise InterrogatorError(f"--parquet-dir: {path} is a file, not a folder")
    check_folder(path, "--parquet-dir")


def run_ray(config: Config, parquet_dir: str, csv: Optional[str] = None, address: Optional[str] = None,
            actors: Optional[int] = None, progress: bool = True, actor_cls=InterrogateActor,
            on_batch: Optional[Callable[[int], None]] = None, strict: bool = False):
    """The pipeline on Ray Data (see the module docstring). ``csv``: the output path, from which ``finish``
    writes every format of the config as a single run writes it. Returns a finish.RunResult."""
    quiet_libraries(logging.getLogger("interrogator").isEnabledFor(logging.DEBUG))
    if csv is not None:
        config = replace(config, output=csv)
    if actors is not None and actors < 1:
        raise InterrogatorError(f"--actors: expected a whole number >= 1, got {actors}")
    check_parquet_dir(parquet_dir)
    parquet_dir = os.path.abspath(parquet_dir)  # the actors run in other folders (and on other machines)
    timer = StageTimer("cpu")  # the driver's wall seconds (the actors' own are summed apart, ActorSeconds)
    with timer("plan"):
        plan = make_plan(config, write=csv is not None)
    folder = Path(parquet_dir) / plan.key
    folder.mkdir(parents=True, exist_ok=True)
    sweep_temps(folder)
    store = BatchFiles(folder)
    done, todo = collect(plan, store.load)
    captions = CaptionFiles.of(plan, strict)

    def finished(b: int) -> None:  # as each batch's file lands: its caption files (read back whole), then the caller's
        if captions.writer is not None:
            captions(b, store.load(b))
        if on_batch is not None:
            on_batch(b)
    spent = ActorSeconds()
    count = 0
    if todo:
        count = _run_dataset(plan, folder, todo, Pool(address, actors, actor_cls), progress, timer, spent, finished,
                             strict)
    records, missing = collect(plan, store.load, verified=set(done) | spent.made)  # none read again
    if missing:
        raise InterrogatorError(f"ray: {len(missing)} batches have no complete output in {folder} "
                                f"(first: batch {missing[0]}); rerun to finish them")
    with timer("write"):
        shards = ShardFiles(plan, folder / "shards", strict, fresh={Path(p) for p in spent.shards}) \
            if plan.outputs and plan.outputs.shards else None
        result = finish(plan, records, strict, txt=captions.writer, shards=shards)
    result.stage_seconds, result.worker_seconds = timer.seconds, spent.seconds
    result.resumed_batches = len(done)
    result.ray = f"{len(todo)} batches written by {count} actors, {len(done)} reused from {folder}"
    if spent.reader:
        result.ray += f"; the shards read by Ray Data's {spent.reader}, {spent.reread} samples of them by offset"
    return result


@dataclass(frozen=True)
class Pool:
    """Where the actors run and how many: the cluster's address (None: RAY_ADDRESS, else a local one), the
    count (None: one per GPU, else 1), and their class."""

    address: Optional[str]
    actors: Optional[int]
    actor_cls: type


@dataclass
class ActorSeconds:
    """The actors' seconds per stage, summed over every batch they ran (each batch reports its own); the batches
    they made and the input shards whose outputs they wrote (the driver does not hash those again); with shard
    inputs, the Ray reader that read them and how many samples were read by offset instead (ray_read.py)."""

    seconds: Dict[str, float] = field(default_factory=dict)
    made: Set[int] = field(default_factory=set)
    shards: Set[str] = field(default_factory=set)
    reader: str = ""
    reread: int = 0

    def add(self, reported: str) -> None:
        for stage, value in json.loads(reported).items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + value


def _run_dataset(plan, folder: Path, todo: List[int], pool: Pool, progress: bool, timer: StageTimer,
                 spent: ActorSeconds, on_batch, strict: bool = False) -> int:
    """The reader stage (ray_read.py) and the actor pool over the batches still to do; returns the number of
    actors. Shards are read by Ray Data's own readers; a batch none of their rows began, by offset after."""
    config = plan.config
    connect(pool.address)
    ray = _ray()
    ray.data.DataContext.get_current().enable_progress_bars = bars_enabled(progress)
    shared, clip = ray.put({}), None
    if config.needs_clip():
        with timer("labels"):
            ranked = load_models(config, needs_of(config).only(("clip",)), progress=progress)
        shared = ray.put({name: (t.labels, t.embeddings.float().cpu().numpy(), t.from_cache)
                          for name, t in ranked.tables.items()})
        clip = ranked.clip
    transforms = loader_transforms(config, ("caption", "tag"), clip=clip)
    del clip
    work = shard_work(plan, strict)
    stage = ActorStage(pool.actor_cls, pool.actors or default_actors(), {
        "config": config, "tables": [shared], "out": str(folder), "threads": torch.get_num_threads(),
        "shards": [work] if work is not None else []})
    kind = input_kind(config.data_path)
    stored = kind in ("tar", "parquet")
    reader = shard_dataset if stored else offset_dataset
    with timer("ray"):
        _drain(stage(ray, reader(ray, plan, todo, transforms, DECODE_CPUS)), spent, on_batch)
        left = [b for b in todo if b not in spent.made]
        if left and stored:  # batches whose first sample Ray's reader did not give (ray_read.py)
            spent.reread += sum(len(plan.batches[b]) for b in left)
            _drain(stage(ray, offset_dataset(ray, plan, left, transforms, DECODE_CPUS)), spent, on_batch)
    spent.reader = {"tar": "read_webdataset", "parquet": "read_parquet"}.get(kind, "")
    return stage.count


@dataclass(frozen=True)
class ActorStage:
    """The model stage: a pool of ``count`` actors of ``actor_cls`` built with ``kwargs``, over the reader's rows."""

    actor_cls: type
    count: int
    kwargs: dict

    def __call__(self, ray, ds):
        gpus = ray.cluster_resources().get("GPU", 0)
        cpus = ray.cluster_resources().get("CPU", 1)
        actor_cpus = 1.0 if gpus else max(0.25, min(1.0, (cpus - DECODE_CPUS) / self.count))
        return ds.map_batches(self.actor_cls, batch_size=1, compute=ray.data.ActorPoolStrategy(size=self.count),
                              num_gpus=1 if gpus else 0, num_cpus=actor_cpus, fn_constructor_kwargs=self.kwargs)


def _drain(ds, spent: ActorSeconds, on_batch) -> None:
    """Runs the dataset, each batch's report added to ``spent``."""
    for row in ds.iter_rows():
        spent.add(row["seconds"])
        spent.reread += int(row["reread"])
        spent.made.add(int(row["batch"]))
        if row["shard"]:
            spent.shards.add(str(row["shard"]))
        if on_batch is not None:
            on_batch(int(row["batch"]))


def read_output(parquet_dir: str):
    """Every row the engine wrote under ``parquet_dir`` (all keys), as one pandas DataFrame."""
    paths = sorted(Path(parquet_dir).glob("*/batch-*.parquet"))
    if not paths:
        raise InterrogatorError(f"no batch files under {parquet_dir}")
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
