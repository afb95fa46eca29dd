"""Human annotations made in any tool (CVAT, Label Studio…) imported as a round's masks.

``load_corrected_masks(path)`` reads a COCO instances JSON (polygons, RLE or uncompressed
RLE; via pycocotools) into ``{file_name: CorrectedImage}``; ``CocoImportTask`` turns the
masks of one image into its SA-1B record with ``source="annotator"`` — the same records and
index columns the simulated annotator writes, so retraining, shards and audit are unchanged.
Masks drawn on an image of another size than the decoded one (e.g. before the SA-1B resize)
are resized with nearest-neighbour sampling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from engine import masks as mask_ops
from engine.records import SOURCE_ANNOTATOR, ImageItem
from engine.sa1b import ImageRecord, MaskRecord, Provenance


class CorrectedMasksError(ValueError):
    """A COCO file that cannot be imported; the message names the file and the field."""


@dataclass
class CorrectedImage:
    """The corrected masks of one image, at the size the COCO file declares."""

    width: int
    height: int
    rles: list[dict] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def load_corrected_masks(path: str | Path) -> dict[str, CorrectedImage]:
    """``{file_name: CorrectedImage}`` from a COCO JSON; raises ``CorrectedMasksError``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorrectedMasksError(f"{path}: not readable COCO JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CorrectedMasksError(f"{path}: 'images' must be a list")
    if not isinstance(data.get("annotations"), list):
        raise CorrectedMasksError(f"{path}: 'annotations' must be a list")
    by_id: dict[int, tuple[str, CorrectedImage]] = {}
    for i, image in enumerate(data["images"]):
        try:
            name = str(image["file_name"])
            entry = CorrectedImage(int(image["width"]), int(image["height"]))
            by_id[int(image["id"])] = (Path(name).name, entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorrectedMasksError(
                f"{path}: images[{i}] needs id, file_name, width, height"
            ) from exc
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict) or ann.get("image_id") not in by_id:
            raise CorrectedMasksError(f"{where}.image_id does not name an image of the file")
        _, image = by_id[ann["image_id"]]
        image.rles.append(_to_rle(ann.get("segmentation"), image, where))
        image.seconds.append(float(ann.get("seconds", 0.0)))
    return {name: image for name, image in by_id.values()}


def _to_rle(segmentation: object, image: CorrectedImage, where: str) -> dict:
    h, w = image.height, image.width
    try:
        if isinstance(segmentation, list):  # polygons
            rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, h, w))
        elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            rle = coco_mask.frPyObjects(segmentation, h, w)
        elif isinstance(segmentation, dict):
            rle = dict(segmentation)
            if list(rle.get("size", [])) != [h, w]:
                raise CorrectedMasksError(
                    f"{where}.segmentation.size {rle.get('size')} != image [height, width] {[h, w]}"
                )
        else:
            raise CorrectedMasksError(f"{where}.segmentation must be polygons or RLE")
    except (TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, CorrectedMasksError):
            raise
        raise CorrectedMasksError(f"{where}.segmentation is malformed: {exc}") from exc
    counts = rle["counts"]
    rle = {"size": [h, w], "counts": counts.decode() if isinstance(counts, bytes) else counts}
    try:
        mask_ops.rle_to_mask(rle)
    except mask_ops.RLEError as exc:
        raise CorrectedMasksError(f"{where}.segmentation does not decode: {exc}") from exc
    return rle


@dataclass(frozen=True)
class CocoImportTask:
    """A round's per-image task whose masks come from a corrected COCO file."""

    images: dict[str, CorrectedImage]
    stage: str = "assisted_manual"
    round: int = 0

    def __call__(self, predictor: object, item: ImageItem) -> ImageRecord:
        corrected = self.images.get(Path(item.file_name).name)
        if corrected is None:
            raise ValueError(f"the corrected COCO file has no image named {item.file_name!r}")
        records = []
        for i, (rle, seconds) in enumerate(zip(corrected.rles, corrected.seconds)):
            mask = mask_ops.rle_to_mask(rle)
            if mask.shape != (item.height, item.width):
                mask = _resize_nearest(mask, item.height, item.width)
            if not mask.any():
                continue
            final = mask_ops.mask_to_rle(mask)
            records.append(
                MaskRecord(
                    id=i,
                    segmentation=final,
                    bbox=mask_ops.rle_bbox_xywh(final),
                    area=mask_ops.rle_area(final),
                    predicted_iou=1.0,
                    stability_score=1.0,
                    point_coords=[],
                    crop_box=[0.0, 0.0, float(item.width), float(item.height)],
                    provenance=Provenance(
                        stage=self.stage,
                        round=self.round,
                        source=SOURCE_ANNOTATOR,
                        seconds=seconds,
                    ),
                )
            )
        for i, record in enumerate(records):
            record.id = i
        return ImageRecord(item.image_id, item.width, item.height, item.file_name, records)


def _resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = (np.arange(height) * mask.shape[0] / height).astype(int)
    cols = (np.arange(width) * mask.shape[1] / width).astype(int)
    return mask[rows][:, cols]
