"""Per-batch records next to the output, so a rerun after a kill continues where it stopped.

Layout: ``<output folder>/.<output name>.work/<key>/batch-NNNNNN.safetensors``, where ``key`` digests
the run's identity (``identity.run_identity``: settings, checkpoints, label lists, device type, dtype,
library versions). A saved record is reused only when its image ids and the digests of their bytes
equal the current files'. A record that cannot be read back exactly is redone, with one warning.
After a successful write the whole ``.<output name>.work`` folder goes, other keys' folders included.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Callable, Collection, Dict, Optional, Sequence

from .atomic import is_disk_full, write_bytes
from .errors import InterrogatorError
from .identity import unchanged
from .images import ImageFile
from .record import BatchRecord, RecordError

log = logging.getLogger(__name__)


def resume(load: Callable[[int], Optional[BatchRecord]], files: Sequence[ImageFile],
           batches: Sequence[Sequence[int]], verified: Collection[int] = ()) -> Dict[int, BatchRecord]:
    """{batch: record} for every saved record (``load(b)``: None where absent or unreadable) whose image ids
    and the digests of their bytes still match the files: the one resume rule, for the work folder's records
    and for Ray's Parquet batch files. ``verified``: batches whose digests this process already checked, or took
    from the bytes it read itself; their files are not read again (the ids are still checked)."""
    saved = {b: load(b) for b in range(len(batches))}
    saved = {b: r for b, r in saved.items() if r is not None and r.ids == [files[i].image_id for i in batches[b]]}
    check = [b for b in saved if b not in verified]
    digests = {i: d for b in check for i, d in zip(saved[b].ids, saved[b].digests)}
    same = unchanged(digests, [files[i] for b in check for i in batches[b]])
    return {b: r for b, r in saved.items() if b in verified or all(i in same for i in r.ids)}


def work_root(output: str | Path) -> Path:
    output = Path(output)
    return output.parent / f".{output.name}.work"


class WorkDir:
    """Batch records under ``<output folder>/.<output name>.work/<key>/``.

    Records are named by their batch's number in a run over the whole folder (``first`` is the number of
    this process's first batch), so the processes of ``--devices`` fill one folder and its parent, resuming,
    finds every batch finished."""

    def __init__(self, output: str | Path, key: str, first: int = 0):
        self.root = work_root(output)
        self.path = self.root / key
        self.first = first

    def adopt(self, legacy_key: str) -> None:
        """Continue the unfinished work that a version before 0.3 saved under its own key for the same run."""
        old = self.root / legacy_key
        if not self.path.exists() and old.is_dir():
            log.info("resuming the work that an earlier version saved in %s", old)
            old.rename(self.path)

    def file(self, batch: int) -> Path:
        return self.path / f"batch-{self.first + batch:06d}.safetensors"

    def save(self, batch: int, record: BatchRecord) -> None:
        try:
            write_bytes(self.file(batch), record.to_bytes())
        except OSError as exc:
            reason = "the disk is full" if is_disk_full(exc) else (exc.strerror or str(exc))
            raise InterrogatorError(f"cannot save work in {self.path}: {reason}") from exc

    def load(self, batch: int) -> Optional[BatchRecord]:
        """The record saved for a batch; None when absent or unreadable (one warning: it will be redone)."""
        path = self.file(batch)
        if not path.exists():
            return None
        try:
            return BatchRecord.load(path)
        except RecordError as exc:
            log.warning("work folder: %s cannot be read back (%s); redoing that batch", path.name, exc)
            return None

    def resume(self, files: Sequence[ImageFile], batches: Sequence[Sequence[int]]) -> Dict[int, BatchRecord]:
        return resume(self.load, files, batches)

    def remove(self) -> None:
        """Every work folder of this output, other keys' included."""
        shutil.rmtree(self.root, ignore_errors=True)
