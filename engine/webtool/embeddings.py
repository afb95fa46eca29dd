"""Image embeddings for the annotation tool: computed once per image, kept in an LRU cache.

Every encoder call runs on one background thread (two encoders on a 2-core CPU would only
slow each other down); ``get`` waits for the image's embedding, ``prefetch`` queues the next
image's without waiting, so it is usually ready when the annotator gets there.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from engine.model import ImageEmbedding, SamPredictor


class EmbeddingCache:
    """LRU cache of ``ImageEmbedding`` by image key.

    Args:
        predictor: encodes images (its current-image state is not touched).
        load_image: key → ``H×W×3`` uint8 RGB image.
        capacity: embeddings kept (vit_h: 4 MiB each; tiny: 128 KiB).
    """

    def __init__(
        self,
        predictor: SamPredictor,
        load_image: Callable[[str], np.ndarray],
        capacity: int = 8,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.predictor = predictor
        self.load_image = load_image
        self.capacity = capacity
        self.seconds: dict[str, float] = {}  # encoder time of each cached key
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, Future] = OrderedDict()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")

    def get(self, key: str) -> ImageEmbedding:
        """The embedding of ``key``, computing it (or waiting for a prefetch) if needed."""
        return self._future(key).result()

    def prefetch(self, key: str) -> None:
        """Start computing ``key``'s embedding in the background (no-op when cached)."""
        self._future(key)

    def is_cached(self, key: str) -> bool:
        """True when ``key``'s embedding is ready now."""
        with self._lock:
            future = self._entries.get(key)
            return future is not None and future.done() and future.exception() is None

    def close(self) -> None:
        """Stop the background thread (pending prefetches are cancelled)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _future(self, key: str) -> Future:
        with self._lock:
            future = self._entries.get(key)
            if future is not None and not (future.done() and future.exception() is not None):
                self._entries.move_to_end(key)
                return future
            future = self._executor.submit(self._compute, key)
            self._entries[key] = future
            self._evict()
            return future

    def _evict(self) -> None:
        """Drop the least recently used finished entries beyond ``capacity``."""
        finished = [k for k, f in self._entries.items() if f.done()]
        for key in finished[: max(0, len(self._entries) - self.capacity)]:
            del self._entries[key]
            self.seconds.pop(key, None)

    def _compute(self, key: str) -> ImageEmbedding:
        start = time.perf_counter()
        (embedding,) = self.predictor.embed_images([self.load_image(key)])
        self.seconds[key] = time.perf_counter() - start
        return embedding
