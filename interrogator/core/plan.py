"""The plan of a run: everything decided and checked before any model loads, in one immutable value, and the
checks of the paths it writes (they need no model).

``runner.planner.make_plan(config, ...)`` is the one place that turns a config (and a shard or an image range)
into a ``Plan``:

- the images: ids, paths relative to ``data_path``, the Kaggle ids, and the entries skipped with the reason;
- the batches, numbered as in a run over the whole folder (a shard's first batch keeps its number);
- the label files the mode reads, the resolved CLIP spec and the identity of its weights;
- the resume key (identity.run_identity);
- every output path (outputs.py's formats, each image's ``.txt``, the work folder), each checked: writable,
  not a folder, and no two things written to one path.

The local run, the ``--devices`` parent and its children, the Ray driver, ``tune`` and ``precompute-labels``
all start from it, so they see the same images in the same batches and refuse the same bad input, with one
line, before a model loads.
"""
from __future__ import annotations

import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from .atomic import TEMP_EXTRA, name_max
from .config import Config, RunSettings
from .errors import ConfigError
from .images import FolderScan, ImageFile, check_name, scan_folder, scan_tree, stem
from .listing import FileListing, ShardListing, Strings, first_duplicate
from .samples import expand_shards, input_kind, list_lines, parquet_keys, tar_listing
from .workdir import work_root

Range = Tuple[int, int, int]  # lo, hi, total: images lo..hi-1 of a folder of total images


@dataclass(frozen=True)
class Outputs:
    """Every file a run writes, by format (the batch records live in workdir.work_root of the output)."""

    submission: Optional[Path]          # the kaggle format's CSV
    files: Dict[str, Path]              # csv, jsonl, parquet
    txt: Tuple[Path, ...]               # one per image of the plan, or () without the txt format
    shards: Dict[str, Dict[Path, Path]] = field(default_factory=dict)  # shard-parquet, wds: {input shard: output}


@dataclass(frozen=True)
class Plan:
    config: Config
    files: Sequence[ImageFile]          # the images this process works on, sorted by id (listing.py: compact)
    relative: Sequence[str]             # each one's path relative to data_path (posix)
    kaggle: Sequence[str]               # each one's id in the submission CSV
    skipped: Tuple[Tuple[str, str], ...]
    total: int                          # images in the whole folder
    batches: Tuple[range, ...]          # positions in files: a batch is a run of consecutive images
    first_batch: int                    # the number of batches[0] in a run over the whole folder
    label_files: Tuple[Path, ...]
    clip_weights: object                # identity.Weights of the CLIP, or None where no CLIP runs
    key: Optional[str]                  # the resume key; None where nothing is saved
    outputs: Optional[Outputs]
    captioned: int = 0                  # images left out because their caption file exists (existing_txt skip)
    earlier: object = None              # runner.earlier.Earlier: those images' rows from the earlier outputs

    @property
    def ids(self) -> List[str]:
        listed = getattr(self.files, "ids", None)  # a listing's ids, without making each ImageFile
        return list(listed) if listed is not None else [f.image_id for f in self.files]


def scan_images(running: RunSettings) -> FolderScan:
    """The images of data_path: ids are file stems, or with ``recursive`` relative paths below it; the samples of
    shards, Parquet files or a file list (samples.py), ids their keys or paths, in the shards' order. Each as a
    listing (listing.py): a few bytes an image."""
    kind = input_kind(running.data_path)
    if kind == "folder":
        return scan_tree(running.data_path) if running.recursive else scan_folder(running.data_path)
    if kind == "list":
        path = Path(running.data_path)
        if not path.is_file():
            raise ConfigError(f"config key 'data_path': the file list {path} does not exist")
        ids = Strings.of(list_lines(path))
        return FolderScan(unique_samples(FileListing(path.parent, ids, ids), ids, running.data_path))
    shards, starts, extensions = expand_shards(running.data_path), array("q", [0]), {}

    def keys() -> Iterator[str]:  # shard by shard: a shard's headers or key column, then only its keys kept
        for shard in shards:
            if kind == "tar":
                listed, extensions[str(shard)] = tar_listing(shard)
                names = [key for key, _ in listed]
            else:
                names = parquet_keys(shard, running.image_column, running.key_column)
            starts.append(starts[-1] + len(names))
            yield from names
    ids = Strings.of(keys())
    files = ShardListing(kind, tuple(shards), starts, ids, running.image_column)
    return FolderScan(unique_samples(files, ids, running.data_path), extensions=extensions)


def unique_samples(files: Sequence[ImageFile], ids: Sequence[str], data_path: str) -> Sequence[ImageFile]:
    """The samples (``ids``: each one's id), each id a valid CSV id and no two alike (one line naming both
    where two are: listing.first_duplicate)."""
    if not len(files):
        raise ConfigError(f"config key 'data_path': no samples in {data_path}")
    for position, image_id in enumerate(ids):
        if not (image_id.isascii() and image_id.isprintable()):
            check_name(image_id, files[position].path)
    twice = first_duplicate(ids)
    if twice is not None:
        first, second = files[twice[0]], files[twice[1]]
        raise ConfigError(f"config key 'data_path': two samples share the key {first.image_id!r}: "
                          f"{first.shown} and {second.shown}")
    return files


def relative_path(running: RunSettings, file: ImageFile) -> str:
    """An image's path relative to data_path: ``images/a.png`` in the competition's layout (scan_folder), the
    name in a plain folder, the id with ``recursive``, a shard sample's key or a file list's path as written."""
    return relative_paths(running, [file])[0]


def relative_paths(running: RunSettings, files: Sequence[ImageFile]) -> Sequence[str]:
    """relative_path of each file, the input's kind read once (a plan of millions lists them all); a listing's
    own strings where they are those paths, else a new ``Strings``."""
    as_ids = running.recursive or input_kind(running.data_path) == "list"
    if isinstance(files, ShardListing):
        return files.ids
    if isinstance(files, FileListing):
        if as_ids:
            return files.ids
        below = _below(files.root / "x", running.data_path)[:-1]  # "" or "images/": the listing's root
        return files.paths if not below else Strings.of(below + p for p in files.paths)
    return [file.image_id if as_ids or file.member is not None else _below(file.path, running.data_path)
            for file in files]


def _below(path: Path, root: str) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def kaggle_ids(relative: Sequence[str], recursive: bool, unique: bool = True) -> Sequence[str]:
    """The submission's ids: the file stems. With ``recursive`` two images may share a stem: an error naming
    both when the kaggle format is written (``unique``)."""
    stems = Strings.of(stem(r) for r in relative)
    twice = first_duplicate(stems) if recursive and unique else None
    if twice is not None:
        first, second = relative[twice[0]], relative[twice[1]]
        raise ConfigError(f"config key 'formats': the kaggle format needs unique file stems, and "
                          f"{first!r} and {second!r} share {stems[twice[0]]!r}; leave kaggle out of formats "
                          f"or rename one")
    return stems


# ---- outputs ----------------------------------------------------------------------------------
def txt_base(config: Config) -> Tuple[Path, str]:
    """Where caption files go, and the config key that says so."""
    return (Path(config.txt_dir), "txt_dir") if config.txt_dir else (Path(config.data_path), "data_path")


def txt_file(base: Path, relative: str, extension: str) -> Path:
    return (base / relative).with_suffix(extension)


def txt_paths(config: Config, relative: Sequence[str]) -> List[Path]:
    """``<stem><txt_extension>`` of each image beside it, or under txt_dir keeping the sub-folders; every folder
    they go in is checked now (a read-only image folder, a txt_dir that is a file), not after the run."""
    base, key = txt_base(config)
    paths = [txt_file(base, r, config.txt_extension) for r in relative]
    for folder in sorted({p.parent for p in paths}):
        check_folder(folder, f"config key '{key}': the .txt outputs")
    for path in paths:
        if path.is_dir():
            raise ConfigError(f"config key '{key}': the caption file {path} is a folder")
    return paths


def check_folder(folder: Path, what: str) -> None:
    """A folder can be made (or is there) and written, without writing in it."""
    blocker = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ConfigError(f"{what}: cannot write in folder {folder}: {blocker} is a file")
    if blocker is not None and not os.access(blocker, os.W_OK | os.X_OK):
        reason = "it is read-only" if blocker == folder else f"{blocker} is read-only"
        raise ConfigError(f"{what}: cannot write in folder {folder}: {reason}")


def check_output(output, what: str = "config key 'output'") -> None:
    """One output file can be written: not a folder, its folder writable (or creatable), its temp and work
    names not too long. Nothing is written or made here: a later error leaves no trace."""
    path = Path(output)
    if path.is_dir():
        raise ConfigError(f"{what}: {path} is a folder; name a file such as {path / 'submission.csv'}")
    check_folder(path.parent, what)
    longest = max(len(os.fsencode(path.name)) + TEMP_EXTRA, len(os.fsencode(work_root(path).name)))
    existing = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("/"))
    limit = name_max(existing)
    if longest > limit:
        raise ConfigError(f"{what}: the name {path.name!r} is too long: its temp and work "
                          f"names need {longest} bytes, the file system allows {limit}")
