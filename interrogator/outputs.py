"""What a run writes, in any of several formats at once (config key ``formats``, or ``--format``).

| format | where | what |
| --- | --- | --- |
| ``kaggle`` | ``output`` | the submission CSV (submission.py); ids are file stems, so they must be unique |
| ``txt`` | ``<stem>.txt`` beside each image, or under ``txt_dir`` keeping the sub-folders | the prompt, one line |
| ``csv`` | ``<output stem>.prompts.csv`` | imgId, file, caption, medium, movement, artist, trending, flavors, prompt, failed, and negative_prompt when ``negative_prompt`` is set |
| ``jsonl`` | ``<output stem>.jsonl`` | the same fields, one JSON object a line (flavors as a list) |
| ``parquet`` | ``<output stem>.parquet`` | the same fields and ``embedding`` (384 float32, a plain fixed-size list) |

Every file goes through the atomic writer, after every batch is done (the batch records in the work folder
carry a killed run's progress, as for the CSV). A ``.txt`` that exists is never replaced unless ``overwrite``:
one holding exactly the prompt is left as it is (a rerun after a kill), any other is skipped and counted in
one warning.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .atomic import atomic_write, write_bytes
from .errors import ConfigError
from .record import SUBMISSION_DIM

log = logging.getLogger(__name__)

FORMATS = ("kaggle", "txt", "csv", "jsonl", "parquet")
FIELDS = ("imgId", "file", "caption", "medium", "movement", "artist", "trending", "flavors", "prompt", "failed")


@dataclass
class Row:
    """One image's result, as the outputs write it."""

    image_id: str
    file: str            # the path relative to data_path
    caption: str
    medium: str
    movement: str
    artist: str
    trending: str
    flavors: List[str]
    prompt: str
    failed: str          # why it could not be decoded, or ''
    negative: Optional[str] = None  # the negative prompt, when asked for (config key negative_prompt)

    def as_dict(self) -> dict:
        out = dict(zip(FIELDS, (self.image_id, self.file, self.caption, self.medium, self.movement, self.artist,
                                self.trending, self.flavors, self.prompt, self.failed)))
        if self.negative is not None:
            out["negative_prompt"] = self.negative
        return out


def rows_of(ids: Sequence[str], files: Sequence[str], captions, tags, prompts, failed: Dict[str, str],
            negatives: Optional[Sequence[str]] = None) -> List[Row]:
    out = []
    for n, (i, f, c, t, p) in enumerate(zip(ids, files, captions, tags, prompts)):
        out.append(Row(i, f, c, t.medium if t else "", t.movement if t else "", t.artist if t else "",
                       t.trending if t else "", list(t.flavors) if t else [], p, failed.get(i, ""),
                       None if negatives is None else negatives[n]))
    return out


def arrow_table(rows: Sequence[Row], embeddings: np.ndarray, extra: Optional[dict] = None):
    """The rows and their embeddings as an Arrow table (``extra``: leading columns, such as the batch)."""
    import pyarrow as pa
    columns = dict(extra or {})
    names = list(FIELDS) + (["negative_prompt"] if rows and rows[0].negative is not None else [])
    for name in names:
        values = [r.as_dict()[name] for r in rows]
        columns[name] = pa.array(values, pa.list_(pa.string())) if name == "flavors" else values
    flat = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1)
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), SUBMISSION_DIM)
    return pa.table(columns)


def format_paths(output: str) -> Dict[str, Path]:
    out = Path(output)
    return {"kaggle": out, "csv": out.with_name(f"{out.stem}.prompts.csv"),
            "jsonl": out.with_name(f"{out.stem}.jsonl"), "parquet": out.with_name(f"{out.stem}.parquet")}


def check_formats(formats: Sequence[str]) -> None:
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"config key 'formats': expected some of {', '.join(FORMATS)}, got {list(formats)!r}")


def kaggle_ids(ids: Sequence[str], recursive: bool) -> List[str]:
    """The submission's ids: the file stems (with ``recursive``, ids are relative paths; stems must not collide)."""
    if not recursive:
        return list(ids)
    stems, seen = [], {}
    for image_id in ids:
        stem = Path(image_id).stem
        if stem in seen:
            raise ConfigError(f"config key 'formats': the kaggle format needs unique file stems, and "
                              f"{seen[stem]!r} and {image_id!r} share {stem!r}; leave kaggle out of formats "
                              f"or rename one")
        seen[stem] = image_id
        stems.append(stem)
    return stems


def write_txt(rows: Sequence[Row], data_path: str, txt_dir: Optional[str], overwrite: bool) -> Dict[str, int]:
    """``<stem>.txt`` with each prompt; returns counts of written, unchanged and kept (not overwritten) files."""
    counts = {"written": 0, "unchanged": 0, "kept": 0}
    for row in rows:
        base = Path(txt_dir) if txt_dir else Path(data_path)
        target = (base / row.file).with_suffix(".txt")
        data = (row.prompt + "\n").encode("utf-8")
        if target.exists() and not overwrite:
            counts["unchanged" if target.read_bytes() == data else "kept"] += 1
            continue
        write_bytes(target, data)
        counts["written"] += 1
    if counts["kept"]:
        log.warning("txt: %d existing .txt files hold other text and were not overwritten (--overwrite replaces "
                    "them)", counts["kept"])
    return counts


def write_outputs(formats: Sequence[str], rows: Sequence[Row], embeddings: np.ndarray, config) -> Dict[str, object]:
    """Every format but kaggle (pipeline.run writes the submission); {format: path or txt counts}."""
    paths = format_paths(config.output)
    written: Dict[str, object] = {}
    if "txt" in formats:
        written["txt"] = write_txt(rows, config.data_path, config.txt_dir, config.overwrite)
    if "csv" in formats:
        import pandas as pd
        columns = list(FIELDS) + (["negative_prompt"] if rows and rows[0].negative is not None else [])
        frame = pd.DataFrame([{**r.as_dict(), "flavors": ", ".join(r.flavors)} for r in rows], columns=columns)
        written["csv"] = atomic_write(paths["csv"], lambda f: f.write(frame.to_csv(index=False).encode("utf-8")))
    if "jsonl" in formats:
        text = "".join(json.dumps(r.as_dict(), ensure_ascii=False) + "\n" for r in rows)
        written["jsonl"] = write_bytes(paths["jsonl"], text.encode("utf-8"))
    if "parquet" in formats:
        import pyarrow.parquet as pq
        table = arrow_table(rows, embeddings)
        written["parquet"] = atomic_write(paths["parquet"], lambda f: pq.write_table(table, f))
    return written
