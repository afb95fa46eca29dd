"""Stage 2's pre-fill from a detector's boxes: matching by file name or id, rescaling to the
decoded image, the score and predicted-IoU cuts, and covered references skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine import masks as mask_ops
from engine.annotators.detections import DetectionsError, load_detections
from engine.annotators.simulated import SimulatedAnnotator
from engine.records import SOURCE_MODEL, ImageItem, ReferenceMask
from engine.tasks import SemiAutomaticTask


class BoxPredictor:
    """Answers a box prompt with the box filled in and a fixed predicted IoU; records boxes."""

    def __init__(self, iou: float) -> None:
        self.iou = iou
        self.boxes: list[list[float]] = []
        self.is_image_set = False
        self.shape = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        self.shape = image.shape[:2]
        self.is_image_set = True

    def predict(self, box: np.ndarray, multimask_output: bool):
        self.boxes.append([float(v) for v in box])
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        mask = np.zeros(self.shape, bool)
        mask[y0:y1, x0:x1] = True
        return mask[None], np.array([self.iou], np.float32), np.zeros((1, 4, 4), np.float32)


def _item(references=()) -> ImageItem:
    return ImageItem(
        "k", np.zeros((40, 60, 3), np.uint8), "photos/cat.jpg", 7, references=list(references)
    )


def _write(tmp_path, data) -> object:
    path = tmp_path / "det.json"
    path.write_text(json.dumps(data))
    return load_detections(path)


def _task(detections, **kwargs) -> SemiAutomaticTask:
    return SemiAutomaticTask(SimulatedAnnotator(), detections=detections, **kwargs)


def test_boxes_by_file_name_are_rescaled_to_the_decoded_image(tmp_path):
    # the detector saw the 120×80 original; the source decoded it at 60×40
    det = _write(
        tmp_path,
        [{"file_name": "cat.jpg", "width": 120, "height": 80, "bbox": [20, 10, 40, 30]}],
    )
    predictor = BoxPredictor(iou=0.95)
    record = _task(det)(predictor, _item())
    assert predictor.boxes == [[10.0, 5.0, 30.0, 20.0]]  # XYXY, halved
    (mask,) = record.annotations
    assert mask.bbox == [10.0, 5.0, 20.0, 15.0]
    assert mask.provenance.source == SOURCE_MODEL and mask.provenance.stage == "semi_automatic"


def test_coco_dataset_form_gives_names_and_sizes_and_ids_still_match(tmp_path):
    det = _write(
        tmp_path,
        {
            "images": [{"id": 3, "file_name": "cat.jpg", "width": 30, "height": 20}],
            "annotations": [{"image_id": 3, "bbox": [1, 1, 10, 10], "score": 0.9}],
        },
    )
    predictor = BoxPredictor(iou=0.95)
    _task(det)(predictor, _item())
    assert predictor.boxes == [[2.0, 2.0, 22.0, 22.0]]  # matched by name, scaled ×2
    by_id = _write(tmp_path, [{"image_id": 7, "bbox": [1, 1, 10, 10], "score": 0.9}])
    predictor = BoxPredictor(iou=0.95)
    _task(by_id)(predictor, _item())
    assert predictor.boxes == [[1.0, 1.0, 11.0, 11.0]]  # no size: decoded pixels as given
    other = _write(tmp_path, [{"image_id": 8, "bbox": [1, 1, 10, 10]}])
    predictor = BoxPredictor(iou=0.95)
    assert _task(other)(predictor, _item()).annotations == [] and predictor.boxes == []


@pytest.mark.parametrize(
    ("score_thresh", "iou_thresh", "prompted", "kept"),
    [(0.5, 0.88, 2, 2), (0.7, 0.88, 1, 1), (0.5, 0.9, 2, 0), (0.0, 0.5, 3, 3)],
)
def test_score_and_predicted_iou_cuts(tmp_path, score_thresh, iou_thresh, prompted, kept):
    det = _write(
        tmp_path,
        [
            {"image_id": 7, "bbox": [0, 0, 10, 10], "score": 0.8},
            {"image_id": 7, "bbox": [20, 0, 10, 10], "score": 0.6},
            {"image_id": 7, "bbox": [40, 0, 10, 10], "score": 0.1},
        ],
    )
    predictor = BoxPredictor(iou=0.89)
    task = _task(det, detection_score_thresh=score_thresh, detection_pred_iou_thresh=iou_thresh)
    record = task(predictor, _item())
    assert len(predictor.boxes) == prompted
    assert len(record.annotations) == kept
    assert [m.id for m in record.annotations] == list(range(kept))


def test_a_reference_covered_by_a_box_mask_is_not_annotated(tmp_path):
    reference = np.zeros((40, 60), bool)
    reference[5:25, 10:30] = True
    det = _write(tmp_path, [{"image_id": 7, "bbox": [10, 5, 20, 20], "score": 0.9}])
    predictor = BoxPredictor(iou=0.95)
    item = _item([ReferenceMask(mask_ops.mask_to_rle(reference))])
    record = _task(det)(predictor, item)
    assert len(record.annotations) == 1  # the pre-filled mask only: the annotator skipped it
    assert record.annotations[0].provenance.source == SOURCE_MODEL


def test_an_entry_naming_no_image_is_refused(tmp_path):
    with pytest.raises(DetectionsError, match="names no image"):
        _write(tmp_path, [{"bbox": [0, 0, 4, 4]}])
