"""``build_sam``: a preset name (or preset dict) and an optional checkpoint → a SAM model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.model.checkpoint import load_checkpoint
from engine.model.presets import PRESETS, construct_sam, resolve_preset
from engine.model.sam import Sam

__all__ = ["PRESETS", "build_sam"]


def build_sam(
    name: str | Mapping[str, Any],
    checkpoint: str | Path | None = None,
    *,
    drop_path_rate: float = 0.0,
) -> Sam:
    """Build a SAM from a :data:`PRESETS` name (or a full preset dict), in eval mode.

    ``checkpoint`` (optional) is loaded strictly and safely (see :func:`load_checkpoint`);
    official files such as ``sam_vit_h_4b8939.pth`` load into the matching preset.
    ``drop_path_rate`` sets stochastic depth for training (no effect in eval mode).
    """
    model = construct_sam(resolve_preset(name), drop_path_rate=drop_path_rate)
    model.eval()
    if checkpoint is not None:
        load_checkpoint(checkpoint, model)
    return model
