"""The workspace of one captioned folder: what the app's Dataset tab and the ``captions`` commands call.

``Workspace(config, work)`` opens the folder ``config.data_path`` with the run's listing and caption-file rules.
Its state lives in the work folder ``work``: the thumbnails (``work/thumbs``, shared by every folder) and, per
folder, the journal of writes (``work/folders/<key>/journal``), so undo and redo hold across restarts. Every
write goes through the journal, after checking that each file still holds what was shown; the images are only
ever read.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..core.config import Config
from ..core.errors import ConfigError
from . import export as exports
from .edits import Change, Edit, EditPlan, encoded, plan_edit
from .folder import Entry, Layout, changed, read_data, read_folder, version_of
from .journal import Journal, conflict
from .stats import Stats, TokenCounter, stats_of, tag_counts
from .thumbs import thumbnail
from .view import Query, select

PAGE = 100


def default_work() -> Path:
    """The work folder unless told: ``$INTERROGATOR_WORKSPACE``, else ``$XDG_CACHE_HOME/interrogator/workspace``
    (``~/.cache/interrogator/workspace``)."""
    if os.environ.get("INTERROGATOR_WORKSPACE"):
        return Path(os.environ["INTERROGATOR_WORKSPACE"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "interrogator" / "workspace"


def folder_key(config: Config) -> str:
    """One folder's journal: its real path with where and how its caption files are."""
    words = [os.path.realpath(config.data_path), os.path.realpath(config.txt_dir) if config.txt_dir else "",
             config.txt_extension, str(config.recursive)]
    return hashlib.blake2b("\0".join(words).encode("utf-8", "surrogateescape"), digest_size=10).hexdigest()


@dataclass(frozen=True)
class Card:
    """One image on a page: its thumbnail, and its caption as read (None: no caption file)."""

    name: str
    thumb: Path
    text: Optional[str]
    version: str


@dataclass(frozen=True)
class Page:
    cards: Tuple[Card, ...]
    number: int   # from 1
    pages: int
    total: int    # images the query keeps


class Workspace:
    """One folder's review-and-fix state (module docstring). Thread-safe: one write at a time."""

    def __init__(self, config: Config, work: Optional[Path] = None):
        self.layout = Layout(config)
        self.work = Path(work) if work is not None else default_work()
        self.journal = Journal(self.work / "folders" / folder_key(config) / "journal")
        self.lock = threading.RLock()
        self._counter: Optional[TokenCounter] = None
        self.reload()

    @property
    def separator(self) -> str:
        return self.layout.separator

    def reload(self) -> None:
        """Read the folder again (the images and every caption file)."""
        with self.lock:
            self.entries: List[Entry] = read_folder(self.layout)
            self.index: Dict[str, int] = {e.name: i for i, e in enumerate(self.entries)}

    def entry(self, name: str) -> Entry:
        if name not in self.index:
            raise ConfigError(f"{name}: no such image in {self.layout.folder}")
        return self.entries[self.index[name]]

    def refresh(self, names: Sequence[str]) -> None:
        """Read these images' caption files again."""
        with self.lock:
            ledgers: Dict[str, dict] = {}
            for name in names:
                old = self.entry(name)
                data = read_data(old.caption_file)
                self.entries[self.index[name]] = Entry(old.name, old.image, old.caption_file, data,
                                                       data is not None and changed(old.caption_file, ledgers))

    # ---- looking ------------------------------------------------------------------------------
    def select(self, query: Query = Query()) -> List[Entry]:
        return select(self.entries, query, self.separator)

    def page(self, query: Query = Query(), number: int = 1, size: int = PAGE) -> Page:
        """Page ``number`` of the images the query keeps, each with its thumbnail (made now where missing)."""
        kept = self.select(query)
        pages = max(1, -(-len(kept) // size))
        number = min(max(1, number), pages)
        shown = kept[(number - 1) * size:number * size]
        cards = tuple(Card(e.name, thumbnail(e.image, self.work / "thumbs"), e.text, e.version) for e in shown)
        return Page(cards, number, pages, len(kept))

    def counter(self) -> TokenCounter:
        if self._counter is None:
            self._counter = TokenCounter()
        return self._counter

    def tokens(self, text: str) -> int:
        """The CLIP token count of a text (start and end tokens included)."""
        return self.counter()([text])[0]

    def stats(self, query: Query = Query()) -> Stats:
        return stats_of(self.select(query), self.separator, self.counter())

    def vocabulary(self, tagger_names: Sequence[str] = ()) -> List[str]:
        """Tags to complete from: the folder's, the most frequent first, then the tagger's others."""
        counts = tag_counts(self.entries, self.separator)
        folder = sorted(counts, key=lambda t: (-counts[t], t))
        return folder + [t for t in tagger_names if t not in counts]

    # ---- writing ------------------------------------------------------------------------------
    def save(self, name: str, text: str, version: str) -> Entry:
        """Write one caption, if the file still holds what was shown (``version``); Conflict otherwise."""
        with self.lock:
            entry = self.entry(name)
            now = read_data(entry.caption_file)
            if version_of(now) != version:
                raise conflict(name)
            new = encoded(text.rstrip("\r\n"), now)
            if new != now:
                self.journal.write(f"edit {name}", [Change(name, entry.caption_file, now, new)])
            self.refresh([name])
            return self.entry(name)

    def preview(self, edit: Edit, names: Optional[Sequence[str]] = None, query: Query = Query()) -> EditPlan:
        """What ``edit`` changes over the named images, or else over those the query keeps; nothing is written."""
        with self.lock:
            chosen = [self.entry(n) for n in names] if names is not None else self.select(query)
            return plan_edit(chosen, edit, self.separator)

    def apply(self, plan: EditPlan) -> int:
        """Write a previewed edit: every file must still hold what the preview read (Conflict, and nothing is
        written, otherwise). The number of files written."""
        with self.lock:
            if plan.changes:
                self.journal.write(f"{plan.edit.describe()} ({len(plan.changes)} files)", plan.changes)
                self.refresh([c.name for c in plan.changes])
            return len(plan.changes)

    def undo(self) -> Optional[str]:
        return self.step(self.journal.undo)

    def redo(self) -> Optional[str]:
        return self.step(self.journal.redo)

    def step(self, move) -> Optional[str]:
        """Undo or redo (``move``), then read the caption files it touched again; what it was, or None."""
        with self.lock:
            done = move()
            if done is None:
                return None
            self.refresh([n for n in done.names if n in self.index])
            return done.what

    def export(self, kind: str, path: Optional[str] = None, kohya_field: str = "caption",
               replace: bool = False) -> Path:
        with self.lock:
            return exports.export(self.layout, self.entries, kind, path, kohya_field, replace)
