"""Per-batch checkpoints next to the output, so a rerun after a kill continues where it stopped.

The folder is keyed by everything that changes the results (config values and the
image files' names, sizes and modification times), so a changed config or image
set never reuses stale work. Each record is written to a temp file and renamed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from .images import ImageFile

# Keys that do not change what a batch produces.
NEUTRAL_KEYS = ("output", "num_workers", "label_cache", "demo", "blip_model", "embedding_model",
                "embedding_dir", "low_memory")


def run_key(config_values: dict, files: Sequence[ImageFile], batch_size: int) -> str:
    h = hashlib.sha256()
    kept = {k: v for k, v in sorted(config_values.items()) if k not in NEUTRAL_KEYS}
    h.update(json.dumps({"config": kept, "batch_size": batch_size}, sort_keys=True, default=str).encode())
    for f in files:
        st = f.path.stat()
        h.update(f"{f.image_id}\0{f.path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


class WorkDir:
    """Batch records under ``<output folder>/.<output name>.work/<key>/``."""

    def __init__(self, output: str | Path, key: str):
        output = Path(output)
        self.root = output.parent / f".{output.name}.work"
        self.path = self.root / key

    def _file(self, batch: int, part: str) -> Path:
        return self.path / f"batch-{batch:06d}.{part}"

    def _write(self, target: Path, write) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=target.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def save_text(self, batch: int, part: str, record: dict) -> None:
        self._write(self._file(batch, f"{part}.json"), lambda f: f.write(json.dumps(record).encode()))

    def load_text(self, batch: int, part: str) -> Optional[dict]:
        try:
            return json.loads(self._file(batch, f"{part}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def save_done(self, batch: int, record: dict, embeddings: np.ndarray) -> None:
        """The finished batch: embeddings first, then the JSON record that marks it done."""
        self._write(self._file(batch, "npy"), lambda f: np.save(f, embeddings.astype(np.float32)))
        self.save_text(batch, "done", record)

    def load_done(self, batch: int, ids: List[str]):
        """(record, embeddings) of a finished batch whose ids match, else None."""
        record = self.load_text(batch, "done")
        if record is None or record.get("ids") != ids:
            return None
        try:
            embeddings = np.load(self._file(batch, "npy"))
        except (OSError, ValueError):
            return None
        if embeddings.shape[0] != len(ids):
            return None
        return record, embeddings

    def finished(self, batches: Sequence[Sequence[int]], ids: Sequence[str]) -> dict:
        """{batch number: (record, embeddings)} for every batch an earlier run finished."""
        done = {}
        for b, members in enumerate(batches):
            found = self.load_done(b, [ids[i] for i in members])
            if found is not None:
                done[b] = found
        return done

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        try:
            self.root.rmdir()
        except OSError:
            pass
