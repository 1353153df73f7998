"""Outputs per input shard, for a data_path of WebDataset shards or Parquet files (core/samples.py):

| format | where | what |
| --- | --- | --- |
| ``shard-parquet`` | ``<output stem>.shards/<shard stem>.parquet`` | a row per sample: ``key`` (a string, zeros kept), the caption fields, tags, and the embedding where the run computed one |
| ``wds`` | ``<output stem>.shards/<shard name>.tar`` | the input shard's members in their order, each with its bytes and header unchanged, and after each sample's members its caption (``<key><wds_caption_extension>``, ``.caption``) and its fields (``<key>.interrogator.json``) |

img2dataset writes ``key.txt`` (the alt text) and ``key.json`` (its metadata) in every sample, and ``00000.parquet``
with ``00000_stats.json`` beside each shard: an added member named like one a shard holds is refused in one line
before any model loads, and an output path is never an input or a file this tool did not write (core/owned.py).
A shard's outputs are written when the plan holds all of its samples; the local loop writes each as soon as
its last batch is done (finish.ShardFiles), so a run killed in shard 3 leaves shards 1 and 2 written and
marked, and the rerun does not write them again.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..core.atomic import atomic_write
from ..core.errors import ConfigError
from ..core.listing import shard_counts
from ..core.samples import KEY_PATTERN

SHARD_FORMATS = ("shard-parquet", "wds")
FIELDS_MEMBER = "interrogator.json"


def shards_folder(output: str) -> Path:
    """``<output stem>.shards/``, absolute: Ray's workers write there from other folders."""
    out = Path(os.path.abspath(output))
    return out.with_name(f"{out.stem}.shards")


def shard_paths(config, kind: str, all_files: Sequence, files: Sequence,
                extensions: Dict[str, frozenset]) -> Dict[str, Dict[Path, Path]]:
    """{format: {input shard: its output}} for the shard formats asked, over the shards whose every sample is in
    ``files``; one line for a format the input cannot give, or a member name a shard already holds."""
    asked = [f for f in SHARD_FORMATS if f in config.formats]
    if not asked:
        return {}
    if kind not in ("tar", "parquet"):
        raise ConfigError(f"config key 'formats': {' and '.join(asked)} write one output per input shard, and "
                          f"data_path {config.data_path} holds no shards")
    if "wds" in asked and kind != "tar":
        raise ConfigError(f"config key 'formats': wds copies each sample's tar members, and data_path "
                          f"{config.data_path} is Parquet; write shard-parquet")
    total, here = shard_counts(all_files), shard_counts(files)
    complete = [Path(p) for p in here if here[p] == total[p]]
    folder = shards_folder(config.output)
    out: Dict[str, Dict[Path, Path]] = {}
    if "shard-parquet" in asked:
        out["shard-parquet"] = {s: folder / f"{s.stem}.parquet" for s in complete}
    if "wds" in asked:
        added = (config.wds_caption_extension.lstrip("."), FIELDS_MEMBER)
        for shard in complete:
            taken = [a for a in added if a in extensions.get(str(shard), ())]
            if taken:
                raise ConfigError(f"config key 'wds_caption_extension': the shard {shard} already holds "
                                  f"'<key>.{taken[0]}' members, which the wds output would add again; choose "
                                  f"another extension")
        out["wds"] = {s: folder / s.name for s in complete}
    return out


def write_shard_parquet(target: Path, rows: Sequence, vectors: Optional[np.ndarray]) -> Path:
    """One input shard's rows (runner/outputs.Row) as Parquet, ``key`` first."""
    import pyarrow.parquet as pq  # lazy: the [parquet] extra
    from .outputs import arrow_table
    table = arrow_table(rows, vectors, {"key": [r.file for r in rows]})
    return atomic_write(target, lambda f: pq.write_table(table, f))


def added_member(name: str, data: bytes) -> tuple:
    """A member this tool adds: fixed owner and time, so every engine writes the same bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o444
    return info, io.BytesIO(data)


def write_wds(source: Path, target: Path, rows: Dict[str, object], extension: str) -> Path:
    """The shard again, each sample followed by its caption and fields members (module docstring)."""
    def extra(key: str) -> List[tuple]:
        row = rows.get(key)
        if row is None:
            return []
        return [added_member(f"{key}.{extension.lstrip('.')}", row.final.encode("utf-8")),
                added_member(f"{key}.{FIELDS_MEMBER}", json.dumps(row.as_dict(), ensure_ascii=False).encode("utf-8"))]

    def write(f) -> None:
        with tarfile.open(source, mode="r:") as tar, tarfile.open(fileobj=f, mode="w", format=tar.format) as out:
            current = None
            for info in tar:
                match = KEY_PATTERN.match(info.name)
                key = match.group(1) if match and info.isfile() else None
                if current is not None and key != current:
                    for member in extra(current):
                        out.addfile(*member)
                out.addfile(info, tar.extractfile(info) if info.isfile() else None)
                current = key if key is not None else current
            for member in extra(current) if current is not None else []:
                out.addfile(*member)
    return atomic_write(target, write)
