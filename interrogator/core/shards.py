"""Splitting one run's images into shards of whole batches, each processed on its own and merged after.

A shard is a contiguous run of whole batches, so every batch in it is the batch a single run makes.
``--shard i/N`` computes shard i in the process itself; ``--devices`` computes every range once in the
parent and hands each child ``--images lo:hi:total``, which the child checks against its own listing.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

from .errors import ConfigError


def batch_ranges(n: int, size: int) -> List[List[int]]:
    """Positions 0..n-1 in consecutive batches of ``size`` (the last may be shorter): the one batch split of
    the pipeline, its engines, tune and the feature store."""
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def shard_ranges(n_images: int, count: int, batch_size: int) -> List[Tuple[int, int]]:
    """[lo, hi) image positions of each of ``count`` shards: near-equal numbers of whole batches."""
    if count < 1:
        raise ConfigError(f"shard count must be >= 1, got {count}")
    batches = math.ceil(n_images / batch_size)
    bounds = [min(n_images, (i * batches // count) * batch_size) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def select_range(n_images: int, batch_size: int, shard: Optional[Tuple[int, int]] = None,
                 images: Optional[Tuple[int, int, int]] = None) -> Tuple[int, int]:
    """[lo, hi) of ``--shard i/N`` or of ``--images lo:hi:total`` in a folder of n_images; all without either."""
    if shard is not None:
        index, count = shard
        if not (count >= 1 and 0 <= index < count):
            raise ConfigError(f"shard must be i/N with 0 <= i < N, got {index}/{count}")
        return shard_ranges(n_images, count, batch_size)[index]
    if images is not None:
        lo, hi, total = images
        if total != n_images:
            raise ConfigError(f"--images {lo}:{hi}:{total}: the image folder now holds {n_images} images, "
                              f"not {total}; it changed since the ranges were computed")
        if lo % batch_size:
            raise ConfigError(f"--images {lo}:{hi}:{total}: {lo} is not a multiple of the batch size {batch_size}")
        return lo, hi
    return 0, n_images
