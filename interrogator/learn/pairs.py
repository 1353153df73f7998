"""Labelled (image, prompt) pairs from a CSV: what train-head, build-bank and finetune-clip learn from.

The CSV has a ``prompt`` column and either ``image`` (a path, relative to ``images`` when given, else to
the CSV's folder) or ``imgId`` (the stem of an image in the ``images`` folder, as in the competition's
``prompts.csv``). Every image must exist; a missing one is an error naming it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pandas as pd

from ..core.errors import ConfigError
from ..core.images import scan_folder, unlisted


@dataclass
class Pairs:
    images: List[Path]   # absolute
    prompts: List[str]

    def __len__(self) -> int:
        return len(self.images)

    def root(self) -> Path:
        """The deepest folder holding every image."""
        return Path(os.path.commonpath([str(p.parent) for p in self.images]))

    def relative_ids(self, root: Path) -> List[str]:
        """Each image's path relative to root (its id in a feature store of root); ConfigError naming the first
        image outside it."""
        outside = next((p for p in self.images if not p.is_relative_to(root)), None)
        if outside is not None:
            raise ConfigError(f"--pairs: the image {outside} is not under --images {root}; give the folder that "
                              f"holds every image of the pairs")
        ids = [p.relative_to(root).as_posix() for p in self.images]
        why = next(((i, unlisted(i)) for i in ids if unlisted(i) is not None), None)
        if why is not None:
            raise ConfigError(f"--pairs: the image {root / why[0]} is never read: {why[1]}; move or rename it")
        return ids


def read_pairs(path: str, images: Optional[str] = None, least: int = 1) -> Pairs:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, ValueError) as exc:
        raise ConfigError(f"--pairs: cannot read {path}: {exc}") from exc
    if "prompt" not in frame.columns or not ({"image", "imgId"} & set(frame.columns)):
        raise ConfigError(f"--pairs: {path} needs columns image (or imgId) and prompt, has {','.join(frame.columns)}")
    if "image" in frame.columns:
        base = Path(images).resolve() if images else Path(path).resolve().parent
        found = [p if Path(p).is_absolute() else base / p for p in frame["image"]]
    else:
        if not images:
            raise ConfigError(f"--pairs: {path} names images by imgId; give --images, the folder that holds them")
        by_id = {f.image_id: f.path.resolve() for f in scan_folder(images).files}
        absent = next((i for i in frame["imgId"] if i not in by_id), None)
        if absent is not None:
            raise ConfigError(f"--pairs: {path} names imgId {absent!r}, which has no image in {images}")
        found = [by_id[i] for i in frame["imgId"]]
    missing = next((p for p in found if not Path(p).is_file()), None)
    if missing is not None:
        raise ConfigError(f"--pairs: {path} names an image that does not exist: {missing}")
    if len(frame) < least:
        raise ConfigError(f"--pairs: {path} holds {len(frame)} pairs; at least {least} are needed")
    return Pairs([Path(os.path.abspath(p)) for p in found], frame["prompt"].tolist())
