"""COCO source: the real sample against pycocotools, and every kind of broken JSON."""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from engine.data import iter_items, open_source
from engine.data.coco import AnnotationError, CocoSource
from engine.data.decode import resize_masks_nearest
from engine.masks import mask_to_rle, rle_to_mask
from engine.records import LEVEL_WHOLE, QuarantineRecord

H, W = 16, 24


@pytest.mark.parametrize("split", ["train", "val"])
def test_real_sample_matches_pycocotools(shared_data: Path, split: str) -> None:
    root = shared_data / "coco-permissive"
    annotations = root / f"instances_{split}.json"
    coco = COCO(str(annotations))
    source = CocoSource(str(root / "images"), str(annotations))
    records: list[QuarantineRecord] = []
    items = list(iter_items(source, records.append))
    assert records == []
    assert [i.image_id for i in items] == [img["id"] for img in coco.dataset["images"]]
    crowd_seen = 0
    for item in items:
        info = coco.imgs[item.image_id]
        assert item.image.shape == (info["height"], info["width"], 3)
        assert item.file_name == info["file_name"]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=item.image_id, iscrowd=None))
        assert [r.object_id for r in item.references] == [a["id"] for a in anns]
        for ref, ann in zip(item.references, anns):
            assert ref.level == LEVEL_WHOLE and ref.parent_index is None
            assert ref.iscrowd == bool(ann["iscrowd"])
            crowd_seen += ref.iscrowd
            np.testing.assert_array_equal(rle_to_mask(ref.rle), coco.annToMask(ann).astype(bool))
    assert crowd_seen == 1  # the sample holds one iscrowd RLE region per split


def test_real_sample_resized_keeps_masks_aligned(shared_data: Path) -> None:
    root = shared_data / "coco-permissive"
    annotations = root / "instances_val.json"
    coco = COCO(str(annotations))
    source = CocoSource(str(root / "images"), str(annotations), max_short_side=200)
    item = next(iter_items(source))
    assert min(item.image.shape[:2]) == 200
    anns = coco.loadAnns(coco.getAnnIds(imgIds=item.image_id, iscrowd=None))
    full = np.stack([coco.annToMask(a).astype(bool) for a in anns])
    small = resize_masks_nearest(full, *item.image.shape[:2])
    for ref, expected in zip(item.references, small):
        np.testing.assert_array_equal(rle_to_mask(ref.rle), expected)


# -- a hand-made dataset -----------------------------------------------------------------------


def write_png(path: Path, height: int = H, width: int = W) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (50, 60, 70)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())


def square_mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.T.ravel().astype(np.int8)  # column-major, as COCO
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": [H, W], "counts": counts}


def dataset(tmp_path: Path) -> dict:
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        write_png(tmp_path / "images" / name)
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "height": H, "width": W},
            {"id": 2, "file_name": "b.png", "height": H, "width": W},
        ],
        "annotations": [
            # polygon: the square 4..12 × 2..10 (x, y pairs)
            {"id": 10, "image_id": 1, "iscrowd": 0,
             "segmentation": [[2, 4, 10, 4, 10, 12, 2, 12]]},
            {"id": 11, "image_id": 1, "iscrowd": 1,
             "segmentation": uncompressed_rle(square_mask(0, 3, 15, 20))},
            {"id": 12, "image_id": 2, "iscrowd": 0,
             "segmentation": mask_to_rle(square_mask(5, 9, 5, 9))},
            {"id": 13, "image_id": 2, "iscrowd": 0,  # a degenerate ring is skipped
             "segmentation": [[1, 1, 3, 1], [12, 2, 20, 2, 20, 8, 12, 8]]},
        ],
    }  # fmt: skip


def write_json(tmp_path: Path, data: dict | str) -> str:
    path = tmp_path / "instances.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_polygons_rle_and_crowd_regions(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    source = CocoSource(str(tmp_path / "images"), write_json(tmp_path, data))
    a, b = iter_items(source)
    assert (a.key, a.image_id, b.key, b.image_id) == ("a_png", 1, "b_png", 2)
    polygon = mask_utils.decode(
        mask_utils.merge(mask_utils.frPyObjects(data["annotations"][0]["segmentation"], H, W))
    ).astype(bool)
    np.testing.assert_array_equal(rle_to_mask(a.references[0].rle), polygon)
    assert polygon[4:12, 2:10].mean() > 0.8 and polygon.sum() < 90
    np.testing.assert_array_equal(rle_to_mask(a.references[1].rle), square_mask(0, 3, 15, 20))
    assert [r.iscrowd for r in a.references] == [False, True]
    np.testing.assert_array_equal(rle_to_mask(b.references[0].rle), square_mask(5, 9, 5, 9))
    ring = rle_to_mask(b.references[1].rle)
    assert ring[2:8, 12:20].mean() > 0.8 and not ring[:, :10].any()
    clone = pickle.loads(pickle.dumps(source))
    assert [e.key for e in clone.entries()] == ["a_png", "b_png"]
    assert isinstance(open_source("coco", images_dir=str(tmp_path / "images"),
                                  annotations=write_json(tmp_path, data)), CocoSource)  # fmt: skip


def test_malformed_json_raises_naming_the_file(tmp_path: Path) -> None:
    path = write_json(tmp_path, '{"images": [')
    for on_error in ("raise", "skip"):
        with pytest.raises(AnnotationError, match=r"instances\.json: not valid JSON"):
            CocoSource(str(tmp_path), path, on_error=on_error)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("annotations"), "'annotations' must be a list"),
        (lambda d: d["images"][0].pop("file_name"), r"images\[0\]\.file_name is missing"),
        (lambda d: d["images"].append(dict(d["images"][0])), r"images\[2\]\.id 1 is a duplicate"),
    ],
)
def test_structural_errors_always_raise(tmp_path: Path, edit, message: str) -> None:  # noqa: ANN001
    data = dataset(tmp_path)
    edit(data)
    with pytest.raises(AnnotationError, match=message):
        CocoSource(str(tmp_path / "images"), write_json(tmp_path, data), on_error="skip")


def broken(field: str):  # noqa: ANN201
    """Edits that break one image's annotations (image 2), by the field they break."""

    def edit(data: dict) -> None:
        ann = data["annotations"][2]
        if field == "image_id":
            ann["image_id"] = 99
        elif field == "size":
            ann["segmentation"] = mask_to_rle(np.zeros((10, 10), dtype=bool))
        elif field == "odd":
            ann["segmentation"] = [[1, 2, 3, 4, 5, 6, 7]]
        elif field == "counts":
            ann["segmentation"] = {"size": [H, W], "counts": [1, 2, 3]}
        elif field == "segmentation":
            ann["segmentation"] = "polygon?"

    return edit


CASES = {
    "image_id": r"annotations\[2\]\.image_id 99 names no image",
    "size": r"annotations\[2\]\.segmentation\.size \[10, 10\] != image height/width \[16, 24\]",
    "odd": r"annotations\[2\]\.segmentation\[0\] has an odd number of coordinates",
    "counts": r"annotations\[2\]\.segmentation\.counts \(uncompressed\) must sum to h\*w",
    "segmentation": r"annotations\[2\]\.segmentation must be polygons \(list\) or RLE",
}


@pytest.mark.parametrize("field", sorted(CASES))
def test_bad_annotation_raises_naming_file_and_field(tmp_path: Path, field: str) -> None:
    data = dataset(tmp_path)
    broken(field)(data)
    with pytest.raises(AnnotationError, match=r"instances\.json: " + CASES[field]):
        CocoSource(str(tmp_path / "images"), write_json(tmp_path, data))


@pytest.mark.parametrize("field", sorted(CASES))
def test_bad_annotation_quarantines_with_skip(tmp_path: Path, field: str) -> None:
    data = dataset(tmp_path)
    broken(field)(data)
    source = CocoSource(str(tmp_path / "images"), write_json(tmp_path, data), on_error="skip")
    records: list[QuarantineRecord] = []
    items = list(iter_items(source, records.append))
    (record,) = records
    assert re.search(CASES[field], record.reason)
    if field == "image_id":  # the orphan annotation is its own entry; both images load
        assert [i.key for i in items] == ["a_png", "b_png"]
        assert record.key == "coco-annotation-2" and record.path.endswith("#annotations[2]")
        assert len(items[1].references) == 1
    else:  # image 2 is quarantined, image 1 is fine
        assert [i.key for i in items] == ["a_png"]
        assert record.key == "b_png" and record.path.endswith("images/b.png")


def test_image_whose_size_disagrees_with_the_json(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    write_png(tmp_path / "images" / "b.png", height=20, width=24)
    path = write_json(tmp_path, data)
    source = CocoSource(str(tmp_path / "images"), path)
    entries = list(source.entries())
    with pytest.raises(
        AnnotationError, match=r"images\[1\] \(id 2, 'b\.png'\)\.height/width 16×24"
    ):
        source.load(entries[1])
    skip = CocoSource(str(tmp_path / "images"), path, on_error="skip")
    records: list[QuarantineRecord] = []
    assert [i.key for i in iter_items(skip, records.append)] == ["a_png"]
    assert "disagree with the image file (20×24)" in records[0].reason


def test_corrupt_compressed_rle_is_caught_at_load(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    data["annotations"][2]["segmentation"] = {"size": [H, W], "counts": "0000"}
    path = write_json(tmp_path, data)
    with pytest.raises(AnnotationError, match="annotation id 12: segmentation.counts"):
        list(iter_items(CocoSource(str(tmp_path / "images"), path)))
    records: list[QuarantineRecord] = []
    skip = CocoSource(str(tmp_path / "images"), path, on_error="skip")
    assert [i.key for i in iter_items(skip, records.append)] == ["a_png"]
    assert records[0].key == "b_png"


def test_missing_image_file_is_quarantined(tmp_path: Path) -> None:
    data = dataset(tmp_path)
    (tmp_path / "images" / "a.png").unlink()
    source = CocoSource(str(tmp_path / "images"), write_json(tmp_path, data))
    records: list[QuarantineRecord] = []
    assert [i.key for i in iter_items(source, records.append)] == ["b_png"]
    assert records[0].key == "a_png" and records[0].reason == "file not found"


def test_bad_on_error_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="on_error must be one of"):
        CocoSource(str(tmp_path), write_json(tmp_path, dataset(tmp_path)), on_error="ignore")
