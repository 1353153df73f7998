"""open_clip's CLIP tokenizer with its BPE merges run by the Rust ``tokenizers`` library: same tokens, faster.

open_clip's ``SimpleTokenizer`` is pure Python: ftfy, a regex split, then BPE merges word by word.
Tokenizing the 100k flavors takes 6.5 s on one core here, most of a cold label-table encode on a
GPU. ``FastClipTokenizer`` keeps open_clip's clean function, split pattern, byte encoding and
vocabulary, and changes two things:

- the merges of each distinct word run once, in ``tokenizers.models.BPE`` built from open_clip's
  own merge list;
- ftfy and ``html.unescape`` cannot change printable ASCII text without ``&``, so such text skips
  them (open_clip's whitespace clean and lower-casing still apply); other text gets open_clip's
  clean function as it is.

Tests compare it with ``SimpleTokenizer`` on every label list and on generated text.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

_NEEDS_FTFY = re.compile(r"[^\x20-\x25\x27-\x7e]")  # anything but printable ASCII, or '&'


class _WordIds(dict):
    """word -> BPE ids, each distinct word merged once by the Rust BPE model."""

    def __init__(self, bpe, byte_encoder: Dict[int, str]):
        super().__init__()
        self.bpe, self.byte_encoder = bpe, byte_encoder

    def __missing__(self, word: str) -> List[int]:
        byte_word = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
        ids = self[word] = [token.id for token in self.bpe.tokenize(byte_word)]
        return ids


class FastClipTokenizer:
    """Drop-in for an open_clip ``SimpleTokenizer``: ``tokenizer(texts, context_length)`` gives the same tensor."""

    def __init__(self, simple):
        from open_clip import tokenizer as oc_tokenizer  # lazy: slow to import
        from tokenizers import models  # lazy: slow to import

        self.simple = simple
        self.context_length = simple.context_length
        self.sot_token_id, self.eot_token_id = simple.sot_token_id, simple.eot_token_id
        merges = [pair for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda item: item[1])]
        self._bpe = models.BPE(vocab=dict(simple.encoder), merges=merges, end_of_word_suffix="</w>",
                               continuing_subword_prefix="", fuse_unk=False)
        self._word_ids = _WordIds(self._bpe, simple.byte_encoder)
        # open_clip maps a special token's text straight to its id, without merges
        self._word_ids.update({simple.decoder[i]: [i] for i in simple.all_special_ids})
        self._plain_clean = oc_tokenizer.whitespace_clean if simple.clean_fn is oc_tokenizer._clean_lower else None

    def clean(self, text: str) -> str:
        """open_clip's clean function; plain ASCII text skips ftfy, which cannot change it."""
        if self._plain_clean is not None and not _NEEDS_FTFY.search(text):
            return self._plain_clean(text).lower()
        return self.simple.clean_fn(text)

    def encode(self, texts: Sequence[str]) -> List[List[int]]:
        """BPE ids of each text, without start and end tokens."""
        pattern, word_ids = self.simple.pat, self._word_ids
        return [[i for word in pattern.findall(self.clean(text)) for i in word_ids[word]] for text in texts]

    def count(self, texts: Sequence[str]) -> List[int]:
        """Token count of each text with start and end tokens, not capped at the context."""
        return [len(ids) + 2 for ids in self.encode(texts)]

    def __call__(self, texts: Union[str, Sequence[str]], context_length: Optional[int] = None) -> torch.Tensor:
        """(N, context_length) ids: start, text, end, zeros; over-long text cut before the end token, as open_clip does."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        context = context_length or self.context_length
        encoded = self.encode(texts)
        lengths = np.minimum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), context - 2)
        out = np.zeros((len(texts), context), dtype=np.int64)
        out[:, 0] = self.sot_token_id
        position = np.arange(context)[None, :]
        out[(position >= 1) & (position <= lengths[:, None])] = np.fromiter(
            (i for ids, n in zip(encoded, lengths) for i in ids[:n]), dtype=np.int64, count=int(lengths.sum()))
        out[np.arange(len(texts)), lengths + 1] = self.eot_token_id
        return torch.from_numpy(out)


def fast_tokenizer(tokenizer):
    """A ``FastClipTokenizer`` for a plain open_clip ``SimpleTokenizer``; any other tokenizer as it is."""
    from open_clip.tokenizer import SimpleTokenizer  # lazy: slow to import
    if type(tokenizer) is SimpleTokenizer and tokenizer.reduction_fn is None:
        return FastClipTokenizer(tokenizer)
    return tokenizer
