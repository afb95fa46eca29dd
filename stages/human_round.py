"""A round annotated by people in the web tool (``stages.annotator=human``).

The round writes its queue file (``queues/<prefix>.json``: images, model checkpoint, the
semi-automatic stage's pre-filled masks), tells the user how to start the tool, and waits until
``target_images`` images are finished in the human store (``human/<prefix>/``). Each finished
image then becomes a ``WorkResult`` exactly like a simulated one (same records, same index
columns, ``source="annotator"``), so writing, retraining and the audit are unchanged. Images
still unfinished when the round closes are quarantined with that reason, so nothing is lost
silently. Re-running resumes: the queue is reused and saved work is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.annotators.human_store import HumanAnnotationStore
from engine.annotators.queue import RoundQueue, queue_path, read_queue, write_queue
from engine.data.sources import SourceEntry, open_source
from engine.records import QuarantineRecord
from engine.sa1b import ImageRecord
from engine.tasks import SemiAutomaticTask
from engine.work import WorkResult
from stages.rounds import RoundPlan

logger = logging.getLogger("sa_engine.human_round")


@dataclass
class HumanRound:
    """Runs one round through the web tool (see the module docstring).

    ``source_spec`` is ``{"kind": ..., **kwargs of engine.data.open_source}``; ``prefill`` is
    the semi-automatic task whose confident masks are shown pre-filled (None in stage 1).
    """

    run_dir: Path
    source_spec: dict
    preset: str
    poll_s: float = 5.0
    prefill: SemiAutomaticTask | None = None
    target_images: int | None = None
    timeout_s: float | None = None

    def annotate_round(
        self, plan: RoundPlan, todo: list[SourceEntry], checkpoint: str | None
    ) -> Iterator[WorkResult]:
        source = open_source(
            self.source_spec["kind"], **{k: v for k, v in self.source_spec.items() if k != "kind"}
        )
        queue = self._queue(plan, checkpoint, source)
        store = HumanAnnotationStore(self.run_dir, plan.prefix)
        self._wait(store, queue)
        done = store.done_keys()
        for entry in todo:
            if entry.key not in done:
                reason = "not annotated before the human round closed"
                yield WorkResult(
                    entry.key,
                    entry.index,
                    quarantine=QuarantineRecord(entry.key, entry.path, reason),
                )
                continue
            item = source.load(entry)
            records = store.load(entry.key)
            for i, record in enumerate(records):
                record.id = i
            yield WorkResult(
                entry.key,
                entry.index,
                image=item.image,
                record=ImageRecord(item.image_id, item.width, item.height, item.file_name, records),
            )

    def round_stats(self, plan: RoundPlan) -> dict[str, float]:
        """The web tool's statistics of the round (real seconds/mask, clicks, brush share)."""
        stats = HumanAnnotationStore(self.run_dir, plan.prefix).stats()
        return {
            f"human_{name}": float(value)
            for name, value in stats.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        }

    def _queue(self, plan: RoundPlan, checkpoint: str | None, source) -> RoundQueue:
        if queue_path(self.run_dir, plan.prefix).exists():
            return read_queue(self.run_dir, plan.prefix)
        prefill: dict[str, list[dict]] = {}
        if self.prefill is not None:
            prefill = self._prefill(plan, checkpoint, source)
        relative = None
        if checkpoint is not None:
            path = Path(checkpoint).resolve()
            try:
                relative = str(path.relative_to(self.run_dir.resolve()))
            except ValueError:
                relative = str(path)
        queue = RoundQueue(
            stage=plan.stage_name,
            round=plan.round,
            prefix=plan.prefix,
            preset=self.preset,
            checkpoint=relative,
            source=dict(self.source_spec),
            entries=list(plan.entries),
            prefill=prefill,
            target_images=min(self.target_images or len(plan.entries), len(plan.entries)),
        )
        write_queue(self.run_dir, queue)
        return queue

    def _prefill(self, plan: RoundPlan, checkpoint: str | None, source) -> dict[str, list[dict]]:
        from engine.model import SamPredictor, build_sam

        predictor = SamPredictor(build_sam(self.preset, checkpoint))
        prefill = {}
        for entry in plan.entries:
            item = source.load(entry)
            predictor.set_image(item.image)
            records = self.prefill._prefill(predictor, item)
            prefill[entry.key] = [
                {**r.to_json(), "granularity": r.provenance.granularity} for r in records
            ]
        return prefill

    def _wait(self, store: HumanAnnotationStore, queue: RoundQueue) -> None:
        target = queue.target_images
        keys = set(queue.keys)
        print(
            f"[{queue.prefix}] waiting for people to annotate {target} of {len(keys)} images:\n"
            f"    sa-engine annotate run_dir={self.run_dir} prefix={queue.prefix}",
            flush=True,
        )
        started = time.monotonic()
        while len(store.done_keys() & keys) < target:
            if self.timeout_s is not None and time.monotonic() - started > self.timeout_s:
                raise TimeoutError(
                    f"round {queue.prefix}: {len(store.done_keys() & keys)} of {target} images "
                    f"annotated after {self.timeout_s:.0f} s"
                )
            time.sleep(self.poll_s)
