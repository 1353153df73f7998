"""The submission CSV: ``imgId_eId,val`` rows, validated, written all-or-nothing."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from ..core.atomic import atomic_write, is_disk_full
from ..core.errors import SubmissionError
from ..core.record import SUBMISSION_DIM
from ..core.workers import map_chunks
import io

HEADER = ("imgId_eId", "val")
NORM_TOLERANCE = 1e-3


def to_frame(image_ids: Sequence[str], vectors: np.ndarray) -> pd.DataFrame:
    """Rows ``<imgId>_<eId>`` for eId 0..D-1, images sorted by imgId."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(image_ids):
        raise SubmissionError(f"expected one vector per image: {len(image_ids)} images, "
                              f"vectors of shape {vectors.shape}")
    order = np.argsort(np.asarray(image_ids, dtype=object), kind="stable")
    ids = [image_ids[i] for i in order]
    dim = vectors.shape[1]
    keys = [f"{image_id}_{e}" for image_id in ids for e in range(dim)]
    return pd.DataFrame({HEADER[0]: keys, HEADER[1]: vectors[order].reshape(-1)})


def validate(frame: pd.DataFrame, image_ids: Sequence[str], dim: int) -> None:
    """Row count, unique and complete ids, finite values, unit-norm vectors; else SubmissionError."""
    if list(frame.columns) != list(HEADER):
        raise SubmissionError(f"header must be {','.join(HEADER)}, got {','.join(map(str, frame.columns))}")
    expected = len(image_ids) * dim
    if len(frame) != expected:
        raise SubmissionError(f"expected {expected} rows ({len(image_ids)} images x {dim}), got {len(frame)}")
    want = [f"{i}_{e}" for i in sorted(image_ids) for e in range(dim)]
    keys = frame[HEADER[0]].astype(str).tolist()
    if keys != want:
        dupes = frame[HEADER[0]][frame[HEADER[0]].duplicated()].head(3).tolist()
        missing = sorted(set(want) - set(keys))[:3]
        raise SubmissionError(f"ids are not unique, complete and in order (duplicates {dupes}, missing {missing})")
    values = frame[HEADER[1]].to_numpy(dtype=np.float64).reshape(len(image_ids), dim)
    if not np.isfinite(values).all():
        raise SubmissionError("submission holds non-finite values")
    norms = np.linalg.norm(values, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1) > NORM_TOLERANCE)
    if len(bad):
        raise SubmissionError(f"{len(bad)} vectors are not unit-norm (first: {sorted(image_ids)[bad[0]]}, "
                              f"norm {norms[bad[0]]:.6f})")


CSV_CHUNK_ROWS = 384 * 1000  # rows formatted per worker task: 1,000 images


def _csv_chunk(frame: pd.DataFrame, rows: int, i: int) -> str:
    return frame.iloc[i * rows:(i + 1) * rows].to_csv(index=False, header=i == 0)


def write_csv_atomic(frame: pd.DataFrame, path: str | Path, workers: Optional[int] = None,
                     chunk_rows: int = CSV_CHUNK_ROWS, verify=None) -> Path:
    """Write atomically (``atomic.atomic_write``); ``verify(temp_path)`` reads it back before the rename.

    pandas formats blocks of ``chunk_rows`` rows in worker processes (formatting the floats is most of
    the time); the file is byte-identical to one ``to_csv`` call.
    """
    def write(f) -> None:
        count = max(1, -(-len(frame) // chunk_rows))
        for text in map_chunks(partial(_csv_chunk, frame, chunk_rows), count, workers):
            f.write(text.encode("utf-8"))
    return atomic_write(path, write, verify)


def write_submission(image_ids: Sequence[str], vectors: np.ndarray, path: str | Path) -> Path:
    """Validate, write atomically, read the file on disk back and check it equals what was meant.

    Nothing is written at ``path`` if either check fails; a full disk is a SubmissionError.
    """
    if np.asarray(vectors).ndim != 2 or np.asarray(vectors).shape[1] != SUBMISSION_DIM:
        raise SubmissionError(f"cannot write the submission {path}: vectors of shape {np.asarray(vectors).shape}; "
                              f"a submission holds {SUBMISSION_DIM} values per image")
    frame = to_frame(image_ids, vectors)
    validate(frame, image_ids, SUBMISSION_DIM)
    want_ids = sorted(image_ids)
    want = frame[HEADER[1]].to_numpy(np.float32)

    def verify(tmp: Path) -> None:
        ids, back = read_submission(tmp)
        if ids != want_ids:
            lost = next(a for a, b in zip(want_ids + [None], ids + [None]) if a != b)
            raise SubmissionError(f"the written CSV does not read back: image id {lost!r} came back changed")
        if not np.array_equal(back.reshape(-1), want):
            raise SubmissionError("the written CSV does not read back: values changed")
    try:
        return write_csv_atomic(frame, path, verify=verify)
    except OSError as exc:
        reason = "the disk is full" if is_disk_full(exc) else (exc.strerror or str(exc))
        raise SubmissionError(f"cannot write the submission {path}: {reason}") from exc


def read_frame(source) -> pd.DataFrame:
    """A submission CSV as written: ids as text exactly (no NA guessing), values as float32."""
    return pd.read_csv(source, dtype={HEADER[0]: str, HEADER[1]: np.float32}, keep_default_na=False,
                       na_filter=False)


def first_id_lost_in_csv(image_ids: Sequence[str]) -> Optional[str]:
    """The first id that would not come back unchanged through the submission CSV, else None."""
    frame = pd.DataFrame({HEADER[0]: [f"{i}_0" for i in image_ids], HEADER[1]: np.zeros(len(image_ids), np.float32)})
    back = read_frame(io.StringIO(frame.to_csv(index=False)))[HEADER[0]].tolist()
    for image_id, key in zip(image_ids, back + [None] * (len(image_ids) - len(back))):
        if key != f"{image_id}_0":
            return image_id
    return None


def read_submission(path: str | Path) -> Tuple[List[str], np.ndarray]:
    """Image ids (in file order) and their vectors (N, D) from a submission CSV."""
    try:
        frame = read_frame(path)
    except (FileNotFoundError, pd.errors.ParserError, ValueError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"cannot read submission {path}: {exc}") from exc
    if list(frame.columns) != list(HEADER):
        raise SubmissionError(f"{path}: header must be {','.join(HEADER)}")
    split = frame[HEADER[0]].str.rsplit("_", n=1, expand=True)
    ids = list(dict.fromkeys(split[0]))
    if not ids or len(frame) % len(ids):
        raise SubmissionError(f"{path}: rows do not split evenly into {len(ids)} images")
    dim = len(frame) // len(ids)
    if dim != SUBMISSION_DIM:
        raise SubmissionError(f"{path}: {dim} values per image; a submission holds {SUBMISSION_DIM} "
                              f"(all-MiniLM-L6-v2 embeddings)")
    vectors = frame[HEADER[1]].to_numpy(dtype=np.float32).reshape(len(ids), dim)
    validate(frame, ids, dim)
    return ids, vectors


def merge_submissions(paths: Sequence[str | Path], output: str | Path,
                      expected_ids: Optional[Sequence[str]] = None) -> Path:
    """Join shard submissions into one validated submission.

    An id in two shards is an error naming it; with ``expected_ids``, so is an id that no shard holds
    (a gap) or one that is not expected.
    """
    owner: dict = {}
    parts = []
    for p in paths:
        ids, vectors = read_submission(p)
        clash = sorted(i for i in ids if i in owner)
        if clash:
            raise SubmissionError(f"shards overlap: {_some(clash)} in both {owner[clash[0]]} and {p}")
        owner.update(dict.fromkeys(ids, p))
        parts.append(vectors)
    if expected_ids is not None:
        missing = sorted(set(expected_ids) - set(owner))
        extra = sorted(set(owner) - set(expected_ids))
        if missing:
            raise SubmissionError(f"the shards leave a gap: {_some(missing)} in no shard")
        if extra:
            raise SubmissionError(f"the shards hold images that are not in the image list: {_some(extra)}")
    return write_submission(list(owner), np.concatenate(parts), output)


def _some(ids: Sequence[str], most: int = 5) -> str:
    """A few ids, quoted, and how many more."""
    shown = ", ".join(repr(i) for i in ids[:most])
    return f"{len(ids)} id{'s' if len(ids) != 1 else ''} ({shown}{', ...' if len(ids) > most else ''})"
