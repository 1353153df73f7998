"""Exact nearest neighbours by inner product: the label ranking's chunked top-k, or faiss when asked.

Rows on both sides are unit-norm, so the inner product is the cosine. The ``torch`` backend is
``rank.topk_chunked`` (exact, ties to the lower row) on the keys' device; ``faiss`` uses an exact
``IndexFlatIP`` from the optional ``faiss-cpu`` package (``pip install -e '.[faiss]'``), which searches on
many cores without building torch products; it may order exactly tied keys differently.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

from ..core.errors import InterrogatorError
from ..core.rank import topk_chunked

BACKENDS = ("torch", "faiss")
SEARCH_CHUNK = 65536  # keys scored at once


def faiss_index(keys: torch.Tensor):
    """An exact faiss ``IndexFlatIP`` holding the keys (build it once for many searches)."""
    try:
        import faiss  # lazy: the [faiss] extra
    except ImportError as exc:
        raise InterrogatorError("the faiss backend needs faiss-cpu: pip install -e '.[faiss]'") from exc
    base = np.ascontiguousarray(keys.detach().float().cpu().numpy())
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    return index


def nearest(queries: torch.Tensor, keys: torch.Tensor, k: int, backend: str = "torch",
            chunk_size: int = SEARCH_CHUNK, index=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(scores, indices), both (Q, min(k, N)), best first, of the k keys nearest each query.

    index: with the faiss backend, a ``faiss_index(keys)`` built before (else one is built for this call)."""
    if backend == "torch":
        queries = queries.to(keys.device, keys.dtype)
        return topk_chunked(queries, keys, k, chunk_size)
    if backend != "faiss":
        raise InterrogatorError(f"search backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    index = index if index is not None else faiss_index(keys)
    scores, idx = index.search(np.ascontiguousarray(queries.detach().float().cpu().numpy()), min(k, index.ntotal))
    return torch.from_numpy(scores), torch.from_numpy(idx.astype(np.int64))
