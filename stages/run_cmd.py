"""``sa-engine run``: the three-stage data engine (the default command).

    sa-engine run                                   # embedded defaults: synthetic, tiny, local
    sa-engine run name=coco data=coco data.path=... data.annotations=...
    sa-engine run -m stages.accept_iou=0.85,0.9     # a sweep: one run directory per job

The composed config is validated and every object the run needs is built (model presets,
checkpoint files, thresholds, the run directory, the Ray cluster) before any image is
touched; a bad value fails with a message naming the key. Re-running the same command
resumes the run in its run directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.annotators.simulated import CostModel, SimulatedAnnotator
from engine.data.concat import FirstEntries
from engine.data.sources import ImageSource
from engine.tracking import Tracker
from engine.train.loop import TrainOptions
from engine.weights import resolve_checkpoint
from stages.pipeline import InitialModel, Pipeline, PipelineSettings
from stages.retrain import Evaluator, Retrainer
from stages.round_tasks import TaskFactory
from stages.rounds import StagePlan
from stages.run_config import ANNOTATORS, PrivacyConfig, RunConfig

logger = logging.getLogger("sa_engine.run")


class RunConfigError(ValueError):
    """A config value that cannot work; the message names the key."""


def main(argv: list[str]) -> int:
    """Entry point (``stages.cli``): Hydra parses ``argv`` (overrides, ``-m``, ``--cfg``…)."""
    from stages import hydra_app

    sys.argv = [f"{Path(sys.argv[0]).name} run", *argv]
    return hydra_app.run_app() or 0


def execute(cfg: RunConfig, resolved: dict[str, Any], config_yaml: str, run_dir: Path) -> int:
    """Validate, build and run one pipeline (called by the Hydra app for each job)."""
    try:
        settings, cluster = build_settings(cfg, resolved, config_yaml, run_dir)
    except (RunConfigError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"sa-engine run: config error: {exc}", file=sys.stderr)
        return 2
    return run_with_cluster(settings, cfg, cluster)


def run_with_cluster(settings: PipelineSettings, cfg: RunConfig, cluster: dict) -> int:
    """Start (or join) Ray if workers are asked for, run the pipeline, print the summary."""
    from engine.work import LocalImagePool, ModelSpec

    started_ray = False
    try:
        if cluster["use_ray"]:
            from workers.cluster import start_cluster
            from workers.pool import RayImagePool

            try:
                started_ray = start_cluster(cluster["address"] or None, cluster["num_cpus"])
            except Exception as exc:  # ConnectionError, TimeoutError, RuntimeError from Ray
                where = cluster["address"] or "a local cluster"
                print(f"sa-engine run: cannot start Ray on {where}: {exc}", file=sys.stderr)
                return 2
            pool = RayImagePool(
                settings.source,
                ModelSpec(settings.preset),
                num_workers=cfg.cluster.workers,
                cpus_per_worker=cfg.cluster.cpus_per_worker,
                gpus_per_worker=cfg.cluster.gpus_per_worker,
                torch_threads=cfg.cluster.cpus_per_worker,
                max_restarts=cfg.cluster.max_restarts,
                max_task_retries=cfg.cluster.max_task_retries,
            )
        else:
            pool = LocalImagePool(settings.source, ModelSpec(settings.preset))
        try:
            result = Pipeline(settings, pool).run()
        except OSError as exc:  # a full or read-only disk: the message names the file
            print(f"sa-engine run: stopped by an I/O error: {exc}", file=sys.stderr)
            print(
                f"sa-engine run: {settings.run_dir} is resumable: fix the cause and re-run "
                "the same command",
                file=sys.stderr,
            )
            return 1
        finally:
            pool.close()
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    print_report(result, settings)
    return 0


def print_report(result, settings: PipelineSettings) -> None:
    print()
    print((settings.run_dir / "summary.txt").read_text())
    print(f"run directory: {result.run_dir}")
    print(f"shards:        {result.run_dir / 'shards'}")
    print(f"index:         {result.run_dir / 'index'} (Parquet: masks/, images/)")
    print(f"quarantined:   {result.quarantined} image(s) (quarantine.jsonl)")
    if result.audit is not None:
        print(f"audit:         {result.run_dir / 'audit' / 'audit.html'}")
        above = result.audit.get("iou_above")
        recall = result.audit.get("recall")
        if above:
            print(f"               matched IoU above 0.50/0.75/0.90: {_shares(above)}")
        if recall:
            print(f"               reference recall at 0.50/0.75/0.90: {_shares(recall)}")
    tracker = settings.tracker
    if tracker.enabled and tracker.tracking_uri:
        print(f"MLflow UI:     mlflow ui --backend-store-uri {tracker.tracking_uri}")


def _shares(values: dict) -> str:
    return " / ".join(f"{float(values[k]):.0%}" for k in ("0.50", "0.75", "0.90") if k in values)


# ---- config → plain objects ---------------------------------------------------------------


def build_settings(
    cfg: RunConfig, resolved: dict[str, Any], config_yaml: str, run_dir: Path
) -> tuple[PipelineSettings, dict]:
    """Check every value and build the pipeline's objects; raises ``RunConfigError``."""
    from engine.model import PRESETS

    if cfg.model.preset not in PRESETS:
        raise RunConfigError(
            f"model.preset={cfg.model.preset!r} is not a preset; choose one of {sorted(PRESETS)}"
        )
    checkpoint = cfg.model.checkpoint or None
    if checkpoint is not None:
        try:
            checkpoint = resolve_checkpoint(checkpoint)
        except ValueError as exc:
            raise RunConfigError(f"model.checkpoint: {exc}") from exc
        _check_checkpoint(cfg.model.preset, checkpoint)
    stages = cfg.stages
    if stages.annotator not in ANNOTATORS:
        raise RunConfigError(
            f"stages.annotator must be one of {ANNOTATORS}, got {stages.annotator!r}"
        )
    if stages.annotator == "coco" and not Path(stages.annotations).is_file():
        raise RunConfigError(f"stages.annotations: COCO file not found: {stages.annotations!r}")
    _check_writable(run_dir)
    try:
        annotator = SimulatedAnnotator(
            accept_iou=stages.accept_iou,
            max_clicks=stages.max_clicks,
            cost=CostModel(**asdict(stages.cost)),
            min_area=stages.min_area,
        )
    except ValueError as exc:
        raise RunConfigError(f"stages: {exc}") from exc
    plans = _stage_plans(cfg)
    factory = TaskFactory(annotator, stages, run_dir, cfg.data, cfg.model.preset)
    factory.check()
    source = _open(cfg.data, "data")
    train = cfg.train
    options = _train_options(cfg)
    retrainer = Retrainer(
        preset=cfg.model.preset,
        options=options,
        drop_path=train.drop_path,
        workers=train.workers,
        cpus_per_worker=cfg.cluster.cpus_per_worker,
        use_gpu=cfg.cluster.gpus_per_worker > 0,
        min_mask_area=train.min_mask_area,
        time_limit_s=train.time_limit_s,
    )
    if train.time_limit_s is not None and train.time_limit_s < 0:
        raise RunConfigError(f"train.time_limit_s must be >= 0 or null, got {train.time_limit_s}")
    initial = None
    if cfg.initial.enabled and checkpoint is None:
        if cfg.initial.steps < 1:
            raise RunConfigError(f"initial.steps must be >= 1, got {cfg.initial.steps}")
        if cfg.initial.num_iterations is not None and cfg.initial.num_iterations < 1:
            raise RunConfigError(
                f"initial.num_iterations must be >= 1, got {cfg.initial.num_iterations}"
            )
        spec = {  # from the resolved dict: the cache key is no read of the keys it digests
            "preset": cfg.model.preset,
            "data": resolved["initial"]["data"],
            "steps": cfg.initial.steps,
            "num_iterations": cfg.initial.num_iterations,
            "seed": cfg.seed,
            "train": resolved["train"],
        }
        initial = InitialModel(
            source=_open(cfg.initial.data, "initial.data"),
            steps=cfg.initial.steps,
            num_iterations=cfg.initial.num_iterations,
            cache_dir=Path(cfg.runs_root) / "cache" if cfg.initial.cache else None,
            cache_key=_digest(spec)[:16],
        )
    if cfg.initial.rehearsal_images < 0:
        raise RunConfigError(
            f"initial.rehearsal_images must be >= 0, got {cfg.initial.rehearsal_images}"
        )
    rehearsal = None
    if cfg.initial.rehearsal_images > 0:
        public = initial.source if initial is not None else _open(cfg.initial.data, "initial.data")
        rehearsal = FirstEntries(public, cfg.initial.rehearsal_images)
    evaluator = None
    if cfg.eval.enabled:
        if cfg.eval.images < 1 or cfg.eval.max_clicks < 5:
            raise RunConfigError("eval.images must be >= 1 and eval.max_clicks >= 5")
        evaluator = Evaluator(
            _open(cfg.eval.data, "eval.data"),
            images=cfg.eval.images,
            max_clicks=cfg.eval.max_clicks,
            max_objects_per_image=cfg.eval.max_objects_per_image,
        )
    tracker = _tracker(cfg)
    if cfg.cluster.workers < 0 or cfg.cluster.cpus_per_worker < 1:
        raise RunConfigError("cluster.workers must be >= 0 and cluster.cpus_per_worker >= 1")
    if cfg.cluster.max_restarts < -1 or cfg.cluster.max_task_retries < -1:
        raise RunConfigError(
            "cluster.max_restarts and cluster.max_task_retries must be >= 0 (-1: unlimited), "
            f"got {cfg.cluster.max_restarts} and {cfg.cluster.max_task_retries}"
        )
    if cfg.output.maxcount < 1 or not 1 <= cfg.output.jpeg_quality <= 100:
        raise RunConfigError("output.maxcount must be >= 1 and output.jpeg_quality in 1..100")
    settings = PipelineSettings(
        run_dir=run_dir,
        source=source,
        preset=cfg.model.preset,
        stages=plans,
        make_task=factory,
        retrainer=retrainer,
        retrain_steps=train.steps,
        tracker=tracker,
        config_digest=_digest(resolved),
        config_yaml=config_yaml,
        params=resolved,
        start_checkpoint=checkpoint,
        initial=initial,
        evaluator=evaluator,
        rehearsal=rehearsal,
        maxcount=cfg.output.maxcount,
        maxsize=cfg.output.maxsize,
        jpeg_quality=cfg.output.jpeg_quality,
        audit=cfg.output.audit,
        privacy=privacy_filter(cfg.privacy),
        audit_reference=_audit_reference(source),
        seed=cfg.seed,
        register_model=cfg.tracking.register_model or None,
    )
    cluster = {
        "use_ray": cfg.cluster.workers > 0 or train.workers > 0,
        "address": cfg.cluster.address,
        "num_cpus": cfg.cluster.num_cpus,
    }
    return settings, cluster


def privacy_filter(privacy: PrivacyConfig):
    """The ``PrivacyFilter`` of ``privacy`` (None when disabled); every value is checked."""
    from engine.privacy import HaarDetector, PrivacyFilter

    values = asdict(privacy)
    enabled = values.pop("enabled")
    strength, padding = values.pop("blur_strength"), values.pop("padding")
    try:  # checked even when disabled, so enabling it later cannot fail mid-run
        HaarDetector.check_arguments(**values)
        if not strength > 0:
            raise ValueError(f"blur_strength must be > 0, got {strength}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        if not enabled:
            return None
        detector = HaarDetector(**values)
    except (ValueError, TypeError) as exc:
        raise RunConfigError(f"privacy: {exc}") from exc
    except (ImportError, RuntimeError) as exc:
        raise RunConfigError(f"privacy: {exc} (or set privacy.enabled=false)") from exc
    return PrivacyFilter([detector], strength, padding)


def _stage_plans(cfg: RunConfig) -> list[StagePlan]:
    stages = cfg.stages
    try:
        return [
            StagePlan(
                1,
                stages.assisted_manual.rounds,
                stages.assisted_manual.images_per_round,
                stages.assisted_manual.retrain,
            ),
            StagePlan(
                2,
                stages.semi_automatic.rounds,
                stages.semi_automatic.images_per_round,
                stages.semi_automatic.retrain,
            ),
            StagePlan(3, 1, stages.fully_automatic.images, False),
        ]
    except ValueError as exc:
        raise RunConfigError(f"stages: {exc}") from exc


def _train_options(cfg: RunConfig) -> TrainOptions:
    t = cfg.train
    try:
        return t.options()
    except ValueError as exc:
        raise RunConfigError(f"train: {exc}") from exc


def _open(data_cfg, key: str) -> ImageSource:
    try:
        return data_cfg.open()
    except (ValueError, TypeError, FileNotFoundError, OSError) as exc:
        raise RunConfigError(f"{key}: {exc}") from exc


def _check_checkpoint(preset: str, checkpoint: str) -> None:
    from engine.model import build_sam

    if not Path(checkpoint).is_file():
        raise RunConfigError(f"model.checkpoint: file not found: {checkpoint}")
    try:
        build_sam(preset, checkpoint)
    except Exception as exc:  # shape/key mismatch names the preset that would fit
        if isinstance(exc.__cause__, pickle.UnpicklingError):  # not weights: refused unread
            raise RunConfigError(f"model.checkpoint: {exc}") from exc
        raise RunConfigError(
            f"model.checkpoint {checkpoint} does not fit model.preset={preset}: {exc}"
        ) from exc


def _check_writable(run_dir: Path) -> None:
    probe = run_dir / ".write-probe"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise RunConfigError(f"run_dir {run_dir} is not writable: {exc}") from exc


def _tracker(cfg: RunConfig) -> Tracker:
    t = cfg.tracking
    if not t.enabled:
        return Tracker(None, t.experiment, enabled=False)
    if t.uri:
        return Tracker(t.uri, t.experiment)
    return Tracker.local(cfg.runs_root, t.experiment)


def _audit_reference(source: ImageSource) -> object | None:
    """Reference masks for the audit come from the source when it has them."""
    from engine.audit.reference import SourceReference
    from engine.data.folder import FolderSource

    return None if isinstance(source, FolderSource) else SourceReference(source)


def _digest(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
