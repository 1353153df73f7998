"""Every write of the workspace, kept with the old bytes, so that it can be undone and redone, also after a restart.

The journal is a folder: ``NNNNNN.json`` per write (what it was, and each file's old and new bytes, base64; null
where there was no file), and ``position.json``, the number of writes in effect. A new write drops the writes
after the position (they can no longer be redone). A write is recorded before its files are written, so a write
cut short is still undone: undo and redo check each file against the journal first, and

- a file that holds the bytes it should have after the step is left as it is (the step reached it, or not yet);
- a file that holds neither the entry's old nor its new bytes was changed by someone else: the step is refused,
  naming it, and nothing is written.
"""
from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from ..core.atomic import write_bytes
from ..core.errors import InterrogatorError
from .edits import Change
from .folder import read_data


@dataclass(frozen=True)
class Step:
    """An undone or redone write: what it was, and the images whose caption files it touched."""

    what: str
    names: List[str]


class Conflict(InterrogatorError):
    """A file changed on disk since it was shown: nothing was written."""


def _b64(data: Optional[bytes]) -> Optional[str]:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _bytes(text: Optional[str]) -> Optional[bytes]:
    return None if text is None else base64.b64decode(text)


def put(path: Path, data: Optional[bytes]) -> None:
    """A caption file's bytes in place, atomically; None removes it."""
    if data is None:
        if path.exists():
            os.unlink(path)
    else:
        write_bytes(path, data)


def conflict(name: str) -> Conflict:
    return Conflict(f"{name}: its caption file was changed on disk since it was shown; nothing was written "
                    f"(reload, then edit again)")


def check_unchanged(changes: Sequence[Change]) -> None:
    """Each file holds its bytes before the changes or after them; Conflict names the first that holds neither."""
    for c in changes:
        if read_data(c.path) not in (c.old, c.new):
            raise conflict(c.name)


class Journal:
    """The writes of one folder's workspace (module docstring)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def entry(self, number: int) -> Path:
        return self.folder / f"{number:06d}.json"

    @property
    def position(self) -> int:
        try:
            return int(json.loads((self.folder / "position.json").read_text(encoding="utf-8"))["position"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def set_position(self, position: int) -> None:
        write_bytes(self.folder / "position.json", json.dumps({"position": position}).encode("utf-8"))

    def count(self) -> int:
        return len(list(self.folder.glob("[0-9]*.json"))) if self.folder.is_dir() else 0

    def load(self, number: int) -> dict:
        return json.loads(self.entry(number).read_text(encoding="utf-8"))

    def changes(self, number: int, body: Optional[dict] = None) -> List[Change]:
        return [Change(c["name"], Path(c["path"]), _bytes(c["old"]), _bytes(c["new"]))
                for c in (body or self.load(number))["changes"]]

    def record(self, what: str, changes: Sequence[Change]) -> int:
        """Keep a write (before its files are written); the writes after the position are dropped."""
        number = self.position + 1
        for later in range(number, self.count() + 1):
            self.entry(later).unlink(missing_ok=True)
        body = {"what": what, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "changes": [{"name": c.name, "path": str(c.path), "old": _b64(c.old), "new": _b64(c.new)}
                            for c in changes]}
        write_bytes(self.entry(number), json.dumps(body).encode("utf-8"))
        self.set_position(number)
        return number

    def write(self, what: str, changes: Sequence[Change]) -> int:
        """Check that every file still holds its old bytes, record the write, then write each file."""
        for c in changes:
            if read_data(c.path) != c.old:
                raise conflict(c.name)
        number = self.record(what, changes)
        for c in changes:
            put(c.path, c.new)
        return number

    def undo(self) -> Optional[Step]:
        """Undo the last write in effect: what it was and the images it touched, or None where there is none."""
        return self.move(self.position, forward=False) if self.position > 0 else None

    def redo(self) -> Optional[Step]:
        """Redo the write after the position: what it was and the images it touched, or None where there is none."""
        number = self.position + 1
        return self.move(number, forward=True) if self.entry(number).exists() else None

    def move(self, number: int, forward: bool) -> Step:
        """Write entry ``number``'s new bytes (``forward``) or its old ones, once every file is checked."""
        body = self.load(number)
        changes = self.changes(number, body)
        check_unchanged(changes)
        for c in changes:
            put(c.path, c.new if forward else c.old)
        self.set_position(number if forward else number - 1)
        return Step(body["what"], [c.name for c in changes])

    def history(self) -> List[str]:
        """What each write was, oldest first, with ``(undone)`` after those past the position."""
        position = self.position
        return [self.load(n)["what"] + ("" if n <= position else " (undone)") for n in range(1, self.count() + 1)]
