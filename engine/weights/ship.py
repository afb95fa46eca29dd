"""Copy a finished ``sa-engine train`` run into the package as a bundled checkpoint.

    python -m engine.weights.ship RUN_DIR NAME [OVERRIDE ...]

(OVERRIDE: the Hydra overrides the run was started with) writes ``engine/weights/NAME.pt``
(the run's weights-only ``checkpoints/model.pt``),
``NAME.yaml`` (its resolved config) and ``NAME.json`` (provenance: command, SHA-256, steps,
training seconds, evaluation). ``make weights`` rebuilds ``mobile_public`` this way.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

from engine.weights import WEIGHTS_DIR


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ship(run_dir: Path, name: str, overrides: list[str] | None = None) -> dict:
    """Copy the run's model and config next to this module; returns the provenance record."""
    overrides = list(overrides or [])
    state = json.loads((run_dir / "state.json").read_text())
    if state.get("status") not in ("complete", "stopped"):
        raise ValueError(f"{run_dir}: the run has not finished (status {state.get('status')!r})")
    target = WEIGHTS_DIR / f"{name}.pt"
    shutil.copyfile(run_dir / "checkpoints" / "model.pt", target)
    shutil.copyfile(run_dir / "config.yaml", WEIGHTS_DIR / f"{name}.yaml")
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
    (WEIGHTS_DIR / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    print(json.dumps(ship(Path(sys.argv[1]), sys.argv[2], sys.argv[3:]), indent=2))
