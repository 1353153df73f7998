"""The plan's listing of samples in a bounded number of bytes each: a plan of 10 million images must not hold
10 million Python objects.

- ``Strings``: many strings as their UTF-8 bytes end to end plus where each ends (an ``array('q')``):
  ``len(utf-8) + 8`` bytes a string, where a ``str`` in a tuple costs about ``49 + len + 8``.
- ``FileListing``: loose files and file lists: each sample's id and its path below a root, as two ``Strings``
  (one object when they are equal: a file list's ids are its paths, a recursive listing's its relative paths).
- ``ShardListing``: the samples of WebDataset or Parquet shards: the shards, each one's sample count, and each
  sample's key. Where a sample's image lies (its tar member, its Parquet row) is not kept: a shard's members
  are read again from its tar headers or Parquet metadata when a batch of that shard is read (``shard_members``,
  the last few shards kept), and checked against the count the plan took. The image loader reads them in its own
  process and hands its workers each file whole (``batches.FilesOf``).

Both are ``Sequence[ImageFile]``: ``listing[i]`` makes the ``ImageFile`` when asked; a slice is a view that
copies nothing. ``first_duplicate`` finds two equal ids among millions with 8 bytes an id (their hashes, sorted
by numpy), where a dict or set of the ids would hold every one as an object.
"""
from __future__ import annotations

import bisect
import functools
from array import array
from collections import Counter
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import ConfigError
from .samples import ImageFile, Member, ParquetRow, tar_listing


class Strings(Sequence):
    """Strings in two objects: their UTF-8 bytes joined, and the end of each; a slice is a view."""

    __slots__ = ("_data", "_ends", "_lo", "_hi")

    def __init__(self, data: bytes, ends: array, lo: int = 0, hi: Optional[int] = None):
        self._data, self._ends, self._lo = data, ends, lo
        self._hi = len(ends) if hi is None else hi

    @classmethod
    def of(cls, items: Iterable[str]) -> "Strings":
        data, ends = bytearray(), array("q")
        for item in items:
            data += item.encode("utf-8", "surrogatepass")
            ends.append(len(data))
        return cls(bytes(data), ends)

    def __len__(self) -> int:
        return self._hi - self._lo

    def _at(self, j: int) -> str:
        start = self._ends[j - 1] if j else 0
        return self._data[start:self._ends[j]].decode("utf-8", "surrogatepass")

    def __getitem__(self, index):
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(lo, hi, step)]
            return Strings(self._data, self._ends, self._lo + lo, self._lo + max(lo, hi))
        return self._at(self._lo + _position(index, len(self)))

    def __iter__(self) -> Iterator[str]:
        return (self._at(j) for j in range(self._lo, self._hi))

    def __eq__(self, other) -> bool:
        return _same(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Strings({len(self)} strings)"


def _position(index: int, n: int) -> int:
    if not -n <= index < n:
        raise IndexError("listing index out of range")
    return index + n if index < 0 else index


def _same(mine: Sequence, other) -> bool:
    """Sequences equal item by item (a tuple or list of the same items compares equal)."""
    if not isinstance(other, Sequence) or isinstance(other, str) or len(mine) != len(other):
        return False
    return all(a == b for a, b in zip(mine, other))


class FileListing(Sequence):
    """Loose files (a folder, a tree, a file list): ``ImageFile(ids[i], root / paths[i])``."""

    __slots__ = ("root", "ids", "paths")

    def __init__(self, root: Path, ids: Strings, paths: Strings):
        self.root, self.ids, self.paths = Path(root), ids, paths

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            ids = self.ids[index]
            return FileListing(self.root, ids, ids if self.paths is self.ids else self.paths[index])
        return ImageFile(self.ids[index], self.root / self.paths[index])

    def __iter__(self) -> Iterator[ImageFile]:
        return (ImageFile(i, self.root / p) for i, p in zip(self.ids, self.paths))

    def __eq__(self, other) -> bool:
        return _same(self, other)

    __hash__ = None  # type: ignore[assignment]


class ShardListing(Sequence):
    """The samples of shards (module docstring): ``starts[s]`` is shard s's first sample, ``starts[-1]`` the
    total; ``keys`` every sample's key; a slice is the window [lo, hi) of the whole listing."""

    __slots__ = ("kind", "shards", "starts", "keys", "column", "lo", "hi")

    def __init__(self, kind: str, shards: Tuple[Path, ...], starts: array, keys: Strings, column: str = "",
                 lo: int = 0, hi: Optional[int] = None):
        self.kind, self.shards, self.starts, self.keys, self.column = kind, shards, starts, keys, column
        self.lo, self.hi = lo, (starts[-1] if hi is None else hi)

    def __len__(self) -> int:
        return self.hi - self.lo

    def __getitem__(self, index):
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(lo, hi, step)]
            return ShardListing(self.kind, self.shards, self.starts, self.keys, self.column, self.lo + lo,
                                self.lo + max(lo, hi))
        return self._at(self.lo + _position(index, len(self)))

    def _at(self, j: int) -> ImageFile:
        s = bisect.bisect_right(self.starts, j) - 1
        members = shard_members(self.kind, self.shards[s], self.column, self.starts[s + 1] - self.starts[s])
        return ImageFile(self.keys[j], self.shards[s], members[j - self.starts[s]])

    def __iter__(self) -> Iterator[ImageFile]:
        return (self._at(j) for j in range(self.lo, self.hi))

    def __eq__(self, other) -> bool:
        return _same(self, other)

    __hash__ = None  # type: ignore[assignment]

    @property
    def ids(self) -> Strings:
        """The window's keys."""
        return self.keys[self.lo:self.hi]

    def counts(self) -> List[Tuple[Path, int]]:
        """(shard, its samples in this window) of each shard the window touches, in order."""
        first = bisect.bisect_right(self.starts, self.lo) - 1
        out = []
        for s in range(max(first, 0), len(self.shards)):
            lo, hi = max(self.starts[s], self.lo), min(self.starts[s + 1], self.hi)
            if lo >= self.hi:
                break
            if hi > lo:
                out.append((self.shards[s], hi - lo))
        return out


@functools.lru_cache(maxsize=4)
def shard_members(kind: str, shard: Path, column: str, count: int) -> Tuple[Member, ...]:
    """Where each sample's image lies in one shard, read again from its tar headers or Parquet metadata; the
    count must be the plan's (a shard changed since is one line)."""
    if kind == "tar":
        members = tuple(m for _, m in tar_listing(shard)[0])
    else:
        import pyarrow.parquet as pq  # lazy: the [parquet] extra
        meta = pq.ParquetFile(shard).metadata
        members = tuple(ParquetRow(g, r, column) for g in range(meta.num_row_groups)
                        for r in range(meta.row_group(g).num_rows))
    if len(members) != count:
        raise ConfigError(f"config key 'data_path': the shard {shard} holds {len(members)} samples, and held "
                          f"{count} when the run was planned; it changed during the run: run again")
    return members


def shard_groups(files: Sequence) -> Optional[List[int]]:
    """The number of consecutive samples of each input shard, which the run's batches never cross
    (shards.Layout); None for loose files or a list."""
    if isinstance(files, ShardListing):
        return [count for _, count in files.counts()]
    if not files or files[0].member is None:
        return None
    sizes: List[int] = []
    last = None
    for file in files:
        if file.path != last:
            sizes.append(0)
            last = file.path
        sizes[-1] += 1
    return sizes


def shard_counts(files: Sequence) -> Dict[str, int]:
    """{input shard's path: its samples among ``files``}, from a ShardListing's counts (no member read)."""
    if isinstance(files, ShardListing):
        return {str(path): count for path, count in files.counts()}
    return dict(Counter(str(f.path) for f in files))


def first_duplicate(ids: Sequence[str]) -> Optional[Tuple[int, int]]:
    """The positions of the first two equal ids (by the second's position), or None: the ids' hashes sorted,
    then only the ids whose hash repeats compared (8 bytes an id, not a set of millions of strings)."""
    if len(ids) < 2:
        return None
    hashes = np.fromiter((hash(i) for i in ids), dtype=np.int64, count=len(ids))
    ordered = np.sort(hashes)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if not len(repeated):
        return None
    seen: dict = {}
    for position in np.flatnonzero(np.isin(hashes, repeated)).tolist():
        first = seen.setdefault(ids[position], position)
        if first != position:
            return first, position
    return None
