"""What each round did, in the paper's terms, computed from the Parquet index.

``round_summary`` reads the round's index rows (so a resumed round counts every image it
wrote, before and after the interruption); ``format_table`` prints the per-stage table the
run ends with (images, masks, masks/image, clicks/mask, simulated seconds/mask, hand-fixed
share, model mIoU / NoC@90 after each retraining).
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.compute as pc

from engine.dataset.index import read_image_index, read_mask_index
from engine.records import SOURCE_MODEL


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def round_summary(index_dir: Path, prefix: str) -> dict[str, float]:
    """Numbers of one round (``prefix`` like ``stage1-r00``) from the index in ``index_dir``."""
    images = read_image_index(index_dir)
    masks = read_mask_index(index_dir)
    in_round = pc.starts_with(images["shard"], f"{prefix}-")
    images = images.filter(in_round)
    masks = masks.filter(pc.starts_with(masks["shard"], f"{prefix}-"))
    n_images = images.num_rows
    n_masks = masks.num_rows
    sources = masks["source"].to_pylist()
    manual = [i for i, s in enumerate(sources) if s != SOURCE_MODEL]
    clicks = masks["clicks"].to_pylist()
    seconds = masks["seconds"].to_pylist()
    fixed = masks["hand_fixed"].to_pylist()
    blurred = [n for n in images["blurred_boxes"].to_pylist() if n is not None]
    return {
        "images": float(n_images),
        "masks": float(n_masks),
        "masks_per_image": n_masks / n_images if n_images else 0.0,
        "manual_masks": float(len(manual)),
        "model_masks": float(n_masks - len(manual)),
        "clicks_per_mask": _mean([clicks[i] or 0 for i in manual]),
        "seconds_per_mask": _mean([seconds[i] or 0.0 for i in manual]),
        "hand_fixed_share": _mean([1.0 if fixed[i] else 0.0 for i in manual]),
        "blurred_boxes": float(sum(blurred)),  # privacy filter (0 when it did not run)
    }


COLUMNS = [
    ("round", "round", "{}"),
    ("images", "images", "{:.0f}"),
    ("masks", "masks", "{:.0f}"),
    ("masks/img", "masks_per_image", "{:.1f}"),
    ("clicks/mask", "clicks_per_mask", "{:.2f}"),
    ("s/mask", "seconds_per_mask", "{:.1f}"),
    ("hand-fixed", "hand_fixed_share", "{:.0%}"),
    ("mIoU@1", "miou_1click", "{:.3f}"),
    ("NoC@90", "noc_90", "{:.2f}"),
    ("img/s", "images_per_s", "{:.2f}"),
]


def format_table(rows: list[dict], initial: dict | None = None) -> str:
    """A plain-text table, one line per round (plus the initial model's evaluation)."""
    table = []
    if initial:
        table.append({"round": "initial model", **initial})
    table.extend(rows)
    cells = [[title for title, _, _ in COLUMNS]]
    for row in table:
        line = []
        for _, key, fmt in COLUMNS:
            value = row.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                line.append("-")
            else:
                line.append(fmt.format(value))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in cells
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
