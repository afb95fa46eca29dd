"""What ``sa-engine train`` does with a run directory: train, resume, retrain, or nothing.

A run trains in *segments*. A segment starts at step ``start`` and ends at
``start + train.steps``; the first starts at 0. ``plan_segment`` reads the run's
``state.json`` dict, the step of its checkpoint and the fingerprint of the data now:

- unfinished (no state, ``training``, ``stopped``) or finished short of the segment's end
  (``train.steps`` raised): train the current segment to its end (exact resume);
- finished, and the data changed since (new shards): a new segment from the checkpoint's
  step, for another ``train.steps`` steps, on all the data now;
- finished, data unchanged: nothing (``None``, with the reason). A finished run that
  recorded no fingerprint (older runs) counts as unchanged; the fingerprint seen now is
  recorded so the next change retrains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.data.fingerprint import same_data


@dataclass(frozen=True)
class Segment:
    """Train from ``done_step`` to ``target`` with the lr schedule starting at ``start``."""

    start: int
    target: int
    done_step: int
    retrain: bool  # a new segment on changed data


def plan_segment(
    state: dict[str, Any], done_step: int, steps: int, fingerprint: dict[str, Any]
) -> tuple[Segment | None, str]:
    """The segment to train now (``None``: nothing to do) and why, as a log line."""
    start = int(state.get("segment_start", 0))
    target = start + steps
    if state.get("status") != "complete" or done_step < target:
        return Segment(start, target, done_step, retrain=False), "training"
    recorded = state.get("fingerprint")
    if recorded is None:
        return None, "recorded no data fingerprint (recording it now); nothing to do"
    if same_data(recorded, fingerprint):
        data = f"{recorded['count']} {recorded['kind']}"
        return None, f"its data ({data}) has not changed; nothing to do"
    change = f"{recorded['count']} → {fingerprint['count']} {fingerprint['kind']}"
    segment = Segment(done_step, done_step + steps, done_step, retrain=True)
    return segment, f"data changed ({change})"
