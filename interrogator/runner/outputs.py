"""What a run writes, in any of several formats at once (config key ``formats``, or ``--format``).

| format | where | what |
| --- | --- | --- |
| ``kaggle`` | ``output`` | the submission CSV (submission.py); ids are file stems, so they must be unique |
| ``txt`` | ``<stem><txt_extension>`` (``.txt``, ``.caption``) beside each image, or under ``txt_dir`` keeping the sub-folders | the text, one line |
| ``csv`` | ``<output stem>.prompts.csv`` | imgId, file, caption, medium, movement, artist, trending, flavors, prompt, failed; negative_prompt when ``negative_prompt`` is set; tags, tag_scores, rating, rating_score with a tagger; text with a ``caption_template`` |
| ``jsonl`` | ``<output stem>.jsonl`` | the same fields, one JSON object a line (flavors as a list) |
| ``parquet`` | ``<output stem>.parquet`` | the same fields and ``embedding`` (384 float32, a plain fixed-size list) |
| ``shard-parquet``, ``wds`` | ``<output stem>.shards/`` | one file per input shard (shard_outputs.py) |

Every file goes through the atomic writer. The caption files of a local run are written batch by batch, as
soon as a batch is finished; the other engines write them from the batch records at the end, as every other
format. What an existing caption file gets is ``existing_txt`` (``overwrite: true`` is ``overwrite``):

| policy | an existing file |
| --- | --- |
| ``keep`` (default) | left as it is, and counted in one warning where it holds other text |
| ``skip`` | its image is not processed at all (plan.py) |
| ``overwrite`` | replaced by the text |
| ``append`` / ``prepend`` | the text added after / before what it holds, joined by ``tag_separator``; a file that already ends / starts with the text is left as it is, so a rerun or a resumed run never adds it twice |

Under every policy a file that already holds what would be written is not written again (its mtime stays):
a killed run, run again, rewrites none of the files it finished.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.atomic import atomic_write, write_bytes
from ..core.config import FORMATS, OutputSettings  # noqa: F401  (the names; each one's writer below)
from ..core.owned import LEDGER, record_written
from ..core.record import SUBMISSION_DIM, ImageTags
from .submission import write_submission
import pandas as pd

log = logging.getLogger(__name__)

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
    tagged: Optional[ImageTags] = None  # the tagger's, when there is one (empty for an undecodable image)
    text: Optional[str] = None  # the caption template's text, when there is a template

    def as_dict(self) -> dict:
        out = dict(zip(FIELDS, (self.image_id, self.file, self.caption, self.medium, self.movement, self.artist,
                                self.trending, self.flavors, self.prompt, self.failed)))
        if self.negative is not None:
            out["negative_prompt"] = self.negative
        if self.tagged is not None:
            out.update(tags=self.tagged.names(), tag_scores=[s for _, s in self.tagged.tags],
                       rating=self.tagged.rating, rating_score=self.tagged.rating_score)
        if self.text is not None:
            out["text"] = self.text
        return out

    @property
    def final(self) -> str:
        """What the image's caption file holds: the template's text, else the prompt."""
        return self.text if self.text is not None else self.prompt


def rows_of(result) -> List[Row]:
    """The one builder of output rows: each image's row from a run's result (pipeline.RunResult)."""
    out = []
    for n, (i, f, c, t, p) in enumerate(zip(result.image_ids, result.files, result.captions, result.tags,
                                            result.prompts)):
        tagged = None if result.tagged is None else (result.tagged[n] or ImageTags([]))
        out.append(Row(i, f, c, t.medium if t else "", t.movement if t else "", t.artist if t else "",
                       t.trending if t else "", list(t.flavors) if t else [], p, result.failed.get(i, ""),
                       None if result.negatives is None else result.negatives[n], tagged,
                       None if result.texts is None else result.texts[n]))
    return out


def columns_of(rows: Sequence[Row]) -> List[str]:
    """The rows' fields, in order (the optional ones where the rows have them)."""
    return list(rows[0].as_dict()) if rows else list(FIELDS)


def arrow_table(rows: Sequence[Row], embeddings: Optional[np.ndarray], extra: Optional[dict] = None):
    """The rows and their embeddings (where there are any) as an Arrow table (``extra``: leading columns, such as
    the batch)."""
    import pyarrow as pa  # lazy: the [parquet] extra
    columns = dict(extra or {})
    types = {"flavors": pa.list_(pa.string()), "tags": pa.list_(pa.string()), "tag_scores": pa.list_(pa.float64()),
             "rating_score": pa.float64()}
    dicts = [r.as_dict() for r in rows]
    for name in columns_of(rows):
        values = [d[name] for d in dicts]
        columns[name] = pa.array(values, types[name]) if name in types else values
    if embeddings is not None:
        columns["embedding"] = vector_column(embeddings)
    return pa.table(columns)


def vector_column(array: np.ndarray):
    """(n, 384) float32 as a plain Arrow fixed-size list column, which any Arrow reader understands."""
    import pyarrow as pa  # lazy: the [parquet] extra
    flat = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), SUBMISSION_DIM)


def format_paths(output: str) -> Dict[str, Path]:
    out = Path(output)
    return {"kaggle": out, "csv": out.with_name(f"{out.stem}.prompts.csv"),
            "jsonl": out.with_name(f"{out.stem}.jsonl"), "parquet": out.with_name(f"{out.stem}.parquet")}


@dataclass
class TxtWriter:
    """Caption files under one policy (module docstring), counted: written, unchanged, kept."""

    policy: str = "keep"
    separator: str = ", "

    def __post_init__(self):
        self.counts = {"written": 0, "unchanged": 0, "kept": 0}
        self.read_only: List[Path] = []  # existing caption files this run may not write: kept, and named
        self.done: set = set()  # paths handled in this run (batch by batch, then the rest at the end)
        self.paths: List[Path] = []  # the caption files this run wrote

    def content(self, target: Path, text: str) -> Optional[bytes]:
        """What ``target`` should hold, or None where it is kept as it is. Old text is never decoded: append
        and prepend join bytes, so a caption file in another encoding keeps its bytes."""
        new = text.encode("utf-8")
        if not target.exists() or self.policy == "overwrite":
            return new + b"\n"
        old = target.read_bytes().rstrip(b"\r\n")
        if old == new or (self.policy in ("append", "prepend") and not old.strip()):
            return new + b"\n"  # an empty file gets the text alone, no separator
        separator = self.separator.encode("utf-8")
        if self.policy == "append":
            return old + b"\n" if old.endswith(separator + new) else old + separator + new + b"\n"
        if self.policy == "prepend":
            return old + b"\n" if old.startswith(new + separator) else new + separator + old + b"\n"
        return None  # keep (and skip, for a file made since the plan)

    def write(self, paths: Sequence[Path], texts: Sequence[str]) -> None:
        for target, text in zip(paths, texts):
            if target in self.done:
                continue
            self.done.add(target)
            data = self.content(target, text)
            if data is None:
                self.counts["kept"] += 1
                continue
            if target.exists() and target.read_bytes() == data:
                self.counts["unchanged"] += 1
                continue
            if target.exists() and (not os.access(target, os.W_OK) or not target.stat().st_mode & 0o222):
                self.read_only.append(target)  # the user made it read-only: never replaced
                continue
            write_bytes(target, data)
            self.counts["written"] += 1
            self.paths.append(target)

    def finish(self) -> Dict[str, int]:
        if self.counts["kept"]:
            log.warning("txt: %d existing caption files hold other text and were kept (existing_txt: overwrite, "
                        "append or prepend changes them)", self.counts["kept"])
        counts = dict(self.counts)
        if self.read_only:
            log.warning("txt: %d read-only caption files were kept as they are: %s", len(self.read_only),
                        ", ".join(str(p) for p in self.read_only[:10]) + (" ..." if len(self.read_only) > 10 else ""))
            counts["read-only, kept"] = len(self.read_only)
        return counts


def txt_writer(writing: OutputSettings, separator: str) -> TxtWriter:
    """The caption files' writer under the config's policy, joining old and new text with ``separator``."""
    return TxtWriter(writing.txt_policy(), separator)


def flat(row: dict) -> dict:
    """A row for the CSV: lists joined by ", " (scores as Python writes floats)."""
    return {k: ", ".join(map(repr, v) if k == "tag_scores" else v) if isinstance(v, list) else v for k, v in row.items()}


def merge_earlier(new: List[Row], embeddings: np.ndarray, kaggle: List[str],
                  earlier) -> Tuple[List[Row], np.ndarray, List[str], np.ndarray]:
    """The new rows and the earlier ones of the skipped images (earlier.Earlier), in the folder's order (by
    image id), each with its embedding; and the submission's ids and vectors, the earlier ones added."""
    zero = np.zeros(SUBMISSION_DIM, np.float32)
    pairs = list(zip(new, embeddings)) + [(row, earlier.vectors.get(f, zero)) for f, row in earlier.rows.items()]
    pairs.sort(key=lambda pair: pair[0].image_id)
    ids = list(kaggle) + [earlier.kaggle[f] for f in earlier.vectors]
    vectors = [*embeddings] + list(earlier.vectors.values())
    return ([row for row, _ in pairs], np.asarray([v for _, v in pairs], np.float32).reshape(-1, SUBMISSION_DIM),
            ids, np.asarray(vectors, np.float32).reshape(-1, SUBMISSION_DIM))


@dataclass
class Written:
    """What a run wrote: the submission, {format: path, or the caption files' counts}, and every file written
    (the outputs, each caption file written, the ledger), for whoever must know what changed on disk."""

    submission: Optional[Path]
    formats: Dict[str, object]
    files: List[Path]


def write_all(plan, result, txt: Optional[TxtWriter] = None) -> Written:
    """Every output of the plan (plan.Outputs) from a run's result, but the outputs per input shard
    (finish.ShardFiles). ``txt``: the writer that already wrote the caption files batch by batch."""
    outputs, new = plan.outputs, rows_of(result)
    embeddings = result.embeddings
    if embeddings is None:  # the run embedded nothing, and no output it writes holds vectors (Config.embeds)
        embeddings = np.zeros((len(new), SUBMISSION_DIM), np.float32)
    rows, vectors, ids, id_vectors = new, embeddings, result.kaggle_ids, embeddings
    if plan.earlier is not None:  # existing_txt skip: the skipped images' rows from the earlier outputs
        rows, vectors, ids, id_vectors = merge_earlier(new, embeddings, result.kaggle_ids, plan.earlier)
    submission = None
    if outputs.submission is not None:
        submission = write_submission(ids, id_vectors, outputs.submission)
    written: Dict[str, object] = {}
    if "txt" in plan.config.formats:
        txt = txt or txt_writer(plan.config.writing, plan.config.tag_separator)
        txt.write(outputs.txt, [r.final for r in new])  # the files not written batch by batch
        written["txt"] = txt.finish()
    if "csv" in outputs.files:
        frame = pd.DataFrame([flat(r.as_dict()) for r in rows], columns=columns_of(rows))
        written["csv"] = atomic_write(outputs.files["csv"],
                                      lambda f: f.write(frame.to_csv(index=False).encode("utf-8")))
    if "jsonl" in outputs.files:
        text = "".join(json.dumps(r.as_dict(), ensure_ascii=False) + "\n" for r in rows)
        written["jsonl"] = write_bytes(outputs.files["jsonl"], text.encode("utf-8"))
    if "parquet" in outputs.files:
        import pyarrow.parquet as pq  # lazy: the [parquet] extra
        table = arrow_table(rows, vectors)
        written["parquet"] = atomic_write(outputs.files["parquet"], lambda f: pq.write_table(table, f))
    tables = [submission] * (submission is not None) + [written[f] for f in outputs.files]
    record_written(tables)
    ledgers = sorted({Path(os.path.realpath(p)).parent / LEDGER for p in tables})
    return Written(submission, written, tables + ledgers + (txt.paths if txt is not None else []))
