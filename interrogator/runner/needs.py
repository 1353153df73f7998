"""What a config needs: the one table (``Needs``) from which every pre-flight check and every model load is
derived.

``needs_of(config, ...)`` says which models, label tables and paths a use of the config reads: a run over a
folder (``submit``, ``--devices``, ``--shard``, Ray), the app and draw's round trip (a few images, no folder),
``precompute-labels`` (the CLIP and its tables alone). ``check(config, needs)`` then checks exactly those,
before any model loads, and ``loading.load_models(config, needs)`` loads exactly those. ``--devices`` names
the same paths (``Needs.path_keys``) when it decides whether every format can be merged.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..core.config import ClipSettings, Config
from ..core.errors import ConfigError
from ..learn.bank import check_bank_clip
from ..learn.head import check_clip, read_spec
from ..models.caption import check_caption_prompt, check_captioner_folder
from ..models.clip_checkpoint import resolve_clip
from ..models.demo import ensure_demo_models
from ..models.tagger import check_tagger_folder
from .labels import read_labels, table_files
from .modes import TABLES


@dataclass(frozen=True)
class Needs:
    """The models, tables and inputs one use of a config reads."""

    data: bool                 # a folder of images (data_path)
    captioner: bool            # blip_path
    tagger: bool               # tagger_path
    clip: bool                 # clip_path and the label tables below
    tables: Tuple[str, ...]    # the label tables ranked (dicts)
    sentence: bool             # embedding_path (and embedding_dir)
    head: bool                 # head_path, where the blend uses it
    bank: bool                 # bank_path, likewise

    def path_keys(self) -> List[str]:
        """The config keys of every path this reads, in the order they are checked."""
        flags = (("data_path", self.data), ("embedding_path", self.sentence), ("dicts", self.sentence or self.clip or bool(self.tables)),
                 ("clip_path", self.clip), ("blip_path", self.captioner), ("tagger_path", self.tagger),
                 ("head_path", self.head), ("bank_path", self.bank))
        return [key for key, needed in flags if needed]

    def only(self, models: Tuple[str, ...]) -> "Needs":
        """The part of these needs that a stage using ``models`` (Models field names) loads."""
        clip = self.clip and "clip" in models
        return replace(self, data=False, captioner=self.captioner and "captioner" in models,
                       tagger=self.tagger and "tagger" in models, clip=clip, tables=self.tables if clip else (),
                       sentence=self.sentence and "sentence" in models, head=self.head and clip,
                       bank=self.bank and clip)


def table_names(ranking: ClipSettings) -> List[str]:
    """The label tables the config's mode ranks (modes.TABLES), and the negative chain's when asked for."""
    names = list(TABLES[ranking.mode])
    if ranking.negative_prompt:
        names += [n for n in TABLES["negative"] if n not in names]
    return names


def mode_label_files(ranking: ClipSettings) -> List[Path]:
    """The label files the config's mode reads, the negative chain's included when it is asked for."""
    return table_files(ranking.dicts, table_names(ranking))


def needs_of(config: Config, data: bool = True, sentence: Optional[bool] = None,
             clip: Optional[bool] = None) -> Needs:
    """What ``config`` needs. ``data``: a run over data_path; ``sentence``: prompts are embedded (default: where
    an output holds their vectors, Config.embeds); ``clip``: the CLIP is loaded (default: where the mode, the
    negative prompt or the blend ranks with it)."""
    sentence = config.embeds() if sentence is None else sentence
    ranks = config.needs_clip()
    clip = ranks if clip is None else clip
    tables = tuple(table_names(config.ranking)) if data or ranks else ()  # a run reads its mode's files (resume key)
    return Needs(data=data, captioner=config.needs_captioner(), tagger=config.tagger_path is not None, clip=clip,
                 tables=tables, sentence=sentence,
                 head=clip and config.blend_weight("head") > 0, bank=clip and config.blend_weight("bank") > 0)


def clip_only(config: Config) -> Needs:
    """The CLIP and every table a run of the config ranks (``precompute-labels``)."""
    return Needs(data=False, captioner=False, tagger=False, clip=True, tables=tuple(table_names(config.ranking)),
                 sentence=False, head=False, bank=False)


def check(config: Config, needs: Needs):
    """Every check of ``needs`` that needs no model, in one order: the paths, the device and dtype, the
    captioner and its instruction, the tagger, the label files, the CLIP file and a head or bank of it. Returns
    the CLIP's identity.Weights, or None where no CLIP is read."""
    config.check_blend()
    if config.demo:
        ensure_demo_models(config)
    config.require_paths(*[k for k in needs.path_keys() if k not in ("blip_path", "tagger_path")])
    config.check_device()
    config.check_dtype()
    if needs.sentence and config.embedding_dir is not None:
        config.require_paths("embedding_dir")
    check_captioning(config, needs)
    check_labels(config, needs.tables)
    if not needs.clip:
        return None
    weights = resolve_clip(config.clip_model, config.clip_path).weights(config.clip_path)
    if needs.head:
        check_clip(read_spec(config.head_path), weights, f"config key 'head_path': the head in {config.head_path}")
    if needs.bank:
        check_bank_clip(config.bank_path, weights)
    return weights


def check_labels(config: Config, names: Optional[Sequence[str]] = None) -> None:
    """The label files of these tables (default: every one a run of the config ranks) read and checked."""
    for path in table_files(config.dicts, table_names(config.ranking) if names is None else names):
        read_labels(path)


def check_captioning(config: Config, needs: Needs) -> None:
    """The captioner the text needs (and its instruction), and the tagger the template's parts need."""
    fields = config.template_fields()
    if needs.captioner:
        config.require_paths("blip_path")
        check_caption_prompt(check_captioner_folder(config.blip_path), config.caption_prompt)
    if config.tagger_path is None and {"tags", "rating"} & fields:
        part = "{tags}" if "tags" in fields else "{rating}"
        raise ConfigError(f"config key 'caption_template' uses {part}, which the tagger writes: set "
                          f"'tagger_path'{config._where()}")
    if needs.tagger:
        config.require_paths("tagger_path")
        check_tagger_folder(config.tagger_path)
