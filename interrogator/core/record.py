"""The typed record of one batch as it moves through the stages, and its exact save and load.

A record starts with the batch's image ids, the digests of their bytes and the images that failed
to decode; the caption stage adds ``captions``, the tag stage ``tags`` and ``prompts``, the embed
stage ``embeddings``. It is saved as one safetensors file: the embeddings (when there are any) as a
tensor, the rest as JSON in the header. ``BatchRecord.load`` checks everything it reads (types,
lengths, the stage order, shape, finiteness and norms of the vectors) and raises ``RecordError`` for
anything it cannot read back exactly, so a damaged file is redone, never used.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
from safetensors.numpy import save
from safetensors import safe_open

SUBMISSION_DIM = 384
NORM_TOLERANCE = 1e-3
RECORD_FORMAT = "2"
LEARNED = ("head", "bank")  # the learned predictions a tag stage may add (blend.py)
BASE_FIELDS = frozenset({"ids", "digests", "failed", "captions", "tags", "prompts", "negatives"})
LATER_FIELDS = frozenset({"tagged", "texts"})  # written only where present (0.4)


class RecordError(ValueError):
    """A saved record that cannot be read back exactly."""


@dataclass
class Tags:
    """The labels CLIP chose for one image."""

    medium: str
    movement: str
    flavors: List[str]
    artist: str = ""     # classic mode
    trending: str = ""   # classic mode


@dataclass
class ImageTags:
    """One image's tags, as chosen and cleaned: (tag, score) pairs in output order, and the rating."""

    tags: List[Tuple[str, float]]
    rating: str = ""
    rating_score: float = 0.0

    def names(self) -> List[str]:
        return [t for t, _ in self.tags]


@dataclass
class BatchRecord:
    """One batch's per-image results, filled stage by stage; a None field is a stage still to run."""

    ids: List[str]
    digests: List[str]
    failed: Dict[str, str]  # image id -> why it could not be decoded
    captions: Optional[List[str]] = None
    tags: Optional[List[Optional[Tags]]] = None  # None for an undecodable image
    prompts: Optional[List[str]] = None
    embeddings: Optional[np.ndarray] = None  # (n, 384) float32, unit norm
    head: Optional[np.ndarray] = None  # (n, 384) float32: a learned head's prediction, zero rows where undecodable
    bank: Optional[np.ndarray] = None  # (n, 384) float32: the retrieval bank's, likewise
    negatives: Optional[List[str]] = None  # negative prompts, when the config asks for them (negative_prompt)
    tagged: Optional[List[Optional[ImageTags]]] = None  # the tagger's tags (caption stage), when there is a tagger
    texts: Optional[List[str]] = None  # the caption template's text (tag stage), when there is a template

    @property
    def final(self) -> Optional[List[str]]:
        """What each image's text is (embedded, written to its caption file): the template's, else the prompt."""
        return self.texts if self.texts is not None else self.prompts

    def done(self, stage: str) -> bool:
        return {"caption": self.captions, "tag": self.prompts, "embed": self.embeddings}[stage] is not None

    @property
    def ok(self) -> List[int]:
        """Positions whose image decoded."""
        return [pos for pos, image_id in enumerate(self.ids) if image_id not in self.failed]

    # ---- save and load -------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        header = {"ids": self.ids, "digests": self.digests, "failed": self.failed, "captions": self.captions,
                  "tags": None if self.tags is None else [None if t is None else asdict(t) for t in self.tags],
                  "prompts": self.prompts, "negatives": self.negatives}
        if self.tagged is not None:  # later fields only where present: a record without them reads as before
            header["tagged"] = [None if t is None else asdict(t) for t in self.tagged]
        if self.texts is not None:
            header["texts"] = self.texts
        tensors = {name: np.ascontiguousarray(getattr(self, name), np.float32)
                   for name in ("embeddings", *LEARNED) if getattr(self, name) is not None}
        return save(tensors, metadata={"format": RECORD_FORMAT, "record": json.dumps(header)})

    @classmethod
    def load(cls, path: Union[str, Path]) -> "BatchRecord":
        """The record saved at path; RecordError for anything that cannot be read back exactly."""
        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                arrays = {name: f.get_tensor(name) for name in f.keys()}
            header = json.loads(meta["record"])
        except Exception as exc:  # truncated, empty, garbage, a foreign file: all mean "redo"
            raise RecordError(f"{type(exc).__name__}: {str(exc)[:200]}") from exc
        if meta.get("format") != RECORD_FORMAT:
            raise RecordError(f"format {meta.get('format')!r}, expected {RECORD_FORMAT}")
        if set(arrays) - {"embeddings", *LEARNED}:
            raise RecordError(f"unexpected arrays {sorted(set(arrays) - {'embeddings', *LEARNED})}")
        return cls.checked(header, arrays)

    @classmethod
    def checked(cls, header, arrays) -> "BatchRecord":
        """A record from its header fields and arrays, every one checked (RecordError otherwise); the safetensors
        file and Ray's Parquet batch files (ray_engine.py) are two writers of the same record."""
        embeddings = arrays.get("embeddings")
        if not isinstance(header, dict) or not BASE_FIELDS <= set(header) <= BASE_FIELDS | LATER_FIELDS:
            raise RecordError("the header does not hold a batch record")
        ids, n = header["ids"], len(header["ids"]) if isinstance(header["ids"], list) else -1
        _strings("ids", ids, n)
        _strings("digests", header["digests"], n)
        failed = header["failed"]
        if not (isinstance(failed, dict) and all(isinstance(v, str) for v in failed.values()) and set(failed) <= set(ids)):
            raise RecordError("failed is not a map of this batch's ids to reasons")
        captions, prompts, tags = header["captions"], header["prompts"], header["tags"]
        for name, value in (("captions", captions), ("prompts", prompts), ("negatives", header["negatives"])):
            if value is not None:
                _strings(name, value, n)
        if tags is not None:
            if not isinstance(tags, list) or len(tags) != n:
                raise RecordError(f"tags is not a list of {n}")
            tags = [_tags(t) for t in tags]
        if (prompts is None) != (tags is None) or (prompts is not None and captions is None):
            raise RecordError("stages out of order")
        if embeddings is not None:
            if prompts is None:
                raise RecordError("embeddings before prompts")
            if embeddings.dtype != np.float32 or embeddings.shape != (n, SUBMISSION_DIM):
                raise RecordError(f"embeddings of shape {embeddings.shape} {embeddings.dtype}, "
                                  f"expected ({n}, {SUBMISSION_DIM}) float32")
            if not np.isfinite(embeddings).all():
                raise RecordError("embeddings hold non-finite values")
            if np.abs(np.linalg.norm(embeddings.astype(np.float64), axis=1) - 1).max(initial=0) > NORM_TOLERANCE:
                raise RecordError("embeddings are not unit-norm")
        learned = {}
        for name in LEARNED:
            value = arrays.get(name)
            if value is not None:
                if prompts is None:
                    raise RecordError(f"{name} before prompts")
                if value.dtype != np.float32 or value.shape != (n, SUBMISSION_DIM) or not np.isfinite(value).all():
                    raise RecordError(f"{name} of shape {value.shape} {value.dtype}, expected finite ({n}, "
                                      f"{SUBMISSION_DIM}) float32")
                norms = np.linalg.norm(value.astype(np.float64), axis=1)
                if (np.minimum(np.abs(norms - 1), norms) > NORM_TOLERANCE).any():
                    raise RecordError(f"{name} rows are neither unit-norm nor zero")
            learned[name] = value
        if header["negatives"] is not None and prompts is None:
            raise RecordError("negatives before prompts")
        tagged, texts = header.get("tagged"), header.get("texts")
        if tagged is not None:
            if captions is None or not isinstance(tagged, list) or len(tagged) != n:
                raise RecordError(f"tagged is not a list of {n} after the captions")
            tagged = [_image_tags(t) for t in tagged]
        if texts is not None:
            _strings("texts", texts, n)
            if prompts is None:
                raise RecordError("texts before prompts")
        return cls(ids, header["digests"], failed, captions, tags, prompts, embeddings, **learned,
                   negatives=header["negatives"], tagged=tagged, texts=texts)


def _strings(name: str, value, n: int) -> None:
    if not (isinstance(value, list) and len(value) == n and all(isinstance(s, str) for s in value)):
        raise RecordError(f"{name} is not a list of {n} strings")


def _image_tags(value) -> Optional[ImageTags]:
    if value is None:
        return None
    try:
        ok = (set(value) == {"tags", "rating", "rating_score"} and isinstance(value["rating"], str)
              and isinstance(value["rating_score"], float) and isinstance(value["tags"], list)
              and all(isinstance(t, list) and len(t) == 2 and isinstance(t[0], str) and isinstance(t[1], float)
                      for t in value["tags"]))
    except TypeError:
        ok = False
    if not ok:
        raise RecordError("a tagged entry is not {tags: [[tag, score]], rating, rating_score}")
    return ImageTags([(t, s) for t, s in value["tags"]], value["rating"], value["rating_score"])


def _tags(value) -> Optional[Tags]:
    if value is None:
        return None
    if not (isinstance(value, dict) and set(value) == {"medium", "movement", "flavors", "artist", "trending"}
            and all(isinstance(value[k], str) for k in ("medium", "movement", "artist", "trending"))
            and isinstance(value["flavors"], list) and all(isinstance(f, str) for f in value["flavors"])):
        raise RecordError("a tag entry is not {medium, movement, flavors, artist, trending}")
    return Tags(value["medium"], value["movement"], list(value["flavors"]), value["artist"], value["trending"])
