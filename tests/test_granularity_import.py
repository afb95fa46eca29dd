"""Granularity and parent links of imported COCO annotations: kept through the import, the
shard writer and the index; bad values are errors naming the annotation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.annotators.coco_import import CocoImportTask, CorrectedMasksError, load_corrected_masks
from engine.dataset import ShardWriter, read_mask_index
from engine.dataset.validate import validate_paths
from engine.masks import mask_to_rle
from engine.records import ImageItem

H, W = 24, 32


def _rle(y0: int, y1: int, x0: int, x1: int) -> dict:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask_to_rle(mask)


def _write(tmp_path, annotations: list[dict]):
    images = [
        {"id": 1, "file_name": "a.jpg", "width": W, "height": H},
        {"id": 2, "file_name": "b.jpg", "width": W, "height": H},
    ]
    path = tmp_path / "corrected.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


# COCO ids 10 > 11 > 12 nest; 13 is empty (dropped), 14 sits in 13; 15 has no attributes.
ANNOTATIONS = [
    {"id": 12, "image_id": 1, "segmentation": _rle(6, 10, 6, 10), "granularity": "subpart",
     "parent_id": 11},
    {"id": 10, "image_id": 1, "segmentation": _rle(2, 22, 2, 30), "granularity": "whole"},
    {"id": 11, "image_id": 1, "segmentation": _rle(4, 14, 4, 20), "granularity": "part",
     "parent_id": 10},
    {"id": 13, "image_id": 1, "segmentation": _rle(0, 0, 0, 0), "granularity": "whole"},
    {"id": 14, "image_id": 1, "segmentation": _rle(20, 22, 20, 22), "granularity": "part",
     "parent_id": 13},
    {"id": 15, "image_id": 1, "segmentation": _rle(0, 2, 0, 2)},
    {"id": 10, "image_id": 2, "segmentation": _rle(0, 5, 0, 5), "granularity": "part"},
]  # fmt: skip


def test_import_keeps_levels_and_parent_links(tmp_path):
    images = load_corrected_masks(_write(tmp_path, ANNOTATIONS))
    item = ImageItem("a", np.zeros((H, W, 3), np.uint8), "a.jpg")
    record = CocoImportTask(images, stage="assisted_manual")(None, item)
    rows = [(a.id, a.provenance.granularity, a.provenance.parent_id) for a in record.annotations]
    # ids follow the file order with the empty mask dropped: 12→0, 10→1, 11→2, 14→3, 15→4
    assert rows == [(0, "subpart", 2), (1, "whole", None), (2, "part", 1),
                    (3, "part", None), (4, "whole", None)]  # fmt: skip
    other = ImageItem("b", np.zeros((H, W, 3), np.uint8), "b.jpg")
    ((_, level, parent),) = [
        (a.id, a.provenance.granularity, a.provenance.parent_id)
        for a in CocoImportTask(images)(None, other).annotations
    ]
    assert (level, parent) == ("part", None)

    shards, index = tmp_path / "shards", tmp_path / "index"
    with ShardWriter(shards, index, "stage1-r00") as writer:
        writer.write("a", item.image, record)
    table = read_mask_index(index)
    assert table.column("granularity").to_pylist() == ["subpart", "whole", "part", "part", "whole"]
    assert table.column("parent_id").to_pylist() == [2, None, 1, None, None]
    report = validate_paths([shards])
    assert report.ok, [str(p) for p in report.problems]


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"granularity": "object"}, r"annotations\[0\].granularity must be one of"),
        ({"parent_id": 99}, r"annotations\[0\].parent_id 99 is not the id of another"),
        ({"parent_id": 12}, r"annotations\[0\].parent_id 12 is not the id of another"),
    ],
)
def test_bad_levels_and_links_are_errors(tmp_path, edit, message):
    annotations = [{**ANNOTATIONS[0], **edit}, *ANNOTATIONS[1:]]
    with pytest.raises(CorrectedMasksError, match=message):
        load_corrected_masks(_write(tmp_path, annotations))


def test_parent_in_another_image_and_cycles_are_errors(tmp_path):
    other_image = [*ANNOTATIONS[:6], {**ANNOTATIONS[6], "id": 20, "parent_id": 12}]
    with pytest.raises(CorrectedMasksError, match=r"annotations\[6\].parent_id 12"):
        load_corrected_masks(_write(tmp_path, other_image))
    cycle = [{**ANNOTATIONS[1], "parent_id": 12}, *ANNOTATIONS[:1], *ANNOTATIONS[2:]]
    with pytest.raises(CorrectedMasksError, match="form a cycle"):
        load_corrected_masks(_write(tmp_path, cycle))
