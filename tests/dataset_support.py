"""Small SA-1B samples for the dataset tests (writer, index, reader, validate).

Images are 32×48 (H×W) noise; masks are rectangles built with numpy and encoded with
``engine.masks.mask_to_rle``, so area and bbox are known exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.masks import mask_bbox_xywh, mask_to_rle
from engine.records import LEVEL_PART, SOURCE_ANNOTATOR, SOURCE_MODEL, SOURCE_SIMULATED
from engine.sa1b import ImageRecord, MaskRecord, Provenance

H, W = 32, 48
SOURCES = (SOURCE_MODEL, SOURCE_SIMULATED, SOURCE_ANNOTATOR)


def make_image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """``h×w×3`` uint8 smooth colour gradient (JPEG keeps it close), different per seed."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    rgb = [(yy * 4 + seed * 7) % 200, (xx * 3 + seed * 13) % 200, (yy + xx + seed * 5) % 200]
    return (np.stack(rgb, axis=-1) + 20).astype(np.uint8)


def make_record(seed: int, n_masks: int = 3, h: int = H, w: int = W) -> ImageRecord:
    """An ``ImageRecord`` with ``n_masks`` rectangle masks and varied provenance."""
    rng = np.random.default_rng(1000 + seed)
    annotations = []
    for i in range(n_masks):
        y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        y1, x1 = int(rng.integers(y0 + 1, h + 1)), int(rng.integers(x0 + 1, w + 1))
        mask = np.zeros((h, w), dtype=bool)
        mask[y0:y1, x0:x1] = True
        annotations.append(
            MaskRecord(
                id=i,
                segmentation=mask_to_rle(mask),
                bbox=[float(v) for v in mask_bbox_xywh(mask)],
                area=int(mask.sum()),
                predicted_iou=round(float(rng.uniform(0.5, 1.0)), 6),
                stability_score=round(float(rng.uniform(0.5, 1.0)), 6),
                point_coords=[[float(x0), float(y0)]],
                crop_box=[0.0, 0.0, float(w), float(h)],
                provenance=Provenance(
                    source=SOURCES[i % 3],
                    clicks=i + 1,
                    seconds=1.5 * i,
                    model_iou=0.8 if i % 2 else None,
                    hand_fixed=bool(i % 2),
                    level=LEVEL_PART if i == 1 else None,
                ),
            )
        )
    return ImageRecord(
        image_id=seed, width=w, height=h, file_name=f"img_{seed}.jpg", annotations=annotations
    )


def samples(n: int, start: int = 0) -> list[tuple[str, np.ndarray, ImageRecord]]:
    """``n`` samples ``(key, image, record)`` with keys ``img_{seed:04d}``."""
    return [
        (f"img_{s:04d}", make_image(s), make_record(s, n_masks=s % 4))
        for s in range(start, start + n)
    ]


def write_dataset(
    root: Path, n: int = 5, maxcount: int = 2, prefix: str = "stage1-r00", **kwargs
) -> tuple[Path, Path, list[tuple[str, np.ndarray, ImageRecord]]]:
    """Write ``n`` samples to ``root/shards`` + ``root/index``; returns the dirs and samples."""
    from engine.dataset.writer import ShardWriter

    data = samples(n)
    shards, index = root / "shards", root / "index"
    with ShardWriter(shards, index, prefix, maxcount=maxcount, **kwargs) as writer:
        for key, image, record in data:
            writer.write(key, image, record)
    return shards, index, data
