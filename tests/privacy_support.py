"""Helpers of tests/test_privacy.py: a textured image and a one-mask record for it."""

from __future__ import annotations

import numpy as np

from engine.masks import mask_bbox_xywh, mask_to_rle
from engine.sa1b import ImageRecord, MaskRecord


def noise_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """``h×w×3`` uint8 coarse noise (2×2 cells): blur flattens it, JPEG keeps most of it."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 256, size=(-(-h // 2), -(-w // 2), 3), dtype=np.uint8)
    return np.ascontiguousarray(cells.repeat(2, axis=0).repeat(2, axis=1)[:h, :w])


def record_for(image: np.ndarray, image_id: int) -> ImageRecord:
    """A record of ``image`` with one rectangle mask."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[h // 4 : h // 2, w // 4 : w // 2] = True
    ann = MaskRecord(
        id=0,
        segmentation=mask_to_rle(mask),
        bbox=[float(v) for v in mask_bbox_xywh(mask)],
        area=int(mask.sum()),
        predicted_iou=0.9,
        stability_score=0.95,
        point_coords=[[float(w // 3), float(h // 3)]],
        crop_box=[0.0, 0.0, float(w), float(h)],
    )
    return ImageRecord(
        image_id=image_id, width=w, height=h, file_name=f"{image_id}.jpg", annotations=[ann]
    )
