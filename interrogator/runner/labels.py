"""Label tables: cleaned label lists, their CLIP embeddings on the device, and the safetensors cache."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from ..core.atomic import is_disk_full, sweep_temps, write_bytes
from ..models.clip import Clip, tokenize_many
from ..core.errors import ConfigError
from ..core.rank import topk_chunked
from safetensors import safe_open
from safetensors.torch import save

log = logging.getLogger(__name__)

TABLE_NAMES = ("mediums", "movements", "flavors")  # the seed mode's tables
CACHE_FORMAT = 2
# clip-interrogator 0.6.0's trending table, built from its site list
SITES = ("Artstation", "behance", "cg society", "cgsociety", "deviantart", "dribbble", "flickr", "instagram",
         "pexels", "pinterest", "pixabay", "pixiv", "polycount", "reddit", "shutterstock", "tumblr", "unsplash",
         "zbrush central")
FILE_OF = {"mediums": "mediums", "movements": "movements", "flavors": "flavors", "negative": "negative",
           "artists": "artists"}  # table -> the label file it is made from (trendings has none)


def clean_labels(lines: Iterable[str]) -> List[str]:
    """Strip whitespace, drop empty lines and duplicates, keep first-occurrence order."""
    return list(dict.fromkeys(s for s in (line.strip() for line in lines) if s))


def label_file(dicts: str | Path, table: str) -> Path:
    return Path(dicts) / f"{table}.txt"


def read_labels(path: Path) -> List[str]:
    """The cleaned labels of one UTF-8 text file, one label a line; ConfigError naming the file otherwise."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"config key 'dicts': missing label file {path}") from exc
    except OSError as exc:
        raise ConfigError(f"config key 'dicts': cannot read label file {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"config key 'dicts': label file {path} is not UTF-8 text "
                          f"(byte {exc.start}, line {line})") from exc
    labels = clean_labels(text.splitlines())
    if not labels:
        raise ConfigError(f"config key 'dicts': label file {path} holds no labels (only blank lines)")
    return labels


def trending_labels() -> List[str]:
    return ([*SITES] + [f"trending on {s}" for s in SITES] + [f"featured on {s}" for s in SITES]
            + [f"{s} contest winner" for s in SITES])


def table_files(dicts: str | Path, names: Sequence[str]) -> List[Path]:
    """The label files the tables are made from."""
    return [label_file(dicts, FILE_OF[n]) for n in names if n in FILE_OF]


def table_labels(dicts: str | Path, name: str) -> List[str]:
    """A table's labels as clip-interrogator 0.6.0 builds them: artists as 'by X' and 'inspired by X',
    trendings from the site list, every other table as its file's cleaned lines."""
    if name == "trendings":
        return trending_labels()
    if name not in FILE_OF:
        raise ConfigError(f"unknown label table {name!r}")
    labels = read_labels(label_file(dicts, FILE_OF[name]))
    if name == "artists":
        return clean_labels([f"by {a}" for a in labels] + [f"inspired by {a}" for a in labels])
    return labels


def merge_token_duplicates(labels: Sequence[str], tokens: torch.Tensor) -> List[str]:
    """The first label of each group whose CLIP tokens are identical (their scores are equal: 'canon eos c300'
    and 'canon eos c 3 0 0' tokenize alike because CLIP's tokenizer splits digits)."""
    first = {}
    for label, row in zip(labels, tokens.tolist()):
        first.setdefault(tuple(row), label)
    return list(first.values())


def labels_sha256(labels: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(labels).encode("utf-8")).hexdigest()


@dataclass
class LabelTable:
    """A named label list and its normalised CLIP text embeddings, resident on the device."""

    name: str
    labels: List[str]
    embeddings: torch.Tensor  # (N, D), on the CLIP device, CLIP dtype
    from_cache: bool = False
    merged: int = 0  # labels dropped because they tokenize like an earlier one

    def top(self, image_features: torch.Tensor, k: int, chunk_size: int) -> List[List[str]]:
        """The k best labels for each image, best first, exact for any chunk size."""
        _, index = topk_chunked(image_features, self.embeddings, k, chunk_size)
        return [[self.labels[i] for i in row] for row in index.tolist()]

    def scored(self, image_features: torch.Tensor, k: int, chunk_size: int) -> List[List[Tuple[str, float]]]:
        """The k best labels for each image with their cosine similarities, best first."""
        scores, index = topk_chunked(image_features, self.embeddings, min(k, len(self.labels)), chunk_size)
        return [[(self.labels[i], float(s)) for i, s in zip(row, srow)]
                for row, srow in zip(index.tolist(), scores.float().tolist())]


class LabelCache:
    """safetensors files keyed by the CLIP's architecture and checkpoint contents and the label list.

    Embeddings are stored in fp32 and cast to the model's dtype on load, so a cache filled on one
    device or dtype (a CPU in fp32) is a hit on another (a GPU in fp16).
    """

    def __init__(self, folder: Optional[str]):
        self.folder = Path(folder) if folder else None

    def key(self, clip: Clip, labels: Sequence[str]) -> dict:
        return {"format": str(CACHE_FORMAT), "clip_model": clip.name, "clip": clip.identity or "",
                "labels_sha256": labels_sha256(labels), "count": str(len(labels))}

    def path(self, table: str, key: dict) -> Optional[Path]:
        if self.folder is None:
            return None
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return self.folder / f"{table}-{key['clip_model']}-{digest}.safetensors"

    def load(self, table: str, key: dict, dim: int) -> Optional[torch.Tensor]:
        """The cached matrix, or None when absent or when its key or shape does not match."""
        path = self.path(table, key)
        if path is None or not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensor = f.get_tensor("embeddings")
        except Exception as exc:  # truncated or foreign file: rebuild it
            log.warning("label cache %s is unreadable (%s); re-encoding", path, exc)
            return None
        if meta != key or tuple(tensor.shape) != (int(key["count"]), dim) or tensor.dtype != torch.float32:
            log.warning("label cache %s does not match its key or shape; re-encoding", path)
            return None
        return tensor

    def save(self, table: str, key: dict, embeddings: torch.Tensor) -> None:
        """Write atomically; any failure (read-only folder, full disk) is a warning and the run goes on."""
        path = self.path(table, key)
        if path is None:
            return
        try:
            tensor = embeddings.detach().to("cpu", torch.float32).contiguous()
            write_bytes(path, save({"embeddings": tensor}, metadata=key))
        except Exception as exc:
            reason = "the disk is full" if is_disk_full(exc) else f"{type(exc).__name__}: {exc}"
            log.warning("label cache: cannot save %s (%s); going on without saving", path, reason)


def load_tables(clip: Clip, dicts_dir: str, cache: LabelCache, names: Sequence[str] = TABLE_NAMES,
                batch_size: int = 1024, progress_factory=None) -> Dict[str, LabelTable]:
    """Read each label list and load its embeddings from the cache, encoding only on a miss."""
    if cache.folder is not None and clip.identity is None:
        log.warning("label cache: this CLIP was not loaded from a checkpoint file; not using the cache")
        cache = LabelCache(None)
    if cache.folder is not None:
        sweep_temps(cache.folder)
    tables = {}
    for name in names:
        read = table_labels(dicts_dir, name)
        tokens = tokenize_many(clip.tokenizer, read)
        labels = merge_token_duplicates(read, tokens)
        if len(labels) < len(read):
            log.debug("%s: %d labels tokenize like an earlier one and were merged into it", name, len(read) - len(labels))
        key = cache.key(clip, labels)
        cached = cache.load(name, key, clip.embed_dim)
        if cached is not None:
            emb = cached.to(clip.device, clip.dtype)
        else:
            bar = progress_factory(name, len(labels)) if progress_factory else None
            if len(labels) < len(read):  # the kept labels' rows of the tokens already made
                row = {label: i for i, label in reversed(list(enumerate(read)))}
                tokens = tokens[[row[label] for label in labels]]
            emb = clip.encode_labels(labels, batch_size=batch_size, progress=bar, tokens=tokens)
            if bar is not None:
                bar.close()
            cache.save(name, key, emb)
        tables[name] = LabelTable(name, labels, emb, from_cache=cached is not None, merged=len(read) - len(labels))
    return tables
