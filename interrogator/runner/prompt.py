"""Prompt assembly: ``caption, medium, movement, flavor_1, ..., flavor_K`` within CLIP's context."""
from __future__ import annotations

from typing import Callable, List, Sequence

from ..core.config import PROMPT_PARTS

TRAILING = " \t\r\n.,;:!?"


def clean_caption(caption: str) -> str:
    """Collapse whitespace and strip trailing punctuation."""
    return " ".join(caption.split()).rstrip(TRAILING)


PARTS = PROMPT_PARTS  # the seed format's order (config key prompt_parts)


def build_prompt(caption: str, medium: str, movement: str, flavors: Sequence[str],
                 count_tokens: Callable[[List[str]], List[int]], context_length: int = 77,
                 order: Sequence[str] = PARTS) -> str:
    """Join the parts in ``order`` (any of PARTS, each at most once), dropping trailing parts until it fits:
    in the seed order, trailing flavors, then movement, then medium.

    The first part is never cut (the caption, in the seed order). Empty parts are left out. ``count_tokens`` gives the token count
    (with start/end tokens) of each text, as CLIP's tokenizer sees it.

    The answer is the longest prefix of the parts that fits. The full prompt is counted first (it
    usually fits: one count); otherwise a binary search over the prefix length counts about
    log2(parts) texts, where dropping one part at a time counted up to one text per part. The search
    relies on a prefix's count growing with its length: ``prefix + ", " + part`` tokenizes as the
    prefix's words, at most its last word extended by the comma (a run of punctuation), plus the
    comma and the part's own words, so it is at least one token longer. ``tests/test_prompt.py``
    checks the search against the one-at-a-time scan on generated parts.
    """
    values = {"caption": [clean_caption(caption)], "medium": [medium], "movement": [movement], "flavors": list(flavors)}
    parts = [p for name in order for p in values[name] if p]
    if not parts:
        return ""

    def fits(n: int) -> bool:
        return count_tokens([", ".join(parts[:n])])[0] <= context_length

    if fits(len(parts)):
        return ", ".join(parts)
    lo, hi = 1, len(parts) - 1  # the first part alone is always kept; parts[:hi + 1] does not fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return ", ".join(parts[:lo])
