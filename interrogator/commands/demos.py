"""``make-demo-models --family``: a miniature of each model family, built into one folder, with a ready config
and a command to try it (random weights: what comes out shows what the tool does, not what it says).

| family | what is built | the config runs |
| --- | --- | --- |
| ``blip2`` | BLIP-2 (models/demo.py), the demo CLIP, a link to all-MiniLM-L6-v2 | ``prompt``, ``submit`` in any mode |
| ``florence2``, ``qwen2_vl``, ``idefics3``, ``llava``, ``git`` | that captioner (models/miniatures.py) | ``submit``: caption files and rows |
| ``tagger`` | a WD-format ONNX tagger (models/miniatures.py; the ``[tagger]`` extra) | ``submit``: tag files and rows |
| ``vqgan`` | a VQGAN as ``convert-vqgan`` writes one (draw/miniature.py; the ``[draw]`` extra) | ``draw`` |

Every family's config also names the demo CLIP and sentence model (built with it), so that ``--mode`` and
``--format`` may be changed on it. A run's outputs go under ``<folder>/runs/<family>/``, never beside the images.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

from ..core.atomic import write_bytes
from ..core.config import DEFAULT_DICTS
from ..core.errors import InterrogatorError

CAPTIONERS = ("florence2", "qwen2_vl", "idefics3", "llava", "git")
FAMILIES = ("blip2", *CAPTIONERS, "tagger", "vqgan")
FOLDERS = {**{f: f"{f}-tiny" for f in CAPTIONERS}, "tagger": "wd-tagger-tiny", "vqgan": "vqgan-tiny"}  # blip2: demo.py's


@dataclass(frozen=True)
class Demos:
    """What make-demo-models built: the CLIP and the sentence model every config names, and each family's demo."""

    clip: Path
    sentence: Path
    families: List["Demo"]


@dataclass(frozen=True)
class Demo:
    """One family's miniature: its folder, its config file and the command that tries it."""

    family: str
    model: Path
    config: Path
    command: str


def families_of(names: List[str]) -> List[str]:
    """The families asked for (``all``: every one), in FAMILIES order."""
    chosen = set(FAMILIES if "all" in names else names)
    return [f for f in FAMILIES if f in chosen]


def make_demos(folder, families: List[str], force: bool = False) -> Demos:
    """Each family's miniature built under ``folder`` (where missing, or all with ``force``) and its config
    written beside it as ``<family>.json``."""
    from ..models.demo import make_demo_models  # lazy, as every model import here: --help needs none
    folder = Path(os.path.abspath(folder))  # the configs name absolute paths (a relative one is the config's folder's)
    base = make_demo_models(folder, force=force, captioner="blip2" in families)  # BLIP-2 where models/demo.py puts it
    return Demos(base.clip_path, base.embedding_path, [_demo(family, folder, base, force) for family in families])


def _demo(family: str, folder: Path, base, force: bool) -> Demo:
    if family == "blip2":  # built by make_demo_models, where a demo config looks for it
        model = base.blip_path
    else:
        model = folder / FOLDERS[family]
        if force or not (model / ("selected_tags.csv" if family == "tagger" else "config.json")).is_file():
            _build(family, model)  # its last file written last
    runs = folder / "runs" / family
    config = {"clip_model": "demo-tiny-clip", "clip_path": str(base.clip_path),
              "embedding_path": str(base.embedding_path), "dicts": str(DEFAULT_DICTS),
              "label_cache": str(folder / "label-cache"), "device": "cpu", "max_new_tokens": 12,
              "output": str(runs / "captions.csv"), **_keys(family, model, runs)}
    path = folder / f"{family}.json"
    write_bytes(path, (json.dumps(config, indent=1) + "\n").encode("utf-8"))
    return Demo(family, model, path, _command(family, path))


def _keys(family: str, model: Path, runs: Path) -> Dict[str, object]:
    """The family's own config keys."""
    if family == "blip2":
        return {"blip_path": str(model)}
    if family == "vqgan":
        return {"vqgan_path": str(model)}
    captioning = {"mode": "caption", "formats": ["txt", "jsonl"], "txt_dir": str(runs / "txt")}
    if family == "tagger":
        return {"tagger_path": str(model), "caption_template": "{tags}", **captioning}
    return {"blip_path": str(model), **captioning}


def _command(family: str, config: Path) -> str:
    if family == "blip2":
        return f"python -m interrogator prompt IMAGE --config {config}"
    if family == "vqgan":
        return f'python -m interrogator draw --config {config} --prompt "a lighthouse at dusk" --steps 20 --out drawings'
    return f"python -m interrogator submit --config {config} --data-path IMAGES"


def _build(family: str, model: Path) -> None:
    if family == "tagger":
        if not all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime")):  # exporting it, and running it
            raise InterrogatorError("--family tagger needs onnx and onnxruntime: pip install 'interrogator[tagger]' "
                                    "onnx")
        from ..models.miniatures import build_tagger
        build_tagger(model)
    elif family == "vqgan":
        from ..draw.miniature import make_demo_vqgan
        make_demo_vqgan(model)
    else:
        from ..models.miniatures import build_captioner
        try:
            build_captioner(family, model)
        except (ImportError, AttributeError) as exc:  # a transformers without the family's classes
            raise InterrogatorError(f"--family {family}: this transformers cannot build it ({exc}); the miniature "
                                    f"captioners need transformers 4.57 or later") from None
