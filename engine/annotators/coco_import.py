"""Human annotations made in any tool (CVAT, Label Studio…) imported as a round's masks.

``load_corrected_masks(path)`` reads a COCO instances JSON (polygons, RLE or uncompressed
RLE; via pycocotools) into ``{file_name: CorrectedImage}``; ``CocoImportTask`` turns the
masks of one image into its SA-1B record with ``source="annotator"`` — the same records and
index columns the simulated annotator writes, so retraining, shards and audit are unchanged.
Masks drawn on an image of another size than the decoded one (e.g. before the SA-1B resize)
are resized with nearest-neighbour sampling.

An annotation may carry ``"granularity"`` (``whole``/``part``/``subpart``; default ``whole``)
and ``"parent_id"`` (the COCO ``id`` of the enclosing annotation, same image); the parent
becomes the imported mask's ``parent_id`` (its annotation id in the record), or none when the
parent's mask came out empty at the decoded size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from engine import masks as mask_ops
from engine.records import GRANULARITIES, GRANULARITY_WHOLE, SOURCE_ANNOTATOR, ImageItem
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
    granularities: list[str] = field(default_factory=list)
    parents: list[int | None] = field(default_factory=list)  # index into rles, or None


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
    parent_ids: dict[int, list[tuple[int | None, str]]] = {}  # image id -> per mask
    positions: dict[int, dict[int, int]] = {}  # image id -> {COCO annotation id: index}
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        if not isinstance(ann, dict) or ann.get("image_id") not in by_id:
            raise CorrectedMasksError(f"{where}.image_id does not name an image of the file")
        _, image = by_id[ann["image_id"]]
        granularity = ann.get("granularity", GRANULARITY_WHOLE)
        if granularity not in GRANULARITIES:
            raise CorrectedMasksError(
                f"{where}.granularity must be one of {GRANULARITIES}, got {granularity!r}"
            )
        if "id" in ann:
            positions.setdefault(ann["image_id"], {})[ann["id"]] = len(image.rles)
        parent_ids.setdefault(ann["image_id"], []).append((ann.get("parent_id"), where))
        image.rles.append(_to_rle(ann.get("segmentation"), image, where))
        image.seconds.append(float(ann.get("seconds", 0.0)))
        image.granularities.append(granularity)
    for image_id, links in parent_ids.items():
        image = by_id[image_id][1]
        known = positions.get(image_id, {})
        for own, (parent, where) in enumerate(links):
            if parent is not None and known.get(parent, own) == own:
                raise CorrectedMasksError(
                    f"{where}.parent_id {parent!r} is not the id of another annotation "
                    "of the same image"
                )
            image.parents.append(None if parent is None else known[parent])
        for own, (_, where) in enumerate(links):
            current, steps = image.parents[own], 0
            while current is not None and steps <= len(links):
                if current == own:
                    raise CorrectedMasksError(f"{where}.parent_id: parent links form a cycle")
                current, steps = image.parents[current], steps + 1
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
        records, kept = [], {}  # kept: index in the COCO image -> annotation id
        for i, (rle, seconds) in enumerate(zip(corrected.rles, corrected.seconds)):
            mask = mask_ops.rle_to_mask(rle)
            if mask.shape != (item.height, item.width):
                mask = _resize_nearest(mask, item.height, item.width)
            if not mask.any():
                continue
            kept[i] = len(records)
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
                        granularity=corrected.granularities[i],
                    ),
                )
            )
        for i, record in enumerate(records):
            record.id = i
        for i, position in kept.items():
            parent = corrected.parents[i]
            records[position].provenance.parent_id = (
                kept.get(parent) if parent is not None else None
            )
        return ImageRecord(item.image_id, item.width, item.height, item.file_name, records)


def _resize_nearest(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    rows = (np.arange(height) * mask.shape[0] / height).astype(int)
    cols = (np.arange(width) * mask.shape[1] / width).astype(int)
    return mask[rows][:, cols]
