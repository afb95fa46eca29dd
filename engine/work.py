"""The per-image worker: one model replica that loads images and runs a stage task on them.

``ImageWorker`` is plain Python; ``workers.pool`` wraps it in Ray actors and
``LocalImagePool`` runs it in-process (tests, and runs without Ray). Either way an image
yields exactly one ``WorkResult``: its SA-1B record, or a quarantine record saying why not.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.data.decode import DecodeError
from engine.data.sources import ImageSource, SourceEntry
from engine.model import SamPredictor, build_sam
from engine.records import ImageItem, QuarantineRecord
from engine.sa1b import ImageRecord

ImageTask = Callable[[SamPredictor, ImageItem], ImageRecord]


@dataclass
class WorkResult:
    """What one image became: ``record`` + ``image``, or ``quarantine``."""

    key: str
    index: int
    image: np.ndarray | None = None
    record: ImageRecord | None = None
    quarantine: QuarantineRecord | None = None
    seconds: float = 0.0  # wall time spent in the task (model + annotator)


@dataclass(frozen=True)
class ModelSpec:
    """How to build a worker's model: a preset and an optional checkpoint file."""

    preset: str
    checkpoint: str | None = None
    device: str | None = None  # None: CUDA when present, else CPU
    bf16: bool | None = None  # None: on for CUDA, off for CPU


class ImageWorker:
    """Holds one model replica; ``process`` turns a source entry into a ``WorkResult``.

    Args:
        model: what to build (the checkpoint is loaded strictly and safely).
        torch_threads: intra-op threads for this replica (0 keeps torch's default).
    """

    def __init__(self, model: ModelSpec, torch_threads: int = 0) -> None:
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        device = model.device or ("cuda" if torch.cuda.is_available() else "cpu")
        checkpoint = model.checkpoint
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        sam = build_sam(model.preset, checkpoint=checkpoint).to(device).eval()
        self.predictor = SamPredictor(sam, bf16=model.bf16)
        self.spec = model

    def process(self, source: ImageSource, entry: SourceEntry, task: ImageTask) -> WorkResult:
        """Load ``entry`` and run ``task``; decode and task failures become quarantine."""
        import time

        try:
            item = source.load(entry)
        except DecodeError as exc:
            return WorkResult(entry.key, entry.index, quarantine=_quarantine(entry, str(exc)))
        except (OSError, ValueError) as exc:
            reason = f"could not read: {type(exc).__name__}: {exc}"
            return WorkResult(entry.key, entry.index, quarantine=_quarantine(entry, reason))
        start = time.perf_counter()
        try:
            record = task(self.predictor, item)
        except Exception as exc:  # one bad image must not stop the round; it is reported
            reason = f"stage task failed: {type(exc).__name__}: {exc}"
            detail = traceback.format_exc(limit=3)
            return WorkResult(
                entry.key, entry.index, quarantine=_quarantine(entry, f"{reason}\n{detail}")
            )
        finally:
            self.predictor.reset_image()
        return WorkResult(
            entry.key,
            entry.index,
            image=item.image,
            record=record,
            seconds=time.perf_counter() - start,
        )


def _quarantine(entry: SourceEntry, reason: str) -> QuarantineRecord:
    return QuarantineRecord(key=entry.key, path=entry.path, reason=reason)


class LocalImagePool:
    """Runs ``ImageWorker`` in this process: same contract as ``workers.pool.RayImagePool``."""

    def __init__(self, source: ImageSource, model: ModelSpec, torch_threads: int = 0) -> None:
        self.source = source
        self.model = model
        self.torch_threads = torch_threads
        self._worker: ImageWorker | None = None

    def set_model(self, model: ModelSpec) -> None:
        """Use another model (e.g. the checkpoint of the round just retrained)."""
        if model != self.model:
            self.model = model
            self._worker = None

    def map(self, entries: Iterable[SourceEntry], task: ImageTask) -> Iterator[WorkResult]:
        """Results in the order of ``entries``."""
        if self._worker is None:
            self._worker = ImageWorker(self.model, self.torch_threads)
        for entry in entries:
            yield self._worker.process(self.source, entry, task)

    def close(self) -> None:
        self._worker = None
