"""Checkpoints shipped with the package, each rebuilt by one documented command.

``mobile_public``: the ``mobile`` preset trained by ``sa-engine train`` (the committed
``configs/train_job.yaml`` and its seed) on the synthetic ``public`` split, in three runs (the
second and third continue from the file shipped before them; ``make weights``). Next to each
``NAME.pt`` lie ``NAME.yaml`` (the resolved config that trained it) and ``NAME.json`` (its
provenance: the command, the file's SHA-256, steps, seconds and the evaluation). Config
values ``bundled:NAME`` name them (``model.checkpoint=bundled:mobile_public``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).resolve().parent
PREFIX = "bundled:"


def bundled_names() -> list[str]:
    """Names of the shipped checkpoints."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))


def resolve_checkpoint(value: str) -> str:
    """``bundled:NAME`` → the shipped file's path; any other value is returned as it is."""
    if not value.startswith(PREFIX):
        return value
    name = value[len(PREFIX) :]
    path = WEIGHTS_DIR / f"{name}.pt"
    if not path.is_file():
        raise ValueError(f"no bundled checkpoint {name!r}; shipped: {bundled_names()}")
    return str(path)


def provenance(name: str) -> dict[str, Any]:
    """The provenance record of a shipped checkpoint."""
    return json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
