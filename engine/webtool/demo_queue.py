"""A small queue over synthetic scenes, to try the annotation tool without a pipeline run.

``sa-engine annotate run_dir=runs/annotate-demo demo=3`` writes one with 3 images (and
pre-filled masks, as in a semi-automatic round, when ``prefill`` > 0); the tests build their
run directories with it too.
"""

from __future__ import annotations

from pathlib import Path

from engine import masks as mask_ops
from engine.annotators.queue import RoundQueue, write_queue
from engine.data.synthetic import SyntheticSource
from engine.records import LEVEL_WHOLE


def prefill_from_references(source: SyntheticSource, per_image: int) -> dict[str, list[dict]]:
    """Up to ``per_image`` whole-object reference masks per image, as SA-1B annotations
    (stand-ins for the semi-automatic stage's confident model masks)."""
    prefill: dict[str, list[dict]] = {}
    for entry in source.entries():
        item = source.load(entry)
        wholes = [r for r in item.references if r.level in (None, LEVEL_WHOLE)]
        anns = []
        for i, ref in enumerate(wholes[:per_image]):
            mask = mask_ops.rle_to_mask(ref.rle)
            bbox = mask_ops.mask_bbox_xywh(mask)
            anns.append(
                {
                    "id": i,
                    "segmentation": mask_ops.mask_to_rle(mask),
                    "bbox": [float(v) for v in bbox],
                    "area": int(mask.sum()),
                    "predicted_iou": 0.95,
                    "stability_score": 0.97,
                    "point_coords": [[bbox[0] + bbox[2] / 2, bbox[1] + bbox[3] / 2]],
                    "crop_box": [0.0, 0.0, float(item.width), float(item.height)],
                }
            )
        if anns:
            prefill[entry.key] = anns
    return prefill


def write_demo_queue(
    run_dir: str | Path,
    count: int = 3,
    prefix: str = "stage1-r00",
    stage: str = "assisted_manual",
    preset: str = "tiny",
    checkpoint: str | None = None,
    prefill: int = 0,
    height: int = 192,
    width: int = 256,
    seed_start: int = 0,
) -> RoundQueue:
    """Write ``queues/<prefix>.json`` over ``count`` synthetic ``height×width`` scenes."""
    source = SyntheticSource(seed_start=seed_start, count=count, height=height, width=width)
    queue = RoundQueue(
        stage=stage,
        round=0,
        prefix=prefix,
        preset=preset,
        checkpoint=checkpoint,
        source={
            "kind": "synthetic",
            "seed_start": seed_start,
            "count": count,
            "height": height,
            "width": width,
        },
        entries=list(source.entries()),
        prefill=prefill_from_references(source, prefill) if prefill > 0 else {},
        target_images=count,
    )
    write_queue(run_dir, queue)
    return queue
