"""Interrogation modes, batched over images, with clip-interrogator 0.6.0's templates and chain.

| mode | prompt |
| --- | --- |
| ``seed`` | ``caption, medium, movement, flavor_1, ..., flavor_K`` (prompt.build_prompt; this project's format) |
| ``caption`` | the caption alone (no CLIP) |
| ``classic`` | ``caption, medium artist, trending, movement, flavors`` (``caption artist, ...`` when the caption starts with the medium) |
| ``fast`` | ``caption, top_1, ..., top_K`` of all tables merged (artists, flavors, mediums, movements, trendings) |
| ``best`` | the greedy flavor chain from the caption over the merged tables' top ``intermediate_count``; then the best by CLIP similarity of caption, classic, fast and chain |
| ``negative`` | the reversed chain over the least similar ``intermediate_count`` flavors and the negative list |

Differences from clip-interrogator, each deliberate:

- Ranking is exact (rank.py); clip-interrogator's chunked top-k keeps ``chunk / num_chunks`` per chunk and can
  miss labels.
- The chain walks its candidates in rank order (its next phrase is the best-scoring candidate prompt, ties to
  the earlier rank); clip-interrogator keeps them in a Python ``set``, whose order changes from run to run.
- Labels that tokenize identically are one label (labels.merge_token_duplicates), in every mode.
- Every text is encoded with the fast exact encoding (Clip.encode_labels), and the candidates of every image of
  a batch are encoded together.

The 77-token fit is clip-interrogator's: ``_truncate_to_fit`` keeps ``, ``-separated parts while the text
``kept + part`` (joined without the separator, as it checks) stays under CLIP's context, and the chain stops
when its prompt fills the context.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..core.config import MODES, ClipSettings  # noqa: F401  (the names; each one's tables below)
from .labels import TABLE_NAMES, LabelTable
from ..core.rank import topk_chunked
from ..models.clip import token_lengths

PREFIX_CACHE = True  # chain candidates share their prompt's encoding (Clip.encode_prefixed); False: each in full
MERGED = ("artists", "flavors", "mediums", "movements", "trendings")  # clip-interrogator's merge order
TABLES = {"seed": TABLE_NAMES, "caption": (), "classic": ("mediums", "artists", "trendings", "movements", "flavors"),
          "fast": MERGED, "best": MERGED, "negative": ("flavors", "negative")}


@dataclass
class Chosen:
    """What a mode chose for one image: its prompt, and the labels it used (for the outputs)."""

    prompt: str
    medium: str = ""
    movement: str = ""
    artist: str = ""
    trending: str = ""
    flavors: Tuple[str, ...] = ()


class Texts:
    """CLIP text features and token counts for one batch of images (the fast exact encoding), and the count
    of text-tower token positions computed (``positions``, bench/modes.py reports it)."""

    def __init__(self, clip, prefix_cache: Optional[bool] = None):
        self.clip = clip
        self.prefix_cache = PREFIX_CACHE if prefix_cache is None else prefix_cache
        self.positions = 0

    def features(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.clip.tokenizer(list(texts))  # in this process: worker processes cost more than a step's few
        # thousand texts (tokenize_many pays off for label tables of 100k)
        self.positions += _full_positions(tokens)
        return self.clip.encode_labels(list(texts), tokens=tokens).float()

    def candidate_features(self, groups: Sequence[Sequence[str]]) -> torch.Tensor:
        """Features of every group's texts, in order; a group's texts share a prefix (a chain step's
        ``prompt, flavor`` candidates), which with ``prefix_cache`` runs once (Clip.encode_prefixed)."""
        flat = [t for group in groups for t in group]
        if not self.prefix_cache:
            return self.features(flat)
        bounds, start = [], 0
        for group in groups:
            bounds.append((start, start + len(group)))
            start += len(group)
        features, positions = self.clip.encode_prefixed(self.clip.tokenizer(flat), bounds)
        self.positions += positions
        return features.float()

    def at_max_len(self, texts: Sequence[str]) -> List[bool]:
        """clip-interrogator's ``_prompt_at_max_len``: the text fills CLIP's context (its last slot is not padding)."""
        return [n >= self.clip.context_length for n in self.clip.count_tokens(list(texts))]

    def truncate_to_fit(self, text: str) -> str:
        parts = text.split(", ")
        kept = parts[0]
        for part in parts[1:]:
            if self.at_max_len([kept + part])[0]:
                break
            kept += ", " + part
        return kept


def merged_table(tables: Dict[str, LabelTable], names: Sequence[str] = MERGED) -> LabelTable:
    """The tables merged in clip-interrogator's order, built once per run: remembered for these very tables
    (about 226 MB at ViT-B-32 size, 156-193 ms a batch on the CPU when it was rebuilt for every batch), and
    forgotten with them: the memo holds weak references, and its entry goes when the first table does."""
    parts = [tables[n] for n in names]
    key = id(parts[0])
    cached = _MERGED.get(key)
    if cached is None or any(ref() is not t for ref, t in zip(cached[0], parts)):
        cached = (tuple(weakref.ref(t) for t in parts),
                  LabelTable("merged", [label for t in parts for label in t.labels], torch.cat([t.embeddings for t in parts])))
        _MERGED[key] = cached
        weakref.finalize(parts[0], _MERGED.pop, key, None)
    return cached[1]


_MERGED: Dict[int, tuple] = {}  # id of the first table -> (weak references to the tables, the merged table)


def _full_positions(tokens: torch.Tensor, batch_size: int = 1024) -> int:
    """Token positions Clip.encode_labels computes for these rows: length-sorted batches cut at their longest."""
    lengths = torch.sort(token_lengths(tokens), descending=True).values
    return sum(int(lengths[i]) * len(lengths[i:i + batch_size]) for i in range(0, len(lengths), batch_size))


def top_labels(table: LabelTable, features: torch.Tensor, k: int, chunk: int, reverse: bool = False) -> List[List[str]]:
    """Exact top-k (or bottom-k) labels per image."""
    feats = features.to(table.embeddings.dtype)
    _, index = topk_chunked(-feats if reverse else feats, table.embeddings, k, chunk)
    return [[table.labels[i] for i in row] for row in index.tolist()]


def classic(captions: Sequence[str], features, tables, ranking: ClipSettings, texts: Texts) -> List[Chosen]:
    chunk = ranking.chunk_size
    mediums, artists, trendings, movements = (top_labels(tables[n], features, 1, chunk)
                                              for n in ("mediums", "artists", "trendings", "movements"))
    flavors = top_labels(tables["flavors"], features, ranking.max_flavors, chunk)
    out = []
    for cap, (m,), (a,), (t,), (v,), fl in zip(captions, mediums, artists, trendings, movements, flavors):
        flaves = ", ".join(fl)
        prompt = (f"{cap} {a}, {t}, {v}, {flaves}" if cap.startswith(m) else f"{cap}, {m} {a}, {t}, {v}, {flaves}")
        out.append(Chosen(texts.truncate_to_fit(prompt), m, v, a, t, tuple(fl)))
    return out


def fast(captions: Sequence[str], features, merged: LabelTable, ranking: ClipSettings, texts: Texts) -> List[Chosen]:
    tops = top_labels(merged, features, ranking.max_flavors, ranking.chunk_size)
    return [Chosen(texts.truncate_to_fit(cap + ", " + ", ".join(t)), flavors=tuple(t)) for cap, t in zip(captions, tops)]


@dataclass
class ChainState:
    """One image's chain (clip-interrogator's ``chain``): its candidates in rank order, best and current."""

    phrases: List[str]
    best_prompt: str
    best_sim: float
    curr_prompt: str
    curr_sim: float
    active: bool = True


def chain(features: torch.Tensor, phrases: Sequence[Sequence[str]], texts: Texts, starts: Optional[Sequence[str]],
          min_count: int, max_count: int, reverse: bool = False) -> List[str]:
    """The chain for every image of a batch at once; ``starts`` None: each begins with its best single phrase.

    Each step encodes the candidate prompts of all still-active images in one call.
    """
    feats = features.float()
    sign = -1.0 if reverse else 1.0
    phrases = [list(dict.fromkeys(p)) for p in phrases]  # clip-interrogator's set(): each phrase once
    states: List[ChainState] = []
    if starts is None:
        firsts, sims = _rank_top(feats, [list(p) for p in phrases], texts, sign)  # kept unsigned, as it does
        for p, first, sim in zip(phrases, firsts, sims):
            states.append(ChainState([x for x in p if x != first], first, sim, first, sim))
    else:
        sims = _similarities(feats, list(starts), texts)
        states = [ChainState(list(p), s, sim, s, sim) for p, s, sim in zip(phrases, starts, sims)]
    for idx in range(max_count):
        live = [i for i, st in enumerate(states) if st.active and st.phrases]
        for i, st in enumerate(states):
            if st.active and not st.phrases:  # nothing left to add (clip-interrogator would fail here)
                st.active = False
        if not live:
            break
        candidates = [[f"{states[i].curr_prompt}, {f}" for f in states[i].phrases] for i in live]
        prompts, sims = _rank_top(feats[live], candidates, texts, sign)  # each: curr_prompt + ", " + its phrase
        sims = [sign * s for s in sims]
        full = texts.at_max_len(prompts)
        for i, prompt, sim, at_max in zip(live, prompts, sims, full):
            st = states[i]
            flave = prompt[len(st.curr_prompt) + 2:]
            if sim > st.best_sim:
                st.best_prompt, st.best_sim = prompt, sim
            if sim > st.curr_sim or idx < min_count:
                st.curr_prompt, st.curr_sim = prompt, sim
            else:
                st.active = False
                continue
            if at_max:
                st.active = False
                continue
            st.phrases.remove(flave)
    return [st.best_prompt for st in states]


def _rank_top(features: torch.Tensor, candidates: List[List[str]], texts: Texts,
              sign: float) -> Tuple[List[str], List[float]]:
    """Per image, its candidate text of highest (sign -1: lowest) similarity, ties to the earlier candidate,
    and that text's (unsigned) similarity, from the features the ranking computed."""
    feats = texts.candidate_features(candidates)
    out, sims_out, start = [], [], 0
    for i, group in enumerate(candidates):
        sims = feats[start:start + len(group)] @ features[i]
        best = int(torch.argmax(sign * sims))  # argmax returns the first maximum
        out.append(group[best])
        sims_out.append(float(sims[best]))
        start += len(group)
    return out, sims_out


def _similarities(features: torch.Tensor, prompts: Sequence[str], texts: Texts) -> List[float]:
    feats = texts.features(prompts)
    return [float(feats[i] @ features[i]) for i in range(len(prompts))]


def best(captions: Sequence[str], features, tables, merged: LabelTable, ranking: ClipSettings, texts: Texts) -> List[Chosen]:
    flaves = top_labels(merged, features, ranking.intermediate_count, ranking.chunk_size)
    chained = chain(features, flaves, texts, list(captions), ranking.min_flavors, ranking.max_flavors)
    fasts = fast(captions, features, merged, ranking, texts)
    classics = classic(captions, features, tables, ranking, texts)
    out = []
    for i, (cap, ch, fa, cl) in enumerate(zip(captions, chained, fasts, classics)):
        candidates = [cap, cl.prompt, fa.prompt, ch]
        sims = texts.features(candidates) @ features[i].float()
        pick = int(torch.argmax(sims))
        chosen = [Chosen(cap), cl, fa, Chosen(ch, flavors=tuple(ch[len(cap) + 2:].split(", ")) if ch != cap else ())][pick]
        out.append(chosen)
    return out


def negative(features, tables, ranking: ClipSettings, texts: Texts) -> List[Chosen]:
    lows = top_labels(tables["flavors"], features, ranking.intermediate_count, ranking.chunk_size, reverse=True)
    phrases = [low + list(tables["negative"].labels) for low in lows]
    prompts = chain(features, phrases, texts, None, ranking.min_flavors, ranking.max_flavors, reverse=True)
    return [Chosen(p, flavors=tuple(p.split(", "))) for p in prompts]


def interrogate(mode: str, captions: Sequence[str], features: torch.Tensor, tables: Dict[str, LabelTable], ranking: ClipSettings,
                clip, texts: Optional[Texts] = None) -> List[Chosen]:
    """The prompts of one batch's decoded images in a CLIP mode (classic, fast, best, negative)."""
    texts = texts or Texts(clip)
    if mode == "classic":
        return classic(captions, features, tables, ranking, texts)
    if mode == "negative":
        return negative(features, tables, ranking, texts)
    merged = merged_table(tables)
    if mode == "fast":
        return fast(captions, features, merged, ranking, texts)
    if mode == "best":
        return best(captions, features, tables, merged, ranking, texts)
    raise ValueError(f"mode {mode!r} ranks no labels")


def negative_prompts(features: torch.Tensor, tables: Dict[str, LabelTable], ranking: ClipSettings, clip,
                     texts: Optional[Texts] = None) -> List[str]:
    """The negative mode's prompt of each image, beside any mode's prompt (config key negative_prompt)."""
    return [c.prompt for c in negative(features, tables, ranking, texts or Texts(clip))]
