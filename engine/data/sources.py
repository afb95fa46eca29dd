"""The source interface: entries (cheap, picklable) and ``load`` (decode one entry).

A source lists ``SourceEntry`` objects lazily in a deterministic order and turns one entry
into an ``ImageItem`` with ``load``; an input that cannot be used raises ``DecodeError``.
``iter_items`` runs the loop and routes failures to a quarantine callback. Inputs found
broken while listing (a symlink loop, an unreadable directory, an unsafe tar member name)
are entries whose ``error`` is set: ``load`` raises ``DecodeError(error)`` for them, so they
are quarantined through the same path.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from engine.data.decode import DecodeError
from engine.records import ImageItem, QuarantineRecord

logger = logging.getLogger(__name__)

KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_PATH = re.compile(r"(?:[A-Za-z0-9-]+/)*[A-Za-z0-9-]+\.[A-Za-z0-9]+")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9-]+")
MAX_KEY_LENGTH = 120
SOURCE_KINDS = ("folder", "coco", "webdataset", "synthetic")


@dataclass(frozen=True)
class SourceEntry:
    """One input of a source: small and picklable (sent to workers, stored for resume).

    ``key`` is stable, unique within the source and tar-member-safe (``[A-Za-z0-9_-]``);
    ``path`` is a file path or URL, ``"synthetic:<seed>"`` or ``"shard.tar#member"``;
    ``index`` is the position in the source's order. ``image_id`` is the dataset's id when it
    has one (COCO, synthetic seed). ``members`` holds ``(ext, offset, size)`` of tar members
    (WebDataset). ``error`` marks an input found broken while listing.
    """

    key: str
    path: str
    index: int
    image_id: int = 0
    members: tuple[tuple[str, int, int], ...] = ()
    error: str | None = None


@runtime_checkable
class ImageSource(Protocol):
    """What every source provides; sources must pickle cheaply (no decoded images)."""

    name: str

    def entries(self) -> Iterator[SourceEntry]:
        """All entries, lazily, in a deterministic order."""
        ...

    def load(self, entry: SourceEntry) -> ImageItem:
        """Decode one entry; raises ``DecodeError(reason)`` when it cannot be used."""
        ...


def iter_items(
    source: ImageSource,
    quarantine: Callable[[QuarantineRecord], None] | None = None,
    limit: int | None = None,
) -> Iterator[ImageItem]:
    """Load every entry of ``source`` in order, yielding items and quarantining failures.

    Each ``DecodeError`` becomes a ``QuarantineRecord(key, path, reason)`` passed to
    ``quarantine`` (logged as a warning when it is ``None``) and the loop continues.
    ``limit`` caps the number of items *yielded* (quarantined entries do not count).
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    if limit == 0:
        return
    produced = 0
    for entry in source.entries():
        try:
            item = source.load(entry)
        except DecodeError as exc:
            record = QuarantineRecord(key=entry.key, path=entry.path, reason=exc.reason)
            if quarantine is None:
                logger.warning("quarantined %s (%s): %s", record.key, record.path, record.reason)
            else:
                quarantine(record)
            continue
        yield item
        produced += 1
        if limit is not None and produced >= limit:
            return


def open_source(kind: str, **kwargs: object) -> ImageSource:
    """Build a source by kind: ``"folder" | "coco" | "webdataset" | "synthetic"``.

    Keyword arguments go to ``FolderSource``, ``CocoSource``, ``WebDatasetSource`` or
    ``SyntheticSource`` unchanged.
    """
    if kind == "folder":
        from engine.data.folder import FolderSource

        return FolderSource(**kwargs)
    if kind == "coco":
        from engine.data.coco import CocoSource

        return CocoSource(**kwargs)
    if kind == "webdataset":
        from engine.data.webdataset_source import WebDatasetSource

        return WebDatasetSource(**kwargs)
    if kind == "synthetic":
        from engine.data.synthetic import SyntheticSource

        return SyntheticSource(**kwargs)
    raise ValueError(f"unknown source kind {kind!r}; expected one of {SOURCE_KINDS}")


def key_from_path(relpath: str) -> str:
    """A stable, tar-member-safe key (``[A-Za-z0-9_-]``) for a relative path.

    A "plain" path — components of ``[A-Za-z0-9-]`` and one extension, e.g.
    ``cats/img-01.jpg`` — maps to ``cats_img-01_jpg``; since ``_`` cannot occur in a plain
    component, plain keys never collide. Any other path (spaces, ``_``, dots, non-ASCII, too
    long) gets a readable slug plus ``-`` and 12 hex digits of the SHA-1 of the path, which
    cannot look like a plain key (those end in ``_<ext>``).
    """
    relpath = relpath.replace("\\", "/").strip("/")
    if not relpath:
        raise ValueError("cannot make a key from an empty path")
    if _PLAIN_PATH.fullmatch(relpath) and len(relpath) <= MAX_KEY_LENGTH:
        return relpath.replace("/", "_").replace(".", "_")
    slug = _UNSAFE_RUN.sub("_", relpath).strip("_")[:100] or "x"
    digest = hashlib.sha1(relpath.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{slug}-{digest}"


def check_key(key: str) -> str:
    """Return ``key`` if it is tar-member-safe, else raise ``ValueError`` naming it."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise ValueError(f"key must match [A-Za-z0-9_-]+, got {key!r}")
    return key
