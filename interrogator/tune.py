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

from .config import Config, replace

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


def _batches(n: int, size: int) -> List[List[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


def tune(config: Config, prompts_csv: str, work: str, holdout: float = 0.0, seed: int = 0,
         modes: Sequence[str] = ("seed", "classic", "fast", "caption"), counts: Sequence[int] = FLAVOR_COUNTS,
         progress: bool = True) -> List[TuneRow]:
    """Every assembly of the grid scored on the labelled images (see the module docstring), best first."""
    from .embed import embed_prompts
    from .features import build_index
    from .labels import LabelCache, load_tables
    from .modes import TABLES, interrogate
    from .pipeline import run_plan
    from .plan import make_plan
    from .record import Tags
    from .stages import mode_prompt, seed_tags
    from .score import matched_prompts, mean_cosine
    from .stages import load_sentence
    from .clip import load_clip
    work_dir = Path(work)
    caption_config = replace(config, mode="caption", formats=["kaggle"], blend=None, head_path=None, bank_path=None,
                             output=str(work_dir / "captions.csv"))
    plan = make_plan(caption_config)
    truth = matched_prompts(prompts_csv, plan.kaggle, config.data_path, "tune")
    held = holdout_ids(truth.imgId.tolist(), holdout, seed)
    captioned = run_plan(plan, progress=progress, keep_work=True)
    ids, captions, failed = captioned.kaggle_ids, captioned.captions, captioned.failed
    clip = load_clip(config.clip_model, config.clip_path, config.resolved_device(), config.torch_dtype())
    report = build_index(config, config.data_path, str(work_dir / "features.safetensors"), progress=progress, clip=clip)
    names = sorted({n for m in modes for n in TABLES[m]})
    tables = load_tables(clip, config.dicts, LabelCache(config.label_cache), names=names)
    ok = [i for i, image_id in enumerate(captioned.image_ids) if image_id not in failed]
    ok_set, row_of = set(ok), {i: r for r, i in enumerate(ok)}
    names_in_store = [f.path.relative_to(config.data_path).as_posix() for f in captioned_files(config)]
    features = report.store.rows([names_in_store[i] for i in ok]).to(clip.device, clip.dtype) if ok else None
    sentence = load_sentence(config)
    true_vectors = embed_prompts(sentence, truth.prompt.tolist(), config.stage_batch_size("embed"))
    tuned_ids = [i for i in truth.imgId if i not in held]
    tuned_rows = [k for k, i in enumerate(truth.imgId) if i not in held]
    held_ids = [i for i in truth.imgId if i in held]
    held_rows = [k for k, i in enumerate(truth.imgId) if i in held]
    caption_batch, embed_batch = config.stage_batch_size("caption"), config.stage_batch_size("embed")
    top_k = max(counts)
    ranked = {}  # the seed mode's ranking, once at the largest count, in the submission run's batches
    if "seed" in modes:
        for members in _batches(len(ids), caption_batch):
            dec = [i for i in members if i in ok_set]
            if dec:
                ranked.update(zip(dec, seed_tags(tables, features[[row_of[i] for i in dec]], top_k,
                                                 config.chunk_size)))
    rows = []
    for assembly in grid(modes, counts):
        prompts = [config.fallback_prompt] * len(ids)
        cfg = replace(config, mode=assembly.mode, max_flavors=max(assembly.max_flavors, 1),
                      **({"prompt_parts": list(assembly.parts)} if assembly.mode == "seed" else {}))
        if assembly.mode in ("caption", "seed"):
            for i in ok:
                tags = ranked.get(i)
                if tags is not None:
                    tags = Tags(tags.medium, tags.movement, tags.flavors[:assembly.max_flavors])
                prompts[i] = mode_prompt(cfg, captions[i], tags, clip=clip)
        else:
            for members in _batches(len(ids), caption_batch):
                dec = [i for i in members if i in ok_set]
                if dec:
                    chosen = interrogate(assembly.mode, [captions[i] for i in dec], features[[row_of[i] for i in dec]],
                                         tables, cfg, clip)
                    for i, c in zip(dec, chosen):
                        prompts[i] = c.prompt
        vectors = np.concatenate([embed_prompts(sentence, [prompts[i] for i in members[s:s + embed_batch]],
                                                len(members[s:s + embed_batch]))
                                  for members in _batches(len(ids), caption_batch)
                                  for s in range(0, len(members), embed_batch)])
        score = mean_cosine(ids, vectors, tuned_ids, true_vectors[tuned_rows]) if tuned_ids else 0.0
        hold = mean_cosine(ids, vectors, held_ids, true_vectors[held_rows]) if held else None
        rows.append(TuneRow(assembly, score, hold))
    return sorted(rows, key=lambda r: -r.score)


def holdout_ids(ids: Sequence[str], share: float, seed: int) -> set:
    """A seeded share of the labelled images kept out of the ranking; a split that leaves either side empty
    is an error (a "best" row ranked on no image, or a holdout of none)."""
    from .errors import ConfigError
    held_count = int(round(share * len(ids)))
    if share > 0 and not 0 < held_count < len(ids):
        raise ConfigError(f"--holdout {share:g}: of {len(ids)} labelled images it holds out {held_count}; "
                          f"both the ranked and the held-out images need at least one")
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[i] for i in order[:held_count]}


def captioned_files(config: Config):
    from .plan import scan_images
    return scan_images(config).files


def write_fragment(row: TuneRow, path: str) -> Path:
    from .atomic import write_bytes
    return write_bytes(path, (json.dumps(row.assembly.fragment()) + "\n").encode())
