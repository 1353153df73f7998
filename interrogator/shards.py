"""Splitting one run's images into shards of whole batches, each processed on its own and merged after.

A shard is a contiguous run of whole batches, so every batch in it is the batch a single run makes.
``--shard i/N`` computes shard i in the process itself; ``--devices`` computes every range once in the
parent and hands each child ``--images lo:hi:total``, which the child checks against its own listing.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

from .errors import ConfigError
from .images import ImageFile


def shard_ranges(n_images: int, count: int, batch_size: int) -> List[Tuple[int, int]]:
    """[lo, hi) image positions of each of ``count`` shards: near-equal numbers of whole batches."""
    if count < 1:
        raise ConfigError(f"shard count must be >= 1, got {count}")
    batches = math.ceil(n_images / batch_size)
    bounds = [min(n_images, (i * batches // count) * batch_size) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def select(files: Sequence[ImageFile], batch_size: int, shard: Optional[Tuple[int, int]] = None,
           images: Optional[Tuple[int, int, int]] = None) -> List[ImageFile]:
    """The files of ``--shard i/N`` or of ``--images lo:hi:total``; all of them without either."""
    if shard is not None:
        index, count = shard
        if not (count >= 1 and 0 <= index < count):
            raise ConfigError(f"shard must be i/N with 0 <= i < N, got {index}/{count}")
        lo, hi = shard_ranges(len(files), count, batch_size)[index]
        return list(files[lo:hi])
    if images is not None:
        lo, hi, total = images
        if total != len(files):
            raise ConfigError(f"--images {lo}:{hi}:{total}: the image folder now holds {len(files)} images, "
                              f"not {total}; it changed since the ranges were computed")
        return list(files[lo:hi])
    return list(files)
