"""Matching generated masks to references, and the reference metrics built on it."""

from __future__ import annotations

import numpy as np
import pytest
from audit_support import disk, image_record, rect, references
from scipy import ndimage

from engine.audit.auditor import AuditOptions, Auditor
from engine.audit.match import match_iou_matrix, match_masks
from engine.audit.metrics import Calibration, ReferenceMetrics, size_bucket
from engine.audit.reference import MappingReference
from engine.masks import mask_to_rle
from engine.records import LEVEL_PART, LEVEL_SUBPART, LEVEL_WHOLE


def test_hungarian_beats_greedy_on_a_crossed_case():
    # greedy would take 0.9 first and be left with 0.1 (total 1.0); optimal total is 1.65
    m = match_iou_matrix(np.array([[0.9, 0.8], [0.85, 0.1]]))
    pairs = sorted(zip(m.generated_index.tolist(), m.reference_index.tolist()))
    assert pairs == [(0, 1), (1, 0)]
    assert sorted(m.iou.tolist()) == [0.8, 0.85]
    assert m.best_iou.tolist() == [0.9, 0.85]
    assert m.reference_iou.tolist() == [0.85, 0.8]


def test_zero_iou_assignments_are_not_matches_and_empty_sides_work():
    m = match_iou_matrix(np.array([[0.0, 0.0], [0.0, 0.6]]))
    assert m.generated_index.tolist() == [1] and m.reference_index.tolist() == [1]
    assert m.reference_iou.tolist() == [0.0, 0.6]
    empty = match_iou_matrix(np.zeros((3, 0)))
    assert (empty.n_generated, empty.n_reference, empty.iou.size) == (3, 0, 0)
    assert empty.best_iou.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="G×R"):
        match_iou_matrix(np.zeros(3))


def _audit(masks, refs, level=None, **kwargs):
    key = "img"
    auditor = Auditor(MappingReference({key: references(refs, level)}), AuditOptions(**kwargs))
    row = auditor.add(key, image_record(masks))
    return auditor, row


def test_reference_identical_to_output_is_100_percent_above_090():
    h, w = 48, 64
    masks = [rect(h, w, 2, 2, 20, 30), disk(h, w, 30, 40, 9), rect(h, w, 25, 0, 48, 12)]
    auditor, row = _audit(masks, masks)
    ref = auditor.metrics.to_json()
    assert ref["iou_above"] == {"0.50": 1.0, "0.75": 1.0, "0.90": 1.0}
    assert ref["recall"] == {"0.50": 1.0, "0.75": 1.0, "0.90": 1.0}
    assert ref["precision"]["0.90"] == 1.0
    assert ref["mean_matched_iou"] == pytest.approx(1.0)
    assert row["references"] == 3 and row["matched"] == 3 and row["recall_0.90"] == 1.0


@pytest.mark.parametrize("k", [1, 2, 4])
def test_masks_eroded_by_k_pixels_give_the_iou_computed_here(k):
    h, w = 64, 64
    refs = [disk(h, w, 20, 20, 14), rect(h, w, 40, 30, 60, 62)]
    eroded = [ndimage.binary_erosion(m, iterations=k) for m in refs]
    # eroded ⊂ reference, so IoU = |eroded| / |reference|
    expected = sorted(e.sum() / r.sum() for e, r in zip(eroded, refs))
    auditor, _ = _audit(eroded, refs)
    ref = auditor.metrics.to_json()
    assert ref["matched"] == 2
    assert ref["mean_matched_iou"] == pytest.approx(np.mean(expected))
    for t in ("0.50", "0.75", "0.90"):
        share = sum(v >= float(t) for v in expected) / 2
        assert ref["iou_above"][t] == pytest.approx(share)
        assert ref["recall"][t] == pytest.approx(share)


def test_recall_by_level_and_size_and_precision_with_extra_masks():
    h, w = 200, 200
    whole = rect(h, w, 0, 0, 120, 120)  # 14400 px: large
    part = rect(h, w, 0, 0, 40, 40)  # 1600 px: medium
    sub = rect(h, w, 150, 150, 155, 155)  # 25 px: small, missed below
    key = "img"
    refs = {
        key: references([whole], LEVEL_WHOLE)
        + references([part], LEVEL_PART)
        + references([sub], LEVEL_SUBPART)
    }
    extra = rect(h, w, 180, 0, 200, 20)  # matches nothing
    auditor = Auditor(MappingReference(refs))
    auditor.add(key, image_record([whole, part, extra]))
    ref = auditor.metrics.to_json()
    assert ref["recall"]["0.90"] == pytest.approx(2 / 3)
    assert ref["precision"]["0.90"] == pytest.approx(2 / 3)
    assert ref["iou_above"]["0.90"] == 1.0
    levels = {k: v["recall"]["0.90"] for k, v in ref["recall_by_level"].items()}
    assert levels == {"part": 1.0, "subpart": 0.0, "whole": 1.0}
    sizes = {k: (v["references"], v["recall"]["0.50"]) for k, v in ref["recall_by_size"].items()}
    assert sizes == {"small": (1, 0.0), "medium": (1, 1.0), "large": (1, 1.0)}
    assert [size_bucket(a) for a in (0, 1023, 1024, 9215, 9216)] == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
    ]


def test_image_without_reference_is_left_out_of_reference_metrics():
    auditor = Auditor(MappingReference({}))
    row = auditor.add("other", image_record([rect(8, 8, 0, 0, 4, 4)]))
    assert auditor.images_with_reference == 0 and row["references"] is None
    assert auditor.metrics.to_json()["iou_above"]["0.90"] is None
    assert auditor.stats.images == 1


def test_calibration_bins_and_ece_by_hand():
    cal = Calibration()
    # bin [0.9, 1.0]: predicted 0.95 twice, actual 1.0 and 0.5 → |0.95 − 0.75| = 0.2
    # bin [0.5, 0.6): predicted 0.55, actual 0.55 → 0
    cal.add(np.array([0.95, 0.95, 0.55]), np.array([1.0, 0.5, 0.55]))
    out = cal.to_json()
    assert out["masks"] == 3
    assert out["ece"] == pytest.approx(2 / 3 * 0.2)
    top = out["bins"][9]
    assert (top["masks"], top["mean_predicted_iou"], top["mean_actual_iou"]) == (
        2,
        pytest.approx(0.95),
        pytest.approx(0.75),
    )
    assert out["bins"][0]["mean_actual_iou"] is None


def test_calibration_uses_each_masks_best_reference_iou():
    h, w = 32, 32
    ref = rect(h, w, 0, 0, 16, 16)
    half = rect(h, w, 0, 0, 16, 8)  # IoU 0.5, predicted 0.9
    auditor = Auditor(MappingReference({"img": references([ref])}))
    auditor.add("img", image_record([half], predicted_iou=0.9))
    cal = auditor.metrics.to_json()["calibration"]
    assert cal["mean_actual_iou"] == pytest.approx(0.5)
    assert cal["ece"] == pytest.approx(0.4)


def test_groups_and_sources_are_kept_apart_and_merge():
    a, b = ReferenceMetrics(), ReferenceMetrics()
    m = rect(16, 16, 0, 0, 8, 8)
    rle = mask_to_rle(m)
    matching = match_masks([rle, mask_to_rle(rect(16, 16, 10, 10, 12, 12))], [rle])
    args = (matching, [None], np.array([64.0]), np.array([0.9, 0.9]))
    a.add_image(*args, group="stage1/r00", sources=["simulated", "model"])
    b.add_image(*args, group="stage3/r00", sources=["model", "model"])
    a.merge(b)
    out = a.to_json()
    assert set(out["by_group"]) == {"stage1/r00", "stage3/r00"}
    assert out["by_group"]["stage1/r00"]["recall"]["0.90"] == 1.0
    assert out["by_source"]["simulated"]["masks"] == 1
    assert out["by_source"]["simulated"]["iou_above"]["0.90"] == 1.0
    assert out["by_source"]["model"]["masks"] == 3
    assert out["by_source"]["model"]["matched"] == 1  # only b's first mask
    assert out["recall_by_level"]["unknown"]["references"] == 2
