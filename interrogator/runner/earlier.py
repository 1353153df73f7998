"""The rows of the images a rerun leaves out (``existing_txt: skip``), from the earlier run's outputs, so that
every table output of a run over a folder holds every image of it.

An image whose caption file exists is not processed again under ``skip``; its row (and, for ``parquet`` and
``kaggle``, its embedding) comes from the outputs the earlier run wrote at the same paths: the Parquet file
(every field and the embedding), else the JSONL file (every field), and the submission CSV (the embedding).
``check`` runs with the plan, before any model loads: an image that no earlier output holds is named in one
line, with what to do (an error for the kaggle format, which must hold every image; a warning otherwise). ``outputs.merge_earlier`` puts the earlier rows among the new ones, in the folder's order.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import ConfigError
from ..core.plan import Outputs
from ..core.record import SUBMISSION_DIM, ImageTags
from .outputs import Row
from .submission import read_submission

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Earlier:
    """The earlier run's rows and embeddings of the skipped images, by image id."""

    rows: Dict[str, Row]              # by file (the path relative to data_path)
    vectors: Dict[str, np.ndarray]    # by file
    kaggle: Dict[str, str]            # file -> its id in the submission


def row_of(values: dict) -> Row:
    """A row as the jsonl and parquet outputs hold it (outputs.Row.as_dict, read back)."""
    tagged = None
    if "tags" in values:
        tagged = ImageTags([(t, float(s)) for t, s in zip(values["tags"], values["tag_scores"])],
                           values["rating"], float(values["rating_score"]))
    return Row(values["imgId"], values["file"], values["caption"], values["medium"], values["movement"],
               values["artist"], values["trending"], list(values["flavors"]), values["prompt"], values["failed"],
               values.get("negative_prompt"), tagged, values.get("text"))


def read_rows(outputs: Outputs) -> Tuple[Dict[str, dict], Dict[str, np.ndarray]]:
    """Every row (by file) and embedding (by file) the earlier outputs hold."""
    rows, vectors = {}, {}
    parquet, jsonl = outputs.files.get("parquet"), outputs.files.get("jsonl")
    if parquet is not None and parquet.is_file():
        import pyarrow.parquet as pq  # lazy: the [parquet] extra
        table = pq.read_table(parquet)
        embeddings = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        embeddings = embeddings.astype(np.float32).reshape(len(table), SUBMISSION_DIM)
        for n, values in enumerate(table.drop(["embedding"]).to_pylist()):
            rows[values["file"]], vectors[values["file"]] = values, embeddings[n]
    elif jsonl is not None and jsonl.is_file():
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            values = json.loads(line)
            rows[values["file"]] = values
    return rows, vectors


def earlier_vectors(submission: Optional[Path], kaggle: Dict[str, str]) -> Dict[str, np.ndarray]:
    """The earlier submission's vectors, by file (``kaggle``: file -> its id in the CSV)."""
    if submission is None or not submission.is_file():
        return {}
    ids, vectors = read_submission(submission)
    by_id = dict(zip(ids, vectors.astype(np.float32)))
    return {file: by_id[i] for file, i in kaggle.items() if i in by_id}


def check(outputs: Outputs, formats: Sequence[str], files: Sequence[str], kaggle: Sequence[str]) -> Earlier:
    """The earlier rows of the skipped images (``files``: their paths relative to data_path, ``kaggle``: their
    ids in the submission). The kaggle format refuses, naming the first, images with no earlier vector (a
    submission must hold every image); the other tables leave out images with no earlier row, in one warning."""
    if not files or not {"csv", "jsonl", "parquet", "kaggle"} & set(formats):
        return Earlier({}, {}, {})
    rows, vectors = read_rows(outputs)
    vectors = {**earlier_vectors(outputs.submission, dict(zip(files, kaggle))), **vectors}
    unsent = [f for f in files if f not in vectors]
    if "kaggle" in formats and unsent:
        raise ConfigError(f"existing_txt skip with the kaggle format: {len(unsent)} images whose caption files "
                          f"exist have no vector in the earlier outputs (first: {', '.join(unsent[:3])}); run once "
                          f"with existing_txt keep to write every row, or leave kaggle out of formats")
    rowless = [f for f in files if f not in rows or ("parquet" in formats and f not in vectors)]
    if rowless and {"csv", "jsonl", "parquet"} & set(formats):
        log.warning("existing_txt skip: %d images whose caption files exist are in no earlier output (first: %s), "
                    "so the table outputs leave them out; run once with existing_txt keep to include them",
                    len(rowless), ", ".join(rowless[:3]))
    rows = {f: rows[f] for f in files if f in rows and f not in rowless}
    return Earlier({f: row_of(values) for f, values in rows.items()}, {f: vectors[f] for f in files if f in vectors},
                   dict(zip(files, kaggle)))
