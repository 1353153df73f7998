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
``"tags, caption"``, not ``", tags, caption"``. Without a template the text is ``{prompt}``: the mode's output,
exactly as before.
"""
from __future__ import annotations

import string
from typing import Dict, FrozenSet, List, Optional, Tuple

FIELDS = ("trigger", "tags", "rating", "caption", "prompt")
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


def render(template: Optional[str], parts: Dict[str, str]) -> str:
    """The template with each field's part (module docstring for empty parts)."""
    pieces = parse(template or DEFAULT)
    prefix = pieces[0][0]
    suffix = pieces[-1][0] if pieces[-1][1] is None else ""
    slots = [(literal, parts.get(name, "").strip()) for literal, name in pieces if name is not None]
    # the text before each field, after the first (the first's is the prefix)
    slots = [("" if i == 0 else literal, value) for i, (literal, value) in enumerate(slots)]
    kept = [(literal, value) for literal, value in slots if value]
    body = "".join((literal if i else "") + value for i, (literal, value) in enumerate(kept))
    return (prefix + body + suffix).strip()
