"""Prompt assembly: ``caption, medium, movement, flavor_1, ..., flavor_K`` within CLIP's context."""
from __future__ import annotations

from typing import Callable, List, Sequence

TRAILING = " \t\r\n.,;:!?"


def clean_caption(caption: str) -> str:
    """Collapse whitespace and strip trailing punctuation."""
    return " ".join(caption.split()).rstrip(TRAILING)


def build_prompt(caption: str, medium: str, movement: str, flavors: Sequence[str],
                 count_tokens: Callable[[List[str]], List[int]], context_length: int = 77) -> str:
    """Join the parts, dropping trailing flavors (then movement, then medium) until it fits.

    The caption is never cut. Empty parts are left out. ``count_tokens`` gives the
    token count (with start/end tokens) of each text, as CLIP's tokenizer sees it.
    """
    parts = [p for p in [clean_caption(caption), medium, movement, *flavors] if p]
    for n in range(len(parts), 0, -1):  # usually the full prompt fits: one count
        text = ", ".join(parts[:n])
        if n == 1 or count_tokens([text])[0] <= context_length:
            return text
    return ""
