"""The round's images by key: decoded through the queue's source, kept in a small LRU cache.

The client names images only by key; the key must be one of the queue's entries, and the
source the pipeline configured decides where the pixels come from.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np
from PIL import Image

from engine.annotators.queue import RoundQueue
from engine.data.sources import KEY_PATTERN, ImageSource, open_source
from engine.records import ImageItem


class UnknownImageError(KeyError):
    """A key that is not an image of the round (bad characters, or not in the queue)."""


class RoundImages:
    """Decoded images of one round's queue.

    Args:
        queue: the round queue (its ``source`` and ``entries``).
        capacity: decoded images kept in memory.
        jpeg_quality: quality of the JPEG sent to the browser.
    """

    def __init__(self, queue: RoundQueue, capacity: int = 4, jpeg_quality: int = 92) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        if not 1 <= jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in [1, 95], got {jpeg_quality!r}")
        self.queue = queue
        self.capacity = capacity
        self.jpeg_quality = jpeg_quality
        self._entries = {e.key: e for e in queue.entries}
        source = dict(queue.source)
        kind = source.pop("kind")
        self.source: ImageSource = open_source(kind, **source)
        self._lock = threading.Lock()
        self._items: OrderedDict[str, ImageItem] = OrderedDict()
        self._jpeg: OrderedDict[str, bytes] = OrderedDict()

    def check(self, key: str) -> str:
        """Return ``key`` if it names an image of the round, else raise ``UnknownImageError``."""
        if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key) or key not in self._entries:
            raise UnknownImageError(key)
        return key

    def item(self, key: str) -> ImageItem:
        """The decoded ``ImageItem`` of ``key`` (``DecodeError`` when the input is broken)."""
        self.check(key)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        item = self.source.load(self._entries[key])
        with self._lock:
            self._items[key] = item
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return item

    def image(self, key: str) -> np.ndarray:
        """``H×W×3`` uint8 RGB pixels of ``key``."""
        return self.item(key).image

    def size(self, key: str) -> tuple[int, int]:
        """``(height, width)`` of ``key``."""
        item = self.item(key)
        return item.height, item.width

    def jpeg(self, key: str) -> bytes:
        """The image as JPEG bytes, for the page."""
        with self._lock:
            if key in self._jpeg:
                self._jpeg.move_to_end(key)
                return self._jpeg[key]
        buffer = io.BytesIO()
        Image.fromarray(self.image(key)).save(buffer, format="JPEG", quality=self.jpeg_quality)
        data = buffer.getvalue()
        with self._lock:
            self._jpeg[key] = data
            while len(self._jpeg) > self.capacity:
                self._jpeg.popitem(last=False)
        return data
