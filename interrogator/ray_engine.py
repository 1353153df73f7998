"""The pipeline on Ray Data, for folders of millions of images and clusters (``submit --engine ray``).

The same stages as the single-machine run, arranged as Ray Data's streaming batch inference:

- one dataset row per pipeline batch (the same batches of ``caption`` batch size over the same sorted image
  list), so every model sees exactly the batches it sees in a single run;
- image reading, digests, decoding and preprocessing in a CPU ``map_batches`` stage of plain tasks
  (``decode_rows``: the pipeline's ``ImageDataset``), which Ray runs in parallel with the models;
- captioning, tagging, prompt assembly, embedding and the blend in a stateful actor class
  (``InterrogateActor``: ``stages.caption_phase``, ``tag_phase`` and ``embed_phase``), one model copy per
  actor, one actor per GPU by default (CPU actors when the cluster has no GPU); Ray replaces an actor that
  dies and retries its batch (actor pools default to unlimited restarts and task retries);
- the label tables encoded once by the driver (or read from the label cache) and shared with every actor
  through the object store.

Each finished batch is one Parquet file, ``<parquet_dir>/<key>/batch-NNNNNN.parquet``, written by the actor
through the project's atomic writer: one row per image with ``batch``, ``digest`` and the fields of the
``parquet`` output format (outputs.py: ``imgId``, ``file``, ``caption``, ``medium``, ``movement``, ``artist``,
``trending``, ``flavors``, ``prompt``, ``failed`` (the reason, or empty) and ``embedding``, 384 float32 as a
plain fixed-size list). ``key`` is the single-machine resume key (identity.run_identity), so a
rerun skips every batch whose file holds the same images with the same digests, and a killed job loses at
most the batches in flight. The Kaggle CSV is written from the files only when asked, sorted and validated
as in a single run, and byte-identical to it on the same device type.
"""
from __future__ import annotations

import logging
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .config import Config
from .errors import InterrogatorError
from .images import ImageFile
from .record import SUBMISSION_DIM

log = logging.getLogger(__name__)

LOCAL_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                 "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
DECODE_CPUS = 0.5  # per decode task; the actors' CPUs are kept below the cluster's minus this (else decoding starves)
COLUMNS = ("batch", "digest", "imgId", "file", "caption", "medium", "movement", "artist", "trending", "flavors",
           "prompt", "failed", "embedding")


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


# ---- one batch's file -------------------------------------------------------------------------
def batch_file(folder: Path, batch: int) -> Path:
    return folder / f"batch-{batch:06d}.parquet"


def record_table(batch: int, record, files: Sequence[ImageFile], embeddings: np.ndarray):
    """One batch's rows (outputs.arrow_table) with its batch number first."""
    import pyarrow as pa
    from .outputs import arrow_table, rows_of
    rows = rows_of(record.ids, [f.path.name for f in files], record.captions, record.tags, record.prompts,
                   record.failed)
    return arrow_table(rows, embeddings, {"batch": pa.array([batch] * len(rows), pa.int32()),
                                          "digest": list(record.digests)})


@dataclass
class BatchRows:
    """One batch file read back."""

    ids: List[str]
    digests: List[str]
    captions: List[str]
    prompts: List[str]
    failed: Dict[str, str]
    embeddings: np.ndarray  # (n, 384) float32


def read_batch(path: Path) -> BatchRows:
    """A batch file; ValueError for anything that is not one this engine wrote whole."""
    import pyarrow.parquet as pq
    table = pq.read_table(path)
    if tuple(table.column_names) != COLUMNS:
        raise ValueError(f"columns {table.column_names}")
    emb = table.column("embedding").combine_chunks()
    vectors = emb.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(table), SUBMISSION_DIM)
    if not np.isfinite(vectors).all():
        raise ValueError("non-finite embeddings")
    col = {name: table.column(name).to_pylist() for name in ("imgId", "digest", "caption", "prompt", "failed")}
    return BatchRows(col["imgId"], col["digest"], col["caption"], col["prompt"],
                     {i: why for i, why in zip(col["imgId"], col["failed"]) if why}, vectors)


# ---- the two stages ---------------------------------------------------------------------------
def decode_rows(rows: Dict[str, np.ndarray], caption_transform: Callable, clip_transform: Callable) -> dict:
    """CPU stage: each row's images read, hashed, decoded and preprocessed into one pickled ImageBatch."""
    from .images import ImageDataset, collate
    payloads = []
    for ids, paths in zip(rows["ids"], rows["paths"]):
        files = [ImageFile(str(i), Path(str(p))) for i, p in zip(ids, paths)]
        dataset = ImageDataset(files, caption_transform, clip_transform)
        payloads.append(pickle.dumps((files, collate([dataset[i] for i in range(len(files))]))))
    return {"batch": np.asarray(rows["batch"]), "payload": np.array(payloads, dtype=object)}


class InterrogateActor:
    """GPU (or CPU) stage: the models loaded once per actor from the config; each call runs the pipeline's
    phases on whole batches and writes each batch's Parquet file."""

    def __init__(self, config: Config, tables, out: str, threads: int):
        import torch
        from .config import replace
        from .labels import LabelTable
        from .oom import StageBatcher
        from .pipeline import StageTimer
        from .stages import Models, load_captioner_stage, load_learned, load_sentence
        from .clip import load_clip
        from .console import quiet_libraries
        quiet_libraries()
        ray = _ray()
        if isinstance(tables, list):  # [ObjectRef]: the tables stay in the object store, not in the actor's spec
            tables = ray.get(tables[0])
        if config.resolved_device().startswith("cuda"):
            config = replace(config, device="cuda")  # the GPU Ray gave this actor is its only visible one
        else:
            torch.set_num_threads(threads)  # a CPU's sums depend on the thread count: the driver's, as a single run
        self.config, self.out = config, Path(out)
        device, dtype = config.resolved_device(), config.torch_dtype()
        models = Models(captioner=load_captioner_stage(config), sentence=load_sentence(config))
        if config.needs_clip():
            models.clip = load_clip(config.clip_model, config.clip_path, device, dtype)
            models.tables = {name: LabelTable(name, labels, torch.tensor(emb).to(models.clip.device, dtype), hit)
                             for name, (labels, emb, hit) in tables.items()}
            models.head, models.bank = load_learned(config, models.clip)
        self.models = models
        self.batcher = StageBatcher({s: config.stage_batch_size(s) for s in ("caption", "clip", "embed")}, device)
        self.timer = StageTimer(device)

    def run_batch(self, number: int, files: List[ImageFile], batch) -> int:
        from .atomic import atomic_write
        from .blend import blend_vectors
        from .stages import caption_phase, embed_phase, new_record, tag_phase
        import pyarrow.parquet as pq
        record = new_record(files, range(len(files)), batch)
        caption_phase(self.models, batch, record, self.batcher)
        tag_phase(self.models, batch, record, self.batcher, self.config, self.timer)
        embed_phase(self.models, record, self.batcher)
        vectors = blend_vectors(self.config.blend, record.embeddings, record.head, record.bank)
        table = record_table(number, record, files, vectors)
        atomic_write(batch_file(self.out, number), lambda f: pq.write_table(table, f))
        return len(files)

    def __call__(self, rows: Dict[str, np.ndarray]) -> dict:
        done = []
        for number, payload in zip(rows["batch"], rows["payload"]):
            files, batch = pickle.loads(payload)
            done.append(self.run_batch(int(number), files, batch))
        return {"batch": np.asarray(rows["batch"]), "images": np.asarray(done)}


# ---- the driver -------------------------------------------------------------------------------
@dataclass
class RayResult:
    image_ids: List[str]
    captions: List[str]
    prompts: List[str]
    embeddings: np.ndarray
    failed: Dict[str, str]
    parquet_dir: Path
    reused_batches: int
    written_batches: int
    actors: int = 0
    skipped: list = field(default_factory=list)
    output: Optional[Path] = None

    def summary(self) -> str:
        lines = [f"images: {len(self.image_ids)} done, {len(self.failed)} undecodable (fallback prompt)"]
        lines += [f"  undecodable: {i}: {why}" for i, why in sorted(self.failed.items())]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} entries named like images: "
                         + ", ".join(f"{name} ({why})" for name, why in self.skipped))
        lines.append(f"ray: {self.written_batches} batches written by {self.actors} actors, "
                     f"{self.reused_batches} reused from {self.parquet_dir}")
        if self.output is not None:
            lines.append(f"submission: {self.output}")
        return "\n".join(lines)


def finished_batches(folder: Path, files: Sequence[ImageFile], batches: Sequence[Sequence[int]]) -> Dict[int, BatchRows]:
    """{batch: rows} for every batch file that holds that batch's images with their current digests."""
    from .identity import hash_files
    saved = {}
    for b, members in enumerate(batches):
        path = batch_file(folder, b)
        if not path.exists():
            continue
        try:
            rows = read_batch(path)
        except Exception as exc:
            log.warning("ray output: %s cannot be read back (%s: %s); redoing that batch", path.name,
                        type(exc).__name__, str(exc)[:200])
            continue
        if rows.ids == [files[i].image_id for i in members]:
            saved[b] = rows
    members = [i for b in saved for i in batches[b]]
    current = dict(zip(members, hash_files([files[i].path for i in members])))
    return {b: r for b, r in saved.items() if r.digests == [current[i] for i in batches[b]]}


def default_parquet_dir(config: Config) -> str:
    """Beside the config's output: ``<output stem>.parquet/``."""
    output = Path(config.output)
    return str(output.with_name(f"{output.stem}.parquet"))


def default_actors() -> int:
    ray = _ray()
    return max(1, int(ray.cluster_resources().get("GPU", 0)) or 1)


def run_ray(config: Config, parquet_dir: str, csv: Optional[str] = None, address: Optional[str] = None,
            actors: Optional[int] = None, progress: bool = True, actor_cls=InterrogateActor,
            on_batch: Optional[Callable[[int], None]] = None) -> RayResult:
    """The pipeline on Ray Data (see the module docstring); ``csv`` writes the Kaggle CSV from the files."""
    import torch
    from .caption import load_caption_processor
    from .console import bars_enabled, quiet_libraries
    from .identity import digest, run_identity
    from .pipeline import check_inputs, check_output, mode_label_files
    from .stages import load_clip_stage
    from .atomic import sweep_temps
    from functools import partial
    from .caption import pixel_values
    quiet_libraries(logging.getLogger("interrogator").isEnabledFor(logging.DEBUG))
    config.check_blend()
    scan = check_inputs(config, write=False)
    if csv is not None:
        check_output(csv)
    files = scan.files
    size = config.stage_batch_size("caption")
    batches = [list(range(i, min(i + size, len(files)))) for i in range(0, len(files), size)]
    key = digest(run_identity(config, mode_label_files(config)))
    folder = Path(parquet_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    sweep_temps(folder)
    done = finished_batches(folder, files, batches)
    todo = [b for b in range(len(batches)) if b not in done]
    count = 0
    if todo:
        connect(address)
        ray = _ray()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = bars_enabled(progress)
        shared, clip_transform = ray.put({}), None
        if config.needs_clip():
            clip, tables = load_clip_stage(config, progress)
            shared = ray.put({name: (t.labels, t.embeddings.float().cpu().numpy(), t.from_cache)
                              for name, t in tables.items()})
            clip_transform = clip.preprocess
            del clip, tables
        caption_transform = partial(pixel_values, load_caption_processor(config.blip_path).image_processor)
        gpus = ray.cluster_resources().get("GPU", 0)
        count = actors or default_actors()
        cpus = ray.cluster_resources().get("CPU", 1)
        actor_cpus = 1.0 if gpus else max(0.25, min(1.0, (cpus - DECODE_CPUS) / count))
        items = [{"batch": b, "ids": [files[i].image_id for i in batches[b]],
                  "paths": [str(files[i].path) for i in batches[b]]} for b in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(decode_rows, batch_size=1, num_cpus=DECODE_CPUS,
                            fn_kwargs={"caption_transform": caption_transform, "clip_transform": clip_transform})
        ds = ds.map_batches(actor_cls, batch_size=1, compute=ray.data.ActorPoolStrategy(size=count),
                            num_gpus=1 if gpus else 0, num_cpus=actor_cpus,
                            fn_constructor_kwargs={"config": config, "tables": [shared], "out": str(folder),
                                                   "threads": torch.get_num_threads()})
        for row in ds.iter_rows():
            if on_batch is not None:
                on_batch(int(row["batch"]))
    finished = finished_batches(folder, files, batches)
    missing = [b for b in range(len(batches)) if b not in finished]
    if missing:
        raise InterrogatorError(f"ray: {len(missing)} batches have no complete output in {folder} "
                                f"(first: batch {missing[0]}); rerun to finish them")
    result = _assemble(files, batches, finished, folder, reused=len(done), written=len(todo), actors=count)
    result.skipped = scan.skipped
    if csv is not None:
        from .submission import write_submission
        result.output = write_submission(result.image_ids, result.embeddings, csv)
    return result


def _assemble(files, batches, finished: Dict[int, BatchRows], folder: Path, reused: int, written: int,
              actors: int) -> RayResult:
    ids, captions, prompts, failed, vectors = [], [], [], {}, []
    for b in range(len(batches)):
        rows = finished[b]
        ids += rows.ids
        captions += rows.captions
        prompts += rows.prompts
        failed.update(rows.failed)
        vectors.append(rows.embeddings)
    embeddings = np.concatenate(vectors) if vectors else np.zeros((0, SUBMISSION_DIM), np.float32)
    return RayResult(ids, captions, prompts, embeddings, failed, folder, reused, written, actors)


def read_output(parquet_dir: str):
    """Every row the engine wrote under ``parquet_dir`` (all keys), as one pandas DataFrame."""
    import pandas as pd
    paths = sorted(Path(parquet_dir).glob("*/batch-*.parquet"))
    if not paths:
        raise InterrogatorError(f"no batch files under {parquet_dir}")
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
