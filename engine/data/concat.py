"""Sources made of other sources: one cut to its first N entries, or several read as one.

Keys are prefixed with the part's position (``p0-<key>``, ``p1-<key>`` …) so they stay
unique across parts; ``index`` stays the entry's index in its own part (sources such as COCO
look images up by it); ``load`` hands each entry back to its own source under its own key.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from engine.data.sources import ImageSource, SourceEntry
from engine.records import ImageItem


@dataclass(frozen=True)
class ConcatSource:
    """``parts``: sources read in order (cut one with ``FirstEntries``)."""

    parts: Sequence[ImageSource]

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("ConcatSource needs at least one part")

    @property
    def name(self) -> str:
        return " + ".join(source.name for source in self.parts)

    def entries(self) -> Iterator[SourceEntry]:
        for position, source in enumerate(self.parts):
            for entry in source.entries():
                yield replace(entry, key=f"p{position}-{entry.key}")

    def load(self, entry: SourceEntry) -> ImageItem:
        prefix, _, key = entry.key.partition("-")
        source = self.parts[int(prefix[1:])]
        item = source.load(replace(entry, key=key))
        return replace(item, key=entry.key)


@dataclass(frozen=True)
class FirstEntries:
    """The first ``limit`` entries of ``source``, keys and indices unchanged."""

    source: ImageSource
    limit: int

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"limit must be >= 0, got {self.limit}")

    @property
    def name(self) -> str:
        return f"{self.source.name}[:{self.limit}]"

    def entries(self) -> Iterator[SourceEntry]:
        return itertools.islice(self.source.entries(), self.limit)

    def load(self, entry: SourceEntry) -> ImageItem:
        return self.source.load(entry)
