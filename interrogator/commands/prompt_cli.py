"""prompt: each image's prompt on standard output, as clip-interrogator's command line prints it.

``python -m interrogator prompt IMAGE_OR_FOLDER... [--mode M] [--config C]`` prints one line per image: the
prompt alone for one image, ``path<TAB>prompt`` for several, or with ``--json`` one object a line (image,
prompt, caption, and the negative prompt with ``--negative``). It runs the one core (runner.stages'
``interrogate_files``, the batch function of every run), so each prompt equals what ``submit`` writes for that
image under the same config.

Which config: ``--config C``; else ``INTERROGATOR_CONFIG``; else ``~/.config/interrogator/config.json`` where
it exists; else the demo models (built on first use in ``INTERROGATOR_DEMO_DIR``, default
``~/.cache/interrogator/demo-models``), which have random weights: their prompts show what the tool does, not
what a trained model sees. The first line on standard error says which. ``--clip``, ``--captioner`` and
``--tagger`` name model paths over the config's, and every config key is a flag (commands/flags.py).

Only what printing needs loads: the captioner, the CLIP where the mode ranks labels, the tagger where the config
has one; never the sentence model, since nothing is embedded.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from ..core.config import DEFAULT_DICTS, IMAGE_EXTENSIONS, MODES, Config, load_config
from ..core.errors import ConfigError
from ..core.images import ImageFile, scan_folder, scan_tree
from .arguments import add_common
from .flags import add_config_flags, flag_overrides, print_config

CONFIG_ENV = "INTERROGATOR_CONFIG"
USER_CONFIG = Path("~/.config/interrogator/config.json")
DEMO_ENV = "INTERROGATOR_DEMO_DIR"
DEMO_DIR = Path("~/.cache/interrogator/demo-models")


def config_file(given: Optional[str]) -> Tuple[Optional[str], str]:
    """The config file to read (None: the demo models) and how it was chosen, for the first line."""
    if given:
        return given, f"config {given}"
    if os.environ.get(CONFIG_ENV):
        return os.environ[CONFIG_ENV], f"config {os.environ[CONFIG_ENV]} (from {CONFIG_ENV})"
    user = USER_CONFIG.expanduser()
    if user.is_file():
        return str(user), f"config {user}"
    return None, "the demo models"


def demo_keys() -> dict:
    """The keys of the demo models' config, the models built where missing."""
    from ..models.demo import DEMO_CLIP, make_demo_models  # lazy, as every model import here: --help needs none
    folder = Path(os.environ.get(DEMO_ENV) or DEMO_DIR).expanduser()
    paths = make_demo_models(folder)
    return {"blip_path": str(paths.blip_path), "clip_model": DEMO_CLIP, "clip_path": str(paths.clip_path),
            "embedding_path": str(paths.embedding_path), "dicts": str(DEFAULT_DICTS),
            "label_cache": str(folder / "label-cache"), "device": "cpu", "max_new_tokens": 12}


def prompt_config(args) -> Tuple[Config, str]:
    """The merged config (file or demo, then the model paths and every flag) and the line that names it."""
    path, source = config_file(args.config)
    overrides = {**flag_overrides(args), "clip_path": args.clip, "blip_path": args.captioner,
                 "tagger_path": args.tagger, "mode": args.mode, "device": args.device,
                 "negative_prompt": True if args.negative else None}
    if path is None:
        demo = demo_keys()
        overrides = {**demo, **{k: v for k, v in overrides.items() if v is not None}}
        source += f" in {Path(demo['blip_path']).parent} (random weights: the prompts show what the tool does; " \
                  f"give --config for real ones)"
    return load_config(path, **overrides), source


def image_files(paths: List[str], recursive: bool) -> List[ImageFile]:
    """Each path: an image file, or a folder's images (its sub-folders' too with ``recursive``)."""
    files: List[ImageFile] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            scan = scan_tree(path) if recursive else scan_folder(path)
            files += [ImageFile(str(f.path), f.path) for f in scan.files]
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                raise ConfigError(f"{text}: not an image ({', '.join(IMAGE_EXTENSIONS)})")
            files.append(ImageFile(text, path))
        else:
            raise ConfigError(f"{text}: no such image or folder")
    return files


def cmd_prompt(args) -> int:
    from ..core.oom import StageBatcher
    from ..core.timer import StageTimer
    from ..runner.loading import load_models
    from ..runner.needs import check, needs_of
    from ..runner.stages import interrogate_files
    config, source = prompt_config(args)
    if args.print_config:
        print_config(config)
        return 0
    files = image_files(args.images, config.recursive)
    needs = needs_of(config, data=False, sentence=False)
    check(config, needs)
    print(f"prompt: {config.mode} mode, {source}", file=sys.stderr)
    models = load_models(config, needs)
    batcher, timer = StageBatcher.of(config), StageTimer(config.resolved_device())
    size = config.stage_batch_size("caption")
    for start in range(0, len(files), size):
        chunk = files[start:start + size]
        record = interrogate_files(models, config, chunk, batcher, timer)
        for i, file in enumerate(chunk):
            print_one(args, file, record, i, several=len(files) > 1)
        sys.stdout.flush()
    return 0


def print_one(args, file: ImageFile, record, i: int, several: bool) -> None:
    negative = record.negatives[i] if record.negatives else None
    if args.json:
        row = {"image": file.image_id, "prompt": record.prompts[i], "caption": record.captions[i]}
        if negative is not None:
            row["negative_prompt"] = negative
        if file.image_id in record.failed:
            row["failed"] = record.failed[file.image_id]
        print(json.dumps(row, ensure_ascii=False))
        return
    print(f"{file.image_id}\t{record.prompts[i]}" if several else record.prompts[i])
    if negative is not None:
        print(f"{file.image_id}\tnegative: {negative}" if several else f"negative: {negative}")


EXAMPLES = {  # each command"s example, under its help (cli.Commands)
    "prompt": "prompt samples/20057f34d.png --mode best",
}
TITLE = "One image to a prompt"  # its heading in the top-level help


def add_commands(sub) -> None:
    p = sub.add_parser("prompt", help="print each image's prompt (one image or a folder, any mode)",
                       description="Print each image's prompt, as `submit` makes it: one line per image.")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--config", help="JSON config (default: $INTERROGATOR_CONFIG, ~/.config/interrogator/config.json,"
                                    " else the demo models)")
    p.add_argument("--mode", choices=MODES, help="how the prompt is made (overrides the config's mode)")
    p.add_argument("--negative", action="store_true", help="also print a negative prompt")
    p.add_argument("--json", action="store_true", help="one JSON object a line: image, prompt, caption")
    p.add_argument("--clip", help="CLIP checkpoint file (overrides clip_path)")
    p.add_argument("--captioner", help="captioner folder (overrides blip_path)")
    p.add_argument("--tagger", help="WD-format tagger folder (overrides tagger_path)")
    add_common(p)
    add_config_flags(p)
    p.set_defaults(func=cmd_prompt)
