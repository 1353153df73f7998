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
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.atomic import atomic_write, write_bytes
from ..core.record import SUBMISSION_DIM

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


def rows_of(result) -> List[Row]:
    """The one builder of output rows: each image's row from a run's result (pipeline.RunResult)."""
    out = []
    for n, (i, f, c, t, p) in enumerate(zip(result.image_ids, result.files, result.captions, result.tags,
                                            result.prompts)):
        out.append(Row(i, f, c, t.medium if t else "", t.movement if t else "", t.artist if t else "",
                       t.trending if t else "", list(t.flavors) if t else [], p, result.failed.get(i, ""),
                       None if result.negatives is None else result.negatives[n]))
    return out


def arrow_table(rows: Sequence[Row], embeddings: np.ndarray, extra: Optional[dict] = None):
    """The rows and their embeddings as an Arrow table (``extra``: leading columns, such as the batch)."""
    import pyarrow as pa
    columns = dict(extra or {})
    names = list(FIELDS) + (["negative_prompt"] if rows and rows[0].negative is not None else [])
    for name in names:
        values = [r.as_dict()[name] for r in rows]
        columns[name] = pa.array(values, pa.list_(pa.string())) if name == "flavors" else values
    columns["embedding"] = vector_column(embeddings)
    return pa.table(columns)


def vector_column(array: np.ndarray):
    """(n, 384) float32 as a plain Arrow fixed-size list column, which any Arrow reader understands."""
    import pyarrow as pa
    flat = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), SUBMISSION_DIM)


def format_paths(output: str) -> Dict[str, Path]:
    out = Path(output)
    return {"kaggle": out, "csv": out.with_name(f"{out.stem}.prompts.csv"),
            "jsonl": out.with_name(f"{out.stem}.jsonl"), "parquet": out.with_name(f"{out.stem}.parquet")}


def write_txt(rows: Sequence[Row], paths: Sequence[Path], overwrite: bool) -> Dict[str, int]:
    """Each prompt in its ``.txt`` (plan.txt_paths); returns counts of written, unchanged and kept files."""
    counts = {"written": 0, "unchanged": 0, "kept": 0}
    for row, target in zip(rows, paths):
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


def write_all(plan, result) -> Tuple[Optional[Path], Dict[str, object]]:
    """Every output of the plan (plan.Outputs) from a run's result: the submission's path and {format: path
    or txt counts} of the others."""
    from .submission import write_submission
    outputs, rows = plan.outputs, rows_of(result)
    submission = None
    if outputs.submission is not None:
        submission = write_submission(result.kaggle_ids, result.embeddings, outputs.submission)
    written: Dict[str, object] = {}
    if outputs.txt:
        written["txt"] = write_txt(rows, outputs.txt, plan.config.overwrite)
    if "csv" in outputs.files:
        import pandas as pd
        columns = list(FIELDS) + (["negative_prompt"] if rows and rows[0].negative is not None else [])
        frame = pd.DataFrame([{**r.as_dict(), "flavors": ", ".join(r.flavors)} for r in rows], columns=columns)
        written["csv"] = atomic_write(outputs.files["csv"],
                                      lambda f: f.write(frame.to_csv(index=False).encode("utf-8")))
    if "jsonl" in outputs.files:
        text = "".join(json.dumps(r.as_dict(), ensure_ascii=False) + "\n" for r in rows)
        written["jsonl"] = write_bytes(outputs.files["jsonl"], text.encode("utf-8"))
    if "parquet" in outputs.files:
        import pyarrow.parquet as pq
        table = arrow_table(rows, result.embeddings)
        written["parquet"] = atomic_write(outputs.files["parquet"], lambda f: pq.write_table(table, f))
    return submission, written
