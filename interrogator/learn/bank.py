"""A retrieval bank: CLIP image features of labelled images with their prompts' sentence embeddings.

At inference the k bank images nearest an image (cosine of CLIP features, exact: nearest.py) vote with
their prompt embeddings, weighted by a softmax of their similarities at a temperature; the weighted
mean is normalised. At k = 1 the answer is the nearest image's own prompt embedding.

A bank is one safetensors file ``<folder>/bank.safetensors``: ``features`` (N, D) and ``embeddings``
(N, 384), both unit-norm float32, with the ids and the identity of the CLIP weights in its metadata;
loading it for another CLIP is an error naming both.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np
import torch

from ..core.atomic import write_bytes
from ..core.errors import ConfigError
from ..tools.nearest import faiss_index, nearest
from safetensors import safe_open
from safetensors.torch import save

BANK_FORMAT = "1"
BANK_NAME = "bank.safetensors"


@dataclass
class Bank:
    ids: List[str]
    features: torch.Tensor     # (N, D) float32, unit-norm
    embeddings: torch.Tensor   # (N, E) float32, unit-norm
    clip_model: str
    clip_weights: str
    _faiss: object = field(default=None, repr=False, compare=False)  # the faiss index, built on first use

    def query(self, features: torch.Tensor, k: int, temperature: float, backend: str = "torch") -> np.ndarray:
        """(B, E) float32: the softmax-weighted, normalised mean of the k nearest entries' embeddings."""
        prebuilt = None
        if backend == "faiss":  # built once per bank, not once per batch
            if self._faiss is None:
                self._faiss = faiss_index(self.features)
            prebuilt = self._faiss
        scores, index = nearest(features.float().to(self.features.device), self.features, k, backend, index=prebuilt)
        weights = torch.softmax(scores.double().cpu() / temperature, dim=1)
        voted = (weights.unsqueeze(-1) * self.embeddings.double()[index.cpu()]).sum(dim=1)
        return torch.nn.functional.normalize(voted, dim=-1).float().numpy()

    def save(self, folder: str) -> Path:
        meta = {"format": BANK_FORMAT, "clip_model": self.clip_model, "clip_weights": self.clip_weights,
                "ids": json.dumps(self.ids)}
        return write_bytes(Path(folder) / BANK_NAME, save({"features": self.features.contiguous(),
                                                           "embeddings": self.embeddings.contiguous()}, metadata=meta))


def load_bank(folder: str, clip_weights, key: str = "bank_path") -> Bank:
    path = Path(folder) / BANK_NAME
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            features, embeddings = f.get_tensor("features"), f.get_tensor("embeddings")
        ids = json.loads(meta["ids"])
        if meta.get("format") != BANK_FORMAT or len(ids) != len(features) or len(features) != len(embeddings):
            raise ValueError("format, ids, features and embeddings do not agree")
    except Exception as exc:
        raise ConfigError(f"config key '{key}': {path} is not a bank this tool wrote: "
                          f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    _check_weights(meta, folder, clip_weights, key)
    return Bank(ids, features, embeddings, meta["clip_model"], meta["clip_weights"])


def _check_weights(meta: dict, folder: str, clip_weights: str, key: str) -> None:
    if not clip_weights.matches(meta["clip_weights"]):
        raise ConfigError(f"config key '{key}': the bank in {folder} holds features of other CLIP weights "
                          f"({meta['clip_model']}, {meta['clip_weights']}); this run's CLIP is {clip_weights.identity}")


def check_bank_clip(folder: str, clip_weights, key: str = "bank_path") -> None:
    """The bank's CLIP identity, read from its metadata without loading its tensors, must be clip_weights."""
    path = Path(folder) / BANK_NAME
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        meta["clip_weights"], meta["clip_model"]
    except Exception as exc:
        raise ConfigError(f"config key '{key}': {path} is not a bank this tool wrote: "
                          f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    _check_weights(meta, folder, clip_weights, key)
