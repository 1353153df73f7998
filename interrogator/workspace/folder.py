"""A captioned folder as the workspace reads it: each image with its caption file, where the run writes it.

The images are listed and the caption files are placed by the run's own rules (``scan_images``, ``relative_path``,
``txt_base``, ``txt_file``): the same ``data_path``, ``recursive``, ``txt_dir`` and ``txt_extension`` name the same
files in ``submit`` and here. A caption file is read as bytes; its text is those bytes as UTF-8 without the final
line break. ``version`` is the digest of the bytes (``absent`` where there is no file): what a page showed is
compared with what is on disk before anything is written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from ..core.config import Config
from ..core.identity import content_digest
from ..core.owned import ledger_of, stamp_of
from ..core.errors import ConfigError
from ..core.plan import relative_path, scan_images, txt_base, txt_file
from ..core.samples import input_kind

ABSENT = "absent"
RATINGS = ("general", "sensitive", "questionable", "explicit")  # the WD taggers' rating tags


@dataclass(frozen=True)
class Layout:
    """Where a folder's images and caption files are, and how its tags are joined."""

    config: Config  # data_path is the folder

    @property
    def folder(self) -> Path:
        return Path(self.config.data_path)

    @property
    def separator(self) -> str:
        return self.config.tag_separator

    def caption_path(self, relative: str) -> Path:
        return txt_file(txt_base(self.config)[0], relative, self.config.txt_extension)


def version_of(data: Optional[bytes]) -> str:
    return ABSENT if data is None else content_digest(data)


def text_of(data: Optional[bytes]) -> Optional[str]:
    """A caption file's text: UTF-8 (undecodable bytes shown as U+FFFD), without the final line break."""
    return None if data is None else data.decode("utf-8", errors="replace").rstrip("\r\n")


def split_tags(text: Optional[str], separator: str) -> List[str]:
    """The tags of a caption: its parts between separators (``, `` splits on ``,``), stripped, empty ones left out."""
    if not text:
        return []
    cut = separator.strip() or separator
    return [t.strip() for t in text.split(cut) if t.strip()]


def join_tags(tags: List[str], separator: str) -> str:
    return separator.join(tags)


@dataclass(frozen=True)
class Entry:
    """One image of the folder and its caption file as read."""

    name: str               # the image's path relative to the folder (its id here)
    image: Path
    caption_file: Path
    data: Optional[bytes]   # the caption file's bytes; None where there is no caption file
    changed: bool = False   # a run wrote its caption file and it was changed since

    @property
    def text(self) -> Optional[str]:
        return text_of(self.data)

    @property
    def version(self) -> str:
        return version_of(self.data)

    def tags(self, separator: str) -> List[str]:
        return split_tags(self.text, separator)


def read_data(path: Path) -> Optional[bytes]:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def read_folder(layout: Layout) -> List[Entry]:
    """Every image of the folder (the run's listing), sorted by name, with its caption file's bytes."""
    config = layout.config
    if input_kind(config.data_path) != "folder":  # shards or a file list: no folder of caption files to review
        raise ConfigError(f"config key 'data_path': not a folder: {config.data_path}")
    entries = []
    ledgers: Dict[str, dict] = {}
    for file in scan_images(config.running).files:
        name = relative_path(config.running, file)
        caption = layout.caption_path(name)
        data = read_data(caption)
        entries.append(Entry(name, file.path, caption, data, data is not None and changed(caption, ledgers)))
    return entries


def changed(path: Path, ledgers: Dict[str, dict]) -> bool:
    """A run wrote the file (its folder's ledger names it) and its size or time differs now. Each folder is
    resolved and its ledger read once (``ledgers``: its memo); a file that is a link is resolved whole."""
    folder = str(path.parent)
    if folder not in ledgers:
        ledgers[folder] = ledger_of(os.path.realpath(folder))
    if os.path.islink(path):
        real = os.path.realpath(path)
        recorded = ledger_of(os.path.dirname(real)).get(os.path.basename(real))
    else:
        real, recorded = str(path), ledgers[folder].get(path.name)
    return recorded is not None and recorded != stamp_of(real)
