"""How parts make a caption: config key ``caption_template``, e.g. ``"{trigger}, {tags}, {caption}"``.

The parts:

| field | what |
| --- | --- |
| ``{trigger}`` | config key ``trigger`` (fixed words, such as a training set's trigger word) |
| ``{tags}`` | the tagger's tags (character tags first), joined by ``tag_separator`` |
| ``{rating}`` | the tagger's best rating |
| ``{caption}`` | the captioner's text (BLIP, BLIP-2 or a VLM), whitespace collapsed |
| ``{prompt}`` | the CLIP interrogator's output in the config's ``mode`` |

Any other text in the template is kept as written. An empty part is left out together with the text before
it (the text after it, for the first part), so ``"{trigger}, {tags}, {caption}"`` with no trigger gives
``"tags, caption"``, not ``", tags, caption"``. Brackets written right before a field (``( [ { <``) and right
after it (``) ] } >``) belong to the field and are left out with it: ``"[{trigger}] {caption}"`` with no
trigger gives ``"caption"``, not ``"[caption"``. Without a template the text is ``{prompt}``: the mode's output,
exactly as before.
"""
from __future__ import annotations

import string
from typing import Dict, FrozenSet, List, Optional, Tuple

FIELDS = ("trigger", "tags", "rating", "caption", "prompt")
OPENERS, CLOSERS = "([{<", ")]}>"  # brackets right before / after a field belong to it
DEFAULT = "{prompt}"


def parse(template: str) -> List[Tuple[str, Optional[str]]]:
    """(literal text, field or None) pairs; ValueError naming what is wrong."""
    pieces = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        if name is not None:
            if name not in FIELDS:
                raise ValueError(f"unknown field {{{name}}}; the fields are " + ", ".join(f"{{{f}}}" for f in FIELDS))
            if spec or conversion:
                raise ValueError(f"field {{{name}}} takes no format spec or conversion")
        pieces.append((literal, name))
    return pieces


def fields(template: Optional[str]) -> FrozenSet[str]:
    return frozenset(name for _, name in parse(template or DEFAULT) if name is not None)


def _split(literal: str, closes: bool, opens: bool) -> Tuple[str, str, str]:
    """A literal between fields as (the closing brackets of the field before, the text between, the opening
    brackets of the field after)."""
    close = literal[:len(literal) - len(literal.lstrip(CLOSERS))] if closes else ""
    rest = literal[len(close):]
    open_ = rest[len(rest.rstrip(OPENERS)):] if opens else ""
    return close, rest[:len(rest) - len(open_)], open_


def render(template: Optional[str], parts: Dict[str, str]) -> str:
    """The template with each field's part (module docstring for empty parts and brackets)."""
    pieces = parse(template or DEFAULT)
    names = [name for _, name in pieces if name is not None]
    literals = [literal for literal, name in pieces if name is not None]
    literals.append(pieces[-1][0] if pieces[-1][1] is None else "")  # the text after the last field
    splits = [_split(literal, i > 0, i < len(names)) for i, literal in enumerate(literals)]
    text, first = splits[0][1], True
    for i, name in enumerate(names):
        value = parts.get(name, "").strip()
        if not value:
            continue
        text += ("" if first else splits[i][1]) + splits[i][2] + value + splits[i + 1][0]
        first = False
    return (text + splits[-1][1]).strip()
