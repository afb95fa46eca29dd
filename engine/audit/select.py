"""Bounded, mergeable, order-independent selections of images (gallery, exported sample).

``Selection(k)`` keeps the ``k`` items with the smallest ``(priority, key)``, so workers can
select per shard and the parent merges: the result does not depend on the order in which
images or shards arrive. ``random_priority(seed, key)`` is a stable hash, giving a
reproducible uniform random sample of keys for a given seed.
"""

from __future__ import annotations

import bisect
import hashlib
from typing import Any


def random_priority(seed: int, key: str) -> float:
    """A uniform number in [0, 1) fixed by ``(seed, key)`` (blake2b, same on every machine)."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class Selection:
    """The ``k`` items of smallest ``(priority, key)`` seen so far, with their payloads."""

    def __init__(self, k: int) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ValueError(f"k must be a non-negative int, got {k!r}")
        self.k = k
        self._order: list[tuple[float, str]] = []  # sorted ascending
        self._payloads: dict[str, Any] = {}

    def would_keep(self, priority: float, key: str) -> bool:
        """Whether ``offer`` would keep an item (lets callers skip building a payload)."""
        if self.k == 0 or key in self._payloads:
            return False
        return len(self._order) < self.k or (priority, key) < self._order[-1]

    def offer(self, priority: float, key: str, payload: Any) -> None:
        """Keep ``payload`` if ``(priority, key)`` is among the ``k`` smallest (a key once)."""
        if not self.would_keep(priority, key):
            return
        bisect.insort(self._order, (float(priority), key))
        self._payloads[key] = payload
        if len(self._order) > self.k:
            _, dropped = self._order.pop()
            del self._payloads[dropped]

    def merge(self, other: Selection) -> None:
        for priority, key, payload in other.items():
            self.offer(priority, key, payload)

    def items(self) -> list[tuple[float, str, Any]]:
        """``(priority, key, payload)`` sorted by priority, then key."""
        return [(p, key, self._payloads[key]) for p, key in self._order]

    def __len__(self) -> int:
        return len(self._order)
