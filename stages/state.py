"""The run's state file: what is finished, so the same command re-run resumes.

``state.json`` in the run directory is rewritten atomically (temp file, fsync, rename) after
every step that finishes something: the initial model, each round's annotation, each
round's retraining. Images written within an unfinished round are found from the Parquet index
(``engine.dataset.written_keys``), not from this file.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.dataset import atomic

STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass
class RoundState:
    """One round of one stage: its planned images, and how far it got."""

    stage: str
    round: int
    prefix: str  # shard/checkpoint prefix, e.g. "stage1-r00"
    keys: list[str]
    annotated: bool = False  # every planned image is written (or quarantined)
    checkpoint: str | None = None  # relative to the run dir; set once retraining finished
    summary: dict = field(default_factory=dict)  # RoundSummary as JSON
    mlflow_run_id: str | None = None


@dataclass
class RunState:
    """Everything ``state.json`` records."""

    config_digest: str
    initial_checkpoint: str | None = None
    initial_metrics: dict = field(default_factory=dict)
    rounds: list[RoundState] = field(default_factory=list)
    mlflow_run_id: str | None = None
    model_version: str | None = None  # registered-model version of the final checkpoint
    finished: bool = False
    version: int = STATE_VERSION

    def round(self, prefix: str) -> RoundState | None:
        for state in self.rounds:
            if state.prefix == prefix:
                return state
        return None

    def latest_checkpoint_before(self, prefix: str) -> str | None:
        """The model a round starts from: the newest checkpoint of an earlier round."""
        latest = self.initial_checkpoint
        for state in self.rounds:
            if state.prefix == prefix:
                break
            if state.checkpoint:
                latest = state.checkpoint
        return latest

    def latest_checkpoint(self) -> str | None:
        """The newest finished checkpoint (a round's retraining, else the initial model)."""
        for state in reversed(self.rounds):
            if state.checkpoint:
                return state.checkpoint
        return self.initial_checkpoint


def load_state(run_dir: str | Path) -> RunState | None:
    """Read ``state.json``; ``None`` for a new run. Raises ``ValueError`` if it is corrupt."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        rounds = [RoundState(**r) for r in data.pop("rounds", [])]
        state = RunState(**data, rounds=rounds)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{path} is not a valid sa-engine state file: {exc}") from exc
    if state.version != STATE_VERSION:
        raise ValueError(f"{path}: state version {state.version}, expected {STATE_VERSION}")
    return state


def save_state(run_dir: str | Path, state: RunState) -> None:
    """Write ``state.json`` atomically."""
    path = Path(run_dir) / STATE_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as handle:
            json.dump(asdict(state), handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        atomic.fsync_dir(path.parent)
    except OSError as exc:  # a full disk fails in write() with no file name: add it
        atomic.remove_quietly(tmp)
        raise atomic.DatasetWriteError(f"cannot write {path}: {exc}") from exc
