"""The on-disk store of human annotation work for one round: ``<run_dir>/human/<prefix>/``.

One JSON file per image, ``<key>.json``, rewritten atomically (temporary name, fsync,
``os.replace``) on every accept, delete, undo and finish::

    {"key": str, "annotator": str, "done": bool, "seconds": float,   # total time on the image
     "masks": [{SA-1B annotation fields (id, segmentation {size, counts: str}, bbox XYWH, area,
                predicted_iou, stability_score, point_coords, crop_box),
                "provenance": {stage, round, source ("annotator" | "model" for a kept
                               pre-filled mask), clicks, seconds, model_iou (null when
                               unknown), hand_fixed (brush/eraser used), level: null,
                               granularity (whole | part | subpart), parent_id (id of the
                               saved mask it is part of, or null)}}]}

The pipeline polls ``done_keys()`` and reads finished images with ``load(key)``; the web tool
edits through ``accept``/``delete``/``undo``/``finish`` and hands out images with ``claim``.
Claims and undo history live in memory (one server per round): after a restart an annotator
gets back the image they had started, and nothing saved is lost.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.annotators.queue import RoundQueue, check_prefix, read_queue
from engine.data.sources import check_key
from engine.dataset.atomic import write_bytes_atomic
from engine.records import GRANULARITY_WHOLE, SOURCE_ANNOTATOR, SOURCE_MODEL
from engine.sa1b import MaskRecord, Provenance

HUMAN_DIR = "human"
MAX_UNDO = 100


class ClaimError(RuntimeError):
    """An annotator edits an image another annotator holds."""


@dataclass
class ImageWork:
    """The saved state of one image (the ``<key>.json`` document)."""

    key: str
    annotator: str = ""
    done: bool = False
    masks: list[dict] = field(default_factory=list)  # annotation dicts + "provenance"
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {
            "key": self.key,
            "annotator": self.annotator,
            "done": bool(self.done),
            "masks": self.masks,
            "seconds": round(float(self.seconds), 3),
        }

    @classmethod
    def from_json(cls, data: dict) -> ImageWork:
        if not isinstance(data, dict) or not isinstance(data.get("masks"), list):
            raise ValueError("an image document must be an object with a 'masks' list")
        return cls(
            key=check_key(data["key"]),
            annotator=str(data.get("annotator", "")),
            done=bool(data.get("done", False)),
            masks=list(data["masks"]),
            seconds=float(data.get("seconds", 0.0)),
        )

    def records(self) -> list[MaskRecord]:
        """The masks as ``MaskRecord`` with their ``Provenance``."""
        return [
            MaskRecord.from_json(m, provenance=Provenance(**m.get("provenance", {})))
            for m in self.masks
        ]


def mask_document(record: MaskRecord) -> dict:
    """A ``MaskRecord`` as stored: SA-1B annotation fields plus ``provenance``."""
    return {**record.to_json(), "provenance": asdict(record.provenance)}


def _relink(masks: list[dict], old_id: int, new_id: int | None) -> list[dict]:
    """``masks`` with ``parent_id == old_id`` turned into ``new_id`` (copies where changed)."""
    out = []
    for m in masks:
        prov = m.get("provenance", {})
        if prov.get("parent_id") == old_id:
            m = {**m, "provenance": {**prov, "parent_id": new_id}}
        out.append(m)
    return out


class HumanAnnotationStore:
    """Human work of round ``prefix`` under ``run_dir`` (see the module docstring).

    Args:
        run_dir: the run directory.
        prefix: the round's prefix (``stage1-r00``); the queue is read lazily, only by the
            methods that need it (``claim``, ``work`` and the edits), not by ``done_keys``/``load``.
        claim_seconds: a claim not touched for this long expires and the image goes back.
        clock: time source for claims (tests pass a fake).
    """

    def __init__(
        self,
        run_dir: str | Path,
        prefix: str,
        claim_seconds: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not claim_seconds > 0:
            raise ValueError(f"claim_seconds must be > 0, got {claim_seconds!r}")
        self.run_dir = Path(run_dir)
        self.prefix = check_prefix(prefix)
        self.folder = self.run_dir / HUMAN_DIR / prefix
        self.claim_seconds = float(claim_seconds)
        self._clock = clock
        self._lock = threading.RLock()
        self._queue: RoundQueue | None = None
        self._claims: dict[str, tuple[str, float]] = {}  # key -> (annotator, expires)
        self._history: dict[str, list[ImageWork]] = {}
        self._cache: dict[str, tuple[int, int, ImageWork]] = {}  # key -> (mtime_ns, size, work)

    # ---- files --------------------------------------------------------------------------------

    @property
    def queue(self) -> RoundQueue:
        """The round's queue (read once from ``queues/<prefix>.json``)."""
        if self._queue is None:
            self._queue = read_queue(self.run_dir, self.prefix)
        return self._queue

    def path(self, key: str) -> Path:
        return self.folder / f"{check_key(key)}.json"

    def read(self, key: str) -> ImageWork | None:
        """The saved document of ``key``, or None when nothing was saved yet."""
        path = self.path(key)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        cached = self._cache.get(key)
        if cached and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return cached[2]
        work = ImageWork.from_json(json.loads(path.read_text(encoding="utf-8")))
        if work.key != key:
            raise ValueError(f"{path} holds key {work.key!r}")
        self._cache[key] = (stat.st_mtime_ns, stat.st_size, work)
        return work

    def save(
        self,
        key: str,
        masks: list[MaskRecord | dict],
        annotator: str,
        done: bool = False,
        seconds: float = 0.0,
    ) -> ImageWork:
        """Write the whole state of ``key`` atomically; returns the saved document."""
        docs = [m if isinstance(m, dict) else mask_document(m) for m in masks]
        work = ImageWork(key=check_key(key), annotator=annotator, done=done, masks=docs)
        work.seconds = float(seconds)
        self._write(work)
        return work

    def _write(self, work: ImageWork) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = json.dumps(work.to_json(), separators=(",", ":")).encode("utf-8")
        write_bytes_atomic(self.path(work.key), data)

    def load(self, key: str) -> list[MaskRecord]:
        """The saved masks of ``key`` as records (``[]`` when nothing was saved)."""
        work = self.read(key)
        return [] if work is None else work.records()

    def saved_keys(self) -> list[str]:
        """Keys with a saved document, sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.json") if not p.name.startswith("."))

    def done_keys(self) -> set[str]:
        """Keys whose image an annotator finished."""
        return {k for k in self.saved_keys() if (w := self.read(k)) is not None and w.done}

    # ---- edits (the web tool) --------------------------------------------------------------------

    def work(self, key: str) -> ImageWork:
        """The current state of ``key``: the saved document, else the queue's pre-fill."""
        saved = self.read(key)
        if saved is not None:
            return saved
        queue = self.queue
        queue.entry(key)  # KeyError for a key outside the round
        masks = []
        for i, m in enumerate(queue.prefill.get(key, [])):
            m = dict(m)
            granularity = m.pop("granularity", GRANULARITY_WHOLE)  # the generator's level
            prov = Provenance(
                stage=queue.stage, round=queue.round, source=SOURCE_MODEL, granularity=granularity
            )
            masks.append({**m, "id": i, "provenance": asdict(prov)})
        return ImageWork(key=key, masks=masks)

    def accept(
        self,
        key: str,
        record: MaskRecord,
        annotator: str,
        replaces: int | None = None,
        seconds: float = 0.0,
    ) -> ImageWork:
        """Add ``record`` (a new id is given), or put it in place of mask ``replaces`` (whose
        parts then point at the new id). ``record.provenance.parent_id``, when set, must name
        another saved mask of ``key`` (``ValueError``); deleting a mask unlinks its parts."""
        with self._lock:
            current = self._claimed_work(key, annotator)
            masks = list(current.masks)
            if replaces is not None:
                masks = [m for m in masks if m["id"] != replaces]
                if len(masks) == len(current.masks):
                    raise KeyError(f"image {key} has no mask {replaces}")
            parent = record.provenance.parent_id
            if parent is not None and (parent == replaces or all(m["id"] != parent for m in masks)):
                raise ValueError(f"parent_id {parent} is not another saved mask of image {key}")
            record.id = max((int(m["id"]) for m in current.masks), default=-1) + 1
            if replaces is not None:
                masks = _relink(masks, replaces, record.id)
            masks.append(mask_document(record))
            return self._commit(current, masks, annotator, seconds)

    def delete(self, key: str, mask_id: int, annotator: str, seconds: float = 0.0) -> ImageWork:
        """Remove mask ``mask_id`` (pre-filled or accepted) from ``key``."""
        with self._lock:
            current = self._claimed_work(key, annotator)
            masks = [m for m in current.masks if m["id"] != mask_id]
            if len(masks) == len(current.masks):
                raise KeyError(f"image {key} has no mask {mask_id}")
            return self._commit(current, _relink(masks, mask_id, None), annotator, seconds)

    def undo(self, key: str, annotator: str) -> ImageWork | None:
        """Go back to the state before the last edit of ``key``; None when none is kept."""
        with self._lock:
            self._claimed_work(key, annotator)
            history = self._history.get(key)
            if not history:
                return None
            previous = history.pop()
            restored = ImageWork(key, annotator, previous.done, previous.masks, previous.seconds)
            restored.seconds = max(restored.seconds, self.work(key).seconds)  # time is spent
            self._write(restored)
            return restored

    def finish(self, key: str, annotator: str, seconds: float = 0.0) -> ImageWork:
        """Mark ``key`` done (its masks become the round's annotations) and release it."""
        with self._lock:
            current = self._claimed_work(key, annotator)
            work = self._commit(current, list(current.masks), annotator, seconds, done=True)
            self._claims.pop(key, None)
            return work

    def _commit(
        self,
        current: ImageWork,
        masks: list[dict],
        annotator: str,
        seconds: float,
        done: bool | None = None,
    ) -> ImageWork:
        if not 0 <= seconds < 86400:
            raise ValueError(f"seconds must be in [0, 86400), got {seconds!r}")
        history = self._history.setdefault(current.key, [])
        history.append(current)
        del history[:-MAX_UNDO]
        work = ImageWork(
            key=current.key,
            annotator=annotator,
            done=current.done if done is None else done,
            masks=masks,
            seconds=current.seconds + seconds,
        )
        self._write(work)
        return work

    # ---- claims ---------------------------------------------------------------------------------

    def claim(self, annotator_id: str) -> str | None:
        """An image for ``annotator_id`` that no other annotator holds; None when the round
        needs no more work (``target_images`` done, or every open image is held).

        The annotator's own live claim comes first, then an image they started earlier,
        then untouched images, then images others started and abandoned (claim expired).
        """
        with self._lock:
            self._expire()
            done = self.done_keys()
            for key, (owner, _) in self._claims.items():
                if owner == annotator_id and key not in done:
                    return self._hold(key, annotator_id)
            if len(done) >= self.queue.target_images:
                return None
            open_keys = [k for k in self.queue.keys if k not in done and k not in self._claims]
            ranked = sorted(open_keys, key=lambda k: self._claim_rank(k, annotator_id))
            return self._hold(ranked[0], annotator_id) if ranked else None

    def _claim_rank(self, key: str, annotator_id: str) -> int:
        saved = self.read(key)
        if saved is None:
            return 1
        return 0 if saved.annotator == annotator_id else 2

    def release(self, key: str, annotator_id: str) -> None:
        """Give ``key`` back (only its holder can)."""
        with self._lock:
            if self._claims.get(key, ("",))[0] == annotator_id:
                del self._claims[key]

    def holder(self, key: str) -> str | None:
        """Who holds ``key`` now, if anyone."""
        with self._lock:
            self._expire()
            claim = self._claims.get(key)
            return None if claim is None else claim[0]

    def _hold(self, key: str, annotator_id: str) -> str:
        self._claims[key] = (annotator_id, self._clock() + self.claim_seconds)
        return key

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, (_, expires) in self._claims.items() if expires <= now]:
            del self._claims[key]

    def _claimed_work(self, key: str, annotator: str) -> ImageWork:
        """The state of ``key`` for an edit by ``annotator``: takes a free image, refreshes
        the holder's claim, refuses an image another annotator holds."""
        holder = self.holder(key)
        if holder is not None and holder != annotator:
            raise ClaimError(f"image {key} is held by another annotator")
        work = self.work(key)
        if work.done:
            raise ClaimError(f"image {key} is already finished")
        self._hold(key, annotator)
        return work

    # ---- statistics -----------------------------------------------------------------------------

    def stats(self) -> dict:
        """The round's statistics, like the paper's (values None when there is nothing yet).

        ``seconds_per_mask_median`` and ``clicks_per_mask_mean`` cover masks made by
        annotators; ``masks_per_image_mean`` counts all masks (kept pre-fill included) of
        finished images; ``brush_share`` is the share of annotator masks fixed by hand.
        """
        works = [w for k in self.saved_keys() if (w := self.read(k)) is not None]
        done = [w for w in works if w.done]
        provs = [m.get("provenance", {}) for w in works for m in w.masks]
        human = [p for p in provs if p.get("source") == SOURCE_ANNOTATOR]
        seconds = [float(p.get("seconds", 0.0)) for p in human]
        clicks = [int(p.get("clicks", 0)) for p in human]
        return {
            "prefix": self.prefix,
            "images_done": len(done),
            "images_started": len(works) - len(done),
            "masks_annotator": len(human),
            "masks_prefilled_kept": sum(p.get("source") == SOURCE_MODEL for p in provs),
            "seconds_per_mask_median": statistics.median(seconds) if seconds else None,
            "clicks_per_mask_mean": statistics.fmean(clicks) if clicks else None,
            "masks_per_image_mean": (
                statistics.fmean(len(w.masks) for w in done) if done else None
            ),
            "brush_share": (
                sum(bool(p.get("hand_fixed")) for p in human) / len(human) if human else None
            ),
            "seconds_total": round(sum(w.seconds for w in works), 3),
            "annotators": sorted({w.annotator for w in works if w.annotator}),
        }
