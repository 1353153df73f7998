"""The one batch function (``run_stages``): a decoded batch through the stages it still needs (caption; tags
and prompt; embed), on models that loading.load_models built."""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..core.config import CHAIN_MODES, ClipSettings, Config
from ..core.images import ImageFile
from ..core.batches import ImageBatch, image_batches
from ..core.oom import StageBatcher, concat_lists
from ..core.record import SUBMISSION_DIM, BatchRecord, Tags
from ..core.template import render
from ..learn.head import predict
from ..models.clip import Clip
from ..models.embed import embed_prompts
from .labels import LabelTable
from .loading import Models, loader_transforms
from .modes import interrogate, negative_prompts
from .prompt import build_prompt, clean_caption

log = logging.getLogger(__name__)

def _spread_rows(record: BatchRecord, rows: np.ndarray) -> np.ndarray:
    """Rows of the decoded positions in an (n, 384) array, zero rows for the undecodable."""
    out = np.zeros((len(record.ids), SUBMISSION_DIM), dtype=np.float32)
    out[record.ok] = rows
    return out


def new_record(files: Sequence[ImageFile], members: Sequence[int], batch: ImageBatch) -> BatchRecord:
    """A batch's record from its decoded images: ids, digests, and the undecodable ones (each warned about)."""
    record = BatchRecord([files[i].image_id for i in members], list(batch.digests), {})
    for pos, error in enumerate(batch.errors):
        if error:
            log.warning("%s: %s; using the fallback prompt", files[members[pos]].shown, error)
            record.failed[record.ids[pos]] = error
    return record


def _spread(record: BatchRecord, values: Sequence, fill) -> list:
    """Values of the decoded positions, placed in a list over the whole batch with ``fill`` elsewhere."""
    out = [fill] * len(record.ids)
    for pos, value in zip(record.ok, values):
        out[pos] = value
    return out


def caption_stage(models: Models, batch: ImageBatch, record: BatchRecord, batcher: StageBatcher) -> None:
    """The captioner's text (or '' without one) and the tagger's tags of each decoded image."""
    captions, tagged = [""] * len(record.ok), []
    if record.ok and models.captioner is not None:  # a batch may hold only undecodable images
        captions = batcher.run("caption", batch.decoded(batch.caption_pixels), models.captioner.caption,
                               concat_lists)
    if models.tagger is not None:
        if record.ok:
            tagged = batcher.run("caption", batch.decoded(batch.tagger_pixels), models.tagger.tag, concat_lists)
        record.tagged = _spread(record, tagged, None)
    record.captions = _spread(record, captions, "")


def tag_stage(models: Models, batch: ImageBatch, record: BatchRecord, batcher: StageBatcher, config: Config,
              timer) -> None:
    """Best medium, movement and max_flavors flavors of each decoded image, then its prompt."""
    tags, chosen, negatives = [], None, []
    if record.ok and config.needs_clip():  # a batch may hold only undecodable images
        with timer("chain" if config.mode in CHAIN_MODES else "tags"):  # best and negative: the chain's time
            features = batcher.run("clip", batch.decoded(batch.clip_pixels), models.clip.encode_images, torch.cat)
            tables = models.tables
            if config.mode == "seed":
                tags = seed_tags(tables, features, config.max_flavors, config.chunk_size)
            elif config.mode != "caption":
                chosen = interrogate(config.mode, [record.captions[pos] for pos in record.ok], features, tables,
                                     config.ranking, models.clip)
                tags = [Tags(c.medium, c.movement, list(c.flavors), c.artist, c.trending) for c in chosen]
            if config.negative_prompt:
                negatives = negative_prompts(features, tables, config.ranking, models.clip)
            if models.head is not None:
                record.head = _spread_rows(record, predict(models.head, features, str(features.device)))
            if models.bank is not None:
                record.bank = _spread_rows(record, models.bank.query(features, config.bank_k, config.bank_temperature,
                                                                     config.bank_backend))
    with timer("prompt"):
        if config.mode == "caption" or not config.needs_mode():
            tags = [Tags("", "", []) for _ in record.ok]
        prompts = [mode_prompt(config.ranking, record.captions[pos], t, c, models.clip) if config.needs_mode() else ""
                   for pos, t, c in zip(record.ok, tags, chosen or [None] * len(tags))]
    record.tags = _spread(record, tags, None)
    record.prompts = _spread(record, prompts, config.fallback_prompt)
    if config.caption_template is not None:
        record.texts = _spread(record, [template_text(config, record, pos) for pos in record.ok],
                               config.fallback_prompt)
    if config.negative_prompt:
        record.negatives = _spread(record, negatives, "")
    for name, model in (("head", models.head), ("bank", models.bank)):
        if model is not None and getattr(record, name) is None:  # a batch of only undecodable images
            setattr(record, name, np.zeros((len(record.ids), SUBMISSION_DIM), dtype=np.float32))


def seed_tags(tables: Dict[str, LabelTable], features: torch.Tensor, flavors: int, chunk: int) -> List[Tags]:
    """The seed mode's ranking: the best medium and movement and the ``flavors`` best flavors of each image."""
    mediums = tables["mediums"].top(features, 1, chunk)
    movements = tables["movements"].top(features, 1, chunk)
    return [Tags(m[0], v[0], f) for m, v, f in zip(mediums, movements, tables["flavors"].top(features, flavors, chunk))]


def mode_prompt(ranking: ClipSettings, caption: str, tags: Optional[Tags], chosen=None,
                clip: Optional[Clip] = None) -> str:
    """The prompt assembly of one decoded image: the seed mode's parts within CLIP's context, the caption
    alone, or the prompt another mode's chain chose (``chosen``, modes.interrogate)."""
    if ranking.mode == "seed":
        return build_prompt(caption, tags.medium, tags.movement, tags.flavors, clip.count_tokens,
                            clip.context_length, ranking.prompt_parts)
    if ranking.mode == "caption":
        return clean_caption(caption) or ranking.fallback_prompt
    return chosen.prompt


def template_text(config: Config, record: BatchRecord, pos: int) -> str:
    """The caption template (template.py) filled with one decoded image's parts."""
    tagged = record.tagged[pos] if record.tagged is not None else None
    parts = {"trigger": config.trigger, "caption": " ".join(record.captions[pos].split()), "prompt": record.prompts[pos],
             "tags": config.tag_separator.join(tagged.names()) if tagged else "",
             "rating": tagged.rating if tagged else ""}
    return render(config.caption_template, parts)


def embed_stage(models: Models, record: BatchRecord, batcher: StageBatcher) -> None:
    record.embeddings = batcher.run("embed", list(record.final),
                                    lambda p: embed_prompts(models.sentence, p, len(p)), np.concatenate)


def run_stages(models: Models, stages: Sequence[str], batch: Optional[ImageBatch], record: BatchRecord,
               batcher: StageBatcher, config: Config, timer) -> None:
    """The one batch function: a decoded batch through the stages it still needs (caption; tags and prompt;
    embed). The local loop (pipeline.py) and the Ray actor (ray_engine.py) both call it."""
    for stage in stages:
        if record.done(stage):
            continue
        if stage == "caption":
            with timer("caption"):
                caption_stage(models, batch, record, batcher)
        elif stage == "tag":
            tag_stage(models, batch, record, batcher, config, timer)
        else:
            with timer("embed"):
                embed_stage(models, record, batcher)


def interrogate_files(models: Models, config: Config, files: Sequence[ImageFile], batcher: StageBatcher,
                      timer) -> BatchRecord:
    """A few image files as one batch through the caption and tag stages: their captions, prompts, tags and
    texts, as a run makes them (the app's one image, draw's round trip)."""
    members = list(range(len(files)))
    batch = next(image_batches(files, [members], loader_transforms(config, ("caption", "tag"), models)))
    record = new_record(files, members, batch)
    run_stages(models, ("caption", "tag"), batch, record, batcher, config, timer)
    return record
