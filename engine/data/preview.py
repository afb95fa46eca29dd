"""Pictures of reference masks: an image beside its masks at each granularity level.

Used for docs/images/synthetic_*.png (``benchmarks/synthetic.py --samples DIR``) and handy
when looking at any source's references.
"""

from __future__ import annotations

import numpy as np

from engine.masks import rle_to_mask
from engine.records import LEVEL_NAMES, LEVEL_PART, LEVEL_SUBPART, LEVEL_WHOLE, ReferenceMask


def overlay_masks(
    image: np.ndarray, masks: list[np.ndarray], alpha: float = 0.6, seed: int = 0
) -> np.ndarray:
    """``H×W×3`` uint8: ``image`` dimmed, each ``H×W`` mask tinted in its own colour with a
    white outline; larger masks are drawn first so that small ones stay visible."""
    out = image.astype(np.float32) * 0.45
    rng = np.random.default_rng(seed)
    colors = rng.uniform(60, 255, (len(masks), 3)).astype(np.float32)
    order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))
    for i in order:
        mask = masks[i].astype(bool)
        out[mask] = out[mask] * (1 - alpha) + colors[i] * alpha
        edge = mask & ~_eroded(mask)
        out[edge] = 255.0
    return np.clip(out, 0, 255).astype(np.uint8)


def level_panels(image: np.ndarray, references: list[ReferenceMask], gap: int = 4) -> np.ndarray:
    """One row: the image, then its whole, part and sub-part masks (``H×(4W+3·gap)×3``)."""
    panels = [image]
    for level in (LEVEL_WHOLE, LEVEL_PART, LEVEL_SUBPART):
        masks = [rle_to_mask(r.rle) for r in references if r.level == level]
        panels.append(overlay_masks(image, masks, seed=level))
    spacer = np.full((image.shape[0], gap, 3), 255, dtype=np.uint8)
    row = []
    for panel in panels:
        row.extend([panel, spacer])
    return np.concatenate(row[:-1], axis=1)


def level_counts(references: list[ReferenceMask]) -> dict[str, int]:
    """How many references per level name (``whole``/``part``/``subpart``/``unknown``)."""
    counts: dict[str, int] = {}
    for ref in references:
        name = LEVEL_NAMES.get(ref.level, "unknown") if ref.level is not None else "unknown"
        counts[name] = counts.get(name, 0) + 1
    return counts


def _eroded(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion of an ``H×W`` bool mask (pixels outside count as background)."""
    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = (
        mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    )
    return inner
