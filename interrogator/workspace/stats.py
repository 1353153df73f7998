"""What a captioned folder holds: how many images, caption files and empty ones, each tag's count and share, and
the captions' CLIP token counts against the 77 a CLIP text encoder reads (the project's exact tokenizer:
``models.tokenizer``, open_clip's BPE, start and end tokens included)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from .folder import Entry

CONTEXT = 77  # CLIP's context: tokens past it are cut
TOKEN_BINS = ((0, 20), (21, 40), (41, 60), (61, 77), (78, 150), (151, None))


class TokenCounter:
    """CLIP token counts (start and end included), with open_clip's tokenizer made once."""

    def __init__(self):
        from open_clip.tokenizer import SimpleTokenizer  # lazy: slow to import
        from ..models.tokenizer import fast_tokenizer
        self.tokenizer = fast_tokenizer(SimpleTokenizer())

    def __call__(self, texts: Sequence[str]) -> List[int]:
        return self.tokenizer.count(list(texts))


@dataclass(frozen=True)
class TagCount:
    tag: str
    count: int    # captions holding the tag (once each)
    share: float  # of the caption files


@dataclass(frozen=True)
class Stats:
    images: int
    captions: int  # caption files
    empty: int     # caption files without text
    tags: Tuple[TagCount, ...]  # the most frequent first, then by tag
    tokens: Tuple[int, ...]     # each caption file's token count

    @property
    def missing(self) -> int:
        return self.images - self.captions

    @property
    def over(self) -> int:
        return sum(t > CONTEXT for t in self.tokens)

    def token_bins(self) -> List[Tuple[str, int]]:
        """(range, captions) over TOKEN_BINS."""
        return [(f"{lo}-{hi}" if hi else f"{lo}+", sum(lo <= t and (hi is None or t <= hi) for t in self.tokens))
                for lo, hi in TOKEN_BINS]

    def lines(self) -> List[str]:
        return [f"images: {self.images}; caption files: {self.captions} ({self.missing} missing, {self.empty} empty)",
                f"tokens: {self.over} captions over CLIP's {CONTEXT}; "
                + ", ".join(f"{r}: {n}" for r, n in self.token_bins())]


def tag_counts(entries: Sequence[Entry], separator: str) -> Counter:
    """How many captions hold each tag (once per caption)."""
    return Counter(t for e in entries for t in set(e.tags(separator)))


def stats_of(entries: Sequence[Entry], separator: str, counter: TokenCounter) -> Stats:
    captioned = [e for e in entries if e.data is not None]
    texts = [e.text for e in captioned]
    counts = tag_counts(captioned, separator)
    tags = tuple(TagCount(t, n, n / len(captioned)) for t, n in sorted(counts.items(), key=lambda i: (-i[1], i[0])))
    return Stats(len(entries), len(captioned), sum(not t.strip() for t in texts), tags, tuple(counter(texts)))
