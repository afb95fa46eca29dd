"""Data fingerprints: a small JSON-able summary that changes when a source's data changes.

``source_fingerprint(source, limit)`` is a dict with ``source`` (the source's name),
``count`` (shards or entries), ``limit`` (the item cap the data is read with) and ``digest``
(SHA-256, hex). For a ``WebDatasetSource`` the digest covers the sorted shard paths with
their sizes, so a new, removed or rewritten shard changes it without opening any shard (our
writer renames a shard into place only once it is complete); ``bytes`` is their total size.
For any other source it covers the entry keys in order (the entries are listed). Two
fingerprints describe the same data when ``same_data`` says so: equal digests.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from engine.data.sources import ImageSource
from engine.data.webdataset_source import WebDatasetSource


def source_fingerprint(source: ImageSource, limit: int | None = None) -> dict[str, Any]:
    """The fingerprint of the data ``source`` yields (capped at ``limit`` items)."""
    digest = hashlib.sha256(json.dumps({"limit": limit}).encode())
    out: dict[str, Any] = {"source": source.name, "limit": limit}
    if isinstance(source, WebDatasetSource):
        shards = sorted(source.shard_sizes())
        for path, size in shards:
            digest.update(f"\n{path}\t{size}".encode("utf-8", "surrogateescape"))
        out.update(kind="shards", count=len(shards), bytes=sum(max(s, 0) for _, s in shards))
    else:
        count = 0
        for entry in source.entries():
            digest.update(f"\n{entry.key}".encode())
            count += 1
        out.update(kind="entries", count=count)
    out["digest"] = digest.hexdigest()
    return out


def same_data(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two fingerprints describe the same data (``None`` matches nothing)."""
    return a is not None and b is not None and a.get("digest") == b.get("digest")
