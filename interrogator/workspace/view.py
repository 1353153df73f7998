"""Which images of a folder a page shows: filters (text or tag in or not in the caption, no caption file, an empty
one, a rating, a caption file changed since the run wrote it) and the order (name, caption length, tag count)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

from ..core.errors import ConfigError
from .folder import RATINGS, Entry

STATES = ("all", "captioned", "missing", "empty", "changed")
SORTS = ("name", "length", "tags")


@dataclass(frozen=True)
class Query:
    """A filter and an order. Text matches ignore case; a tag matches a whole tag. ``rating``: a caption holding
    that rating tag (``general``, ``sensitive``, ``questionable``, ``explicit``, or ``rating:<name>``)."""

    contains: str = ""
    excludes: str = ""
    tag: str = ""
    without_tag: str = ""
    state: str = "all"
    rating: str = ""
    sort: str = "name"
    descending: bool = False

    def check(self) -> "Query":
        if self.state not in STATES:
            raise ConfigError(f"filter: expected one of {', '.join(STATES)}, got {self.state!r}")
        if self.sort not in SORTS:
            raise ConfigError(f"sort: expected one of {', '.join(SORTS)}, got {self.sort!r}")
        if self.rating and self.rating not in RATINGS:
            raise ConfigError(f"rating: expected one of {', '.join(RATINGS)}, got {self.rating!r}")
        return self

    def keeps(self, entry: Entry, separator: str) -> bool:
        text = entry.text
        state = {"all": True, "captioned": text is not None, "missing": text is None,
                 "empty": text is not None and not text.strip(), "changed": entry.changed}[self.state]
        if not state:
            return False
        lowered = (text or "").lower()
        if (self.contains and self.contains.lower() not in lowered) or \
                (self.excludes and self.excludes.lower() in lowered):
            return False
        if not (self.tag.strip() or self.without_tag.strip() or self.rating):
            return True
        tags = set(entry.tags(separator))
        if (self.tag.strip() and self.tag.strip() not in tags) or self.without_tag.strip() in tags:
            return False
        return not self.rating or bool({self.rating, f"rating:{self.rating}", f"rating_{self.rating}"} & tags)


def select(entries: Sequence[Entry], query: Query, separator: str) -> List[Entry]:
    """The entries the query keeps, in its order (ties by name, ascending either way)."""
    query.check()
    kept = [e for e in entries if query.keeps(e, separator)]
    sign = -1 if query.descending else 1
    if query.sort == "name":
        return sorted(kept, key=lambda e: e.name, reverse=query.descending)
    if query.sort == "length":
        return sorted(kept, key=lambda e: (sign * len(e.text or ""), e.name))
    return sorted(kept, key=lambda e: (sign * len(e.tags(separator)), e.name))
