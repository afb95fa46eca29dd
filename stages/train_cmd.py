"""``sa-engine train``: a standalone, schedulable training job.

    sa-engine train model=tiny data=synthetic train.steps=200
    sa-engine train model=vit_b model.checkpoint=sam_vit_b.pth data=webdataset \
        data.path='shards/*.tar' train.freeze_image_encoder=true run_dir=runs/r1

Input: synthetic scenes, COCO, or SA-1B-format shards (``data=``); start: a preset at random
init or a checkpoint (``model.checkpoint``); output: ``<run_dir>/checkpoints/model.pt`` (the
weights, official format) and ``train.pt`` (weights + optimizer + step: resuming). Running
the same command again resumes from ``train.pt`` (same MLflow run); when the run is complete
it retrains for another ``train.steps`` steps if the data changed (new shards), else does
nothing (``stages.train_plan``). Logs to MLflow: the resolved config as params, loss and lr
per step, the evaluation metrics, the checkpoint as an artifact (a new registered model
version with ``tracking.register_model=NAME``). Exit status: 0 done, 1 failed, 2 bad config.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch

from engine.data import ImageSource, iter_items
from engine.data.fingerprint import source_fingerprint
from engine.tracking import Tracker
from engine.train.loop import TrainOptions
from engine.weights import resolve_checkpoint
from stages.train_plan import plan_segment

logger = logging.getLogger("sa_engine.train")

USAGE = """usage: sa-engine train [--cfg] [KEY=VALUE ...]

Hydra overrides of configs/train_job.yaml, e.g. model=tiny data=synthetic train.steps=200
run_dir=runs/r1 train.workers=0 tracking.register_model=sam-tiny. --cfg prints the resolved
config and exits. Groups:
"""

CHECKPOINT = "checkpoints/train.pt"
MODEL = "checkpoints/model.pt"
STEP_LOG = "train_log.jsonl"
STATE = "state.json"


@dataclass
class EvalSettings:
    """Interactive evaluation after training (``source`` None = skip)."""

    source: ImageSource | None
    images: int = 10
    max_clicks: int = 20
    max_objects_per_image: int | None = 30
    before: bool = False


def main(argv: list[str]) -> int:
    """Entry point of ``sa-engine train`` (called by ``stages.cli``)."""
    from stages import hydra_app

    if any(a in ("-h", "--help") for a in argv):
        print(USAGE + hydra_app.groups_help())
        return 0
    show_only = "--cfg" in argv
    overrides = [a for a in argv if a != "--cfg"]
    try:
        job, resolved, yaml_text = hydra_app.load_train_job(overrides)
        source = job.data.open()
        eval_source = job.eval.data.open() if job.eval.enabled else None
        start_checkpoint = resolve_checkpoint(job.model.checkpoint) or None
    except (hydra_app.ConfigError, ValueError, TypeError) as exc:
        print(f"sa-engine train: config error: {exc}", file=sys.stderr)
        return 2
    if show_only:
        print(yaml_text)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t = job.train
    tracking = job.tracking
    if not tracking.enabled:
        tracker = Tracker(None, tracking.experiment, enabled=False)
    elif tracking.uri:
        tracker = Tracker(tracking.uri, tracking.experiment)
    else:
        tracker = Tracker.local(job.runs_root, tracking.experiment)
    try:
        run_train_job(
            run_dir=Path(job.run_dir),
            preset=job.model.preset,
            start_checkpoint=start_checkpoint,
            source=source,
            data_limit=job.data.limit,
            min_mask_area=t.min_mask_area,
            options=t.options(),
            drop_path=t.drop_path,
            workers=t.workers,
            time_limit_s=t.time_limit_s,
            cluster_address=job.cluster.address or None,
            num_cpus=job.cluster.num_cpus,
            cpus_per_worker=job.cluster.cpus_per_worker,
            use_gpu=job.cluster.gpus_per_worker > 0,
            tracker=tracker,
            register_model=tracking.register_model or None,
            evaluation=EvalSettings(
                source=eval_source,
                images=job.eval.images,
                max_clicks=job.eval.max_clicks,
                max_objects_per_image=job.eval.max_objects_per_image,
                before=job.eval.before,
            ),
            resolved_config=resolved,
            config_yaml=yaml_text,
        )
    except Exception:
        logger.exception("training failed")
        return 1
    return 0


def _read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE
    return json.loads(path.read_text()) if path.exists() else {}


def _write_state(run_dir: Path, state: dict[str, Any]) -> None:
    tmp = run_dir / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(run_dir / STATE)


def run_train_job(
    *,
    run_dir: Path,
    preset: str,
    start_checkpoint: str | None,
    source: ImageSource,
    data_limit: int | None,
    min_mask_area: int = 1,
    options: TrainOptions,
    drop_path: float,
    workers: int,
    time_limit_s: float | None,
    cluster_address: str | None,
    num_cpus: int | None,
    cpus_per_worker: int,
    use_gpu: bool,
    tracker: Tracker,
    register_model: str | None,
    evaluation: EvalSettings,
    resolved_config: dict[str, Any],
    config_yaml: str,
) -> dict[str, Any]:
    """Train, evaluate and log one run; resumes from ``run_dir`` when it holds a checkpoint,
    and retrains a finished run when its data changed (``stages.train_plan``).

    ``options.steps`` is the length of a segment (the whole run when the data never changes).
    Returns the run's state dict (also written to ``run_dir/state.json``).
    """
    from engine.model import build_sam, save_checkpoint
    from engine.train.checkpoint import load_checkpoint
    from engine.train.steplog import truncate_step_log
    from stages.retrain import seeded_model

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config_yaml)
    state = _read_state(run_dir)
    checkpoint = run_dir / CHECKPOINT
    done_step = int(load_checkpoint(checkpoint)["step"]) if checkpoint.exists() else 0
    fingerprint = source_fingerprint(source, data_limit)
    segment, reason = plan_segment(state, done_step, options.steps, fingerprint)
    if segment is None:
        logger.info("run %s is already complete (%d steps) and %s", run_dir, done_step, reason)
        if "fingerprint" not in state:
            state["fingerprint"] = fingerprint
            _write_state(run_dir, state)
        return state
    if segment.retrain:
        logger.info("run %s: %s; retraining for %d more steps", run_dir, reason, options.steps)
    options = dataclasses.replace(options, steps=segment.target, schedule_start=segment.start)
    truncate_step_log(run_dir / STEP_LOG, done_step)
    # a random start seeded by train.seed, so the same command trains the same model
    build_model = partial(seeded_model, preset, start_checkpoint, options.seed, drop_path)
    with tracker.run(run_dir.name, run_id=state.get("mlflow_run_id")) as run_id:
        if state.get("mlflow_run_id") is None:
            tracker.log_params(resolved_config)
        state.update(
            mlflow_run_id=run_id,
            status="training",
            steps=options.steps,
            segment_start=segment.start,
        )
        _write_state(run_dir, state)
        if segment.retrain:
            tracker.log_metrics({"segment_start": segment.start}, step=segment.start)
        tracker.log_artifact(run_dir / "config.yaml")
        if evaluation.before and evaluation.source is not None and done_step == 0:
            before = _evaluate(build_model(), evaluation)
            tracker.log_metrics({f"eval_before/{k}": v for k, v in before.items()})
        logger.info("training %s from step %d to %d", run_dir, done_step, options.steps)
        history = _train(
            build_model=build_model,
            source=source,
            data_limit=data_limit,
            min_mask_area=min_mask_area,
            options=options,
            checkpoint=checkpoint,
            resume=done_step > 0,
            workers=workers,
            time_limit_s=time_limit_s,
            cluster_address=cluster_address,
            num_cpus=num_cpus,
            cpus_per_worker=cpus_per_worker,
            use_gpu=use_gpu,
            run_dir=run_dir,
            resolved_config=resolved_config,
            tracker=tracker,
        )
        trained = build_sam(preset, checkpoint)
        save_checkpoint(trained, run_dir / MODEL)
        step = int(load_checkpoint(checkpoint)["step"])
        seconds = sum(r["seconds"] for r in history)
        images = sum(r["images"] for r in history)
        summary = {"train_seconds": seconds, "samples_per_s": images / seconds if seconds else 0}
        tracker.log_metrics(summary, step=step)
        metrics: dict[str, float] = {}
        if evaluation.source is not None:
            metrics = _evaluate(trained, evaluation)
            (run_dir / "eval.json").write_text(json.dumps(metrics, indent=2))
            tracker.log_metrics({f"eval/{k}": v for k, v in metrics.items()}, step=step)
            tracker.log_artifact(run_dir / "eval.json")
            logger.info("evaluation: %s", metrics)
        if register_model:
            state["model_version"] = tracker.register_checkpoint(run_dir / MODEL, register_model)
        else:
            tracker.log_artifact(run_dir / MODEL, artifact_path="checkpoint")
        complete = step >= options.steps
        state.update(
            status="complete" if complete else "stopped",
            step=step,
            eval=metrics,
            **summary,
        )
        if complete:
            finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
            state["fingerprint"] = fingerprint
            state.setdefault("history", []).append(
                {"step": step, "fingerprint": fingerprint, "finished_at": finished_at}
            )
        _write_state(run_dir, state)
    return state


def _train(
    *,
    build_model: Callable[[], Any],
    source: ImageSource,
    data_limit: int | None,
    min_mask_area: int = 1,
    options: TrainOptions,
    checkpoint: Path,
    resume: bool,
    workers: int,
    time_limit_s: float | None,
    cluster_address: str | None,
    num_cpus: int | None,
    cpus_per_worker: int,
    use_gpu: bool,
    run_dir: Path,
    resolved_config: dict[str, Any],
    tracker: Tracker,
) -> list[dict[str, Any]]:
    """Run the loop in this process (``workers == 0``) or on Ray Train; per-step records."""
    from engine.train.data import TrainDataset
    from engine.train.loop import train
    from engine.train.steplog import JsonlStepLog, record_to_dict

    step_log = JsonlStepLog(run_dir / STEP_LOG)
    if workers == 0:
        if num_cpus:
            torch.set_num_threads(num_cpus)
        model = build_model()
        img_size = int(model.image_encoder.img_size)
        dataset = TrainDataset.from_source(source, img_size, data_limit, min_area=min_mask_area)

        def on_step(record) -> None:
            step_log(record)
            tracker.log_metrics(
                {"train/" + k: v for k, v in record_to_dict(record).items() if k != "step"},
                step=record.step,
            )

        result = train(
            model,
            dataset,
            options,
            on_step=on_step,
            checkpoint_path=checkpoint,
            resume=resume,
            config=resolved_config,
            time_limit_s=time_limit_s,
        )
        return [record_to_dict(r) for r in result.history]
    from workers.cluster import local_cluster
    from workers.trainer import fit_distributed

    img_size = int(build_model().image_encoder.img_size)
    started = time.perf_counter()
    with local_cluster(cluster_address, num_cpus=num_cpus):
        result = fit_distributed(
            build_model,
            partial(TrainDataset.from_source, source, img_size, data_limit, min_area=min_mask_area),
            options,
            checkpoint,
            resume=resume,
            config=resolved_config,
            num_workers=workers,
            use_gpu=use_gpu,
            cpus_per_worker=cpus_per_worker,
            on_step=step_log,
            storage_path=run_dir / "ray",
            time_limit_s=time_limit_s,
        )
    logger.info("Ray Train fit: %d steps in %.0f s", result.step, time.perf_counter() - started)
    for record in result.history:
        tracker.log_metrics(
            {"train/" + k: v for k, v in record.items() if k != "step"}, step=record["step"]
        )
    return result.history


def _evaluate(model, evaluation: EvalSettings) -> dict[str, float]:
    from engine.model import SamPredictor
    from engine.train.evaluate import evaluate_interactive

    model.eval()
    items = iter_items(evaluation.source, limit=evaluation.images)
    metrics = evaluate_interactive(
        SamPredictor(model),
        items,
        max_clicks=evaluation.max_clicks,
        max_objects_per_image=evaluation.max_objects_per_image,
    )
    return metrics.as_dict()
