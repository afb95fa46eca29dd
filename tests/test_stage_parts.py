"""The pipeline's parts on their own: round planning, the state file, the summary table,
imported COCO masks and detector boxes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.annotators.coco_import import CocoImportTask, CorrectedMasksError, load_corrected_masks
from engine.annotators.detections import DetectionsError, load_detections
from engine.data.sources import SourceEntry
from engine.masks import mask_to_rle, rle_to_mask
from engine.records import ImageItem
from engine.sa1b import validate
from stages.rounds import StagePlan, plan_rounds
from stages.state import RoundState, RunState, load_state, save_state
from stages.summary import format_table


def _entries(n: int) -> list[SourceEntry]:
    return [SourceEntry(key=f"k{i}", path=f"p{i}", index=i) for i in range(n)]


def test_rounds_take_consecutive_slices_and_stage3_the_rest():
    plans = plan_rounds(
        _entries(10),
        [StagePlan(1, 2, 3, True), StagePlan(2, 1, 2, True), StagePlan(3, 1, None, False)],
    )
    assert [(p.prefix, p.keys, p.retrain) for p in plans] == [
        ("stage1-r00", ["k0", "k1", "k2"], True),
        ("stage1-r01", ["k3", "k4", "k5"], True),
        ("stage2-r00", ["k6", "k7"], True),
        ("stage3-r00", ["k8", "k9"], False),
    ]


def test_a_short_pool_drops_empty_rounds():
    plans = plan_rounds(_entries(4), [StagePlan(1, 3, 2, True), StagePlan(3, 1, None, False)])
    assert [p.prefix for p in plans] == ["stage1-r00", "stage1-r01"]


@pytest.mark.parametrize("kwargs", [{"number": 4}, {"rounds": -1}, {"images_per_round": 0}])
def test_stage_plan_validates(kwargs):
    args = {"number": 1, "rounds": 1, "images_per_round": 1, "retrain": True, **kwargs}
    with pytest.raises(ValueError):
        StagePlan(**args)


def test_state_round_trip_and_checkpoint_lineage(tmp_path):
    state = RunState(config_digest="abc", initial_checkpoint="checkpoints/initial.pt")
    state.rounds = [
        RoundState("assisted_manual", 0, "stage1-r00", ["a"], True, "checkpoints/stage1-r00.pt"),
        RoundState("assisted_manual", 1, "stage1-r01", ["b"]),
        RoundState("semi_automatic", 0, "stage2-r00", ["c"]),
    ]
    save_state(tmp_path, state)
    loaded = load_state(tmp_path)
    assert loaded == state
    assert loaded.latest_checkpoint_before("stage1-r00") == "checkpoints/initial.pt"
    assert loaded.latest_checkpoint_before("stage2-r00") == "checkpoints/stage1-r00.pt"
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_state_is_a_clear_error(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(ValueError, match="state.json"):
        load_state(tmp_path)


def test_summary_table_has_a_line_per_round():
    table = format_table(
        [
            {
                "round": "stage1-r00",
                "images": 4.0,
                "masks": 40.0,
                "masks_per_image": 10.0,
                "miou_1click": 0.5,
            }
        ],
        initial={"miou_1click": 0.25, "noc_90": 12.0},
    )
    lines = table.splitlines()
    assert lines[0].startswith("round") and "masks/img" in lines[0]
    assert lines[2].startswith("initial model") and "0.250" in lines[2]
    assert lines[3].startswith("stage1-r00") and "10.0" in lines[3]


def _coco(tmp_path, segmentation, width=8, height=6, extra=None):
    data = {
        "images": [{"id": 1, "file_name": "dir/a.jpg", "width": width, "height": height}],
        "annotations": [{"id": 1, "image_id": 1, "segmentation": segmentation, **(extra or {})}],
    }
    path = tmp_path / "corrected.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_import_polygons_and_rle_become_annotator_records(tmp_path):
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:4, 2:6] = True
    path = _coco(tmp_path, mask_to_rle(mask), extra={"seconds": 12.5})
    images = load_corrected_masks(path)
    item = ImageItem("a", np.zeros((6, 8, 3), np.uint8), "a.jpg")
    record = CocoImportTask(images, stage="semi_automatic", round=2)(None, item)
    assert validate(record) == []
    (ann,) = record.annotations
    assert np.array_equal(rle_to_mask(ann.segmentation), mask)
    assert (ann.provenance.source, ann.provenance.round, ann.provenance.seconds) == (
        "annotator",
        2,
        12.5,
    )
    polygon = _coco(tmp_path, [[2, 1, 6, 1, 6, 4, 2, 4]])
    (poly,) = CocoImportTask(load_corrected_masks(polygon))(None, item).annotations
    assert poly.area > 0
    big = ImageItem("a", np.zeros((12, 16, 3), np.uint8), "a.jpg")  # resized image
    (scaled,) = CocoImportTask(images)(None, big).annotations
    assert scaled.segmentation["size"] == [12, 16] and scaled.area == 4 * mask.sum()


def test_coco_import_errors_name_the_file_and_field(tmp_path):
    wrong_size = _coco(tmp_path, mask_to_rle(np.zeros((3, 3), dtype=bool)))
    with pytest.raises(CorrectedMasksError, match=r"annotations\[0\].segmentation.size"):
        load_corrected_masks(wrong_size)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(CorrectedMasksError, match="bad.json"):
        load_corrected_masks(bad)
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"images": [], "annotations": [{"image_id": 9}]}))
    with pytest.raises(CorrectedMasksError, match="image_id"):
        load_corrected_masks(missing)
    images = load_corrected_masks(_coco(tmp_path, [[0, 0, 2, 0, 2, 2]]))
    other = ImageItem("b", np.zeros((6, 8, 3), np.uint8), "other.jpg")
    with pytest.raises(ValueError, match="other.jpg"):
        CocoImportTask(images)(None, other)


def test_detections_are_grouped_by_image_and_sorted_by_score(tmp_path):
    path = tmp_path / "det.json"
    path.write_text(
        json.dumps(
            [
                {"image_id": 1, "bbox": [0, 0, 4, 4], "score": 0.2},
                {"image_id": 1, "bbox": [1, 1, 2, 2], "score": 0.9, "category_id": 3},
                {"image_id": 2, "bbox": [0, 0, 1, 1]},
            ]
        )
    )
    found = load_detections(path)
    assert [s for _, s in found.for_image(1, "a.jpg", 8, 8)] == [0.9, 0.2]
    assert found.for_image(2, "b.jpg", 8, 8)[0][1] == 1.0
    path.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, -1, 4]}]))
    with pytest.raises(DetectionsError, match="bbox"):
        load_detections(path)
