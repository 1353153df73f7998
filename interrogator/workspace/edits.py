"""Edits of many caption files at once: each edit turns one caption's text into its new text.

Tag edits split a caption into tags (``folder.split_tags``) and join them back with the folder's separator; a
caption whose tags an edit leaves as they are keeps its bytes (its spacing is not rewritten). ``plan_edit`` gives
the files that change, each with its bytes as read, so that nothing is written over a file changed since.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..core.errors import InterrogatorError
from .folder import Entry, join_tags, split_tags

EDITS = ("add", "remove-tag", "replace-tag", "replace-text", "sort-tags", "dedupe-tags", "move-to-front")


class EditRefused(InterrogatorError):
    """An edit that cannot be made as asked (its message says why)."""


@dataclass(frozen=True)
class Edit:
    """One batch edit: ``kind`` (EDITS) with its words.

    - ``add``: ``text`` at the ``start`` or the ``end`` (``at``), joined with the separator; a caption that already
      starts (ends) with it as a tag is left as it is;
    - ``remove-tag``: every tag equal to ``text``;
    - ``replace-tag``: every tag equal to ``text`` becomes ``new`` (an empty ``new`` removes it);
    - ``replace-text``: every occurrence of ``text`` becomes ``new``;
    - ``sort-tags``; ``dedupe-tags`` (the first of equal tags stays);
    - ``move-to-front``: the tags of ``text`` (separated as captions are) first, in that order.
    """

    kind: str
    text: str = ""
    new: str = ""
    at: str = "start"

    def check(self) -> "Edit":
        if self.kind not in EDITS:
            raise EditRefused(f"edit: expected one of {', '.join(EDITS)}, got {self.kind!r}")
        if self.kind in ("add", "remove-tag", "replace-tag", "replace-text", "move-to-front") and not self.text.strip():
            raise EditRefused(f"edit {self.kind}: give the text")
        if self.at not in ("start", "end"):
            raise EditRefused(f"edit add: expected start or end, got {self.at!r}")
        return self

    def describe(self) -> str:
        words = {"add": f"add {self.text!r} at the {self.at}", "remove-tag": f"remove the tag {self.text!r}",
                 "replace-tag": f"replace the tag {self.text!r} with {self.new!r}",
                 "replace-text": f"replace {self.text!r} with {self.new!r}", "sort-tags": "sort the tags",
                 "dedupe-tags": "remove duplicate tags", "move-to-front": f"move {self.text!r} to the front"}
        return words[self.kind]

    def apply(self, text: str, separator: str) -> str:
        """The caption's new text (the same string where the edit changes nothing)."""
        if self.kind == "replace-text":
            return text.replace(self.text, self.new)
        if self.kind == "add":
            return self.added(text, separator)
        tags = split_tags(text, separator)
        new = self.tag_edit(tags, separator)
        return text if new == tags else join_tags(new, separator)

    def added(self, text: str, separator: str) -> str:
        word = self.text.strip()
        tags = split_tags(text, separator)
        if not text.strip():
            return word
        if tags and tags[0 if self.at == "start" else -1] == word:
            return text
        return f"{word}{separator}{text}" if self.at == "start" else f"{text}{separator}{word}"

    def tag_edit(self, tags: List[str], separator: str) -> List[str]:
        word = self.text.strip()
        if self.kind == "remove-tag":
            return [t for t in tags if t != word]
        if self.kind == "replace-tag":
            return [self.new.strip() if t == word else t for t in tags if t != word or self.new.strip()]
        if self.kind == "sort-tags":
            return sorted(tags)
        if self.kind == "dedupe-tags":
            return list(dict.fromkeys(tags))
        chosen = [t for t in split_tags(self.text, separator) if t in tags]  # move-to-front
        return list(dict.fromkeys(chosen)) + [t for t in tags if t not in chosen]


@dataclass(frozen=True)
class Change:
    """One caption file's bytes before and after a write (None: no file)."""

    name: str
    path: Path
    old: Optional[bytes]
    new: Optional[bytes]


def encoded(text: str, old: Optional[bytes]) -> bytes:
    """New caption bytes: UTF-8, ending as the old file ended (a new file: with one line break, as runs write)."""
    ending = b"\n" if old is None else old[len(old.rstrip(b"\r\n")):]
    return text.encode("utf-8") + ending


@dataclass(frozen=True)
class EditPlan:
    """What an edit changes over a selection: the files that change, and those left out as not UTF-8."""

    edit: Edit
    changes: Tuple[Change, ...]
    undecodable: Tuple[str, ...]
    considered: int  # caption files among the selection

    def sample(self, n: int = 5) -> List[Tuple[str, str, str]]:
        """(name, text before, text after) of the first n changes."""
        return [(c.name, c.old.decode("utf-8").rstrip("\r\n"), c.new.decode("utf-8").rstrip("\r\n"))
                for c in self.changes[:n]]

    def summary(self) -> str:
        line = f"{self.edit.describe()}: {len(self.changes)} of {self.considered} caption files change"
        if self.undecodable:
            line += f"; {len(self.undecodable)} are not UTF-8 and are left as they are ({self.undecodable[0]}, ...)"
        return line


def plan_edit(entries: Sequence[Entry], edit: Edit, separator: str) -> EditPlan:
    """The files ``edit`` changes among ``entries`` (images without a caption file are left out)."""
    edit.check()
    changes, undecodable = [], []
    for entry in entries:
        if entry.data is None:
            continue
        try:
            text = entry.data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            undecodable.append(entry.name)
            continue
        new = edit.apply(text, separator)
        if new != text:
            changes.append(Change(entry.name, entry.caption_file, entry.data, encoded(new, entry.data)))
    return EditPlan(edit, tuple(changes), tuple(undecodable), sum(e.data is not None for e in entries))
