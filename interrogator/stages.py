"""The stages of one batch (caption, tags, prompt, embed) and the models they use."""
from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .caption import Captioner, load_captioner
from .clip import Clip, load_clip
from .config import Config
from .embed import embed_prompts, embedding_dim, load_sentence_model
from .errors import ModelLoadError
from .images import ImageBatch
from .labels import LabelCache, LabelTable, load_tables
from .memory import StageBatcher, concat_lists
from .prompt import build_prompt

log = logging.getLogger(__name__)

SUBMISSION_DIM = 384


@dataclass
class Models:
    """The loaded stages; any may be None while another phase runs (low_memory)."""

    captioner: Optional[Captioner] = None
    clip: Optional[Clip] = None
    tables: Optional[Dict[str, LabelTable]] = None
    sentence: object = None

    def free(self) -> None:
        self.captioner = self.clip = self.tables = self.sentence = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_sentence(config: Config):
    model = load_sentence_model(config.embedding_path, config.resolved_device(), config.embedding_dir,
                                fp16=config.torch_dtype() == torch.float16)
    dim = embedding_dim(model)
    if dim != SUBMISSION_DIM:
        raise ModelLoadError(f"config key 'embedding_path': the sentence model in {config.embedding_path} "
                             f"gives {dim}-d vectors; a Kaggle submission needs {SUBMISSION_DIM}-d "
                             f"(all-MiniLM-L6-v2)")
    return model


def load_captioner_stage(config: Config) -> Captioner:
    return load_captioner(config.blip_path, config.resolved_device(), config.torch_dtype(), config.load_in_8bit,
                          config.max_new_tokens, config.min_new_tokens, config.num_beams)


def load_clip_stage(config: Config, progress: bool):
    clip = load_clip(config.clip_model, config.clip_path, config.resolved_device(), config.torch_dtype())
    tables = load_tables(clip, config.dicts, LabelCache(config.label_cache), progress_factory=label_progress(progress))
    return clip, tables


def caption_stage(models: Models, batch: ImageBatch, batcher: StageBatcher) -> List[str]:
    return batcher.run("caption", batch.decoded(batch.caption_pixels), models.captioner.caption, concat_lists)


def tag_stage(models: Models, batch: ImageBatch, batcher: StageBatcher, config: Config) -> List[dict]:
    """Best medium, movement and max_flavors flavors of each decoded image."""
    features = batcher.run("clip", batch.decoded(batch.clip_pixels), models.clip.encode_images, torch.cat)
    tables, chunk = models.tables, config.chunk_size
    mediums = tables["mediums"].top(features, 1, chunk)
    movements = tables["movements"].top(features, 1, chunk)
    flavors = tables["flavors"].top(features, config.max_flavors, chunk)
    return [{"medium": m[0], "movement": v[0], "flavors": f} for m, v, f in zip(mediums, movements, flavors)]


def prompt_stage(models: Models, captions: Sequence[str], tags: Sequence[dict]) -> List[str]:
    clip = models.clip
    return [build_prompt(c, t["medium"], t["movement"], t["flavors"], clip.count_tokens, clip.context_length)
            for c, t in zip(captions, tags)]


def embed_stage(models: Models, prompts: Sequence[str], batcher: StageBatcher) -> np.ndarray:
    return batcher.run("embed", list(prompts), lambda p: embed_prompts(models.sentence, p, len(p)),
                       np.concatenate)


def batch_record(files, members, batch: ImageBatch, captions, tags, prompts, fallback: str) -> dict:
    """The batch's per-image results, with undecodable images given the fallback prompt."""
    n = len(members)
    record = {"ids": [files[i].image_id for i in members], "captions": [""] * n, "tags": [None] * n,
              "prompts": [fallback] * n, "failed": {}}
    for pos, caption, tag, prompt in zip(batch.ok, captions, tags, prompts):
        record["captions"][pos], record["tags"][pos], record["prompts"][pos] = caption, tag, prompt
    for pos, error in enumerate(batch.errors):
        if error:
            log.warning("%s: %s; using the fallback prompt", files[members[pos]].path.name, error)
            record["failed"][files[members[pos]].image_id] = error
    return record


def label_progress(enabled: bool):
    """A tqdm bar factory for label-table encoding."""
    def make(name: str, total: int):
        return tqdm(total=total, desc=f"encode {name}", unit="label", disable=not enabled)
    return make
