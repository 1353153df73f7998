"""What train-head and build-bank share: the CLIP features and prompt embeddings of labelled pairs.

Features come from the feature store (features.py) of the folder holding the pairs' images, so they are
computed once, resumably, and reused by every later command (``--features F`` names a store to share;
by default it lives in the output folder). Targets are the sentence model's unit-norm embeddings of the
prompts, computed once per command.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..tools.features import ClipKey, build_index
from .pairs import Pairs, read_pairs
from ..models.embed import embed_prompts, load_sentence


@dataclass
class Labelled:
    pairs: Pairs
    ids: list                 # ids of the pairs' images in the store
    features: torch.Tensor    # (N, D) float32, unit-norm, in pair order
    targets: np.ndarray       # (N, 384) float32, unit-norm, in pair order
    clip: ClipKey
    skipped: int              # pairs whose image could not be decoded (left out)


def labelled(config, pairs_csv: str, images: Optional[str], features_path: str, progress: bool = True,
             shared: bool = False) -> Labelled:
    """The pairs' features (from the store at ``features_path``, which grows; ``shared``: the user named it, so
    it is never shrunk or rebuilt) and their prompts' embeddings."""
    pairs = read_pairs(pairs_csv, images, least=2)
    root = Path(images).resolve() if images else pairs.root()
    ids = pairs.relative_ids(root)  # before indexing: an image outside root is one line now
    report = build_index(config, str(root), features_path, progress=progress, shared=shared)
    store = report.store
    present = set(store.ids)
    keep = [i for i, image_id in enumerate(ids) if image_id in present]
    kept = Pairs([pairs.images[i] for i in keep], [pairs.prompts[i] for i in keep])
    config.require_paths("embedding_path")
    sentence = load_sentence(config.embedding, config.resolved_device(), config.torch_dtype() == torch.float16)
    targets = embed_prompts(sentence, kept.prompts, config.stage_batch_size("embed"), progress=False)
    return Labelled(kept, [ids[i] for i in keep], store.rows([ids[i] for i in keep]), targets, store.clip,
                    len(pairs) - len(keep))
