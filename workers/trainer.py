"""Ray Train: the training loop of ``engine.train.loop`` on N data-parallel workers.

``fit_distributed(build_model, load_dataset, options, checkpoint_path, num_workers=2)`` runs a
``TorchTrainer``: CPU workers with the gloo backend by default, one GPU each with NCCL when
``use_gpu`` (default: when the cluster has GPUs). Torch sets up the process group; the loop
wraps its step in ``DistributedDataParallel`` and each rank trains on the images
``rank, rank + N, …`` (``load_dataset(rank, N)`` may load only those). Rank 0 writes the
checkpoint (a local path, or a path on storage every worker sees) and calls ``on_step`` and
``on_checkpoint``.

``build_model``, ``load_dataset`` and ``on_step`` are shipped to the workers, so they must
pickle (module-level functions, ``functools.partial`` of them, small objects).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from torch import nn

from engine.progress import progress_bar, progress_enabled
from engine.train.data import TrainDataset
from engine.train.loop import StepRecord, TrainOptions, train
from engine.train.steplog import record_to_dict

# Ray Train v2 starts a state-reconciliation loop that logs "Failed to query Ray Train
# Controller actor state" every ~2 s without ray[default]'s state API; it is not needed here.
HISTORY = "history.json"
QUIET_ENV = {"RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0"}


@dataclass
class DistributedResult:
    """What rank 0 reports: steps done, per-step records, seconds spent in steps."""

    step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    checkpoint: Path | None = None
    num_workers: int = 1

    @property
    def images(self) -> int:
        return int(sum(r["images"] for r in self.history))

    @property
    def samples_per_second(self) -> float:
        """Images per second of training steps (global batch over step time)."""
        return self.images / self.seconds if self.seconds > 0 else 0.0


def _worker_loop(config: dict[str, Any]) -> None:
    """Runs in each Ray Train worker (torch.distributed is already initialised)."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device()
    model: nn.Module = config["build_model"]()
    dataset: TrainDataset = config["load_dataset"](rank, world)
    user_on_step = config["on_step"] if rank == 0 else None
    progress_queue = config["progress_queue"] if rank == 0 else None
    history: list[dict[str, Any]] = []

    def on_step(record: StepRecord) -> None:
        if rank == 0:
            history.append(record_to_dict(record))
            if progress_queue is not None:
                progress_queue.put_nowait((record.step, record.stats["loss"], record.lr))
            if user_on_step is not None:
                user_on_step(record)

    result = train(
        model,
        dataset,
        config["options"],
        on_step=on_step,
        checkpoint_path=config["checkpoint_path"],
        resume=config["resume"],
        device=device,
        config=config["job_config"],
        time_limit_s=config["time_limit_s"],
        on_checkpoint=config["on_checkpoint"],
        progress=False,  # no bars from a worker: the driver shows them (engine.progress)
    )
    summary = {"step": result.step, "seconds": result.seconds}
    if rank != 0:
        ray.train.report(summary)  # every worker must report (it is a barrier)
        return
    # Ray Train v2 keeps metrics only with a checkpoint: rank 0 reports its history as one
    with tempfile.TemporaryDirectory(prefix="sa-engine-report-") as folder:
        (Path(folder) / HISTORY).write_text(json.dumps({**summary, "history": history}))
        ray.train.report(summary, checkpoint=ray.train.Checkpoint.from_directory(folder))


def fit_distributed(
    build_model: Callable[[], nn.Module],
    load_dataset: Callable[[int, int], TrainDataset],
    options: TrainOptions,
    checkpoint_path: str | Path,
    resume: bool = False,
    config: dict[str, Any] | None = None,
    num_workers: int = 2,
    use_gpu: bool | None = None,
    cpus_per_worker: int = 1,
    on_step: Callable[[StepRecord], None] | None = None,
    storage_path: str | Path | None = None,
    time_limit_s: float | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    progress: bool | None = None,
) -> DistributedResult:
    """Train on ``num_workers`` Ray Train workers; Ray must be initialised (see
    ``workers.cluster``). Returns rank 0's report.

    ``progress``: a step bar in this (the driver) process, fed by rank 0 through a Ray queue
    (``engine.progress``: None = ``$SA_ENGINE_PROGRESS`` or a terminal); workers print nothing.
    """
    if not ray.is_initialized():
        raise RuntimeError("Ray is not initialised: call workers.cluster.start_cluster() first")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) >= num_workers
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    storage = Path(storage_path or tempfile.mkdtemp(prefix="sa-engine-ray-train-"))
    checkpoint_path = Path(checkpoint_path).resolve()  # workers run in their own directory
    queue = None
    if progress_enabled(progress):
        from ray.util.queue import Queue

        # 0 CPUs: the Train workers may hold every CPU of a small cluster (STACK.md deadlock)
        queue = Queue(actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "build_model": build_model,
            "load_dataset": load_dataset,
            "options": options,
            "checkpoint_path": str(checkpoint_path),
            "resume": resume,
            "job_config": dict(config or {}),
            "on_step": on_step,
            "threads": cpus_per_worker,
            "time_limit_s": time_limit_s,
            "on_checkpoint": on_checkpoint,
            "progress_queue": queue,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(name="sa-engine-train", storage_path=str(storage.resolve())),
    )
    if queue is None:
        result = trainer.fit()
    else:
        with _DriverBar(queue, options.steps):
            result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"Ray Train fit failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError("Ray Train fit ended without rank 0's report")
    with result.checkpoint.as_directory() as folder:
        report = json.loads((Path(folder) / HISTORY).read_text())
    return DistributedResult(
        step=int(report["step"]),
        history=list(report["history"]),
        seconds=float(report["seconds"]),
        checkpoint=checkpoint_path,
        num_workers=num_workers,
    )


class _DriverBar:
    """While in the block, a thread moves a step bar to what rank 0 put in ``queue``."""

    def __init__(self, queue: Any, total: int) -> None:
        self.queue, self.total = queue, total
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="sa-engine-progress", daemon=True)

    def _follow(self) -> None:
        from ray.util.queue import Empty

        with progress_bar(self.total, "train", unit="step", enabled=True) as bar:
            while True:
                try:
                    step, loss, lr = self.queue.get(timeout=0.5)
                except Empty:
                    if self._stop.is_set():
                        return
                    continue
                except Exception:  # the queue's actor is gone: the fit reports why
                    return
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                bar.update(step - bar.n)

    def __enter__(self) -> _DriverBar:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.queue.shutdown()
