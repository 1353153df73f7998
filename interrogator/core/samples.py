"""Images stored at scale: WebDataset tar shards, Parquet files with the image bytes, and text files listing image
paths, as ``data_path``. Each sample is an ``ImageFile`` whose ``member`` says where its bytes lie, so the one
batch path (``core/batches.py``) reads them from the container as it reads a loose file, with no unpacking.

- **WebDataset** (``.tar``; several as ``a.tar::b.tar``, or a brace pattern ``data/{00000..00999}.tar``): the
  shards are listed by their tar headers only (tarfile skips over the data). A member's key is its path up to
  the first dot of its base name (webdataset's rule: ``0000205.jpg``, ``0000205.txt`` and ``0000205.json`` are
  one sample, ``0000205``); the image is the sample's first member with an image extension, read by offset. A
  ``.jpg`` member may hold PNG, WebP or GIF bytes (img2dataset without re-encoding): decoding goes by content.
- **Parquet** (``.parquet``, the same patterns): a row per sample; the key and image-bytes columns are
  ``key_column`` and ``image_column`` (img2dataset's ``key`` and ``jpg`` unless set). The plan reads the key
  column alone; a row's place (row group, row) comes from the file's metadata, and each row group's image column
  is read when a batch needs it.
- **A file list** (``.txt``): one image path a line, relative to the list's folder; the sample's id is the path
  as written.

A sample's id is its key (a string: ``0000205`` keeps its zeros everywhere) or its path. A sample without an
image member, or whose bytes do not decode, is named and gets the fallback, as an undecodable file does. Two
samples with one key are an error naming both, before any model loads; so are a missing shard, a truncated tar,
a tar whose sample has its members apart or a member named twice (WebDataset's readers, Ray's among them, refuse
or split those), and a Parquet file without the configured columns. A sample without an image member has a digest
of its own (``MissingImage``), so a rerun keeps its batch.

The plan keeps of a shard input only the shards, their sample counts and the keys (``listing.ShardListing``);
where a sample's image lies is read again from the shard's headers or metadata when its batches are read.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

from .config import IMAGE_EXTENSIONS, SHARD_JOIN
from .errors import ConfigError
from .identity import content_digest

KEY_PATTERN = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext: key, then the extensions
SHARD_SUFFIXES = (".tar", ".parquet")


@dataclass(frozen=True)
class TarMember:
    """An image's bytes inside a tar: where its data starts and how long it is."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class ParquetRow:
    """An image's bytes in a Parquet file: its row group, its row in that group, and the column."""

    group: int
    row: int
    column: str


@dataclass(frozen=True)
class NoImage:
    """A sample with no image member: why, for its fallback."""

    why: str


Member = Union[TarMember, ParquetRow, NoImage]


class MissingImage(ValueError):
    """A sample that has no image member. Unlike a file that cannot be read now (no digest: it is tried again),
    this is what the shard holds, so it has a digest: the resume rule keeps its batch while the shard lists the
    sample the same way (identity.hash_files, batches.ImageDataset)."""

    def __init__(self, why: str):
        super().__init__(why)
        self.digest = content_digest(f"no image member: {why}".encode("utf-8"))


@dataclass(frozen=True)
class ImageFile:
    """One input image: its id (the file stem, or a shard sample's key) and path; ``member``: where in that file
    (a tar shard or a Parquet file) the image's bytes are (samples.py), None for a loose file."""

    image_id: str
    path: Path
    member: Optional[Member] = None

    @property
    def shown(self) -> str:
        """How messages name it: the file's name, or ``shard.tar:key``."""
        return self.path.name if self.member is None else f"{self.path.name}:{self.image_id}"

    def read(self) -> Tuple[bytes, str]:
        """The image's bytes and their content digest; ValueError with the reason."""
        return read_sample(self.path, self.member)


def input_kind(data_path: str) -> str:
    """``folder``, ``tar`` or ``parquet`` (shards, a list or a brace pattern of them), or ``list`` (a .txt of paths)."""
    if not data_path or not shard_patterns(data_path):
        return "folder"
    first = shard_patterns(data_path)[0]
    suffix = Path(first.split("{")[0] if first.endswith("}") else first).suffix.lower()
    if suffix == ".txt" and SHARD_JOIN not in data_path:
        return "list"
    if suffix in SHARD_SUFFIXES:
        return suffix[1:]
    return "folder"


def shard_patterns(data_path: str) -> List[str]:
    return [p.strip() for p in str(data_path).split(SHARD_JOIN) if p.strip()]


def expand_shards(data_path: str) -> List[Path]:
    """The shards a ``data_path`` names, in order, as absolute paths: ``::``-separated, each maybe a brace pattern;
    every one must exist (one line naming the first missing one)."""
    paths: List[str] = []
    for pattern in shard_patterns(data_path):
        if "{" in pattern:
            try:
                from braceexpand import braceexpand  # lazy: the [train] and [toolkit] extras have it
            except ImportError:
                raise ConfigError(f"config key 'data_path': {pattern} is a brace pattern, and expanding it needs "
                                  f"braceexpand: pip install braceexpand") from None
            paths.extend(braceexpand(pattern))
        else:
            paths.append(pattern)
    kinds = {Path(p).suffix.lower() for p in paths}
    if len(kinds) > 1:
        raise ConfigError(f"config key 'data_path': shards of one kind only (.tar or .parquet), got {sorted(kinds)}")
    for path in paths:
        if not os.path.isfile(path):
            raise ConfigError(f"config key 'data_path': the shard {path} does not exist")
    return [Path(os.path.abspath(p)) for p in paths]  # Ray's workers run in other folders


def tar_samples(shard: Path) -> List[Tuple[str, Member]]:
    """(key, where its image is) of each sample of one tar shard, in the shard's order, from its headers."""
    return tar_listing(shard)[0]


def tar_listing(shard: Path) -> Tuple[List[Tuple[str, Member]], frozenset]:
    """tar_samples, and the member extensions the shard holds (``jpg``, ``txt``, ``json``)."""
    order: List[str] = []
    members: Dict[str, List[tarfile.TarInfo]] = {}
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for info in tar:
                match = KEY_PATTERN.match(info.name)
                if not info.isfile() or match is None:
                    continue
                key = match.group(1)
                if key not in members:
                    order.append(key)
                    members[key] = []
                else:
                    check_together(shard, key == order[-1], members[key], info.name)
                members[key].append(info)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ConfigError(f"config key 'data_path': the shard {shard} is not a whole tar file ({exc}); it may be "
                          f"truncated: make it again") from None
    extensions = frozenset(KEY_PATTERN.match(i.name).group(2) for infos in members.values() for i in infos)
    return [(key, image_member(key, members[key])) for key in order], extensions


def check_together(shard: Path, last: bool, earlier: List[tarfile.TarInfo], member: str) -> None:
    """A member of a sample already seen comes right after that sample's members, under a name not yet used: the
    WebDataset layout, which its readers (webdataset's, Ray's) need; else one line."""
    if not last:
        raise ConfigError(f"config key 'data_path': the shard {shard} holds the members of one sample apart "
                          f"({earlier[-1].name} and {member}, with other samples between them); WebDataset readers "
                          f"need a sample's members side by side: make the shard again with its members sorted by name")
    if any(info.name == member for info in earlier):
        raise ConfigError(f"config key 'data_path': the shard {shard} holds {member} twice; make it again")


def image_member(key: str, infos: List[tarfile.TarInfo]) -> Member:
    for info in infos:
        if Path(info.name).suffix.lower() in IMAGE_EXTENSIONS:
            return TarMember(info.name, info.offset_data, info.size)
    names = ", ".join(Path(i.name).name for i in infos)
    return NoImage(f"the sample has no image member ({names})")


def parquet_keys(path: Path, image_column: str, key_column: str) -> List[str]:
    """The key of each row of one Parquet file, in order (its key column, a row group at a time; where each
    row's image lies comes from the file's metadata: listing.shard_members)."""
    import pyarrow.parquet as pq  # lazy: the [parquet] extra
    try:
        file = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own types for a file that is not Parquet
        raise ConfigError(f"config key 'data_path': {path} is not a Parquet file ({exc})") from None
    names = file.schema_arrow.names
    for key, column in (("image_column", image_column), ("key_column", key_column)):
        if column not in names:
            raise ConfigError(f"config key '{key}': {path} has no column {column!r} (its columns: "
                              f"{', '.join(names)})")
    keys: List[str] = []
    for group in range(file.num_row_groups):
        keys += map(str, file.read_row_group(group, columns=[key_column]).column(0).to_pylist())
    return keys


def list_lines(path: Path) -> Iterator[str]:
    """Each image path of a file list, as written (relative to the list's folder), blank lines left out; read a
    line at a time."""
    try:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    yield line.strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config key 'data_path': cannot read the file list {path}: {exc}") from None


def read_member(path: Path, member: Member) -> bytes:
    """The bytes of one sample's image; ValueError with the reason."""
    if isinstance(member, NoImage):
        raise MissingImage(member.why)
    try:
        if isinstance(member, TarMember):
            with open(path, "rb") as f:
                f.seek(member.offset)
                data = f.read(member.size)
            if len(data) != member.size:
                raise ValueError(f"cannot read {member.name}: the shard ends before it does")
            return data
        value = _row_group(str(path), member.group, member.column)[member.row]
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror or exc}") from exc
    if not isinstance(value, (bytes, bytearray)):
        raise ValueError(f"its {member.column!r} value is {type(value).__name__}, not image bytes")
    return bytes(value)


@functools.lru_cache(maxsize=2)
def _row_group(path: str, group: int, column: str) -> list:
    """One row group's image column (the last two are kept: a batch reads its rows in order)."""
    import pyarrow.parquet as pq  # lazy: the [parquet] extra
    return pq.ParquetFile(path).read_row_group(group, columns=[column]).column(0).to_pylist()


def read_sample(path: Path, member: Optional[Member]) -> Tuple[bytes, str]:
    """A sample's bytes and their digest (a loose file: member None)."""
    if member is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read: {exc.strerror or exc}") from exc
    else:
        data = read_member(path, member)
    return data, content_digest(data)


def member_text(member: Optional[Member]) -> str:
    """A member as one string (Ray's rows carry it to the workers); '' for a loose file."""
    if member is None:
        return ""
    kind = {TarMember: "tar", ParquetRow: "parquet", NoImage: "none"}[type(member)]
    return json.dumps([kind, *dataclasses.astuple(member)])


def member_of(text: str) -> Optional[Member]:
    """member_text's member back."""
    if not text:
        return None
    kind, *values = json.loads(text)
    return {"tar": TarMember, "parquet": ParquetRow, "none": NoImage}[kind](*values)
