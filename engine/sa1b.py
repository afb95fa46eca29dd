"""SA-1B records: one image block plus its annotations, with one conversion to and from JSON.

The JSON written into shards is exactly SA-1B's::

    {"image": {"image_id", "width", "height", "file_name"},
     "annotations": [{"id", "segmentation": {"size": [h, w], "counts": str}, "bbox": [x, y, w, h],
                      "area", "predicted_iou", "stability_score", "crop_box", "point_coords"}]}

Per-mask provenance (stage, round, source, clicks, seconds, ...) lives in ``Provenance`` and
goes to the Parquet index, never into the shard JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine import masks as mask_ops
from engine.records import GRANULARITIES, GRANULARITY_WHOLE, SOURCE_MODEL, SOURCES

IMAGE_FIELDS = {"image_id": int, "width": int, "height": int, "file_name": str}
ANNOTATION_FIELDS = (
    "id",
    "segmentation",
    "bbox",
    "area",
    "predicted_iou",
    "stability_score",
    "crop_box",
    "point_coords",
)


class SA1BFormatError(ValueError):
    """A JSON document that is not a valid SA-1B record; the message names the field."""


@dataclass
class Provenance:
    """Where a mask came from; stored in the Parquet index, not in SA-1B JSON."""

    stage: str = ""
    round: int = 0
    source: str = SOURCE_MODEL
    clicks: int = 0
    seconds: float = 0.0
    model_iou: float | None = None  # IoU of the model's mask before any hand fix
    hand_fixed: bool = False
    level: int | None = None  # granularity level of the reference it was made from
    granularity: str = GRANULARITY_WHOLE  # whole | part | subpart (docs/dataset.md)
    parent_id: int | None = None  # annotation id of the enclosing mask in the same image

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(
                f"granularity must be one of {GRANULARITIES}, got {self.granularity!r}"
            )
        if self.parent_id is not None and (
            isinstance(self.parent_id, bool) or not isinstance(self.parent_id, int)
        ):
            raise TypeError(f"parent_id must be an int or None, got {self.parent_id!r}")


@dataclass
class MaskRecord:
    """One SA-1B annotation. ``segmentation`` is COCO RLE with ``counts`` as ``str``."""

    id: int
    segmentation: dict
    bbox: list[float]  # XYWH
    area: int
    predicted_iou: float
    stability_score: float
    point_coords: list[list[float]]  # [[x, y]], original-image pixels
    crop_box: list[float]  # XYWH
    provenance: Provenance = field(default_factory=Provenance)

    def to_json(self) -> dict:
        return {
            "id": int(self.id),
            "segmentation": {
                "size": [int(s) for s in self.segmentation["size"]],
                "counts": self.segmentation["counts"],
            },
            "bbox": [float(v) for v in self.bbox],
            "area": int(self.area),
            "predicted_iou": float(self.predicted_iou),
            "stability_score": float(self.stability_score),
            "crop_box": [float(v) for v in self.crop_box],
            "point_coords": [[float(x), float(y)] for x, y in self.point_coords],
        }

    @classmethod
    def from_json(cls, data: dict, provenance: Provenance | None = None) -> MaskRecord:
        """Build from an SA-1B annotation dict; raises ``SA1BFormatError`` naming the field."""
        errors = _annotation_errors(data, "annotation", check_mask=False)
        if errors:
            raise SA1BFormatError("; ".join(errors))
        return cls(
            id=int(data["id"]),
            segmentation={
                "size": list(data["segmentation"]["size"]),
                "counts": data["segmentation"]["counts"],
            },
            bbox=list(data["bbox"]),
            area=int(data["area"]),
            predicted_iou=float(data["predicted_iou"]),
            stability_score=float(data["stability_score"]),
            point_coords=[list(p) for p in data["point_coords"]],
            crop_box=list(data["crop_box"]),
            provenance=provenance or Provenance(),
        )


@dataclass
class ImageRecord:
    """The SA-1B record of one image: the ``image`` block and its annotations."""

    image_id: int
    width: int
    height: int
    file_name: str
    annotations: list[MaskRecord] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "image": {
                "image_id": int(self.image_id),
                "width": int(self.width),
                "height": int(self.height),
                "file_name": self.file_name,
            },
            "annotations": [a.to_json() for a in self.annotations],
        }

    @classmethod
    def from_json(cls, data: dict) -> ImageRecord:
        """Parse an SA-1B JSON dict (schema checked, masks not decoded; see ``validate``)."""
        errors = _schema_errors(data)
        if errors:
            raise SA1BFormatError("; ".join(errors))
        image = data["image"]
        return cls(
            image_id=int(image["image_id"]),
            width=int(image["width"]),
            height=int(image["height"]),
            file_name=image["file_name"],
            annotations=[MaskRecord.from_json(a) for a in data["annotations"]],
        )


def validate(data: dict | ImageRecord) -> list[str]:
    """All problems of an SA-1B record, as messages naming the field; empty when valid.

    Checks the schema and types, that every RLE decodes to ``size == [height, width]``, that
    ``area`` and ``bbox`` agree with the decoded mask, and that annotation ids are unique.
    """
    if isinstance(data, ImageRecord):
        data = data.to_json()
    errors = _schema_errors(data)
    if errors:
        return errors
    image = data["image"]
    size = [image["height"], image["width"]]
    seen: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}] (id {ann['id']})"
        if ann["id"] in seen:
            errors.append(f"{where}: duplicate id {ann['id']}")
        seen.add(ann["id"])
        errors.extend(_mask_errors(ann, where, size))
    return errors


def _schema_errors(data: object) -> list[str]:
    if not isinstance(data, dict):
        return [f"record must be a JSON object, got {type(data).__name__}"]
    errors = []
    image = data.get("image")
    if not isinstance(image, dict):
        errors.append("'image' must be an object")
    else:
        for name, kind in IMAGE_FIELDS.items():
            value = image.get(name)
            if name not in image:
                errors.append(f"image.{name} is missing")
            elif not isinstance(value, kind) or isinstance(value, bool):
                errors.append(f"image.{name} must be {kind.__name__}, got {value!r}")
            elif kind is int and value < 0:
                errors.append(f"image.{name} must be >= 0, got {value}")
    anns = data.get("annotations")
    if not isinstance(anns, list):
        errors.append("'annotations' must be a list")
    else:
        for i, ann in enumerate(anns):
            errors.extend(_annotation_errors(ann, f"annotations[{i}]", check_mask=False))
    return errors


def _is_number(value: object) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # a JSON int beyond float range
        return False


def _is_box(value: object) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)


def _annotation_errors(ann: object, where: str, check_mask: bool) -> list[str]:
    if not isinstance(ann, dict):
        return [f"{where} must be an object, got {type(ann).__name__}"]
    errors = [f"{where}.{name} is missing" for name in ANNOTATION_FIELDS if name not in ann]
    if errors:
        return errors
    if not isinstance(ann["id"], int) or isinstance(ann["id"], bool):
        errors.append(f"{where}.id must be int, got {ann['id']!r}")
    seg = ann["segmentation"]
    if (
        not isinstance(seg, dict)
        or not isinstance(seg.get("counts"), str)
        or not isinstance(seg.get("size"), list)
        or len(seg["size"]) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seg["size"])
    ):
        errors.append(f"{where}.segmentation must be {{'size': [h, w], 'counts': str}}")
    if not _is_box(ann["bbox"]):
        errors.append(f"{where}.bbox must be [x, y, w, h] numbers, got {ann['bbox']!r}")
    if not _is_box(ann["crop_box"]):
        errors.append(f"{where}.crop_box must be [x, y, w, h] numbers, got {ann['crop_box']!r}")
    if not isinstance(ann["area"], int) or isinstance(ann["area"], bool) or ann["area"] < 0:
        errors.append(f"{where}.area must be a non-negative int, got {ann['area']!r}")
    for name in ("predicted_iou", "stability_score"):
        if not _is_number(ann[name]):
            errors.append(f"{where}.{name} must be a finite number, got {ann[name]!r}")
    points = ann["point_coords"]
    if not isinstance(points, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in points
    ):
        errors.append(f"{where}.point_coords must be [[x, y], ...], got {points!r}")
    return errors


def _mask_errors(ann: dict, where: str, size: list[int]) -> list[str]:
    """Size, decodability, area and box of one annotation's RLE, read from the runs (no
    full-size mask is built: the runs are checked, then counted by pycocotools)."""
    seg = ann["segmentation"]
    if list(seg["size"]) != size:
        return [f"{where}.segmentation.size {seg['size']} != image [height, width] {size}"]
    try:
        area = mask_ops.rle_area(seg)  # checks the runs first (RLEError when malformed)
    except mask_ops.RLEError as exc:
        return [f"{where}.segmentation.counts does not decode: {exc}"]
    errors = []
    if ann["area"] != area:
        errors.append(f"{where}.area {ann['area']} != decoded mask area {area}")
    # XYWH with w = x1 - x0 + 1 (pycocotools); generator boxes are 1 px narrower: tolerated
    bbox = mask_ops.rle_bbox_xywh(seg)
    if any(abs(float(a) - b) > 1.0 for a, b in zip(ann["bbox"], bbox)):
        errors.append(f"{where}.bbox {ann['bbox']} != decoded mask box {bbox}")
    return errors
