"""engine.sa1b: records by hand, JSON round trips, validate() messages, a real COCO mask."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_utils

from engine import masks as mask_ops
from engine.sa1b import ImageRecord, MaskRecord, Provenance, SA1BFormatError, validate

# A 4×4 mask: columns 0000|1100|1100|0001 -> runs [4, 2, 2, 2, 5, 1] -> "42203O" (worked out
# in tests/test_masks.py). Generator-style box: x 1..3, y 0..3 inclusive -> [1, 0, 2, 3].
MASK = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]], bool)
RLE = {"size": [4, 4], "counts": "42203O"}


def _annotation(**changes) -> dict:
    ann = {
        "id": 7,
        "segmentation": dict(RLE),
        "bbox": [1.0, 0.0, 2.0, 3.0],
        "area": 5,
        "predicted_iou": 0.93,
        "stability_score": 0.97,
        "crop_box": [0.0, 0.0, 4.0, 4.0],
        "point_coords": [[1.5, 0.5]],
    }
    ann.update(changes)
    return ann


def _record(*annotations: dict) -> dict:
    return {
        "image": {"image_id": 3, "width": 4, "height": 4, "file_name": "sa_3.jpg"},
        "annotations": list(annotations) if annotations else [_annotation()],
    }


def test_hand_written_record_round_trip() -> None:
    assert mask_ops.mask_to_rle(MASK) == RLE
    record = ImageRecord.from_json(_record())
    assert record.image_id == 3 and record.annotations[0].area == 5
    assert validate(record) == []
    text = json.dumps(record.to_json())
    assert ImageRecord.from_json(json.loads(text)).to_json() == record.to_json()
    assert json.loads(text) == _record()
    assert "provenance" not in text  # provenance goes to the index, not the shard


def test_pycocotools_box_is_tolerated() -> None:
    # pycocotools' toBbox gives w = x1 - x0 + 1: one pixel wider than the generator's box
    coco_box = [float(v) for v in mask_ops.rle_bbox_xywh(RLE)]
    assert coco_box == [1.0, 0.0, 3.0, 4.0]
    assert validate(_record(_annotation(bbox=coco_box))) == []


def test_mask_record_provenance_kept_apart() -> None:
    prov = Provenance(stage="stage3", round=2, source="model", clicks=0)
    mask = MaskRecord.from_json(_annotation(), provenance=prov)
    assert mask.provenance is prov
    assert mask.to_json() == _annotation()
    with pytest.raises(ValueError, match="source must be one of"):
        Provenance(source="robot")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("image"), "'image' must be an object"),
        (lambda r: r["image"].pop("width"), "image.width is missing"),
        (lambda r: r["image"].update(height="4"), "image.height must be int, got '4'"),
        (lambda r: r["image"].update(image_id=True), "image.image_id must be int, got True"),
        (lambda r: r["image"].update(width=-4), "image.width must be >= 0, got -4"),
        (lambda r: r["image"].update(file_name=5), "image.file_name must be str"),
        (lambda r: r.update(annotations={}), "'annotations' must be a list"),
        (lambda r: r["annotations"].append(3), "annotations[1] must be an object, got int"),
        (lambda r: r["annotations"][0].pop("area"), "annotations[0].area is missing"),
        (lambda r: r["annotations"][0].update(id="7"), "annotations[0].id must be int"),
        (
            lambda r: r["annotations"][0]["segmentation"].update(counts=b"42203O"),
            "annotations[0].segmentation must be {'size': [h, w], 'counts': str}",
        ),
        (lambda r: r["annotations"][0].update(bbox=[1, 2, 3]), "annotations[0].bbox must be"),
        (
            lambda r: r["annotations"][0].update(crop_box=[0, 0, "4", 4]),
            "annotations[0].crop_box must be",
        ),
        (lambda r: r["annotations"][0].update(area=-1), "annotations[0].area must be a non-neg"),
        (
            lambda r: r["annotations"][0].update(predicted_iou=float("nan")),
            "annotations[0].predicted_iou must be a finite number",
        ),
        (
            lambda r: r["annotations"][0].update(stability_score=None),
            "annotations[0].stability_score must be a finite number",
        ),
        (
            lambda r: r["annotations"][0].update(point_coords=[1.5, 0.5]),
            "annotations[0].point_coords must be [[x, y], ...]",
        ),
        (
            lambda r: r["annotations"][0]["segmentation"].update(size=[4, 5]),
            "annotations[0] (id 7).segmentation.size [4, 5] != image [height, width] [4, 4]",
        ),
        (
            lambda r: r["annotations"][0]["segmentation"].update(counts="42203"),
            "annotations[0] (id 7).segmentation.counts does not decode: RLE runs cover 15",
        ),
        (
            lambda r: r["annotations"][0]["segmentation"].update(counts="4220~O"),
            "segmentation.counts does not decode: RLE 'counts' holds characters outside",
        ),
        (lambda r: r["annotations"][0].update(area=6), "area 6 != decoded mask area 5"),
        (
            lambda r: r["annotations"][0].update(bbox=[3.0, 0.0, 2.0, 3.0]),
            "bbox [3.0, 0.0, 2.0, 3.0] != decoded mask box [1, 0, 3, 4]",
        ),
        (
            lambda r: r["annotations"].append(_annotation()),
            "annotations[1] (id 7): duplicate id 7",
        ),
    ],
)
def test_validate_names_each_error(mutate, message: str) -> None:
    record = _record()
    mutate(record)
    errors = validate(record)
    assert any(message in e for e in errors), errors
    if not any(word in message for word in ("!=", "does not decode", "duplicate")):
        # schema errors also stop parsing, with the same message
        with pytest.raises(SA1BFormatError) as raised:
            ImageRecord.from_json(record)
        assert message in str(raised.value)


def test_validate_collects_every_error() -> None:
    record = _record(_annotation(area=6), _annotation(id=8, bbox=[0.0, 0.0, 9.0, 9.0]))
    errors = validate(record)
    assert len(errors) == 2
    assert validate("not a record") == ["record must be a JSON object, got str"]


def test_validate_untouched_input() -> None:
    record = _record()
    before = copy.deepcopy(record)
    validate(record)
    assert record == before


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9))))
def test_records_of_random_masks_validate_and_round_trip(masks: np.ndarray) -> None:
    n, h, w = masks.shape
    anns = []
    for i, (mask, rle) in enumerate(zip(masks, mask_ops.masks_to_rles(masks))):
        anns.append(
            MaskRecord(
                id=100 + i,
                segmentation=rle,
                bbox=mask_ops.mask_bbox_xywh(mask),
                area=int(mask.sum()),
                predicted_iou=0.5,
                stability_score=1.0,
                point_coords=[[0.5, 0.5]],
                crop_box=[0, 0, w, h],
            )
        )
    record = ImageRecord(image_id=1, width=w, height=h, file_name="x.jpg", annotations=anns)
    assert validate(record) == []
    data = json.loads(json.dumps(record.to_json()))
    back = ImageRecord.from_json(data)
    assert back.to_json() == data
    for mask, ann in zip(masks, back.annotations):
        assert mask_ops.rle_to_mask(ann.segmentation).tolist() == mask.tolist()


def test_record_from_a_real_coco_annotation(shared_data) -> None:
    coco = json.loads((shared_data / "coco-permissive" / "instances_val.json").read_text())
    image = coco["images"][0]
    h, w = image["height"], image["width"]
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
    assert anns
    masks = []
    for ann in anns:
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], h, w))
        segmentation = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
        mask = mask_ops.rle_to_mask(segmentation)
        x, y, bw, bh = mask_ops.mask_bbox_xywh(mask)
        # COCO's own box comes from the polygon; the rasterised mask is within a pixel or two
        assert np.allclose([x, y, bw, bh], ann["bbox"], atol=2.0)
        masks.append(
            MaskRecord(
                id=ann["id"],
                segmentation=segmentation,
                bbox=[x, y, bw - 1, bh - 1],  # generator convention (inclusive ends)
                area=int(mask.sum()),
                predicted_iou=1.0,
                stability_score=1.0,
                point_coords=[[x + bw / 2, y + bh / 2]],
                crop_box=[0, 0, w, h],
                provenance=Provenance(stage="import", source="annotator"),
            )
        )
        assert abs(masks[-1].area - ann["area"]) <= 0.1 * ann["area"] + 20  # polygon area
    record = ImageRecord(
        image_id=image["id"], width=w, height=h, file_name=image["file_name"], annotations=masks
    )
    assert validate(record) == []
    assert ImageRecord.from_json(json.loads(json.dumps(record.to_json()))).to_json() == (
        record.to_json()
    )
    broken = record.to_json()
    broken["image"]["height"] = h + 1
    assert all("segmentation.size" in e for e in validate(broken))
