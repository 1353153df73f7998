"""Exact top-k of image features against a label matrix, chunk by chunk.

Each chunk keeps its own top-k; the global top-k is then taken over the merged
candidates. Every label of the global top-k is in the top-k of its own chunk,
so the result equals the brute-force top-k (clip-interrogator instead keeps
``chunk/num_chunks`` per chunk, which can miss labels).
"""
from __future__ import annotations

import torch


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
    if n <= chunk_size:
        return (features @ labels.T).topk(k, dim=1)
    cand_scores, cand_index = [], []
    for start in range(0, n, chunk_size):
        sims = features @ labels[start:start + chunk_size].T
        s, i = sims.topk(min(k, sims.shape[1]), dim=1)
        cand_scores.append(s)
        cand_index.append(i + start)
    scores = torch.cat(cand_scores, dim=1)
    index = torch.cat(cand_index, dim=1)
    best, pos = scores.topk(k, dim=1)
    return best, index.gather(1, pos)
