"""MLflow tracking: the one module that imports ``mlflow``.

The embedded default is a sqlite store shared by every local run under one runs root
(``<runs_root>/mlflow.db``, artifacts in ``<runs_root>/mlartifacts``) so the MLflow UI compares
runs; any tracking URI (an ``http://`` server, ``databricks``…) can be given instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value is 6000 characters


def local_tracking_uri(runs_root: str | Path) -> str:
    """The embedded default store: ``sqlite:///<runs_root>/mlflow.db``."""
    root = Path(runs_root).resolve()
    return f"sqlite:///{root / 'mlflow.db'}"


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` → ``{"a.b": "1"}``; lists/None become JSON text, long values cut."""
    flat: dict[str, str] = {}
    for name, value in params.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{key}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[key] = text[:MAX_PARAM_LENGTH]
    return flat


class Tracker:
    """A thin, explicit wrapper over MLflow runs.

    ``Tracker(tracking_uri, experiment)``; ``with tracker.run("name"):`` starts a run (nested
    when one is already active); the ``log_*`` methods log to the active run. With
    ``enabled=False`` every call is a no-op (for library use without tracking).
    """

    def __init__(
        self,
        tracking_uri: str | None,
        experiment: str,
        artifact_location: str | Path | None = None,
        enabled: bool = True,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.enabled = enabled
        self._experiment_id: str | None = None

    @classmethod
    def local(cls, runs_root: str | Path, experiment: str) -> Tracker:
        """The embedded default: sqlite store and artifacts under ``runs_root``."""
        root = Path(runs_root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return cls(local_tracking_uri(root), experiment, artifact_location=root / "mlartifacts")

    def _setup(self) -> str:
        import mlflow

        if self._experiment_id is None:
            if self.tracking_uri:
                mlflow.set_tracking_uri(self.tracking_uri)
            client = mlflow.MlflowClient()
            found = client.get_experiment_by_name(self.experiment)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                location = None
                if self.artifact_location is not None:
                    location = Path(self.artifact_location).resolve().as_uri()
                self._experiment_id = client.create_experiment(
                    self.experiment, artifact_location=location
                )
        return self._experiment_id

    @contextlib.contextmanager
    def run(
        self, name: str, tags: Mapping[str, str] | None = None, run_id: str | None = None
    ) -> Iterator[str | None]:
        """Start (or, with ``run_id``, resume) a run; nested if another is active."""
        if not self.enabled:
            yield None
            return
        import mlflow

        experiment_id = self._setup()
        nested = mlflow.active_run() is not None
        with mlflow.start_run(
            run_id=run_id,
            run_name=None if run_id else name,
            experiment_id=experiment_id,
            nested=nested,
            tags=dict(tags or {}),
        ) as active:
            yield active.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_params(flatten_params(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.enabled:
            import mlflow

            clean = {k: float(v) for k, v in metrics.items() if v is not None}
            mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_dict(dict(data), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.enabled:
            import mlflow

            mlflow.log_text(text, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Log a matplotlib figure (e.g. ``plots/iou_hist.png``)."""
        if self.enabled:
            import mlflow

            mlflow.log_figure(figure, artifact_file)

    def log_table(self, data: Mapping[str, list] | Any, artifact_file: str) -> None:
        """Log a column dict or DataFrame as an MLflow table (``*.json``)."""
        if self.enabled:
            import mlflow

            mlflow.log_table(data, artifact_file=artifact_file)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.enabled:
            import mlflow

            mlflow.set_tags(dict(tags))

    def register_checkpoint(self, checkpoint: str | Path, model_name: str) -> str | None:
        """Log a checkpoint file and register it as a new version of ``model_name``.

        Returns the version string (``None`` when tracking is disabled).
        """
        if not self.enabled:
            return None
        import mlflow

        run = mlflow.active_run()
        if run is None:
            raise RuntimeError("register_checkpoint needs an active run: call inside run()")
        mlflow.log_artifact(str(checkpoint), artifact_path="checkpoint")
        source = f"runs:/{run.info.run_id}/checkpoint/{Path(checkpoint).name}"
        client = mlflow.MlflowClient()
        with contextlib.suppress(Exception):  # already exists
            client.create_registered_model(model_name)
        version = client.create_model_version(model_name, source, run_id=run.info.run_id)
        return str(version.version)


def read_run_metrics(tracking_uri: str, run_id: str) -> dict[str, float]:
    """Latest value of every metric of a run (used by tests and the summary table)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    return dict(client.get_run(run_id).data.metrics)


def temporary_artifact_dir() -> tempfile.TemporaryDirectory:
    """A scratch directory for files that are logged then discarded."""
    return tempfile.TemporaryDirectory(prefix="sa-engine-artifacts-")
