"""The pipeline on Ray Data, for folders of millions of images and clusters (``submit --engine ray``).

The same stages as the single-machine run, arranged as Ray Data's streaming batch inference:

- one dataset row per pipeline batch (the same batches of ``caption`` batch size over the same sorted image
  list), so every model sees exactly the batches it sees in a single run;
- image reading, digests, decoding and preprocessing in a CPU ``map_batches`` stage of plain tasks
  (``decode_rows``: the pipeline's ``ImageDataset``), which Ray runs in parallel with the models;
- captioning, tagging, prompt assembly and embedding in a stateful actor class (``InterrogateActor``: the
  one batch function, ``stages.run_phases``, on models from the one loader, ``stages.load_models``), one model
  copy per actor, one actor per GPU by default (CPU actors when the cluster has no GPU); Ray replaces an actor that
  dies and retries its batch (actor pools default to unlimited restarts and task retries);
- the label tables encoded once by the driver (or read from the label cache) and shared with every actor
  through the object store.

The driver starts from the plan (plan.make_plan) a single run makes. Each finished batch is one Parquet file,
``<parquet_dir>/<key>/batch-NNNNNN.parquet``, written by the actor through the project's atomic writer: the
batch record (record.BatchRecord) as one row per image with ``batch``, ``digest`` and the fields of the
``parquet`` output format (outputs.py: ``imgId``, ``file`` (the path relative to data_path), ``caption``,
``medium``, ``movement``, ``artist``, ``trending``, ``flavors``, ``prompt``, ``failed`` (the reason, or empty),
``negative_prompt`` when asked for, and ``embedding``, 384 float32 as a plain fixed-size list; with a blend also
``prompt_embedding``, ``head`` and ``bank``). ``key`` is the single-machine resume key, and a file is read back
through the record's checked load and reused by the single run's rule (identity.unchanged), so a killed job
loses at most the batches in flight. With an output path, every format of the config is written from the
records by the single run's writers (outputs.write_all), byte-identical to it on the same device type.
"""
from __future__ import annotations

import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..core.config import Config
from ..core.errors import InterrogatorError
from ..core.images import ImageFile
from ..core.record import SUBMISSION_DIM

log = logging.getLogger(__name__)

LOCAL_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                 "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
DECODE_CPUS = 0.5  # per decode task; the actors' CPUs are kept below the cluster's minus this (else decoding starves)
COLUMNS = ("batch", "digest", "imgId", "file", "caption", "medium", "movement", "artist", "trending", "flavors",
           "prompt", "failed", "embedding")
OPTIONAL = ("negative_prompt", "prompt_embedding", "head", "bank",  # with negative_prompt; with a blend
            "tags", "tag_scores", "rating", "rating_score", "text")  # with a tagger; with a caption template
VECTOR_COLUMNS = ("embedding", "prompt_embedding", "head", "bank")


def set_ray_environment() -> None:
    """Settings Ray reads when it is imported: no usage stats, no auth token, a local cluster on 127.0.0.1."""
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)


set_ray_environment()  # before anything imports ray


def _ray():
    try:
        import ray
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
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return
    short = tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None)  # socket paths <= 107 bytes
    ray.init(num_cpus=num_cpus, include_dashboard=False, object_store_memory=object_store_memory,
             _temp_dir=short, logging_level=logging.WARNING)


# ---- one batch's file: a writer of the batch record -------------------------------------------
def batch_file(folder: Path, batch: int) -> Path:
    return folder / f"batch-{batch:06d}.parquet"


def record_table(batch: int, record, relative: Sequence[str], blend):
    """One batch's record as rows (outputs.arrow_table) with its batch number and digests first; with a blend,
    the prompt embeddings and the head's and bank's predictions too, so that the record reads back whole."""
    import pyarrow as pa
    from ..learn.blend import blend_vectors
    from ..runner.outputs import arrow_table, rows_of, vector_column
    from ..runner.pipeline import RunResult
    vectors = blend_vectors(blend, record.embeddings, record.head, record.bank)
    rows = rows_of(RunResult(record.ids, record.captions, record.prompts, vectors, record.tags, record.negatives,
                             failed=record.failed, files=list(relative), tagged=record.tagged, texts=record.texts))
    table = arrow_table(rows, vectors, {"batch": pa.array([batch] * len(rows), pa.int32()),
                                        "digest": list(record.digests)})
    if blend is not None:
        for name in ("prompt_embedding", "head", "bank"):
            value = record.embeddings if name == "prompt_embedding" else getattr(record, name)
            if value is not None:
                table = table.append_column(name, vector_column(value))
    return table


def read_batch(path: Path):
    """A batch file as the record.BatchRecord it was written from; RecordError for anything that is not one
    this engine wrote whole (checked as the work folder's records are)."""
    import pyarrow.parquet as pq
    from ..core.record import BatchRecord, RecordError, Tags
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
    arrays = {"embeddings": _array(table, "prompt_embedding" if "prompt_embedding" in names else "embedding")}
    arrays.update({n: _array(table, n) for n in ("head", "bank") if n in names})
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
        from ..core.record import RecordError
        path = batch_file(self.folder, batch)
        if not path.exists():
            return None
        try:
            return read_batch(path)
        except RecordError as exc:
            log.warning("ray output: %s cannot be read back (%s); redoing that batch", path.name, exc)
            return None


# ---- the two stages ---------------------------------------------------------------------------
def decode_rows(rows: Dict[str, np.ndarray], caption_transform: Optional[Callable], clip_transform: Optional[Callable],
                tagger_transform: Optional[Callable] = None) -> dict:
    """CPU stage: each row's images read, hashed, decoded and preprocessed into one pickled ImageBatch."""
    from ..core.images import ImageDataset, collate
    payloads = []
    for ids, paths, relative in zip(rows["ids"], rows["paths"], rows["relative"]):
        files = [ImageFile(str(i), Path(str(p))) for i, p in zip(ids, paths)]
        dataset = ImageDataset(files, caption_transform, clip_transform, tagger_transform)
        payloads.append(pickle.dumps((files, [str(r) for r in relative],
                                      collate([dataset[i] for i in range(len(files))]))))
    return {"batch": np.asarray(rows["batch"]), "payload": np.array(payloads, dtype=object)}


class InterrogateActor:
    """GPU (or CPU) stage: the models loaded once per actor from the config; each call runs the one batch
    function (stages.run_phases) on whole batches and writes each batch's record as its Parquet file."""

    def __init__(self, config: Config, tables, out: str, threads: int):
        import torch
        from ..core.config import replace
        from ..core.oom import StageBatcher
        from ..runner.pipeline import StageTimer
        from ..runner.stages import load_models
        from ..core.console import quiet_libraries
        quiet_libraries()
        ray = _ray()
        if isinstance(tables, list):  # [ObjectRef]: the tables stay in the object store, not in the actor's spec
            tables = ray.get(tables[0])
        if config.resolved_device().startswith("cuda"):
            config = replace(config, device="cuda")  # the GPU Ray gave this actor is its only visible one
        else:
            torch.set_num_threads(threads)  # a CPU's sums depend on the thread count: the driver's, as a single run
        self.config, self.out = config, Path(out)
        self.models = load_models(config, tables)
        device = config.resolved_device()
        self.batcher = StageBatcher({s: config.stage_batch_size(s) for s in ("caption", "clip", "embed")}, device)
        self.timer = StageTimer(device)

    def run_batch(self, number: int, files: List[ImageFile], relative: List[str], batch) -> int:
        from ..core.atomic import atomic_write
        from ..runner.stages import new_record, run_phases
        import pyarrow.parquet as pq
        record = new_record(files, range(len(files)), batch)
        run_phases(self.models, ("caption", "tag", "embed"), batch, record, self.batcher, self.config, self.timer)
        table = record_table(number, record, relative, self.config.blend)
        atomic_write(batch_file(self.out, number), lambda f: pq.write_table(table, f))
        return len(files)

    def __call__(self, rows: Dict[str, np.ndarray]) -> dict:
        done = []
        for number, payload in zip(rows["batch"], rows["payload"]):
            files, relative, batch = pickle.loads(payload)
            done.append(self.run_batch(int(number), files, relative, batch))
        return {"batch": np.asarray(rows["batch"]), "images": np.asarray(done)}


# ---- the driver -------------------------------------------------------------------------------
def default_parquet_dir(config: Config) -> str:
    """Beside the config's output: ``<output stem>.parquet/``."""
    output = Path(config.output)
    return str(output.with_name(f"{output.stem}.parquet"))


def default_actors() -> int:
    ray = _ray()
    return max(1, int(ray.cluster_resources().get("GPU", 0)) or 1)


def check_parquet_dir(parquet_dir: str) -> None:
    """The Parquet folder can be made and written (one line now, not a traceback from an actor)."""
    from ..core.plan import check_folder
    path = Path(parquet_dir)
    if path.exists() and not path.is_dir():
        raise InterrogatorError(f"--parquet-dir: {path} is a file, not a folder")
    check_folder(path, "--parquet-dir")


def run_ray(config: Config, parquet_dir: str, csv: Optional[str] = None, address: Optional[str] = None,
            actors: Optional[int] = None, progress: bool = True, actor_cls=InterrogateActor,
            on_batch: Optional[Callable[[int], None]] = None):
    """The pipeline on Ray Data (see the module docstring). ``csv``: the output path, from which every format
    of the config is written (outputs.write_all) as a single run writes it. Returns a pipeline.RunResult."""
    from ..core.config import replace
    from ..core.console import quiet_libraries
    from ..runner.pipeline import assemble
    from ..core.plan import make_plan
    from ..core.atomic import sweep_temps
    from ..core.workdir import resume
    quiet_libraries(logging.getLogger("interrogator").isEnabledFor(logging.DEBUG))
    if csv is not None:
        config = replace(config, output=csv)
    if actors is not None and actors < 1:
        raise InterrogatorError(f"--actors: expected a whole number >= 1, got {actors}")
    check_parquet_dir(parquet_dir)
    plan = make_plan(config, write=csv is not None)
    folder = Path(parquet_dir) / plan.key
    folder.mkdir(parents=True, exist_ok=True)
    sweep_temps(folder)
    store = BatchFiles(folder)
    done = resume(store.load, list(plan.files), plan.batches)
    todo = [b for b in range(len(plan.batches)) if b not in done]
    txt = None
    if plan.outputs is not None and plan.outputs.txt:
        from ..runner.outputs import txt_writer
        txt = txt_writer(config)
    on_batch = batch_finished(plan, store, txt, on_batch)
    count = _run_dataset(plan, folder, todo, address, actors, progress, actor_cls, on_batch) if todo else 0
    finished = resume(store.load, list(plan.files), plan.batches)
    missing = [b for b in range(len(plan.batches)) if b not in finished]
    if missing:
        raise InterrogatorError(f"ray: {len(missing)} batches have no complete output in {folder} "
                                f"(first: batch {missing[0]}); rerun to finish them")
    result = assemble(plan, finished)
    result.resumed_batches = len(done)
    result.ray = f"{len(todo)} batches written by {count} actors, {len(done)} reused from {folder}"
    if plan.outputs is not None:
        from ..runner.outputs import write_all
        result.output, result.written = write_all(plan, result, txt)
    return result


def batch_finished(plan, store: BatchFiles, txt, then: Optional[Callable[[int], None]]):
    """What the driver does as each batch's file lands: its caption files (from the file, read back whole), then
    the caller's callback."""
    def finished(b: int) -> None:
        if txt is not None:
            record = store.load(b)
            if record is not None:
                txt.write([plan.outputs.txt[i] for i in plan.batches[b]], record.final)
        if then is not None:
            then(b)
    return finished if txt is not None or then is not None else None


def _run_dataset(plan, folder: Path, todo: List[int], address, actors, progress, actor_cls, on_batch) -> int:
    """The decode stage and the actor pool over the batches still to do; returns the number of actors."""
    import torch
    from ..models.caption import caption_transform as captioner_transform
    from ..core.console import bars_enabled
    from ..runner.stages import load_clip_stage
    config = plan.config
    connect(address)
    ray = _ray()
    ray.data.DataContext.get_current().enable_progress_bars = bars_enabled(progress)
    shared, clip_transform = ray.put({}), None
    if config.needs_clip():
        clip, tables = load_clip_stage(config, progress)
        shared = ray.put({name: (t.labels, t.embeddings.float().cpu().numpy(), t.from_cache)
                          for name, t in tables.items()})
        clip_transform = clip.preprocess
        del clip, tables
    caption_transform = captioner_transform(config.blip_path) if config.needs_captioner() else None
    tagger_transform = None
    if config.tagger_path is not None:
        from ..models.tagger import tagger_transform as make_tagger_transform
        tagger_transform = make_tagger_transform(config.tagger_path)
    gpus = ray.cluster_resources().get("GPU", 0)
    count = actors or default_actors()
    cpus = ray.cluster_resources().get("CPU", 1)
    actor_cpus = 1.0 if gpus else max(0.25, min(1.0, (cpus - DECODE_CPUS) / count))
    items = [{"batch": b, "ids": [plan.files[i].image_id for i in plan.batches[b]],
              "paths": [str(plan.files[i].path) for i in plan.batches[b]],
              "relative": [plan.relative[i] for i in plan.batches[b]]} for b in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(decode_rows, batch_size=1, num_cpus=DECODE_CPUS,
                        fn_kwargs={"caption_transform": caption_transform, "clip_transform": clip_transform,
                                   "tagger_transform": tagger_transform})
    ds = ds.map_batches(actor_cls, batch_size=1, compute=ray.data.ActorPoolStrategy(size=count),
                        num_gpus=1 if gpus else 0, num_cpus=actor_cpus,
                        fn_constructor_kwargs={"config": config, "tables": [shared], "out": str(folder),
                                               "threads": torch.get_num_threads()})
    for row in ds.iter_rows():
        if on_batch is not None:
            on_batch(int(row["batch"]))
    return count


def read_output(parquet_dir: str):
    """Every row the engine wrote under ``parquet_dir`` (all keys), as one pandas DataFrame."""
    import pandas as pd
    paths = sorted(Path(parquet_dir).glob("*/batch-*.parquet"))
    if not paths:
        raise InterrogatorError(f"no batch files under {parquet_dir}")
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
