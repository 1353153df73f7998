"""The reader of the Ray engine: the plan's batches still to do, as rows of one pickled, decoded batch each
(``payload``: the batch's files, their paths relative to data_path, and its core.batches.ImageBatch), which the
actors (ray_engine.InterrogateActor) run through the models.

- **Loose files and file lists** (``offset_dataset``): one dataset row per batch, listing its files; a CPU task
  reads, hashes, decodes and preprocesses them (``decode_rows``: the pipeline's ``ImageDataset``).
- **WebDataset shards and Parquet files** (``shard_dataset``): Ray Data's own readers, ``read_webdataset``
  (raw bytes: ``decoder=None``; image members only) and ``read_parquet`` (the key and image columns), read every
  input shard that holds a batch still to do, as a stream in Ray's read tasks; ``read_rows`` turns their rows
  into the plan's batches. Parquet goes through Ray's first Parquet datasource: the newer one (the default from
  Ray 2.60) lists the files in threads that fail at random with ``ImportError`` where aiohttp is not installed.

Why ``read_rows`` makes exactly the plan's batches, whatever blocks Ray's readers make. Each input shard's batches
are consecutive runs of its samples (core.shards.Layout: no batch crosses a shard). A call of ``read_rows`` gets
some rows; each row names its shard (``__url__`` / ``path``) and its key, which the shard's ``ShardBatches`` maps
to (its batch, its place in it); rows of batches already done map to nothing and are left out. A call makes the
batches whose *first* sample it holds, and only those: every row is in exactly one call, so every batch still to
do is made exactly once. Where a call holds only the head of a batch (Ray cut the rows inside it), the rest of that
batch is read from the shard by offset, as the local loop reads it (``ImageFile.read``), and counted (``reread``).
Ray's batches of ``batch_size`` rows over one read task's rows begin where the shard does, so they are the plan's
batches and nothing is read twice; the count says where that did not hold. A batch none of Ray's rows began (a
sample Ray's reader does not list) is left to the driver, which makes it by offset (ray_engine.run_ray).

The bytes are the shard's bytes either way, so the digests, the decoded pixels and every output are the ones
the local loop makes.
"""
from __future__ import annotations

import functools
import inspect
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..core.batches import Transforms, image_batches
from ..core.config import IMAGE_EXTENSIONS
from ..core.identity import content_digest
from ..core.images import ImageFile
from ..core.samples import KEY_PATTERN, TarMember, input_kind, member_of, member_text


@dataclass(frozen=True)
class GivenFile(ImageFile):
    """A sample whose bytes a Ray reader already read."""

    data: bytes = b""

    def read(self) -> Tuple[bytes, str]:
        return self.data, content_digest(self.data)


@dataclass(frozen=True)
class ShardBatches:
    """The batches still to do of one input shard: each one's number, samples (the plan's files) and paths
    relative to data_path."""

    numbers: Tuple[int, ...]
    files: Tuple[Tuple[ImageFile, ...], ...]
    relative: Tuple[Tuple[str, ...], ...]

    @functools.cached_property
    def where(self) -> Dict[str, Tuple[int, int]]:
        """Each sample's key: (its batch's index here, its place in that batch)."""
        return {f.image_id: (i, k) for i, files in enumerate(self.files) for k, f in enumerate(files)}


@dataclass(frozen=True)
class Columns:
    """Where a reader's rows keep the shard's path, the key and the image bytes (None: the column named by each
    tar member's extensions, ``jpg`` for ``0000205.jpg``)."""

    url: str
    key: str
    image: Optional[str]

    @classmethod
    def of(cls, config) -> "Columns":
        if input_kind(config.data_path) == "tar":
            return cls("__url__", "__key__", None)
        return cls("path", config.key_column, config.image_column)


def image_suffix(suffix: str) -> bool:
    """read_webdataset's ``suffixes``: keep the members with an image extension (``jpg``, ``b.png``)."""
    return f".{suffix.rsplit('.', 1)[-1]}".lower() in IMAGE_EXTENSIONS


def batch_payload(files: Sequence[ImageFile], relative: Sequence[str], transforms: Transforms,
                  read: Optional[Sequence[ImageFile]] = None) -> bytes:
    """One batch read (from ``read``, the same samples with their bytes where a reader has them), hashed, decoded
    and preprocessed (core.batches.image_batches), pickled with its plan files and relative paths."""
    batch = next(image_batches(list(read or files), [list(range(len(files)))], transforms))
    return pickle.dumps((list(files), [str(r) for r in relative], batch))


# ---- loose files: one row per batch, read by path (and offset) --------------------------------
def offset_rows(plan, todo: Sequence[int]) -> List[dict]:
    """The dataset rows of ``offset_dataset``: each batch's files as plain values."""
    return [{"batch": b, "ids": [plan.files[i].image_id for i in plan.batches[b]],
             "paths": [os.path.abspath(plan.files[i].path) for i in plan.batches[b]],  # workers run elsewhere
             "members": [member_text(plan.files[i].member) for i in plan.batches[b]],  # a shard's samples
             "relative": [plan.relative[i] for i in plan.batches[b]]} for b in todo]


def decode_rows(rows: Dict[str, np.ndarray], transforms: Transforms) -> dict:
    """CPU stage: each row's images read, hashed, decoded and preprocessed into one pickled batch."""
    payloads = []
    for ids, paths, members, relative in zip(rows["ids"], rows["paths"], rows["members"], rows["relative"]):
        files = [ImageFile(str(i), Path(str(p)), member_of(str(m))) for i, p, m in zip(ids, paths, members)]
        payloads.append(batch_payload(files, relative, transforms))
    return {"batch": np.asarray(rows["batch"]), "payload": np.array(payloads, dtype=object),
            "reread": np.zeros(len(payloads), dtype=np.int64)}


def offset_dataset(ray, plan, todo: Sequence[int], transforms: Transforms, num_cpus: float):
    items = offset_rows(plan, todo)
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    return ds.map_batches(decode_rows, batch_size=1, num_cpus=num_cpus, fn_kwargs={"transforms": transforms})


# ---- shards: Ray Data's readers ---------------------------------------------------------------
def shard_batches(plan, todo: Sequence[int]) -> Iterator[Tuple[str, ShardBatches]]:
    """The batches still to do, by their input shard's absolute path, in the plan's order: a shard at a time, so
    the driver holds one shard's samples while it puts them in the object store."""
    grouped: Dict[str, List[int]] = {}
    for b in todo:
        grouped.setdefault(str(plan.files[plan.batches[b][0]].path), []).append(b)
    for path, numbers in grouped.items():
        yield path, ShardBatches(tuple(numbers), tuple(tuple(plan.files[i] for i in plan.batches[b]) for b in numbers),
                                 tuple(tuple(plan.relative[i] for i in plan.batches[b]) for b in numbers))


def shard_dataset(ray, plan, todo: Sequence[int], transforms: Transforms, num_cpus: float):
    """The batches still to do, read by Ray Data's own reader of the input's kind (module docstring)."""
    refs, size = {}, 0
    for path, batches in shard_batches(plan, todo):
        refs[path] = ray.put(batches)
        size = max([size] + [len(files) for files in batches.files])
    columns = Columns.of(plan.config)
    if columns.image is None:
        ds = ray.data.read_webdataset(list(refs), decoder=None, suffixes=image_suffix, override_num_blocks=len(refs),
                                      **read_cpus(ray.data.read_webdataset, num_cpus))
    else:
        context = ray.data.DataContext.get_current()
        if hasattr(context, "use_datasource_v2"):  # the first Parquet datasource (module docstring)
            context.use_datasource_v2 = False
        ds = ray.data.read_parquet(list(refs), columns=[columns.key, columns.image], include_paths=True,
                                   override_num_blocks=len(refs), **read_cpus(ray.data.read_parquet, num_cpus))
    return ds.map_batches(read_rows, batch_size=size, num_cpus=num_cpus, fn_kwargs={
        "transforms": transforms, "shards": [ray.put(refs)], "columns": columns})  # the refs inside stay alive


def read_cpus(reader, num_cpus: float) -> dict:
    """The CPUs of each read task, as the installed Ray's reader takes them: ``num_cpus`` (Ray 2.60's readers take
    it, and warn that ``ray_remote_args`` will go), else ``ray_remote_args``, else nothing (an older
    ``read_webdataset`` takes neither; its tasks then take Ray's default of one CPU)."""
    parameters = inspect.signature(reader).parameters
    if "num_cpus" in parameters:
        return {"num_cpus": num_cpus}
    return {"ray_remote_args": {"num_cpus": num_cpus}} if "ray_remote_args" in parameters else {}


@functools.lru_cache(maxsize=8)
def _fetched(ref):
    import ray  # lazy: the [ray] extra
    return ray.get(ref)


def read_rows(rows: Dict[str, np.ndarray], transforms: Transforms, shards: list, columns: Columns) -> dict:
    """CPU stage over a Ray reader's rows: the batches whose first sample they hold (module docstring), each one
    pickled as decode_rows makes it, with the number of its samples read by offset."""
    refs = _fetched(shards[0])  # [ObjectRef of {path: ObjectRef of ShardBatches}], each fetched once per worker
    out = {"batch": [], "payload": [], "reread": []}
    for number, files, relative, read, reread in owned_batches(rows, columns, lambda path: _fetched(refs[path])):
        out["batch"].append(number)
        out["payload"].append(batch_payload(files, relative, transforms, read))
        out["reread"].append(reread)
    return {"batch": np.asarray(out["batch"], dtype=np.int64), "payload": np.array(out["payload"], dtype=object),
            "reread": np.asarray(out["reread"], dtype=np.int64)}


def owned_batches(rows: Dict[str, np.ndarray], columns: Columns, shard_of) -> Iterator[tuple]:
    """(number, plan files, relative paths, files to read, how many of them are read by offset) of each batch
    whose first sample is in ``rows``; ``shard_of(path)``: that shard's ShardBatches. A sample not in the rows is
    read by offset (its plan file)."""
    found: Dict[Tuple[str, int], Dict[int, ImageFile]] = {}
    for index, (url, key) in enumerate(zip(rows[columns.url], rows[columns.key])):
        path = shard_path(str(url))
        hit = shard_of(path).where.get(str(key))
        if hit is None:
            continue  # a sample of a batch already done
        batch, place = hit
        file = shard_of(path).files[batch][place]
        data = row_image(rows, index, columns, file)  # None: no image member, the plan's file keeps its reason
        found.setdefault((path, batch), {})[place] = file if data is None else GivenFile(
            file.image_id, file.path, file.member, data)
    for (path, batch), given in found.items():
        if 0 not in given:
            continue  # its first sample is in another call, which makes it
        work = shard_of(path)
        files = work.files[batch]
        yield (work.numbers[batch], files, work.relative[batch], [given.get(k, f) for k, f in enumerate(files)],
               len(files) - len(given))


def shard_path(url: str) -> str:
    """A reader's path column as the plan's absolute path (Ray may give a ``file://`` URL or a bare path)."""
    return os.path.abspath(url[len("file://"):] if url.startswith("file://") else url)


def row_image(rows: Dict[str, np.ndarray], index: int, columns: Columns, file: ImageFile) -> Optional[bytes]:
    """The image bytes of one row: the column of the plan's image member; None where the row has none."""
    name = columns.image
    if name is None:
        if not isinstance(file.member, TarMember):
            return None
        name = KEY_PATTERN.match(file.member.name).group(2)
    values = rows.get(name)
    value = None if values is None else values[index]
    return bytes(value) if isinstance(value, (bytes, bytearray, np.bytes_)) else None
