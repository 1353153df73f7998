"""The feature store: normalised CLIP image features of a folder, kept up to date and resumable.

One store serves every tool that needs image features (``index``/``features``, ``search``, the learned
head and the retrieval bank). It is one safetensors file holding, per image, its path relative to the
indexed folder (its id), the digest of its bytes and its unit-norm float32 feature row, plus the CLIP
that computed them (``ClipKey``) and the images that could not be decoded.

Building (``build_index``) is incremental and resumable:

- an image already in the store (or in a part saved by a killed build) is reused when its bytes still
  have the digest recorded for it, and only when the store was computed by the same CLIP weights, dtype
  and device type; a store of another CLIP is rebuilt, with one warning;
- images removed from the folder leave the store; new or changed ones are encoded;
- while building, each encoded batch is saved as a part in ``.<store name>.work/<key>/`` beside the
  store (the atomic writer), so a killed build loses at most the batch in flight; the finished store
  is written atomically and the work folder removed;
- an undecodable image is listed in the store with its reason (and skipped again while its bytes are
  unchanged), never fatal.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..core.atomic import is_disk_full, write_bytes
from ..core.errors import InterrogatorError
from ..core.identity import device_identity, digest, unchanged
from ..core.images import ImageFile, scan_tree
from ..core.batches import Transforms, image_batches
from ..core.oom import StageBatcher
from ..core.shards import batch_ranges
from ..core.console import bar
from ..models.clip import load_config_clip
from safetensors.torch import save
from safetensors import safe_open

log = logging.getLogger(__name__)

STORE_FORMAT = "1"
DIGEST_BYTES = 16  # identity.content_digest is blake2b with 16-byte digests


class StoreError(InterrogatorError):
    """A feature store file that cannot be read back exactly."""


@dataclass(frozen=True)
class ClipKey:
    """Which CLIP computed a store's features.

    ``weights`` is the loaded Clip's identity (architecture, QuickGELU and the checkpoint's contents), the
    thing a learned head must match; ``dtype`` and ``device`` also change the last bits of a feature, so a
    store is only extended by the same three. ``model`` and ``path`` say how to load that CLIP again.
    """

    model: str
    path: str
    weights: str
    dtype: str
    device: str

    def computes_like(self, other: "ClipKey") -> bool:
        return (self.weights, self.dtype, self.device) == (other.weights, other.dtype, other.device)


def clip_key(config, clip) -> ClipKey:
    """The ClipKey of a CLIP loaded from ``config``."""
    return ClipKey(config.clip_model, str(Path(config.clip_path).resolve()), clip.identity or "",
                   str(clip.dtype).replace("torch.", ""), device_identity(str(clip.device)))


@dataclass
class FeatureStore:
    """Unit-norm CLIP image features, one row per image id (a path relative to ``root``), sorted by id."""

    ids: List[str]
    digests: List[str]
    features: torch.Tensor  # (N, D) float32 on the CPU
    clip: ClipKey
    root: str
    failed: Dict[str, Tuple[str, str]] = field(default_factory=dict)  # id -> (digest, reason)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def path(self, image_id: str, root: Optional[str] = None) -> Path:
        return Path(root or self.root) / image_id

    def rows(self, ids: Sequence[str]) -> torch.Tensor:
        """The feature rows of these ids, in that order; KeyError naming the first id not in the store."""
        where = {image_id: i for i, image_id in enumerate(self.ids)}
        missing = next((i for i in ids if i not in where), None)
        if missing is not None:
            raise KeyError(missing)
        return self.features[[where[i] for i in ids]]

    # ---- save and load -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        names = "\n".join(self.ids).encode("utf-8")
        tensors = {
            "features": self.features.to(torch.float32).contiguous(),
            "ids_utf8": torch.frombuffer(bytearray(names), dtype=torch.uint8) if names else torch.zeros(0, dtype=torch.uint8),
            "digests": torch.tensor(np.frombuffer(b"".join(bytes.fromhex(d) for d in self.digests),
                                                  dtype=np.uint8).reshape(len(self.ids), DIGEST_BYTES).copy()),
        }
        meta = {"format": STORE_FORMAT, "clip": json.dumps(self.clip.__dict__), "root": self.root,
                "count": str(len(self.ids)), "failed": json.dumps(self.failed)}
        return save(tensors, metadata=meta)

    @classmethod
    def load(cls, path) -> "FeatureStore":
        """The store at ``path``; StoreError naming it for anything that cannot be read back exactly."""
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            if meta.get("format") != STORE_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {STORE_FORMAT}")
            n = int(meta["count"])
            names = bytes(tensors["ids_utf8"].numpy()).decode("utf-8")
            ids = names.split("\n") if n else []
            digests = [bytes(row).hex() for row in tensors["digests"].numpy()]
            features = tensors["features"]
            clip = ClipKey(**json.loads(meta["clip"]))
            failed = {k: (v[0], v[1]) for k, v in json.loads(meta["failed"]).items()}
            if len(ids) != n or len(digests) != n or features.dtype != torch.float32 or features.ndim != 2 \
                    or features.shape[0] != n or not torch.isfinite(features).all():
                raise ValueError("ids, digests and features do not agree")
        except StoreError:
            raise
        except Exception as exc:  # truncated, garbage, a foreign safetensors file
            raise StoreError(f"{path} is not a feature store this version can read: "
                             f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        return cls(ids, digests, features, clip, meta["root"], failed)

    def save(self, path) -> Path:
        try:
            return write_bytes(path, self.to_bytes())
        except OSError as exc:
            reason = "the disk is full" if is_disk_full(exc) else (exc.strerror or str(exc))
            raise InterrogatorError(f"cannot write the feature store {path}: {reason}") from exc


@dataclass
class EncodedBatch:
    """One loader batch through CLIP: the files, their digests, why each failed ('' if it did not),
    and the feature rows of the decoded ones (in batch order)."""

    files: List[ImageFile]
    digests: List[str]
    errors: List[str]
    features: torch.Tensor  # (number decoded, D) float32 on the CPU

    @property
    def ok(self) -> List[int]:
        return [i for i, e in enumerate(self.errors) if not e]


def encode_files(clip, files: Sequence[ImageFile], batch_size: int, workers: int,
                 progress=None) -> Iterator[EncodedBatch]:
    """CLIP image features of files, batch by batch, decoded by the pipeline's loader workers.

    Undecodable images are reported in ``errors`` and get no feature row; on CUDA out-of-memory the
    batch is halved (oom.StageBatcher).
    """
    files = list(files)
    batches = batch_ranges(len(files), batch_size)
    batcher = StageBatcher({"clip": batch_size}, str(clip.device))
    loader = image_batches(files, batches, Transforms(clip=clip.preprocess), workers,
                           pin_memory=clip.device.type == "cuda")
    for members, batch in zip(batches, loader):
        if batch.ok:
            feats = batcher.run("clip", batch.decoded(batch.clip_pixels), clip.encode_images, torch.cat)
            feats = feats.float().cpu()
        else:
            feats = torch.zeros((0, clip.embed_dim))
        for pos, error in enumerate(batch.errors):
            if error:
                log.warning("%s: %s; no feature for it", files[members[pos]].image_id, error)
        if progress is not None:
            progress.update(len(members))
        yield EncodedBatch([files[i] for i in members], list(batch.digests), list(batch.errors), feats)


@dataclass
class IndexReport:
    """What a build did."""

    store: FeatureStore
    path: Path
    reused: int
    encoded: int
    removed: int
    failed: Dict[str, str]
    skipped: List[Tuple[str, str]]

    def summary(self) -> str:
        lines = [f"index: {len(self.store)} images ({self.reused} reused, {self.encoded} encoded, "
                 f"{self.removed} removed), {len(self.failed)} undecodable"]
        lines += [f"  undecodable: {i}: {why}" for i, why in sorted(self.failed.items())]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} entries named like images: "
                         + ", ".join(f"{name} ({why})" for name, why in self.skipped))
        lines.append(f"feature store: {self.path}")
        return "\n".join(lines)


def work_folder(out: Path, key: ClipKey) -> Path:
    return out.parent / f".{out.name}.work" / digest({"weights": key.weights, "dtype": key.dtype,
                                                      "device": key.device})


def check_shared(out: Path, key: ClipKey, root: str) -> None:
    """A store a command reads to learn from (``--features``) is never shrunk or rebuilt: one of another folder,
    another CLIP or one that does not read back is an error naming it."""
    if not out.exists():
        return
    try:
        store = FeatureStore.load(out)
    except StoreError as exc:
        raise InterrogatorError(f"--features {out}: {exc}; name another --features file") from None
    if store.root != root:
        raise InterrogatorError(f"--features {out}: it holds the features of {store.root}, and these images are "
                                f"under {root}; a command that reads a store never shrinks it: name another "
                                f"--features file")
    if not store.clip.computes_like(key):
        raise InterrogatorError(f"--features {out}: it was computed by another CLIP, dtype or device "
                                f"({store.clip.model}, {store.clip.dtype}, {store.clip.device}); name another "
                                f"--features file")


def _known(out: Path, key: ClipKey) -> Tuple[Dict[str, Tuple[str, Optional[torch.Tensor], str]], int]:
    """{id: (digest, feature row or None, failure reason)} from the store at ``out`` and the parts of a
    killed build, when computed like ``key``; and the next part number."""
    known: Dict[str, Tuple[str, Optional[torch.Tensor], str]] = {}
    sources = []
    if out.exists():
        try:
            store = FeatureStore.load(out)
        except StoreError as exc:
            log.warning("%s; building it anew", exc)
        else:
            if store.clip.computes_like(key):
                sources.append(store)
            else:
                log.warning("feature store %s was computed by another CLIP, dtype or device (%s, %s, %s); "
                            "building it anew", out, store.clip.model, store.clip.dtype, store.clip.device)
    parts = sorted(work_folder(out, key).glob("part-*.safetensors"))
    for part in parts:
        try:
            sources.append(FeatureStore.load(part))
        except StoreError as exc:
            log.warning("work folder: %s; encoding its images again", exc)
    for source in sources:
        for i, image_id in enumerate(source.ids):
            known[image_id] = (source.digests[i], source.features[i], "")
        for image_id, (d, why) in source.failed.items():
            known[image_id] = (d, None, why)
    next_part = 1 + max((int(p.stem.split("-")[1]) for p in parts), default=-1)
    return known, next_part


def build_index(config, images: str, out: str, progress: bool = True, clip=None, shared: bool = False) -> IndexReport:
    """Index every image below ``images`` into the store at ``out`` with the config's CLIP (see module docs).
    ``shared``: the store is one the user named for a command that reads it (check_shared): it only grows."""
    out_path = Path(out)
    if out_path.is_dir():
        raise InterrogatorError(f"--out: {out_path} is a folder; name a file such as {out_path / 'index.safetensors'}")
    scan = scan_tree(images)
    if clip is None:
        clip = load_config_clip(config)
    key = clip_key(config, clip)
    if shared:
        check_shared(out_path, key, str(Path(images).resolve()))
    known, next_part = _known(out_path, key)
    same = unchanged({i: entry[0] for i, entry in known.items()}, scan.files)
    listed = {f.image_id for f in scan.files}
    kept = {i: known[i] for i in known if shared and i not in listed}  # a shared store keeps what left the folder
    rows: Dict[str, Tuple[str, Optional[torch.Tensor], str]] = {**kept, **{i: known[i] for i in same}}
    todo = [f for f in scan.files if f.image_id not in rows]
    removed = len([i for i in known if i not in listed and i not in kept])
    work = work_folder(out_path, key)
    shown = bar(len(todo), "index", "img", progress)
    for batch in encode_files(clip, todo, config.stage_batch_size("clip"), config.loader_workers(), shown):
        part = _store_of(batch, key, str(Path(images).resolve()))
        part.save(work / f"part-{next_part:06d}.safetensors")
        next_part += 1
        for image_id, d, row, why in _entries(batch):
            rows[image_id] = (d, row, why)
    shown.close()
    ids = sorted(i for i, (_, row, _) in rows.items() if row is not None)
    features = torch.stack([rows[i][1] for i in ids]) if ids else torch.zeros((0, clip.embed_dim))
    failed = {i: (d, why) for i, (d, row, why) in rows.items() if row is None}
    store = FeatureStore(ids, [rows[i][0] for i in ids], features, key, str(Path(images).resolve()),
                         dict(sorted(failed.items())))
    store.save(out_path)
    shutil.rmtree(work.parent, ignore_errors=True)
    return IndexReport(store, out_path, len(scan.files) - len(todo), len(todo), removed,
                       {i: why for i, (_, why) in store.failed.items()}, scan.skipped)


def _entries(batch: EncodedBatch):
    rows = iter(batch.features)
    for f, d, error in zip(batch.files, batch.digests, batch.errors):
        yield f.image_id, d, (None if error else next(rows)), error


def _store_of(batch: EncodedBatch, key: ClipKey, root: str) -> FeatureStore:
    ok = batch.ok
    failed = {batch.files[i].image_id: (batch.digests[i], batch.errors[i]) for i in range(len(batch.files))
              if batch.errors[i]}
    return FeatureStore([batch.files[i].image_id for i in ok], [batch.digests[i] for i in ok],
                        batch.features, key, root, failed)


def encode_folder(clip, files: Sequence[ImageFile], batch_size: int, workers: int,
                  progress=None) -> Tuple[List[ImageFile], torch.Tensor, Dict[str, str]]:
    """Features of files without a store: (decoded files, their rows (N, D) float32 CPU, {id: reason})."""
    done, rows, failed = [], [], {}
    for batch in encode_files(clip, files, batch_size, workers, progress):
        done += [batch.files[i] for i in batch.ok]
        rows.append(batch.features)
        failed.update({f.image_id: e for f, e in zip(batch.files, batch.errors) if e})
    features = torch.cat(rows) if rows else torch.zeros((0, clip.embed_dim))
    return done, features, failed
