"""Copy a finished ``sa-engine train`` run into the package as a bundled checkpoint.

    python -m engine.weights.ship RUN_DIR NAME [--continued] [OVERRIDE ...]

(OVERRIDE: the Hydra overrides the run was started with) writes ``engine/weights/NAME.pt``
(the run's weights-only ``checkpoints/model.pt``),
``NAME.yaml`` (its resolved config) and ``NAME.json`` (provenance: command, SHA-256, steps,
training seconds, evaluation). ``--continued``: the run started from the shipped ``NAME``
itself (``model.checkpoint=bundled:NAME``); the record keeps the one it replaces as its
``start``, so the chain of commands that made the file stays written down. ``make weights``
rebuilds ``mobile_public`` this way.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

from engine.weights import PREFIX, WEIGHTS_DIR


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ship(
    run_dir: Path,
    name: str,
    overrides: list[str] | None = None,
    continued: bool = False,
    weights_dir: Path = WEIGHTS_DIR,
) -> dict:
    """Copy the run's model and config into ``weights_dir``; returns the provenance record."""
    overrides = list(overrides or [])
    state = json.loads((run_dir / "state.json").read_text())
    if state.get("status") not in ("complete", "stopped"):
        raise ValueError(f"{run_dir}: the run has not finished (status {state.get('status')!r})")
    start = _start_record(name, overrides, weights_dir) if continued else None
    target = weights_dir / f"{name}.pt"
    shutil.copyfile(run_dir / "checkpoints" / "model.pt", target)
    shutil.copyfile(run_dir / "config.yaml", weights_dir / f"{name}.yaml")
    record = {
        "name": name,
        "command": " ".join(["sa-engine train", *overrides]),
        "overrides": overrides,
        "sha256": sha256(target),
        "bytes": target.stat().st_size,
        "step": state.get("step"),
        "train_seconds": state.get("train_seconds"),
        "eval": state.get("eval", {}),
    }
    if start is not None:
        record["start"] = start
    (weights_dir / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _start_record(name: str, overrides: list[str], weights_dir: Path) -> dict:
    """The record of the shipped ``name`` a continued run started from (checked unchanged)."""
    expected = f"model.checkpoint={PREFIX}{name}"
    if expected not in overrides:
        raise ValueError(f"a continued run must have started from {expected!r}: {overrides}")
    start = json.loads((weights_dir / f"{name}.json").read_text())
    if sha256(weights_dir / f"{name}.pt") != start["sha256"]:
        raise ValueError(f"{name}.pt no longer matches {name}.json: cannot record it as the start")
    return start


if __name__ == "__main__":
    args = sys.argv[1:]
    continued = "--continued" in args
    args = [a for a in args if a != "--continued"]
    if len(args) < 2:
        sys.exit(__doc__)
    record = ship(Path(args[0]), args[1], args[2:], continued=continued)
    print(json.dumps(record, indent=2))
