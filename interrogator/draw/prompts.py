"""What ``draw`` is asked for: weighted prompt parts, the images to draw and their settings.

Prompts are written as in the VQGAN+CLIP notebooks: parts separated by ``|``, each ``text`` or ``text:weight``
(``a castle|oil painting:0.5|text:-1``; a negative weight pushes the image away from that text). The include
prompt, the extras (``--extras``, added to every prompt) and the exclude prompt (``--exclude``, its weights
multiplied by ``-exclude_weight``) become one list of ``Part`` per image; the loss is the same for all of them:
``sum(weight * (1 - cosine(crop, text)))`` averaged over the crops.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

from ..core.errors import InterrogatorError

WEIGHT = re.compile(r"^(?P<text>.*?):(?P<weight>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)$", re.S)


@dataclass(frozen=True)
class Part:
    text: str
    weight: float


def parse_prompt(prompt: str, what: str = "--prompt", scale: float = 1.0) -> Tuple[Part, ...]:
    """``a|b:0.5`` -> (Part('a', 1), Part('b', 0.5)), each weight times ``scale``; InterrogatorError naming
    ``what`` for an empty part or a zero weight."""
    parts = []
    for raw in prompt.split("|"):
        match = WEIGHT.match(raw.strip())
        text, weight = (match["text"].strip(), float(match["weight"])) if match else (raw.strip(), 1.0)
        if not text:
            raise InterrogatorError(f"{what} {prompt!r}: a part has no text")
        if weight == 0:
            raise InterrogatorError(f"{what} {prompt!r}: the part {text!r} has weight 0")
        parts.append(Part(text, weight * scale))
    return tuple(parts)


def read_draw_prompts(prompts: Sequence[str], prompts_file: Optional[str]) -> List[str]:
    """The prompts of ``--prompt`` and ``--prompts FILE`` (one a line; blank lines and ``#`` lines skipped)."""
    out = list(prompts)
    if prompts_file:
        try:
            lines = open(prompts_file, encoding="utf-8").read().splitlines()
        except UnicodeDecodeError:
            raise InterrogatorError(f"--prompts {prompts_file}: not UTF-8 text") from None
        out += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not out:
        raise InterrogatorError("give --prompt TEXT or --prompts FILE (none given, or the file has no prompt)")
    return out


@dataclass(frozen=True)
class Settings:
    """One drawing's settings (the same for every prompt of a run), written into each PNG."""

    width: int = 256
    height: int = 256
    steps: int = 200
    crops: int = 30
    crop_scale: Tuple[float, float] = (0.43, 1.9)
    noise: Tuple[float, float] = (0.22, 0.28)
    lr: float = 0.5
    weight_decay: float = 0.1
    seed: int = 0
    save_every: int = 0
    exclude: str = ""
    exclude_weight: float = 0.5
    extras: str = ""
    init: Optional[str] = None
    init_weight: float = 0.0
    clip: str = ""
    vqgan: str = ""

    def parts(self, prompt: str) -> Tuple[Part, ...]:
        """Every weighted text one image is drawn toward or away from."""
        parts = parse_prompt(prompt)
        if self.extras:
            parts += parse_prompt(self.extras, "--extras")
        if self.exclude:
            parts += parse_prompt(self.exclude, "--exclude", -self.exclude_weight)
        return parts

    def saved_steps(self) -> List[int]:
        """The steps whose latents are kept (for --save-every and --video): 0, every save_every, the last."""
        if not self.save_every:
            return [self.steps]
        return sorted(set(range(0, self.steps + 1, self.save_every)) | {self.steps})

    def metadata(self, job: "Job", step: int) -> dict:
        """What a PNG records: the settings, the image's own seed (seed + its index), prompt, parts and step."""
        values = asdict(self)
        values.update(prompt=job.prompt, seed=self.seed + job.index, step=step,
                      parts=[[p.text, p.weight] for p in job.parts])
        return values


@dataclass
class Job:
    """One image to draw: its prompt, its parts and where it goes."""

    index: int
    prompt: str
    parts: Tuple[Part, ...]
    name: str


def slug(text: str, limit: int = 60) -> str:
    """A file-name-safe form of a prompt."""
    words = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return words[:limit].rstrip("-") or "prompt"


def make_jobs(prompts: Sequence[str], settings: Settings) -> List[Job]:
    return [Job(i, p, settings.parts(p), f"{i:03d}-{slug(p.split('|')[0])}") for i, p in enumerate(prompts)]
