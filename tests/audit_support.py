"""Hand-made masks, records and small datasets for the audit tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from engine.masks import mask_bbox_xywh, mask_to_rle
from engine.records import ReferenceMask
from engine.sa1b import ImageRecord, MaskRecord, Provenance


def rect(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """``h×w`` bool mask, True on rows ``y0:y1`` and columns ``x0:x1``."""
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def mask_record(
    mask: np.ndarray,
    ann_id: int,
    predicted_iou: float = 0.9,
    stability_score: float = 0.95,
    provenance: Provenance | None = None,
) -> MaskRecord:
    return MaskRecord(
        id=ann_id,
        segmentation=mask_to_rle(mask),
        bbox=[float(v) for v in mask_bbox_xywh(mask)],
        area=int(mask.sum()),
        predicted_iou=predicted_iou,
        stability_score=stability_score,
        point_coords=[[0.0, 0.0]],
        crop_box=[0.0, 0.0, float(mask.shape[1]), float(mask.shape[0])],
        provenance=provenance or Provenance(),
    )


def image_record(masks: list[np.ndarray], image_id: int = 1, **kwargs) -> ImageRecord:
    h, w = masks[0].shape if masks else (kwargs.pop("height", 32), kwargs.pop("width", 32))
    return ImageRecord(
        image_id=image_id,
        width=int(w),
        height=int(h),
        file_name=f"image_{image_id}.jpg",
        annotations=[mask_record(m, i, **kwargs) for i, m in enumerate(masks)],
    )


def references(masks: list[np.ndarray], level: int | None = None) -> list[ReferenceMask]:
    return [ReferenceMask(rle=mask_to_rle(m), level=level) for m in masks]


def noise_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def write_shards(
    root: Path,
    items: list[tuple[str, np.ndarray, ImageRecord]],
    prefix: str = "stage1-r00",
    stage: str = "stage1",
    round: int = 0,
    maxcount: int = 3,
) -> Path:
    """Write ``(key, image, record)`` items as a run directory ``root`` (shards + index)."""
    from engine.dataset import ShardWriter

    with ShardWriter(
        root / "shards", root / "index", prefix, maxcount=maxcount, stage=stage, round=round
    ) as writer:
        for key, image, record in items:
            writer.write(key, image, record)
    return root


def coco_items(instances: Path, images_dir: Path) -> list[tuple[str, np.ndarray, ImageRecord]]:
    """A COCO instances file as SA-1B samples (crowd regions left out), keyed like sources."""
    from engine.data.sources import key_from_path

    data = json.loads(instances.read_text())
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        if not ann.get("iscrowd", 0):
            by_image[ann["image_id"]].append(ann)
    items = []
    for img in data["images"]:
        h, w = img["height"], img["width"]
        masks = []
        for ann in by_image[img["id"]]:
            rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], h, w))
            masks.append(mask_utils.decode(rle).astype(bool))
        image = np.asarray(Image.open(images_dir / img["file_name"]).convert("RGB"))
        record = (
            image_record(masks, image_id=img["id"])
            if masks
            else image_record([], image_id=img["id"], height=h, width=w)
        )
        record.file_name = img["file_name"]
        items.append((key_from_path(img["file_name"]), image, record))
    return items
