"""The CLIP toolkit on the pipeline's engine: text and image search over a feature store, zero-shot
classification, image-text similarity and reranking.

Every function takes a loaded ``Clip`` (``load_toolkit_clip(config)``: the config's ``clip_model`` and
``clip_path``, as the pipeline loads them) and returns typed results; the command line (cli.py) prints
and writes them. Text features come from ``Clip.encode_labels`` (the fast exact encoding of the label
tables), image features from the pipeline's loader and ``Clip.encode_images`` (features.encode_files),
and every top-k is the exact chunked ranking (nearest.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..core.atomic import atomic_write
from ..core.errors import ConfigError, InterrogatorError
from .features import FeatureStore, encode_folder
from ..core.images import ImageFile, scan_tree
from .nearest import nearest
from ..models.clip import load_config_clip
import shutil

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "a photo of a {}"
MAX_LOGIT_SCALE = 100.0  # CLIP clamps its learned temperature here


def load_toolkit_clip(config):
    """The config's CLIP on its device, for the toolkit (only ``clip_model``/``clip_path`` are needed)."""
    return load_config_clip(config)


def text_features(clip, texts: Sequence[str]) -> torch.Tensor:
    """Unit-norm text features (T, D) float32 on the CPU, in text order."""
    if not texts:
        raise InterrogatorError("no texts given")
    return clip.encode_labels(list(texts)).float().cpu()


def files_of(paths: Sequence[str]) -> List[ImageFile]:
    """Image files named one by one (their ids are the paths as given); a missing one is an error naming it."""
    files = []
    for p in paths:
        if not Path(p).is_file():
            raise ConfigError(f"--images: no such image file: {p}")
        files.append(ImageFile(str(p), Path(p)))
    return files


def image_features(clip, files: Sequence[ImageFile], config) -> Tuple[List[ImageFile], torch.Tensor, Dict[str, str]]:
    """(decoded files, their unit-norm features (N, D) float32 CPU, {id: why undecodable}); each undecodable
    file is warned about and left out."""
    return encode_folder(clip, files, config.stage_batch_size("clip"), config.loader_workers())


# ---- search -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hit:
    image_id: str  # the path relative to the store's root
    score: float


def search(store: FeatureStore, queries: torch.Tensor, k: int, backend: str = "torch") -> List[List[Hit]]:
    """The k images of the store nearest each query row (unit-norm, the store's CLIP), best first."""
    if len(store) == 0:
        raise InterrogatorError("the feature store holds no images")
    scores, index = nearest(queries.float(), store.features, k, backend)
    return [[Hit(store.ids[i], float(s)) for s, i in zip(srow, irow)]
            for srow, irow in zip(scores.tolist(), index.tolist())]


def check_store_clip(store: FeatureStore, clip, where: str) -> None:
    """A query must be encoded by the CLIP whose weights made the store."""
    if clip.weights is None or not clip.weights.matches(store.clip.weights):
        raise ConfigError(f"{where} was built with other CLIP weights ({store.clip.model} from {store.clip.path}); "
                          f"give the config of that CLIP")


# ---- zero-shot classification -----------------------------------------------------------------
@dataclass
class Classified:
    """Zero-shot probabilities of each decoded image over the labels, and the undecodable ones."""

    ids: List[str]
    labels: List[str]
    probabilities: np.ndarray  # (N, L) float64, rows sum to 1
    failed: Dict[str, str]

    def top(self, k: int) -> List[List[Tuple[str, float]]]:
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [[(self.labels[j], float(self.probabilities[r, j])) for j in row] for r, row in enumerate(order)]

    def kept(self, threshold: float, reject: Sequence[str] = ()) -> List[str]:
        """With ``reject``: the images whose probability of every rejected label is below threshold;
        without: the images whose top label reaches the threshold."""
        if reject:
            unknown = [r for r in reject if r not in self.labels]
            if unknown:
                raise ConfigError(f"--reject: {unknown[0]!r} is not one of the labels")
            cols = [self.labels.index(r) for r in reject]
            keep = (self.probabilities[:, cols] < threshold).all(axis=1)
        else:
            keep = self.probabilities.max(axis=1, initial=0) >= threshold
        return [i for i, k in zip(self.ids, keep) if k]


def zero_shot_weights(clip, labels: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """One unit-norm text feature per label: the mean of its templates' features, renormalised (CLIP paper)."""
    for t in templates:
        if "{}" not in t:
            raise ConfigError(f"--template {t!r} has no '{{}}' where the label goes")
    prompts = [t.format(label) for label in labels for t in templates]
    feats = text_features(clip, prompts).reshape(len(labels), len(templates), -1).mean(dim=1)
    return torch.nn.functional.normalize(feats, dim=-1)


def logit_scale(clip) -> float:
    scale = getattr(clip.model, "logit_scale", None)
    return MAX_LOGIT_SCALE if scale is None else min(float(scale.detach().float().exp()), MAX_LOGIT_SCALE)


def classify(clip, files: Sequence[ImageFile], labels: Sequence[str], config,
             templates: Sequence[str] = (DEFAULT_TEMPLATE,)) -> Classified:
    """Zero-shot softmax of each image over the labels, at the model's own temperature."""
    labels = list(dict.fromkeys(label.strip() for label in labels if label.strip()))
    if not labels:
        raise ConfigError("--labels holds no labels")
    done, feats, failed = image_features(clip, files, config)
    weights = zero_shot_weights(clip, labels, list(templates))
    logits = logit_scale(clip) * (feats.double() @ weights.double().T)
    probs = torch.softmax(logits, dim=1).numpy()
    return Classified([f.image_id for f in done], labels, probs, failed)


# ---- similarity and rerank --------------------------------------------------------------------
@dataclass
class Similarity:
    """Cosine of each decoded image (rows) with each text (columns)."""

    ids: List[str]
    paths: List[Path]
    texts: List[str]
    matrix: np.ndarray  # (I, T) float32
    failed: Dict[str, str]


def similarity(clip, files: Sequence[ImageFile], texts: Sequence[str], config) -> Similarity:
    done, feats, failed = image_features(clip, files, config)
    if not done:
        raise InterrogatorError(f"no image could be decoded ({', '.join(f'{i}: {w}' for i, w in failed.items())})")
    matrix = (feats @ text_features(clip, texts).T).numpy()
    return Similarity([f.image_id for f in done], [f.path for f in done], list(texts), matrix, failed)


def rerank(clip, files: Sequence[ImageFile], prompt: str, config) -> Tuple[List[Hit], Dict[str, str]]:
    """Every decoded image, best match to the prompt first (equal scores in path order), and the undecodable."""
    done, feats, failed = image_features(clip, files, config)
    if not done:
        raise InterrogatorError(f"no image could be decoded ({', '.join(f'{i}: {w}' for i, w in failed.items())})")
    scores = (feats @ text_features(clip, [prompt]).T)[:, 0]
    order = torch.sort(scores, descending=True, stable=True).indices.tolist()
    return [Hit(done[i].image_id, float(scores[i])) for i in order], failed


def folder_files(folder: str) -> List[ImageFile]:
    """Every image below a folder, ids relative to it (images.scan_tree)."""
    return scan_tree(folder).files


def read_lines(path: str, what: str) -> List[str]:
    """Non-empty stripped lines of a UTF-8 text file; an error naming the option otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ConfigError(f"{what}: {path} holds no lines")
    return lines


def copy_best(hits: Sequence[Hit], root: Optional[str], folder: str, n: int, link: bool) -> List[Path]:
    """Copy (or symlink) the first n hits into folder, keeping their relative paths; never over a file."""
    out = []
    for hit in hits[:n]:
        source = Path(root) / hit.image_id if root else Path(hit.image_id)
        target = Path(folder) / (hit.image_id if root else source.name)
        if target.exists() or target.is_symlink():
            raise InterrogatorError(f"--copy-to: {target} exists; not overwriting it")
        target.parent.mkdir(parents=True, exist_ok=True)
        if link:
            target.symlink_to(source.resolve())
        else:  # through the atomic writer: a killed copy leaves no partial image in the folder
            with open(source, "rb") as f:
                atomic_write(target, lambda out: shutil.copyfileobj(f, out))
            shutil.copystat(source, target)
        out.append(target)
    return out
