"""The plan of a run: everything decided and checked before any model loads, in one immutable value.

``make_plan(config, ...)`` is the one place that turns a config (and a shard or an image range) into:

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
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .atomic import TEMP_EXTRA, name_max
from .config import Config
from .errors import ConfigError
from .images import FolderScan, ImageFile, scan_folder, scan_tree

Range = Tuple[int, int, int]  # lo, hi, total: images lo..hi-1 of a folder of total images


@dataclass(frozen=True)
class Outputs:
    """Every file a run writes, by format (the batch records live in workdir.work_root of the output)."""

    submission: Optional[Path]          # the kaggle format's CSV
    files: Dict[str, Path]              # csv, jsonl, parquet
    txt: Tuple[Path, ...]               # one per image of the plan, or () without the txt format


@dataclass(frozen=True)
class Plan:
    config: Config
    files: Tuple[ImageFile, ...]        # the images this process works on, sorted by id
    relative: Tuple[str, ...]           # each one's path relative to data_path (posix)
    kaggle: Tuple[str, ...]             # each one's id in the submission CSV
    skipped: Tuple[Tuple[str, str], ...]
    total: int                          # images in the whole folder
    batches: Tuple[Tuple[int, ...], ...]  # positions in files
    first_batch: int                    # the number of batches[0] in a run over the whole folder
    label_files: Tuple[Path, ...]
    clip_weights: object                # identity.Weights of the CLIP, or None where no CLIP runs
    key: Optional[str]                  # the resume key; None where nothing is saved
    outputs: Optional[Outputs]
    captioned: int = 0                  # images left out because their caption file exists (existing_txt skip)

    @property
    def ids(self) -> List[str]:
        return [f.image_id for f in self.files]


def scan_images(config: Config) -> FolderScan:
    """The images of data_path: ids are file stems, or with ``recursive`` relative paths below it."""
    return scan_tree(config.data_path) if config.recursive else scan_folder(config.data_path)


def mode_label_files(config: Config) -> List[Path]:
    """The label files the config's mode reads, the negative chain's included when it is asked for."""
    from ..runner.labels import table_files
    from ..runner.stages import table_names
    return table_files(config.dicts, table_names(config))


def make_plan(config: Config, shard: Optional[Tuple[int, int]] = None, images: Optional[Range] = None,
              write: bool = True, models_given: bool = False, key: bool = True) -> Plan:
    """The plan of a run (module docstring); every check that needs no model runs here.

    models_given: the caller brings loaded models, so the model paths are not checked.
    key: compute the resume key (hashing the checkpoints; remembered per file, identity.content_hash).
    """
    from .shards import batch_ranges, select_range
    config.check_blend()
    weights = None if models_given else check_models(config)
    labels = mode_label_files(config)
    from ..runner.labels import read_labels
    for path in labels:
        read_labels(path)
    scan = scan_images(config)
    batch_size = config.stage_batch_size("caption")
    todo, existing = without_captioned(config, scan.files, shard)
    lo, hi = select_range(len(todo), batch_size, shard, images)
    files = tuple(todo[lo:hi])
    relative = tuple(relative_path(config, f) for f in files)
    kaggle = tuple(kaggle_ids(relative, config.recursive, "kaggle" in config.formats))
    if "kaggle" in config.formats:
        check_ids(files, kaggle)
    outputs = plan_outputs(config, relative) if write else None
    batches = tuple(tuple(b) for b in batch_ranges(len(files), batch_size))
    resume_key = None
    if key and not models_given:
        from .identity import digest, run_identity
        resume_key = digest(run_identity(config, labels))
    return Plan(config, files, relative, kaggle, tuple(scan.skipped), len(todo), batches, lo // batch_size,
                tuple(labels), weights, resume_key, outputs, existing)


def without_captioned(config: Config, files: Sequence[ImageFile], shard) -> Tuple[List[ImageFile], int]:
    """With ``existing_txt: skip``, the images whose caption file does not exist yet (and how many do): the
    others are not even decoded. Every image otherwise."""
    if "txt" not in config.formats or config.txt_policy() != "skip":
        return list(files), 0
    if shard is not None:
        raise ConfigError("--shard with existing_txt skip: each shard writes caption files as it goes, so the "
                          "shards would see different folders; use --devices or the Ray engine, or another "
                          "existing_txt")
    base, _ = txt_base(config)
    keep = [f for f in files if not txt_file(base, relative_path(config, f), config.txt_extension).exists()]
    return keep, len(files) - len(keep)


def check_models(config: Config):
    """The model paths, the dtype and device, and a head or bank of this CLIP; the CLIP's Weights or None."""
    if config.demo:
        from ..models.demo import ensure_demo_models
        ensure_demo_models(config)
    config.require_paths("data_path", "embedding_path", "dicts")
    if config.needs_clip():
        config.require_paths("clip_path")
    config.check_device()
    config.check_dtype()
    if config.embedding_dir is not None:
        config.require_paths("embedding_dir")
    check_caption_models(config)
    if not config.needs_clip():
        return None
    from ..models.clip_checkpoint import resolve_clip
    weights = resolve_clip(config.clip_model, config.clip_path).weights(config.clip_path)
    check_learned(config, weights)
    return weights


def check_interrogation(config: Config):
    """What interrogating a few images needs (the app, draw's round trip): device and dtype, the captioner and
    tagger, the mode's label files, and the CLIP with a head or bank of it; no data_path and no sentence model.
    The CLIP's Weights, or None without a clip_path."""
    config.check_device()
    config.check_dtype()
    check_caption_models(config)
    if config.needs_clip():
        config.require_paths("clip_path", "dicts")
        from ..runner.labels import read_labels
        for path in mode_label_files(config):
            read_labels(path)
    if config.clip_path is None:
        return None
    config.require_paths("clip_path")
    from ..models.clip_checkpoint import resolve_clip
    weights = resolve_clip(config.clip_model, config.clip_path).weights(config.clip_path)
    check_learned(config, weights)
    return weights


def check_caption_models(config: Config) -> None:
    """The captioner the text needs (and its instruction), and the tagger the template's parts need."""
    fields = config.template_fields()
    if config.needs_captioner():
        config.require_paths("blip_path")
        from ..models.caption import check_caption_prompt, check_captioner_folder
        check_caption_prompt(check_captioner_folder(config.blip_path), config.caption_prompt)
    if config.tagger_path is None and {"tags", "rating"} & fields:
        part = "{tags}" if "tags" in fields else "{rating}"
        raise ConfigError(f"config key 'caption_template' uses {part}, which the tagger writes: set "
                          f"'tagger_path'{config._where()}")
    if config.tagger_path is not None:
        config.require_paths("tagger_path")
        from ..models.tagger import check_tagger_folder
        check_tagger_folder(config.tagger_path)


def check_learned(config: Config, clip_weights) -> None:
    """A head or bank the blend uses must come from this CLIP's weights (checked before any model loads)."""
    if config.blend_weight("head") > 0:
        from ..learn.head import check_clip, read_spec
        check_clip(read_spec(config.head_path), clip_weights, f"config key 'head_path': the head in {config.head_path}")
    if config.blend_weight("bank") > 0:
        from ..learn.bank import check_bank_clip
        check_bank_clip(config.bank_path, clip_weights)


def relative_path(config: Config, file: ImageFile) -> str:
    """An image's path relative to data_path (its name, without ``recursive``)."""
    return file.image_id if config.recursive else file.path.name


def kaggle_ids(relative: Sequence[str], recursive: bool, unique: bool = True) -> List[str]:
    """The submission's ids: the file stems. With ``recursive`` two images may share a stem: an error naming
    both when the kaggle format is written (``unique``)."""
    if not recursive:
        return [Path(r).stem for r in relative]
    stems, seen = [], {}
    for path in relative:
        stem = Path(path).stem
        if unique and stem in seen:
            raise ConfigError(f"config key 'formats': the kaggle format needs unique file stems, and "
                              f"{seen[stem]!r} and {path!r} share {stem!r}; leave kaggle out of formats "
                              f"or rename one")
        seen[stem] = path
        stems.append(stem)
    return stems


def check_ids(files: Sequence[ImageFile], ids: Sequence[str]) -> None:
    """Every id must come back unchanged from the written CSV; else an error naming the file."""
    from ..runner.submission import first_id_lost_in_csv
    bad = first_id_lost_in_csv(list(ids))
    if bad is not None:
        name = next(f.path.name for f, i in zip(files, ids) if i == bad)
        raise ConfigError(f"config key 'data_path': the file name {name!r} does not come back unchanged "
                          f"from the submission CSV; rename it")


# ---- outputs ----------------------------------------------------------------------------------
def plan_outputs(config: Config, relative: Sequence[str]) -> Outputs:
    """Every path the run writes, each checked, and no two of them one file."""
    from ..runner.outputs import format_paths
    paths = format_paths(config.output)
    submission = paths["kaggle"] if "kaggle" in config.formats else None
    files = {f: paths[f] for f in ("csv", "jsonl", "parquet") if f in config.formats}
    check_output(config.output)
    for name, path in files.items():
        check_output(path, f"the {name} output")
    txt = txt_paths(config, relative) if "txt" in config.formats else ()
    named = [(p, f"the {f} output") for f, p in ([("kaggle", submission)] if submission else []) + list(files.items())]
    taken: Dict[Path, str] = {}
    for path, what in named + [(p, f"the .txt of {r}") for p, r in zip(txt, relative)]:
        other = taken.setdefault(Path(os.path.abspath(path)), what)
        if other != what:
            raise ConfigError(f"{other} and {what} would both be written to {path}; "
                              + ("rename one image" if what.startswith("the .txt") and other.startswith("the .txt")
                                 else "choose another output name or txt_dir"))
    return Outputs(submission, files, tuple(txt))


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
    from .workdir import work_root
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
