"""The simulated annotator and the per-image stage tasks, without Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import clicks
from engine.annotators.simulated import CostModel, SimulatedAnnotator, _best_low_res, _next_click
from engine.data.synthetic import SyntheticSource
from engine.masks import mask_to_rle, rle_to_mask
from engine.model import SamPredictor, build_sam
from engine.records import ImageItem, ReferenceMask
from engine.sa1b import validate
from engine.tasks import AssistedManualTask, FullyAutomaticTask, SemiAutomaticTask


@pytest.fixture(scope="module")
def predictor() -> SamPredictor:
    torch.manual_seed(0)
    return SamPredictor(build_sam("tiny"))


@pytest.fixture(scope="module")
def item() -> ImageItem:
    source = SyntheticSource(seed_start=7, count=1, height=96, width=128)
    return source.load(next(iter(source.entries())))


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> dict:
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask_to_rle(mask)


@pytest.mark.parametrize(
    "field", ["seconds_per_mask", "seconds_per_click", "seconds_per_fixed_pixel"]
)
def test_cost_model_rejects_negative_values(field):
    with pytest.raises(ValueError, match=field):
        CostModel(**{field: -1.0})


@pytest.mark.parametrize(
    "kwargs", [{"accept_iou": 0.0}, {"accept_iou": 1.5}, {"max_clicks": 0}, {"min_area": 0}]
)
def test_annotator_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        SimulatedAnnotator(**kwargs)


def test_annotate_before_set_image_says_what_to_call(predictor):
    predictor.reset_image()
    with pytest.raises(RuntimeError, match="set_image"):
        SimulatedAnnotator().annotate(predictor, [])


def test_references_are_labelled_largest_first_skipping_small_and_covered():
    refs = [
        ReferenceMask(_rect(20, 20, 0, 2, 0, 2)),  # area 4: below min_area
        ReferenceMask(_rect(20, 20, 0, 10, 0, 10)),  # 100
        ReferenceMask(_rect(20, 20, 0, 5, 0, 5)),  # 25
        ReferenceMask(_rect(20, 20, 0, 12, 0, 12)),  # 144, skipped (covered)
        ReferenceMask(_rect(20, 20, 10, 20, 10, 20)),  # 100, after index 1 on ties
    ]
    annotator = SimulatedAnnotator(min_area=16)
    assert annotator._order(refs, skip={3}) == [1, 4, 2]


@pytest.mark.parametrize("seed", range(6))
def test_windowed_click_equals_the_full_image_protocol(seed):
    rng = np.random.default_rng(seed)
    gt = np.zeros((40, 50), dtype=bool)
    gt[rng.integers(0, 20) : rng.integers(21, 40), rng.integers(0, 25) : rng.integers(26, 50)] = (
        True
    )
    pred = np.zeros_like(gt) if seed % 2 else rng.random(gt.shape) > 0.7
    assert _next_click(gt, None) == clicks.next_click(gt, None)
    assert _next_click(gt, pred) == clicks.next_click(gt, pred)


def test_best_low_res_picks_the_candidate_matching_the_reference(predictor, item):
    predictor.set_image(item.image)
    side = predictor.model.prompt_encoder.mask_input_size[0]
    gt = np.zeros((item.height, item.width), dtype=bool)
    gt[: item.height // 2, : item.width // 2] = True
    h, w = predictor.input_size
    scale = side / predictor.model.image_encoder.img_size
    low = torch.full((1, 3, side, side), -5.0)
    low[0, 0, :, :] = 5.0  # everything
    low[0, 1, : int(h * scale / 2), : int(w * scale / 2)] = 5.0  # the top-left quarter
    choice = _best_low_res(predictor, low, torch.as_tensor(gt)[None])
    assert choice.tolist() == [1]


def test_accepted_masks_follow_the_protocol_and_the_cost_model(predictor, item):
    cost = CostModel(
        seconds_per_mask=3.0,
        seconds_per_click=2.0,
        seconds_per_fixed_pixel=0.01,
        max_seconds_per_mask=1e9,
        seconds_per_image=1e9,
    )
    annotator = SimulatedAnnotator(accept_iou=0.9, max_clicks=3, cost=cost, min_area=16)
    predictor.set_image(item.image)
    accepted = annotator.annotate(predictor, item.references)
    expected = annotator._order(item.references, set())
    assert [a.reference_index for a in accepted] == expected
    for a in accepted:
        gt = rle_to_mask(item.references[a.reference_index].rle)
        assert 1 <= len(a.clicks) <= 3
        assert a.clicks[0].positive and gt[a.clicks[0].y, a.clicks[0].x]
        assert a.hand_fixed == (a.model_iou < 0.9)
        if a.hand_fixed:
            assert np.array_equal(a.mask, gt)  # finished by hand: the reference
        else:
            assert clicks.mask_iou(a.mask, gt) >= 0.9
        assert a.seconds >= 3.0 + 2.0 * len(a.clicks)


def test_per_image_budget_and_slow_mask_end_the_image(predictor, item):
    predictor.set_image(item.image)
    budget = SimulatedAnnotator(max_clicks=2, cost=CostModel(seconds_per_image=20.0))
    accepted = budget.annotate(predictor, item.references)
    assert accepted and sum(a.seconds for a in accepted[:-1]) < 20.0
    slow = SimulatedAnnotator(
        max_clicks=2, cost=CostModel(max_seconds_per_mask=0.5, seconds_per_image=1e9)
    )
    assert len(slow.annotate(predictor, item.references)) == 1


def test_assisted_manual_task_writes_valid_sa1b_with_provenance(predictor, item):
    annotator = SimulatedAnnotator(max_clicks=2, cost=CostModel(seconds_per_image=60.0))
    record = AssistedManualTask(annotator, round=3)(predictor, item)
    assert validate(record) == []
    assert [a.id for a in record.annotations] == list(range(len(record.annotations)))
    for ann in record.annotations:
        p = ann.provenance
        assert (p.stage, p.round, p.source) == ("assisted_manual", 3, "simulated")
        assert p.clicks >= 1 and p.seconds > 0 and p.model_iou is not None
        assert ann.crop_box == [0.0, 0.0, float(item.width), float(item.height)]


def test_semi_automatic_task_skips_references_covered_by_the_prefill(predictor, item):
    annotator = SimulatedAnnotator(max_clicks=1)
    task = SemiAutomaticTask(
        annotator,
        prefill={"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
        covered_iou=0.0,  # every reference counts as covered
    )
    predictor.set_image(item.image)
    prefilled = task._prefill(predictor, item)
    assert prefilled and all(m.provenance.source == "model" for m in prefilled)
    record = task(predictor, item)
    assert validate(record) == []
    assert {a.provenance.source for a in record.annotations} == {"model"}


def test_fully_automatic_task_marks_model_masks(predictor, item):
    task = FullyAutomaticTask(
        generator={
            "points_per_side": 4,
            "crop_n_layers": 0,
            "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0,
            "min_mask_region_area": 0,
        },
        round=0,
    )
    record = task(predictor, item)
    assert validate(record) == []
    assert record.annotations
    assert {(a.provenance.stage, a.provenance.source) for a in record.annotations} == {
        ("fully_automatic", "model")
    }
