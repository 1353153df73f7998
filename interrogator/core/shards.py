"""Splitting one run's images into shards of whole batches, each processed on its own and merged after.

A shard is a contiguous run of whole batches, so every batch in it is the batch a single run makes.
``--shard i/N`` computes shard i in the process itself; ``--devices`` computes every range once in the
parent and hands each child ``--images lo:hi:total``, which the child checks against its own listing.

Images stored in input shards (WebDataset tars, Parquet files: core/samples.py) are batched within each input
shard, so no batch holds samples of two of them, and a range begins only where an input shard does: ``--shard``
and ``--devices`` split by input shard, and each input shard's outputs come from its own batches.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .errors import ConfigError


def batch_ranges(n: int, size: int) -> List[List[int]]:
    """Positions 0..n-1 in consecutive batches of ``size`` (the last may be shorter): the one batch split of
    the pipeline, its engines, tune and the feature store."""
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


@dataclass(frozen=True)
class Layout:
    """The batches of a run over all ``n`` images: where each begins (``starts``), and the batches where a range
    may begin (``cuts``): every batch, or with ``groups`` (the sizes of consecutive input shards) the first
    batch of each group, whose batches never cross into the next."""

    n: int
    size: int
    starts: Tuple[int, ...]
    cuts: Tuple[int, ...]

    @classmethod
    def of(cls, n: int, size: int, groups: Optional[Sequence[int]] = None) -> "Layout":
        if groups is None:
            starts = tuple(range(0, n, size))
            return cls(n, size, starts, tuple(range(len(starts))))
        if sum(groups) != n:
            raise ValueError(f"groups of {sum(groups)} images for {n}")
        starts: List[int] = []
        cuts: List[int] = []
        position = 0
        for group in groups:
            if group:
                cuts.append(len(starts))
                starts.extend(range(position, position + group, size))
            position += group
        return cls(n, size, tuple(starts), tuple(cuts))

    def position(self, batch: int) -> int:
        return self.starts[batch] if batch < len(self.starts) else self.n

    def first_batch(self, lo: int) -> int:
        """The number of the batch that begins at ``lo`` in the whole run."""
        return bisect.bisect_left(self.starts, lo)

    def batches(self, lo: int, hi: int) -> List[range]:
        """The batches of the range [lo, hi), as positions counted from lo."""
        first, last = self.first_batch(lo), self.first_batch(hi)
        return [range(self.position(b) - lo, min(self.position(b + 1), hi) - lo) for b in range(first, last)]

    def ranges(self, count: int) -> List[Tuple[int, int]]:
        """[lo, hi) of each of ``count`` shards: near-equal numbers of whole batches, each beginning at a cut."""
        if count < 1:
            raise ConfigError(f"shard count must be >= 1, got {count}")
        total = len(self.starts)
        cuts = list(self.cuts) + [total]
        bounds = [self.position(cuts[bisect.bisect_left(cuts, i * total // count)]) for i in range(count + 1)]
        return list(zip(bounds[:-1], bounds[1:]))

    def select(self, shard: Optional[Tuple[int, int]] = None,
               images: Optional[Tuple[int, int, int]] = None) -> Tuple[int, int]:
        """[lo, hi) of ``--shard i/N`` or of ``--images lo:hi:total``; all images without either."""
        if shard is not None:
            index, count = shard
            if not (count >= 1 and 0 <= index < count):
                raise ConfigError(f"shard must be i/N with 0 <= i < N, got {index}/{count}")
            return self.ranges(count)[index]
        if images is not None:
            lo, hi, total = images
            if total != self.n:
                raise ConfigError(f"--images {lo}:{hi}:{total}: the image folder now holds {self.n} images, "
                                  f"not {total}; it changed since the ranges were computed")
            if self.position(self.first_batch(lo)) != lo or hi > self.n or hi < lo:
                what = (f"{lo} is not a multiple of the batch size {self.size}" if len(self.cuts) == len(self.starts)
                        else f"{lo}:{hi} is not a range of whole batches")
                raise ConfigError(f"--images {lo}:{hi}:{total}: {what}")
            return lo, hi
        return 0, self.n


def shard_ranges(n_images: int, count: int, batch_size: int) -> List[Tuple[int, int]]:
    """[lo, hi) image positions of each of ``count`` shards: near-equal numbers of whole batches."""
    return Layout.of(n_images, batch_size).ranges(count)


def select_range(n_images: int, batch_size: int, shard: Optional[Tuple[int, int]] = None,
                 images: Optional[Tuple[int, int, int]] = None) -> Tuple[int, int]:
    """[lo, hi) of ``--shard i/N`` or of ``--images lo:hi:total`` in a folder of n_images; all without either."""
    return Layout.of(n_images, batch_size).select(shard, images)
