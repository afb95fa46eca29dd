"""The pipeline driver: for each stage, for each round — annotate, write, retrain, evaluate, log.

It owns the order and the run directory; everything it does is recorded so the same command
re-run resumes: finished rounds are skipped, a half-finished round redoes only the images its
shards do not hold yet (``engine.dataset.written_keys``) or that were quarantined, and an
interrupted retraining continues from its last training checkpoint.

    runs/<name>/config.yaml  state.json  quarantine.jsonl  summary.txt
                shards/stage1-r00-000000.tar …   index/{masks,images}/…parquet
                checkpoints/initial.pt  stage1-r00.pt …   audit/audit.json, audit.html
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine.data.concat import ConcatSource
from engine.data.sources import ImageSource, SourceEntry
from engine.data.webdataset_source import WebDatasetSource
from engine.dataset.quarantine import QuarantineLog, read_quarantine
from engine.dataset.writer import ShardWriter, complete_shards, written_keys
from engine.model import save_checkpoint
from engine.privacy import PrivacyFilter
from engine.progress import progress_bar
from engine.records import QuarantineRecord
from engine.tracking import Tracker
from engine.work import ImageTask, ModelSpec, WorkResult
from stages.retrain import Evaluator, Retrainer, seeded_model
from stages.rounds import RoundPlan, StagePlan, plan_rounds
from stages.state import RoundState, RunState, load_state, save_state
from stages.summary import format_table, round_summary

logger = logging.getLogger("sa_engine.pipeline")


class Pool(Protocol):
    """``engine.work.LocalImagePool`` or ``workers.pool.RayImagePool``."""

    def set_model(self, model: ModelSpec) -> None: ...
    def map(self, entries: list[SourceEntry], task: ImageTask) -> Any: ...
    def close(self) -> None: ...


class RoundAnnotator(Protocol):
    """Produces a round's results when no per-image task fits (e.g. people in the web tool)."""

    def __call__(self, plan: RoundPlan, todo: list[SourceEntry], checkpoint: str | None) -> Any: ...


@dataclass
class InitialModel:
    """Pre-training of the first model on a public split (skipped with a start checkpoint)."""

    source: ImageSource
    steps: int
    num_iterations: int | None = None
    cache_dir: Path | None = None
    cache_key: str = ""


@dataclass
class PipelineSettings:
    """Everything the driver needs, as plain objects (built by ``stages.run_cmd``)."""

    run_dir: Path
    source: ImageSource
    preset: str
    stages: list[StagePlan]
    make_task: Callable[[RoundPlan], ImageTask | RoundAnnotator]
    retrainer: Retrainer
    retrain_steps: int
    tracker: Tracker
    config_digest: str
    config_yaml: str = ""
    params: dict = field(default_factory=dict)
    start_checkpoint: str | None = None
    initial: InitialModel | None = None
    evaluator: Evaluator | None = None
    rehearsal: ImageSource | None = None  # mixed into every retraining
    maxcount: int = 1000
    maxsize: float = 3e9
    jpeg_quality: int = 90
    audit: bool = True
    privacy: PrivacyFilter | None = None  # blurs faces/plates before the writer (None: off)
    audit_reference: object | None = None
    seed: int = 0
    show_progress: bool = True
    register_model: str | None = None  # MLflow registered-model name for the final model


@dataclass
class PipelineResult:
    run_dir: Path
    rounds: list[dict]
    initial: dict
    audit: dict | None
    quarantined: int


class Pipeline:
    """Runs (or resumes) one data-engine run; see the module docstring."""

    def __init__(self, settings: PipelineSettings, pool: Pool) -> None:
        self.s = settings
        self.pool = pool
        self.run_dir = settings.run_dir
        self.shards_dir = self.run_dir / "shards"
        self.index_dir = self.run_dir / "index"
        self.checkpoints_dir = self.run_dir / "checkpoints"
        self.quarantine = QuarantineLog(self.run_dir / "quarantine.jsonl")
        self.state: RunState | None = None

    # ---- the run ---------------------------------------------------------------------------

    def run(self) -> PipelineResult:
        s = self.s
        self.state = self._open_state()
        with s.tracker.run(self.run_dir.name, run_id=self.state.mlflow_run_id) as run_id:
            if self.state.mlflow_run_id is None:
                s.tracker.log_params(s.params)
                s.tracker.log_artifact(self.run_dir / "config.yaml")
                self.state.mlflow_run_id = run_id
                self._save()
            self._initial_model()
            rounds = plan_rounds(list(s.source.entries()), s.stages)
            self._check_plan(rounds)
            summaries = []
            for number, plan in enumerate(rounds):
                summaries.append(self._round(plan, number))
            self._register_model()
            audit = self._audit() if s.audit else None
            table = format_table(summaries, self.state.initial_metrics)
            (self.run_dir / "summary.txt").write_text(table + "\n")
            s.tracker.log_text(table, "summary.txt")
            s.tracker.log_table(
                {k: [row.get(k) for row in summaries] for k in _table_keys(summaries)},
                "rounds.json",
            )
            quarantine_path = self.run_dir / "quarantine.jsonl"
            if quarantine_path.exists():
                s.tracker.log_artifact(quarantine_path)
            quarantined = len(read_quarantine(quarantine_path)) if quarantine_path.exists() else 0
            s.tracker.log_metrics({"quarantined_images": quarantined})
            self.state.finished = True
            self._save()
        return PipelineResult(
            self.run_dir, summaries, self.state.initial_metrics, audit, quarantined
        )

    def _open_state(self) -> RunState:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = load_state(self.run_dir)
        if state is not None and state.config_digest != self.s.config_digest:
            raise ValueError(
                f"{self.run_dir} holds a run with a different config (state.json digest "
                f"{state.config_digest[:12]} != {self.s.config_digest[:12]}); re-run with the "
                "same overrides to resume, or choose another run_dir"
            )
        if state is None:
            state = RunState(config_digest=self.s.config_digest)
            save_state(self.run_dir, state)
        if self.s.config_yaml:
            (self.run_dir / "config.yaml").write_text(self.s.config_yaml)
        return state

    def _save(self) -> None:
        save_state(self.run_dir, self.state)

    def _check_plan(self, rounds: list[RoundPlan]) -> None:
        """A resumed run must plan the same images per round as the first attempt."""
        for plan in rounds:
            known = self.state.round(plan.prefix)
            if known is None:
                self.state.rounds.append(
                    RoundState(plan.stage_name, plan.round, plan.prefix, plan.keys)
                )
            elif known.keys != plan.keys:
                raise ValueError(
                    f"round {plan.prefix} planned different images than the interrupted run: "
                    "the source changed; use a new run_dir"
                )
        self._save()

    # ---- the first model -------------------------------------------------------------------

    def _initial_model(self) -> None:
        s, state = self.s, self.state
        if state.initial_checkpoint is not None:
            return
        target = self.checkpoints_dir / "initial.pt"
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)
        if s.start_checkpoint:
            state.initial_checkpoint = str(Path(s.start_checkpoint).resolve())
        elif s.initial is None:
            save_checkpoint(seeded_model(s.preset, None, s.seed), target)
            state.initial_checkpoint = _relative(target, self.run_dir)
        else:
            cached = self._cached_initial()
            if cached is not None:
                shutil.copyfile(cached, target)
                summary = {"cached": 1.0}
            else:
                self._say(f"training the initial model ({s.initial.steps} steps, public split)")
                summary = s.retrainer.train(
                    s.initial.source,
                    None,
                    self.checkpoints_dir,
                    "initial",
                    steps=s.initial.steps,
                    seed=s.seed,
                    num_iterations=s.initial.num_iterations,
                )
                self._store_initial(target)
            state.initial_checkpoint = _relative(target, self.run_dir)
            state.initial_metrics = dict(summary)
        if s.evaluator is not None:
            self._say("evaluating the initial model")
            metrics = s.evaluator(s.preset, self._path(state.initial_checkpoint))
            state.initial_metrics.update(metrics)
            s.tracker.log_metrics({f"initial/{k}": v for k, v in metrics.items()})
        self._save()

    def _cached_initial(self) -> Path | None:
        initial = self.s.initial
        if initial.cache_dir is None or not initial.cache_key:
            return None
        path = initial.cache_dir / f"initial-{initial.cache_key}.pt"
        return path if path.is_file() else None

    def _store_initial(self, checkpoint: Path) -> None:
        initial = self.s.initial
        if initial.cache_dir is None or not initial.cache_key:
            return
        initial.cache_dir.mkdir(parents=True, exist_ok=True)
        final = initial.cache_dir / f"initial-{initial.cache_key}.pt"
        tmp = final.with_name(f".{final.name}.tmp")
        shutil.copyfile(checkpoint, tmp)
        tmp.replace(final)

    # ---- one round -------------------------------------------------------------------------

    def _round(self, plan: RoundPlan, number: int) -> dict:
        s = self.s
        rs = self.state.round(plan.prefix)
        checkpoint = self._path(self.state.latest_checkpoint_before(plan.prefix))
        if not rs.annotated:
            seconds, processed, extra = self._annotate(plan, checkpoint)
            rs.summary.update(round_summary(self.index_dir, plan.prefix))
            rs.summary.update(extra)
            if processed:
                rs.summary["images_per_s"] = processed / seconds if seconds > 0 else 0.0
            rs.annotated = True
            self._save()
        if plan.retrain and rs.checkpoint is None:
            self.pool.close()  # give the workers' CPUs (and memory) to training
            self._say(f"[{plan.prefix}] retraining ({s.retrain_steps} steps)")
            train_source: ImageSource = WebDatasetSource(
                [str(p) for p in self._training_shards(plan)], max_short_side=None
            )
            if s.rehearsal is not None:
                train_source = ConcatSource([train_source, s.rehearsal])
            offered = sum(1 for _ in train_source.entries())
            summary = s.retrainer.train(
                train_source,
                checkpoint,
                self.checkpoints_dir,
                plan.prefix,
                steps=s.retrain_steps,
                seed=s.seed + 1 + number,
            )
            summary["train_source_images"] = offered
            target = self.checkpoints_dir / f"{plan.prefix}.pt"
            if s.evaluator is not None:
                summary.update(s.evaluator(s.preset, str(target)))
            rs.summary.update(summary)
            rs.checkpoint = _relative(target, self.run_dir)
            self._save()
        if rs.mlflow_run_id is None:
            with s.tracker.run(
                plan.prefix, tags={"stage": plan.stage_name, "round": str(plan.round)}
            ) as run_id:
                s.tracker.log_metrics(rs.summary)
                if rs.checkpoint:
                    s.tracker.log_artifact(self._path(rs.checkpoint), artifact_path="checkpoint")
            s.tracker.log_metrics(
                {f"{plan.stage_name}/{k}": v for k, v in rs.summary.items()}, step=number
            )
            rs.mlflow_run_id = run_id or ""
            self._save()
        return {"round": plan.prefix, **rs.summary}

    def _annotate(self, plan: RoundPlan, checkpoint: str | None) -> tuple[float, int, dict]:
        """Process the round's images not written yet.

        Returns (seconds, images processed, extra round statistics — e.g. the web tool's).
        """
        s = self.s
        done = written_keys(self.shards_dir, plan.prefix) if self.shards_dir.exists() else set()
        done |= self.quarantine.keys
        todo = [e for e in plan.entries if e.key not in done]
        for entry in [e for e in todo if e.error]:
            self.quarantine.add(QuarantineRecord(entry.key, entry.path, entry.error))
        todo = [e for e in todo if not e.error]
        if not todo:
            return 0.0, 0, {}
        self._say(f"[{plan.prefix}] {plan.stage_name}: {len(todo)} images")
        task = s.make_task(plan)
        started = time.perf_counter()
        with ShardWriter(
            self.shards_dir,
            self.index_dir,
            plan.prefix,
            maxcount=s.maxcount,
            maxsize=s.maxsize,
            jpeg_quality=s.jpeg_quality,
            stage=plan.stage_name,
            round=plan.round,
        ) as writer:
            if hasattr(task, "annotate_round"):
                results = task.annotate_round(plan, todo, checkpoint)
            else:
                self.pool.set_model(ModelSpec(s.preset, checkpoint))
                results = self.pool.map(todo, task)
            enabled = None if s.show_progress else False
            with progress_bar(len(todo), plan.prefix, unit="img", enabled=enabled) as bar:
                quarantined = 0
                for result in results:  # as the workers' results come back, in order
                    self._write(writer, result)
                    quarantined += result.quarantine is not None
                    bar.set_postfix(quarantined=quarantined, refresh=False)
                    bar.update(1)
        extra = task.round_stats(plan) if hasattr(task, "round_stats") else {}
        return time.perf_counter() - started, len(todo), extra

    def _write(self, writer: ShardWriter, result: WorkResult) -> None:
        if result.quarantine is not None:
            self.quarantine.add(result.quarantine)
            logger.warning("quarantined %s: %s", result.key, result.quarantine.reason)
        elif self.s.privacy is None:
            writer.write(result.key, result.image, result.record)
        else:  # the JPEG in the shard (and so retraining and the release) is the blurred one
            image, boxes = self.s.privacy(result.image)
            writer.write(result.key, image, result.record, blurred_boxes=len(boxes))

    def _training_shards(self, plan: RoundPlan) -> list[Path]:
        """Shards of every human-annotated round so far (stages 1–2, up to this round)."""
        shards = []
        for rs in self.state.rounds:
            if not rs.prefix.startswith(("stage1-", "stage2-")):
                continue
            shards.extend(sorted(complete_shards(self.shards_dir, rs.prefix).values()))
            if rs.prefix == plan.prefix:
                break
        if not shards:
            raise ValueError(f"no shard to retrain on after round {plan.prefix}")
        return shards

    # ---- the end ---------------------------------------------------------------------------

    def _register_model(self) -> None:
        """The run's final checkpoint becomes a version of ``register_model`` (once)."""
        s, state = self.s, self.state
        if not s.register_model or state.model_version is not None:
            return
        final = self._path(state.latest_checkpoint())
        version = s.tracker.register_checkpoint(final, s.register_model)
        if version is not None:
            self._say(f"registered {Path(final).name} as {s.register_model} version {version}")
            state.model_version = version
            self._save()

    def _audit(self) -> dict:
        from engine.audit.run import run_audit

        self._say("auditing the dataset")
        return run_audit(
            self.run_dir,
            reference=self.s.audit_reference,
            out_dir=self.run_dir / "audit",
            tracker=self.s.tracker,
        )

    # ---- helpers ---------------------------------------------------------------------------

    def _path(self, stored: str | None) -> str | None:
        if stored is None:
            return None
        path = Path(stored)
        return str(path if path.is_absolute() else self.run_dir / path)

    def _say(self, message: str) -> None:
        """Print progress messages; log them instead when progress output is off."""
        if self.s.show_progress:
            print(message, flush=True)
        else:
            logger.info(message)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path.resolve())


def _table_keys(rows: list[dict]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    return keys
