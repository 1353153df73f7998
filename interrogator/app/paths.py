"""Which folders the app may read and serve: the allowed roots given on the command line and the index's
image folder. A path is resolved (symlinks followed, ``..`` collapsed) before it is compared, so neither a link
nor ``..`` leads outside."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Tuple

from ..core.errors import InterrogatorError


class PathRefused(InterrogatorError):
    """A server path outside the allowed roots."""


@dataclass(frozen=True)
class Roots:
    folders: Tuple[Path, ...]

    @classmethod
    def of(cls, *folders) -> "Roots":
        return cls(tuple(Path(os.path.realpath(f)) for f in folders if f))

    def check(self, path: str, what: str) -> Path:
        """The resolved path, if it lies inside a root; PathRefused naming it otherwise."""
        if not path or not str(path).strip():
            raise PathRefused(f"{what}: give a path")
        resolved = Path(os.path.realpath(os.path.expanduser(str(path).strip())))
        if not any(resolved == root or root in resolved.parents for root in self.folders):
            allowed = ", ".join(str(r) for r in self.folders) or "none (start the app with --allow)"
            raise PathRefused(f"{what}: {path} is outside the allowed folders ({allowed})")
        return resolved

    def check_all(self, paths: Iterable[Path], what: str) -> None:
        """``check`` of many files, each folder resolved once: a file that is itself a link is resolved whole."""
        folders: Dict[Path, bool] = {}
        for path in paths:
            path = Path(path)
            if os.path.islink(path):
                self.check(str(path), what)
            elif path.parent not in folders:
                folders[path.parent] = True
                self.check(str(path), what)
