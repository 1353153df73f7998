"""``tune``: score prompt assemblies on labelled images with the competition metric, each only re-embedding.

Captions come from a ``caption``-mode run of the pipeline whose batch records stay in the work folder
(``--work``, by default ``.tune`` beside the output), so a later ``tune`` on the same images and settings
captions nothing; CLIP image features come from the feature store there (features.py), computed once too;
every assembly is then built from the features and the label tables, embedded by the sentence model, and
scored by score.mean_cosine against the true prompts' embeddings.

The grid: the ``seed`` mode with each ``max_flavors`` and each ``prompt_parts`` order (the caption on or off,
which tables, tags before or after the caption), ``classic`` and ``fast`` with each ``max_flavors``, and
``caption`` alone. Each assembly is built with the calls and the batches a submission run uses (the same
caption batches, CLIP batches, ranking and embedding slices), so the best row's settings, run with
``submit``, give the score ``tune`` printed.

``--holdout F`` keeps a seeded share of the images out of the ranking: rows are sorted by the score on the
rest, and the held-out score is printed beside it, so an assembly that only fits the tuning images shows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..core.config import Config, replace
from ..core.atomic import write_bytes
from ..core.errors import ConfigError
from ..core.record import Tags
from ..core.score import matched_prompts, mean_cosine
from ..models.clip import load_config_clip
from ..models.embed import embed_prompts, load_sentence
from ..tools.features import build_index
from .labels import LabelCache, load_tables
from .modes import TABLES, interrogate
from .pipeline import run_plan
from .planner import make_plan
from .stages import mode_prompt, seed_tags

FLAVOR_COUNTS = (1, 2, 3, 5, 8, 16, 32)
TAG_SETS = (("medium", "movement", "flavors"), ("medium", "flavors"), ("movement", "flavors"), ("flavors",),
            ("medium", "movement"))


@dataclass(frozen=True)
class Assembly:
    mode: str
    max_flavors: int
    parts: Tuple[str, ...] = ("caption", "medium", "movement", "flavors")

    def fragment(self) -> dict:
        """The config keys that make a submission run build this assembly."""
        out = {"mode": self.mode}
        if self.mode != "caption":
            out["max_flavors"] = max(self.max_flavors, 1)  # 0 only where no flavors part is used
        if self.mode == "seed":
            out["prompt_parts"] = list(self.parts)
        return out

    def label(self) -> str:
        if self.mode == "caption":
            return "caption"
        if self.mode == "seed":
            return f"seed {'+'.join(self.parts)} k={self.max_flavors}"
        return f"{self.mode} k={self.max_flavors}"


def grid(modes: Sequence[str] = ("seed", "classic", "fast", "caption"),
         counts: Sequence[int] = FLAVOR_COUNTS) -> List[Assembly]:
    out = []
    for mode in modes:
        if mode == "caption":
            out.append(Assembly("caption", 0))
        elif mode == "seed":
            orders = set()
            for tags in TAG_SETS:
                orders.add(("caption", *tags))
                orders.add((*tags, "caption"))
                orders.add(tags)
            for order in sorted(orders):
                if "flavors" in order:
                    out.extend(Assembly("seed", k, order) for k in counts if k > 0)
                else:
                    out.append(Assembly("seed", 0, order))
        else:
            out.extend(Assembly(mode, k) for k in counts if k > 0)
    return list(dict.fromkeys(out))


@dataclass
class TuneRow:
    assembly: Assembly
    score: float
    holdout: Optional[float]


@dataclass
class TuneData:
    """What every assembly is built from and scored against: computed once per ``tune``."""

    config: Config
    ids: List[str]              # the submission ids of the images, in the run's order
    captions: List[str]
    ok: List[int]               # positions whose image decoded
    features: object            # their CLIP features (rows in ``ok`` order)
    clip: object
    tables: dict
    sentence: object
    truth: object               # the matched true prompts (imgId, prompt)
    true_vectors: np.ndarray
    held: set                   # imgIds kept out of the ranking
    batches: Tuple[Tuple[int, ...], ...] = ()  # the plan's batches (positions), as the submission run makes them

    def decoded_batches(self):
        """(positions, feature rows) of the decoded images of each batch of the submission run."""
        row_of = {i: r for r, i in enumerate(self.ok)}
        for members in self.batches:
            dec = [i for i in members if i in row_of]
            if dec:
                yield dec, self.features[[row_of[i] for i in dec]]


def tune(config: Config, prompts_csv: str, work: str, holdout: float = 0.0, seed: int = 0,
         modes: Sequence[str] = ("seed", "classic", "fast", "caption"), counts: Sequence[int] = FLAVOR_COUNTS,
         progress: bool = True) -> List[TuneRow]:
    """Every assembly of the grid scored on the labelled images (see the module docstring), best first."""
    data = tune_data(config, prompts_csv, work, holdout, seed, modes, progress)
    ranked = {}  # the seed mode's ranking, once at the largest count, in the submission run's batches
    if "seed" in modes:
        for dec, features in data.decoded_batches():
            ranked.update(zip(dec, seed_tags(data.tables, features, max(counts), config.chunk_size)))
    rows = [score_assembly(data, assembly, ranked) for assembly in grid(modes, counts)]
    return sorted(rows, key=lambda r: -r.score)


def tune_data(config: Config, prompts_csv: str, work: str, holdout: float, seed: int, modes: Sequence[str],
             progress: bool) -> TuneData:
    """Captions (a caption-mode run, kept for the next tune), CLIP features (the feature store), the label
    tables of the modes, and the true prompts' embeddings; the split checked before anything runs."""
    work_dir = Path(work)
    plan = make_plan(replace(config, mode="caption", formats=["kaggle"], blend=None, head_path=None, bank_path=None,
                             output=str(work_dir / "captions.csv")))
    truth = matched_prompts(prompts_csv, plan.kaggle, config.data_path, "tune")
    held = holdout_ids(truth.imgId.tolist(), holdout, seed)
    captioned = run_plan(plan, progress=progress, keep_work=True)
    clip = load_config_clip(config)
    store = build_index(config, config.data_path, str(work_dir / "features.safetensors"), progress=progress,
                        clip=clip).store
    ok = [i for i, image_id in enumerate(captioned.image_ids) if image_id not in captioned.failed]
    in_store = [f.path.relative_to(config.data_path).as_posix() for f in plan.files]  # the store scans the tree
    features = store.rows([in_store[i] for i in ok]).to(clip.device, clip.dtype) if ok else None
    tables = load_tables(clip, config.dicts, LabelCache(config.label_cache),
                         names=sorted({n for m in modes for n in TABLES[m]}))
    sentence = load_sentence(config.embedding, config.resolved_device(), config.torch_dtype() == torch.float16)
    true_vectors = embed_prompts(sentence, truth.prompt.tolist(), config.stage_batch_size("embed"))
    return TuneData(config, captioned.kaggle_ids, captioned.captions, ok, features, clip, tables, sentence, truth,
                    true_vectors, held, plan.batches)


def score_assembly(data: TuneData, assembly: Assembly, ranked: dict) -> TuneRow:
    """One assembly's prompts, embedded in the submission run's batches, scored on the ranked and held images."""
    config = data.config
    prompts = assembly_prompts(data, assembly, ranked)
    embed_batch = config.stage_batch_size("embed")
    vectors = np.concatenate([embed_prompts(data.sentence, [prompts[i] for i in members[s:s + embed_batch]],
                                            len(members[s:s + embed_batch]))
                              for members in data.batches
                              for s in range(0, len(members), embed_batch)])
    truth_ids = data.truth.imgId.tolist()
    tuned = [k for k, i in enumerate(truth_ids) if i not in data.held]
    held = [k for k, i in enumerate(truth_ids) if i in data.held]
    score = mean_cosine(data.ids, vectors, [truth_ids[k] for k in tuned], data.true_vectors[tuned])
    hold = mean_cosine(data.ids, vectors, [truth_ids[k] for k in held], data.true_vectors[held]) if held else None
    return TuneRow(assembly, score, hold)


def assembly_prompts(data: TuneData, assembly: Assembly, ranked: dict) -> List[str]:
    """Each image's prompt under an assembly, built by the calls a submission run makes (stages.mode_prompt,
    modes.interrogate); the fallback prompt where the image did not decode."""
    config = data.config
    prompts = [config.fallback_prompt] * len(data.ids)
    cfg = replace(config, mode=assembly.mode, max_flavors=max(assembly.max_flavors, 1),
                  **({"prompt_parts": list(assembly.parts)} if assembly.mode == "seed" else {}))
    if assembly.mode in ("caption", "seed"):
        for i in data.ok:
            tags = ranked.get(i)
            if tags is not None:
                tags = Tags(tags.medium, tags.movement, tags.flavors[:assembly.max_flavors])
            prompts[i] = mode_prompt(cfg.ranking, data.captions[i], tags, clip=data.clip)
        return prompts
    for dec, features in data.decoded_batches():
        chosen = interrogate(assembly.mode, [data.captions[i] for i in dec], features, data.tables, cfg.ranking, data.clip)
        for i, c in zip(dec, chosen):
            prompts[i] = c.prompt
    return prompts


def holdout_ids(ids: Sequence[str], share: float, seed: int) -> set:
    """A seeded share of the labelled images kept out of the ranking; a split that leaves either side empty
    is an error (a "best" row ranked on no image, or a holdout of none)."""
    held_count = int(round(share * len(ids)))
    if share > 0 and not 0 < held_count < len(ids):
        raise ConfigError(f"--holdout {share:g}: of {len(ids)} labelled images it holds out {held_count}; "
                          f"both the ranked and the held-out images need at least one")
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[i] for i in order[:held_count]}


def write_fragment(row: TuneRow, path: str) -> Path:
    return write_bytes(path, (json.dumps(row.assembly.fragment()) + "\n").encode())
