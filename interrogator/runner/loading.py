"""The one builder of the models a use of a config needs (``load_models``, from a ``needs.Needs``), and the
one place that says what loader workers make of each image for them (``loader_transforms``).

The local loop (per stage group under ``low_memory``), the Ray actors, the app and draw's round trip all load
through ``load_models``; the local loop, the Ray driver and ``interrogate_files`` all get their transforms
from ``loader_transforms``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch

from ..core.config import Config
from ..core.console import bar
from ..core.batches import Transforms
from ..core.oom import release_cuda_memory
from ..learn.bank import load_bank
from ..learn.head import load_head
from ..models.caption import Captioner, caption_transform, load_captioner
from ..models.clip import Clip, load_config_clip
from ..models.embed import load_sentence
from ..models.tagger import load_tagger, tag_rules, tagger_transform
from .labels import LabelCache, LabelTable, load_tables
from .needs import Needs


@dataclass
class Models:
    """The loaded models; any may be None while another stage runs (low_memory)."""

    captioner: Optional[Captioner] = None  # None where the text needs no caption (caption_template)
    tagger: object = None  # tagger.Tagger, when the config has a tagger_path
    clip: Optional[Clip] = None
    tables: Optional[Dict[str, LabelTable]] = None
    sentence: object = None
    head: object = None  # head.Head, when the blend uses one
    bank: object = None  # bank.Bank, likewise

    def free(self, device: str) -> None:
        self.captioner = self.tagger = self.clip = self.tables = self.sentence = self.head = self.bank = None
        release_cuda_memory(device)


def load_models(config: Config, needs: Needs, tables=None, progress: bool = False,
                clip: Optional[Clip] = None) -> Models:
    """Every model ``needs`` names, resident at once (the sentence model first: it is the quickest to fail).
    ``tables``: {name: (labels, fp32 embeddings, from_cache)} already encoded (Ray shares them from the
    driver), else they are encoded or read from the label cache here. ``clip``: the config's CLIP already
    loaded (draw's)."""
    device, dtype = config.resolved_device(), config.torch_dtype()
    models = Models()
    if needs.sentence:
        models.sentence = load_sentence(config.embedding, device, dtype == torch.float16)
    if needs.captioner:
        models.captioner = load_captioner(config.captioning, device, dtype)
    if needs.tagger:
        models.tagger = load_tagger(config.tagger_path, device, tag_rules(config.tagging))
    if needs.clip:
        models.clip = clip or load_config_clip(config)
        models.tables = label_tables(config, models.clip, needs.tables, tables, progress)
        models.head, models.bank = load_learned(config, needs, models.clip)
    return models


def label_tables(config: Config, clip: Clip, names: Sequence[str], shared=None,
                 progress: bool = False) -> Dict[str, LabelTable]:
    """The label tables ``names`` for this CLIP: from ``shared`` encodings (Ray's driver), else encoded or
    read from the label cache."""
    if shared is None:
        return load_tables(clip, config.dicts, LabelCache(config.label_cache), names=list(names),
                           progress_factory=label_progress(progress))
    return {name: LabelTable(name, labels, torch.tensor(emb).to(clip.device, clip.dtype), hit)
            for name, (labels, emb, hit) in shared.items()}


def load_learned(config: Config, needs: Needs, clip: Clip):
    """The head and the bank the blend uses (None where its weight is 0), checked against this CLIP."""
    head = load_head(config.head_path, clip.weights) if needs.head else None
    bank = None
    if needs.bank:
        bank = load_bank(config.bank_path, clip.weights)
        bank.features = bank.features.to(clip.device)
    return head, bank


def loader_transforms(config: Config, stages: Sequence[str], models: Optional[Models] = None,
                      clip: Optional[Clip] = None) -> Transforms:
    """What loader workers make of each image for the models of these stages, None where that model does not
    run: from the loaded ``models``, else from the model folders (the Ray driver, which loads no captioner)."""
    captioning, clip = "caption" in stages, clip or (models.clip if models is not None else None)
    if models is not None:
        caption = models.captioner.transform if captioning and models.captioner is not None else None
        tagger = models.tagger.transform if captioning and models.tagger is not None else None
    else:
        caption = caption_transform(config.blip_path) if captioning and config.needs_captioner() else None
        tagger = tagger_transform(config.tagger_path) if captioning and config.tagger_path is not None else None
    return Transforms(caption, clip.preprocess if "tag" in stages and config.needs_clip() else None, tagger)


def label_progress(enabled: bool):
    """A progress-bar factory for label-table encoding."""
    def make(name: str, total: int):
        return bar(total, f"encode {name}", "label", enabled)
    return make
