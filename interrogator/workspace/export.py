"""A captioned folder in the files trainers read, each written atomically:

| kind | file | read by |
| --- | --- | --- |
| ``hf`` | ``metadata.jsonl`` in the folder: ``{"file_name": <image path relative to it>, "text": <caption>}`` per image | Hugging Face ``datasets``' ``imagefolder`` (``load_dataset("imagefolder", data_dir=...)``), which diffusers' ``train_text_to_image*.py`` and ``train_dreambooth_lora*.py`` use |
| ``kohya`` | ``{"<image key>": {"caption": <text>}}`` (or ``"tags"``), two-space indented | kohya's ``fine_tune.py`` / ``sdxl_train.py`` ``--in_json``, as its ``merge_captions_to_metadata.py`` (``merge_dd_tags_to_metadata.py`` for tags) writes it: the key is the image's stem, or its full path with ``recursive`` (kohya's ``--full_path``); the text is stripped; images without a caption file are left out |
| ``csv`` | ``file_name,text`` | pandas, spreadsheets, ``datasets``' ``csv`` loader |

An image without a caption file gets an empty text in ``hf`` (imagefolder wants a row for every image) and ``csv``.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Optional, Sequence

from ..core.atomic import write_bytes
from ..core.errors import ConfigError
from ..core.owned import Inputs, check_write, record_written
from .folder import Entry, Layout

EXPORTS = ("hf", "kohya", "csv")
KOHYA_FIELDS = ("caption", "tags")


def default_path(layout: Layout, kind: str) -> Optional[Path]:
    """Where an export goes unless told: ``metadata.jsonl`` in the folder (where imagefolder looks)."""
    return layout.folder / "metadata.jsonl" if kind == "hf" else None


def hf_lines(entries: Sequence[Entry], target: Path) -> bytes:
    base = os.path.realpath(target.parent)
    lines = []
    for e in entries:
        name = os.path.relpath(os.path.realpath(e.image), base)
        if name.startswith(".."):
            raise ConfigError(f"the hf export {target}: imagefolder reads metadata.jsonl from the images' folder "
                              f"or one above it, and {e.name} is not below {target.parent}")
        lines.append(json.dumps({"file_name": Path(name).as_posix(), "text": e.text or ""}, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def kohya_json(entries: Sequence[Entry], recursive: bool, field: str) -> bytes:
    metadata = {}
    for e in entries:
        if e.data is not None:
            key = str(e.image) if recursive else e.image.stem
            metadata.setdefault(key, {})[field] = e.data.decode("utf-8", errors="replace").strip()
    return json.dumps(metadata, indent=2).encode("utf-8")


def csv_table(entries: Sequence[Entry]) -> bytes:
    import pandas as pd  # lazy: slow to import
    buffer = io.StringIO()
    pd.DataFrame({"file_name": [e.name for e in entries], "text": [e.text or "" for e in entries]}).to_csv(
        buffer, index=False)
    return buffer.getvalue().encode("utf-8")


def export(layout: Layout, entries: Sequence[Entry], kind: str, path: Optional[str] = None,
           kohya_field: str = "caption", replace: bool = False) -> Path:
    """Write one export (module docstring) of ``entries``; its path. The path is checked first, as every output
    is (core.owned): never an image or a caption file of the folder, never a file this tool did not write unless
    ``replace``."""
    if kind not in EXPORTS:
        raise ConfigError(f"export: expected one of {', '.join(EXPORTS)}, got {kind!r}")
    if kohya_field not in KOHYA_FIELDS:
        raise ConfigError(f"export kohya: the field is one of {', '.join(KOHYA_FIELDS)}, got {kohya_field!r}")
    target = Path(path) if path else default_path(layout, kind)
    if target is None:
        raise ConfigError(f"export {kind}: give the output path")
    check_write(target, f"the {kind} export", inputs_of(entries), replace=replace)
    data = {"hf": lambda: hf_lines(entries, target), "csv": lambda: csv_table(entries),
            "kohya": lambda: kohya_json(entries, layout.config.recursive, kohya_field)}[kind]()
    write_bytes(target, data)
    record_written([target])
    return target


def inputs_of(entries: Sequence[Entry]) -> Inputs:
    inputs = Inputs()
    for e in entries:
        inputs.files[os.path.realpath(e.image)] = f"the image {e.name}"
        inputs.files[os.path.realpath(e.caption_file)] = f"the caption file of {e.name}"
    return inputs
