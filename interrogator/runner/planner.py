"""``make_plan``: a config (and a shard or an image range) made into the run's ``core.plan.Plan``, every
check that needs no model done first (``needs.check``), and the resume key computed
(``core.identity.run_identity`` with the libraries that will run).

The local run, the ``--devices`` parent and its children, ``--shard`` + ``merge``, the Ray driver, ``tune``
and the app's folder runs all start from it, so they see the same images in the same batches and refuse the
same bad input, with one line, before a model loads.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..core.config import Config
from ..core.errors import ConfigError
from ..core.identity import digest, library_versions, run_identity
from ..core.images import ImageFile
from ..core.listing import shard_groups
from ..core.samples import input_kind
from ..core.plan import (Outputs, Plan, Range, check_output, kaggle_ids, relative_paths, scan_images, txt_base,
                         txt_file, txt_paths)
from ..core.owned import check_write, config_inputs
from ..core.shards import Layout
from ..models.embed import import_sentence_transformers
from .earlier import check as check_earlier
from .needs import check, check_labels, mode_label_files, needs_of
from .outputs import format_paths
from .shard_outputs import shard_paths
from .submission import first_id_lost_in_csv


def make_plan(config: Config, shard: Optional[Tuple[int, int]] = None, images: Optional[Range] = None,
              write: bool = True, models_given: bool = False, key: bool = True) -> Plan:
    """The plan of a run (module docstring); every check that needs no model runs here.

    models_given: the caller brings loaded models, so the model paths are not checked.
    key: compute the resume key (hashing the checkpoints; remembered per file, identity.content_hash).
    """
    if models_given:  # only the label files, which the plan names
        config.check_blend()
        weights = check_labels(config)
    else:
        weights = check(config, needs_of(config))
    labels = mode_label_files(config.ranking)
    stored = input_kind(config.data_path) != "folder"  # shards, Parquet or a file list: ids are keys or paths
    if stored and "txt" in config.formats and not config.txt_dir:
        raise ConfigError(f"config key 'formats': txt writes a caption file beside each image, and data_path "
                          f"{config.data_path} holds no loose images; give txt_dir, or write csv, jsonl or parquet")
    scan = scan_images(config.running)
    batch_size = config.stage_batch_size("caption")
    todo, captioned = without_captioned(config, scan.files, shard)
    layout = Layout.of(len(todo), batch_size, shard_groups(todo))
    lo, hi = layout.select(shard, images)
    files = todo[lo:hi]  # a listing's window (listing.py), or a list where existing_txt left images out
    relative = relative_paths(config.running, files)
    kaggle = kaggle_ids(relative, config.recursive or stored, "kaggle" in config.formats)
    if "kaggle" in config.formats:
        check_ids(files, kaggle)
    shard_outputs = shard_paths(config, input_kind(config.data_path), scan.files, files, scan.extensions)
    outputs = plan_outputs(config, relative, shard_outputs) if write else None
    earlier = None
    if outputs is not None and captioned:  # their rows come from the earlier outputs, or one line says why not
        kept = relative_paths(config.running, captioned)
        earlier = check_earlier(outputs, config.formats, kept, kaggle_ids(kept, config.recursive, False))
    batches = tuple(layout.batches(lo, hi))
    resume_key = None
    if key and not models_given:
        resume_key = digest(identity_of(config, labels))
    return Plan(config, files, relative, kaggle, tuple(scan.skipped), len(todo), batches, layout.first_batch(lo),
                tuple(labels), weights, resume_key, outputs, len(captioned), earlier)


def without_captioned(config: Config, files: Sequence[ImageFile], shard
                      ) -> Tuple[Sequence[ImageFile], List[ImageFile]]:
    """With ``existing_txt: skip``, the images whose caption file does not exist yet, and those whose file does:
    they are not even decoded. Every image otherwise (the listing itself)."""
    if "txt" not in config.formats or config.txt_policy() != "skip":
        return files, []
    if shard is not None:
        raise ConfigError("--shard with existing_txt skip: each shard writes caption files as it goes, so the "
                          "shards would see different folders; use --devices or the Ray engine, or another "
                          "existing_txt")
    base, _ = txt_base(config)
    done = [txt_file(base, r, config.txt_extension).exists() for r in relative_paths(config.running, files)]
    return [f for f, d in zip(files, done) if not d], [f for f, d in zip(files, done) if d]


def check_ids(files: Sequence[ImageFile], ids: Sequence[str]) -> None:
    """Every id must come back unchanged from the written CSV; else an error naming the file."""
    bad = first_id_lost_in_csv(list(ids))
    if bad is not None:
        name = next(f.shown for f, i in zip(files, ids) if i == bad)
        raise ConfigError(f"config key 'data_path': the file name {name!r} does not come back unchanged "
                          f"from the submission CSV; rename it")


def plan_outputs(config: Config, relative: Sequence[str], shards: Optional[Dict[str, Dict[Path, Path]]] = None
                 ) -> Outputs:
    """Every path the run writes, each checked, and no two of them one file (``shards``: the outputs per input
    shard, shard_outputs.shard_paths)."""
    shards = shards or {}
    paths = format_paths(config.output)
    submission = paths["kaggle"] if "kaggle" in config.formats else None
    files = {f: paths[f] for f in ("csv", "jsonl", "parquet") if f in config.formats}
    check_output(config.output)
    for name, path in files.items():
        check_output(path, f"the {name} output")
    txt = txt_paths(config, relative) if "txt" in config.formats else ()
    named = [(p, f"the {f} output") for f, p in ([("kaggle", submission)] if submission else []) + list(files.items())]
    per_shard = [(p, f"the {f} output of {s.name}") for f, by_shard in shards.items() for s, p in by_shard.items()]
    for path, what in per_shard:
        check_output(path, what)
    named += per_shard
    inputs = config_inputs(config)  # an input image has an image extension, which check_write refuses anyway
    for shard in {s for by_shard in shards.values() for s in by_shard}:
        inputs.add(shard, "an input shard")
    for path, what in named:
        check_write(path, what, inputs, replace=config.replace_outputs)
    for path, relative_name in zip(txt, relative):  # an existing caption file: existing_txt decides
        check_write(path, f"the caption file of {relative_name}", inputs, replace=None)
    taken: Dict[Path, str] = {}
    for path, what in named + [(p, f"the .txt of {r}") for p, r in zip(txt, relative)]:
        other = taken.setdefault(Path(os.path.abspath(path)), what)
        if other != what:
            raise ConfigError(f"{other} and {what} would both be written to {path}; "
                              + ("rename one image" if what.startswith("the .txt") and other.startswith("the .txt")
                                 else "choose another output name or txt_dir"))
    return Outputs(submission, files, tuple(txt), shards)


def run_versions(config: Config) -> Dict[str, str]:
    """The versions of the libraries a run of the config uses: sentence-transformers as it will be imported
    (from embedding_dir where given) where the run embeds, and onnxruntime with a tagger."""
    if config.embeds():
        import_sentence_transformers(config.embedding_dir)
    versions = library_versions(sentence=config.embeds())
    if config.tagger_path is not None:
        import onnxruntime  # lazy: the [tagger] extra
        versions["onnxruntime"] = onnxruntime.__version__
    return versions


def identity_of(config: Config, label_files: Sequence[Path], legacy: bool = False) -> dict:
    """The run identity (core.identity.run_identity) with the versions of the libraries that will run."""
    return run_identity(config, label_files, run_versions(config), legacy)


def legacy_key(plan: Plan) -> str:
    """The key a version before 0.3 gave this run (its unfinished work is adopted, workdir.WorkDir.adopt)."""
    return digest(identity_of(plan.config, plan.label_files, legacy=True))
