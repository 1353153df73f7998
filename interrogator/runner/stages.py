"""The phases of one batch (caption; tags and prompt; embed) and the models they use."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..models.caption import Captioner, load_captioner
from ..models.clip import Clip, load_config_clip
from ..core.config import Config
from ..core.console import bar
from ..models.embed import embed_prompts, embedding_dim, load_sentence_model
from ..core.errors import ModelLoadError
from ..core.images import ImageBatch, ImageFile
from .labels import LabelCache, LabelTable, load_tables
from ..core.oom import StageBatcher, concat_lists, release_cuda_memory
from .prompt import build_prompt, clean_caption
from ..core.record import SUBMISSION_DIM, BatchRecord, Tags

log = logging.getLogger(__name__)

@dataclass
class Models:
    """The loaded stages; any may be None while another phase runs (low_memory)."""

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


def load_sentence(config: Config):
    model = load_sentence_model(config.embedding_path, config.resolved_device(), config.embedding_dir,
                                fp16=config.torch_dtype() == torch.float16)
    dim = embedding_dim(model)
    if dim != SUBMISSION_DIM:
        raise ModelLoadError(f"config key 'embedding_path': the sentence model in {config.embedding_path} "
                             f"gives {dim}-d vectors; a Kaggle submission needs {SUBMISSION_DIM}-d "
                             f"(all-MiniLM-L6-v2)")
    return model


def load_captioner_stage(config: Config) -> Optional[Captioner]:
    """The captioner, or None where the text needs no caption."""
    if not config.needs_captioner():
        return None
    return load_captioner(config.blip_path, config.resolved_device(), config.torch_dtype(), config.load_in_8bit,
                          config.max_new_tokens, config.min_new_tokens, config.num_beams, config.load_in_4bit,
                          config.caption_prompt, config.repetition_penalty, config.cut_partial)


def load_tagger_stage(config: Config):
    """The WD-style tagger, or None without a tagger_path."""
    if config.tagger_path is None:
        return None
    from ..models.tagger import load_tagger
    return load_tagger(config.tagger_path, config.resolved_device(), config.tag_rules())


def load_clip_stage(config: Config, progress: bool, clip: Optional[Clip] = None):
    """The CLIP (``clip`` where already loaded) and the label tables the config's mode ranks (table_names)."""
    clip = clip or load_config_clip(config)
    tables = load_tables(clip, config.dicts, LabelCache(config.label_cache), names=table_names(config),
                         progress_factory=label_progress(progress))
    return clip, tables


def table_names(config: Config):
    """The label tables the config's mode ranks (modes.TABLES), and the negative chain's when asked for."""
    from .modes import TABLES
    names = list(TABLES[config.mode])
    if config.negative_prompt:
        names += [n for n in TABLES["negative"] if n not in names]
    return names


def load_models(config: Config, tables=None, progress: bool = False, clip: Optional[Clip] = None,
                sentence: bool = True) -> Models:
    """Every model a run of the config needs, resident at once: the one loader of the local run, the Ray
    actors and draw's round trip. ``tables``: {name: (labels, fp32 embeddings, from_cache)} already encoded
    (Ray shares them from the driver), else they are encoded or read from the label cache here. ``clip``: the
    config's CLIP already loaded (draw's); ``sentence=False``: no sentence model (prompts, no embeddings)."""
    models = Models(captioner=load_captioner_stage(config), tagger=load_tagger_stage(config),
                    sentence=load_sentence(config) if sentence else None)
    if config.needs_clip():
        if tables is None:
            models.clip, models.tables = load_clip_stage(config, progress, clip)
        else:
            models.clip = clip or load_config_clip(config)
            models.tables = {name: LabelTable(name, labels, torch.tensor(emb).to(models.clip.device, models.clip.dtype),
                                              hit) for name, (labels, emb, hit) in tables.items()}
        models.head, models.bank = load_learned(config, models.clip)
    return models


def load_learned(config: Config, clip: Clip):
    """The head and the bank the blend uses (None where its weight is 0), checked against this CLIP."""
    head = bank = None
    if config.blend_weight("head") > 0:
        from ..learn.head import load_head
        head = load_head(config.head_path, clip.weights)
    if config.blend_weight("bank") > 0:
        from ..learn.bank import load_bank
        bank = load_bank(config.bank_path, clip.weights)
        bank.features = bank.features.to(clip.device)
    return head, bank


def loader_transforms(models: Models, config: Config, phases: Sequence[str]):
    """What loader workers make of each image for the models of these phases: (captioner's, CLIP's, tagger's),
    None where that model does not run."""
    captioning = "caption" in phases
    return (models.captioner.transform if captioning and models.captioner is not None else None,
            models.clip.preprocess if "tag" in phases and config.needs_clip() else None,
            models.tagger.transform if captioning and models.tagger is not None else None)


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
            log.warning("%s: %s; using the fallback prompt", files[members[pos]].path.name, error)
            record.failed[record.ids[pos]] = error
    return record


def _spread(record: BatchRecord, values: Sequence, fill) -> list:
    """Values of the decoded positions, placed in a list over the whole batch with ``fill`` elsewhere."""
    out = [fill] * len(record.ids)
    for pos, value in zip(record.ok, values):
        out[pos] = value
    return out


def caption_phase(models: Models, batch: ImageBatch, record: BatchRecord, batcher: StageBatcher) -> None:
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


def tag_phase(models: Models, batch: ImageBatch, record: BatchRecord, batcher: StageBatcher, config: Config,
              timer) -> None:
    """Best medium, movement and max_flavors flavors of each decoded image, then its prompt."""
    tags, chosen, negatives = [], None, []
    if record.ok and config.needs_clip():  # a batch may hold only undecodable images
        with timer("tags"):
            features = batcher.run("clip", batch.decoded(batch.clip_pixels), models.clip.encode_images, torch.cat)
            tables = models.tables
            if config.mode == "seed":
                tags = seed_tags(tables, features, config.max_flavors, config.chunk_size)
            elif config.mode != "caption":
                from .modes import interrogate
                chosen = interrogate(config.mode, [record.captions[pos] for pos in record.ok], features, tables,
                                     config, models.clip)
                tags = [Tags(c.medium, c.movement, list(c.flavors), c.artist, c.trending) for c in chosen]
            if config.negative_prompt:
                from .modes import negative_prompts
                negatives = negative_prompts(features, tables, config, models.clip)
            if models.head is not None:
                from ..learn.head import predict
                record.head = _spread_rows(record, predict(models.head, features, str(features.device)))
            if models.bank is not None:
                record.bank = _spread_rows(record, models.bank.query(features, config.bank_k, config.bank_temperature,
                                                                     config.bank_backend))
    with timer("prompt"):
        if config.mode == "caption" or not config.needs_mode():
            tags = [Tags("", "", []) for _ in record.ok]
        prompts = [mode_prompt(config, record.captions[pos], t, c, models.clip) if config.needs_mode() else ""
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


def mode_prompt(config: Config, caption: str, tags: Optional[Tags], chosen=None, clip: Optional[Clip] = None) -> str:
    """The prompt assembly of one decoded image: the seed mode's parts within CLIP's context, the caption
    alone, or the prompt another mode's chain chose (``chosen``, modes.interrogate)."""
    if config.mode == "seed":
        return build_prompt(caption, tags.medium, tags.movement, tags.flavors, clip.count_tokens,
                            clip.context_length, config.prompt_parts)
    if config.mode == "caption":
        return clean_caption(caption) or config.fallback_prompt
    return chosen.prompt


def template_text(config: Config, record: BatchRecord, pos: int) -> str:
    """The caption template (template.py) filled with one decoded image's parts."""
    from .template import render
    tagged = record.tagged[pos] if record.tagged is not None else None
    parts = {"trigger": config.trigger, "caption": " ".join(record.captions[pos].split()), "prompt": record.prompts[pos],
             "tags": config.tag_separator.join(tagged.names()) if tagged else "",
             "rating": tagged.rating if tagged else ""}
    return render(config.caption_template, parts)


def embed_phase(models: Models, record: BatchRecord, batcher: StageBatcher) -> None:
    record.embeddings = batcher.run("embed", list(record.final),
                                    lambda p: embed_prompts(models.sentence, p, len(p)), np.concatenate)


def run_phases(models: Models, phases: Sequence[str], batch: Optional[ImageBatch], record: BatchRecord,
               batcher: StageBatcher, config: Config, timer) -> None:
    """The one batch function: a decoded batch through the phases it still needs (caption; tags and prompt;
    embed). The local loop (pipeline.py) and the Ray actor (ray_engine.py) both call it."""
    for phase in phases:
        if record.done(phase):
            continue
        if phase == "caption":
            with timer("caption"):
                caption_phase(models, batch, record, batcher)
        elif phase == "tag":
            tag_phase(models, batch, record, batcher, config, timer)
        else:
            with timer("embed"):
                embed_phase(models, record, batcher)


def interrogate_files(models: Models, config: Config, files: Sequence[ImageFile], batcher: StageBatcher,
                      timer) -> BatchRecord:
    """A few image files as one batch through the caption and tag phases: their captions, prompts, tags and
    texts, as a run makes them (the app's one image, draw's round trip)."""
    from ..core.images import ImageDataset, collate
    dataset = ImageDataset(list(files), *loader_transforms(models, config, ("caption", "tag")))
    batch = collate([dataset[i] for i in range(len(files))])
    record = new_record(files, list(range(len(files))), batch)
    run_phases(models, ("caption", "tag"), batch, record, batcher, config, timer)
    return record


def label_progress(enabled: bool):
    """A progress-bar factory for label-table encoding."""
    def make(name: str, total: int):
        return bar(total, f"encode {name}", "label", enabled)
    return make
