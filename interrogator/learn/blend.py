"""Blending the interrogated prompt's embedding with a learned head's and a retrieval bank's predictions.

The submission vector is the normalised weighted sum ``w_prompt * prompt + w_head * head + w_bank * bank``
(config key ``blend``, the three weights). A component whose weight is 0 is not computed, and when only
the prompt has weight the prompt's embedding is used exactly as it is, so ``blend: [1, 0, 0]`` (or no
blend) gives today's submission byte for byte. An image that could not be decoded has no head or bank
prediction: its vector is its fallback prompt's embedding.

``tune_blend`` scores every blend on a grid of the simplex with the competition metric (score.py)
against labelled prompts, with each component alone among the rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import List, Optional, Sequence, Tuple

import numpy as np
from ..core.score import mean_cosine

COMPONENTS = ("prompt", "head", "bank")


def blend_vectors(weights: Optional[Sequence[float]], prompt: np.ndarray, head: Optional[np.ndarray] = None,
                  bank: Optional[np.ndarray] = None) -> np.ndarray:
    """(N, E) float32 unit rows; see the module docstring."""
    if weights is None or all(w == 0 for w in weights[1:]):
        return prompt
    total = np.zeros(prompt.shape, dtype=np.float64)
    for w, part in zip(weights, (prompt, head, bank)):
        if w:
            total += w * np.asarray(part, dtype=np.float64)
    norms = np.linalg.norm(total, axis=1, keepdims=True)
    out = np.where(norms > 0, total / np.where(norms > 0, norms, 1), prompt)
    # rows without a learned prediction (undecodable images: zero rows) keep the prompt's embedding
    missing = np.ones(len(prompt), dtype=bool)
    for w, part in zip(weights[1:], (head, bank)):
        if w:
            missing &= ~np.any(np.asarray(part), axis=1)
    out[missing] = prompt[missing]
    return out.astype(np.float32)


def simplex_grid(available: Sequence[bool], step: float) -> List[Tuple[float, float, float]]:
    """Weights (w_prompt, w_head, w_bank) on a grid of the simplex, 0 for unavailable components."""
    n = round(1 / step)
    grid = []
    for a, b in product(range(n + 1), repeat=2):
        c = n - a - b
        if c < 0:
            continue
        w = (a / n, b / n, c / n)
        if all(ok or x == 0 for ok, x in zip(available, w)):
            grid.append(w)
    return grid


@dataclass
class BlendRow:
    weights: Tuple[float, float, float]
    score: float

    @property
    def label(self) -> str:
        alone = [name for name, w in zip(COMPONENTS, self.weights) if w == 1]
        return f"{alone[0]} alone" if alone else "blend"


def tune_blend(ids: Sequence[str], prompt: np.ndarray, head: Optional[np.ndarray], bank: Optional[np.ndarray],
               true_ids: Sequence[str], truth: np.ndarray, step: float = 0.1) -> List[BlendRow]:
    """Every grid blend scored by the metric, best first (equal scores: the earlier grid point first)."""
    rows = [BlendRow(w, mean_cosine(ids, blend_vectors(w, prompt, head, bank), true_ids, truth))
            for w in simplex_grid((True, head is not None, bank is not None), step)]
    return sorted(rows, key=lambda r: -r.score)
