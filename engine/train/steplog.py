"""Per-step training records as JSON lines (``train_log.jsonl`` in a run directory).

``JsonlStepLog(path)`` is a picklable ``on_step`` callback (it can run inside a Ray Train
worker): each call appends one line ``{"step", "lr", "grad_norm", "seconds", "images",
"loss", "focal", "dice", "iou_mse", "iou_first", "iou_last", "masks"}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.train.loop import StepRecord


def record_to_dict(record: StepRecord) -> dict[str, Any]:
    """A flat dict of one step's numbers."""
    return {
        "step": record.step,
        "lr": record.lr,
        "grad_norm": record.grad_norm,
        "seconds": record.seconds,
        "images": record.images,
        **record.stats,
    }


class JsonlStepLog:
    """Append each ``StepRecord`` to ``path`` as one JSON line (rank 0 only).

    A relative ``path`` is resolved here, in the caller's directory: Ray workers run elsewhere.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()

    def __call__(self, record: StepRecord) -> None:
        if record.rank != 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record_to_dict(record)) + "\n")


def read_step_log(path: str | Path) -> list[dict[str, Any]]:
    """All records of a step log (an absent file is an empty log)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def truncate_step_log(path: str | Path, last_step: int) -> None:
    """Drop records after ``last_step`` (steps redone when a run resumes from a checkpoint)."""
    path = Path(path)
    records = [r for r in read_step_log(path) if r["step"] <= last_step]
    if path.exists():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        tmp.replace(path)
