"""Exact top-k of image features against a label matrix, chunk by chunk.

Labels are ordered by score, best first, and equal scores by label index (labels
that tokenize alike, such as 'iso100' and 'iso 1 0 0', have equal scores). Each
chunk keeps its own top-k under that order; the global top-k is then taken over
the merged candidates. Every label of the global top-k is in the top-k of its own
chunk, so the result equals the brute-force ranking for any chunk size
(clip-interrogator instead keeps ``chunk/num_chunks`` per chunk, which can miss labels).

"Equals" holds for the scores as computed. A score is a float dot product, and its last bit can
depend on the shape of the product it is computed in, so two labels whose scores tie or nearly tie
can swap between chunk sizes; that is why ``chunk_size`` is part of the resume identity (identity.py).
"""
from __future__ import annotations

import torch


def _ordered_topk(scores: torch.Tensor, k: int):
    """Top-k per row, best first, ties broken by lower column index."""
    values, index = torch.sort(scores, dim=1, descending=True, stable=True)
    return values[:, :k], index[:, :k]


def topk_chunked(features: torch.Tensor, labels: torch.Tensor, k: int, chunk_size: int):
    """Scores and indices of the k best labels per row of ``features``.

    features: (B, D); labels: (N, D) on the same device and dtype.
    Returns (scores, indices), both (B, min(k, N)), best first.
    """
    n = labels.shape[0]
    k = min(k, n)
    if k <= 0:
        empty = features.new_zeros((features.shape[0], 0))
        return empty, empty.long()
    cand_scores, cand_index = [], []
    for start in range(0, n, chunk_size):
        s, i = _ordered_topk(features @ labels[start:start + chunk_size].T, k)
        cand_scores.append(s)
        cand_index.append(i + start)
    # candidates are in label order for equal scores, so a stable sort keeps the index tie-break
    best, pos = _ordered_topk(torch.cat(cand_scores, dim=1), k)
    return best, torch.cat(cand_index, dim=1).gather(1, pos)
