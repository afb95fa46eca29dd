"""A pool of Ray actors, each holding one model replica (``engine.work.ImageWorker``).

``RayImagePool.map(entries, task)`` sends every entry to an actor, keeps at most
``max_in_flight`` images in flight (``ray.wait``), and yields ``WorkResult``s in the order of
the entries — so the one writer downstream writes the same shards whatever the number of
workers. Actors restart after a crash (``max_restarts``) and their calls are retried
(``max_task_retries``): a killed worker costs time, not images.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import ray

from engine.data.sources import ImageSource, SourceEntry
from engine.work import ImageTask, ImageWorker, ModelSpec, WorkResult


class WorkerPoolError(RuntimeError):
    """An image could not be processed even after Ray's retries."""


class RayImagePool:
    """Ray actors running stage tasks on images (same contract as ``LocalImagePool``).

    Args:
        source: the image source (put in the object store once, loaded by the actors).
        model: preset + checkpoint for every replica.
        num_workers: actors (one model replica each).
        cpus_per_worker: Ray CPUs reserved per actor (may be fractional).
        gpus_per_worker: Ray GPUs per actor (0 on CPU machines).
        torch_threads: intra-op threads per replica (0: torch's default).
        max_in_flight: images submitted and not yet yielded (default 2 per worker).
        max_restarts: restarts of a crashed actor; max_task_retries: retries of its calls.
    """

    def __init__(
        self,
        source: ImageSource,
        model: ModelSpec,
        num_workers: int = 2,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        torch_threads: int = 1,
        max_in_flight: int | None = None,
        max_restarts: int = 3,
        max_task_retries: int = 3,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if not ray.is_initialized():
            raise RuntimeError("Ray is not running: start it with workers.cluster first")
        self.model = model
        self.num_workers = num_workers
        self.max_in_flight = max_in_flight or 2 * num_workers
        self._options = {
            "num_cpus": cpus_per_worker,
            "num_gpus": gpus_per_worker,
            "max_restarts": max_restarts,
            "max_task_retries": max_task_retries,
        }
        self._torch_threads = torch_threads
        self._source_ref = ray.put(source)
        self._actors: list = []

    def _start(self) -> None:
        actor_class = ray.remote(**self._options)(ImageWorker)
        self._actors = [
            actor_class.remote(self.model, self._torch_threads) for _ in range(self.num_workers)
        ]

    def set_model(self, model: ModelSpec) -> None:
        """Use another model: the actors are replaced (a restarted actor rebuilds its spec)."""
        if model != self.model:
            self.close()
            self.model = model

    def map(self, entries: Iterable[SourceEntry], task: ImageTask) -> Iterator[WorkResult]:
        """Process ``entries`` with ``task``; results come in the order of ``entries``."""
        if not self._actors:
            self._start()
        task_ref = ray.put(task)
        pending: dict[ray.ObjectRef, int] = {}
        finished: dict[int, WorkResult] = {}
        order: list[SourceEntry] = []
        next_out = 0
        entry_iter = iter(entries)
        exhausted = False
        while True:
            while not exhausted and len(pending) + len(finished) < self.max_in_flight:
                entry = next(entry_iter, None)
                if entry is None:
                    exhausted = True
                    break
                position = len(order)
                order.append(entry)
                actor = self._actors[position % len(self._actors)]
                pending[actor.process.remote(self._source_ref, entry, task_ref)] = position
            if not pending and next_out not in finished:
                return
            if pending and next_out not in finished:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    position = pending.pop(ref)
                    finished[position] = self._result(ref, order[position])
            while next_out in finished:
                yield finished.pop(next_out)
                next_out += 1

    @staticmethod
    def _result(ref: ray.ObjectRef, entry: SourceEntry) -> WorkResult:
        try:
            return ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
            raise WorkerPoolError(
                f"image {entry.key!r} ({entry.path}) failed after Ray's retries: {exc}"
            ) from exc

    def close(self) -> None:
        """Stop the actors (their CPUs go back to Ray, e.g. for retraining)."""
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
