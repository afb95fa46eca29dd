"""Stage 3's recall ceiling: the best IoU any unfiltered grid mask reaches on each reference.

Stage 3 keeps only the grid masks that pass predicted-IoU, stability and NMS filters, so its
recall can never exceed that of *all* the masks its grid prompts produce. This runs the AMG
with every filter off (no thresholds, no NMS) on held-out scenes and reports, per reference
(non-crowd), whether some mask reaches IoU 0.5 / 0.75 with it, broken down by COCO size
bucket and by level (0 whole, 1 part, 2 subpart):

    .venv/bin/python benchmarks/recall_ceiling.py CHECKPOINT [--points 32] [--crop-layers 0]
        [--style studio] [--images 6]

Crop layers use the ``sa1b`` preset's point downscale (32, 16, 8 points per side).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from engine.amg import AutomaticMaskGenerator
from engine.data.synthetic import SyntheticSource
from engine.masks import rle_to_mask
from engine.model import build_sam
from engine.weights import resolve_checkpoint

SMALL, LARGE = 32 * 32, 96 * 96  # COCO size buckets (px)
CHUNK = 1024


def best_iou_per_reference(amg: AutomaticMaskGenerator, item) -> tuple[np.ndarray, list]:
    """Best IoU of any generated mask with each non-crowd reference, and those references."""
    refs = [r for r in item.references if not r.iscrowd]
    ref_masks = np.stack([rle_to_mask(r.rle) for r in refs]).reshape(len(refs), -1)
    with torch.no_grad():
        generated = amg.generate(item.image)
    best = np.zeros(len(refs))
    r = ref_masks.astype(np.float32)
    for start in range(0, len(generated), CHUNK):  # chunks: 20k masks of 64k px do not fit at once
        chunk = generated[start : start + CHUNK]
        g = np.stack([rle_to_mask(a["segmentation"]).reshape(-1) for a in chunk]).astype(np.float32)
        inter = r @ g.T
        union = r.sum(1)[:, None] + g.sum(1)[None] - inter
        best = np.maximum(best, (inter / np.maximum(union, 1)).max(1))
    return best, refs


def share(hit: np.ndarray) -> float | None:
    return round(float(hit.mean()), 3) if hit.size else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--preset", default="mobile")
    parser.add_argument("--points", type=int, default=32)
    parser.add_argument("--crop-layers", type=int, default=0)
    parser.add_argument("--style", default="studio")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--stability-offset", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = build_sam(args.preset, resolve_checkpoint(args.checkpoint)).eval()
    amg = AutomaticMaskGenerator(
        model,
        points_per_side=args.points,
        crop_n_layers=args.crop_layers,
        crop_n_points_downscale_factor=2,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        stability_score_offset=args.stability_offset,
        box_nms_thresh=1.0,
        crop_nms_thresh=1.0,
        points_per_batch=256,
    )
    source = SyntheticSource.from_split("heldout", args.images, style=args.style)
    best, areas, levels = [], [], []
    for entry in source.entries():
        iou, refs = best_iou_per_reference(amg, source.load(entry))
        best.extend(iou.tolist())
        areas.extend(int(rle_to_mask(r.rle).sum()) for r in refs)
        levels.extend(r.level for r in refs)
    best_arr, area, level = np.asarray(best), np.asarray(areas), np.asarray(levels, dtype=object)
    report = {
        "checkpoint": args.checkpoint,
        "points": args.points,
        "crop_layers": args.crop_layers,
        "references": int(best_arr.size),
        "ceiling_0.5": share(best_arr >= 0.5),
        "ceiling_0.75": share(best_arr >= 0.75),
    }
    buckets = {
        "small": area < SMALL,
        "medium": (area >= SMALL) & (area < LARGE),
        "large": area >= LARGE,
    }
    for name, sel in buckets.items():
        report[f"{name}_0.5"] = [int(sel.sum()), share(best_arr[sel] >= 0.5)]
    for value in sorted({lv for lv in levels if lv is not None}):
        sel = level == value
        report[f"level{value}_0.5"] = [int(sel.sum()), share(best_arr[sel] >= 0.5)]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
