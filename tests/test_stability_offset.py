"""The stability offset of stage 2's pre-fill and stage 3: composed config → task → generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.amg import AutomaticMaskGenerator
from engine.annotators.simulated import SimulatedAnnotator
from engine.data.synthetic import SyntheticSource
from engine.model import build_sam
from engine.weights import resolve_checkpoint
from stages.hydra_app import compose_config, to_dataclass
from stages.round_tasks import TaskFactory
from stages.rounds import RoundPlan


def _factory(overrides: list[str], tmp_path) -> TaskFactory:
    cfg = to_dataclass(compose_config("run", overrides))
    return TaskFactory(SimulatedAnnotator(), cfg.stages, tmp_path, cfg.data, cfg.model.preset)


def test_the_offset_reaches_the_prefill_and_stage_three_generators(tmp_path):
    factory = _factory(
        [
            "stages.fully_automatic.stability_score_offset=0.25",
            "stages.prefill.stability_score_offset=0.75",
        ],
        tmp_path,
    )
    factory.check()
    automatic = factory(RoundPlan(stage=3, round=0, entries=(), retrain=False))
    semi = factory(RoundPlan(stage=2, round=0, entries=(), retrain=False))
    model = build_sam("tiny")
    stage3 = AutomaticMaskGenerator.from_preset(automatic.preset, model, **automatic.generator)
    prefill = AutomaticMaskGenerator(model, **semi.prefill)
    assert stage3.filters.stability_score_offset == 0.25
    assert prefill.filters.stability_score_offset == 0.75


@pytest.mark.parametrize("group", ["fully_automatic", "prefill"])
@pytest.mark.parametrize("offset", ["0", "-0.5"])
def test_a_non_positive_offset_is_refused_by_the_check(tmp_path, group, offset):
    factory = _factory([f"stages.{group}.stability_score_offset={offset}"], tmp_path)
    with pytest.raises(ValueError, match=f"stages.{group}: stability_score_offset must be > 0"):
        factory.check()


def test_a_smaller_offset_scores_every_mask_at_least_as_stable():
    """Stability is IoU(logits > +o, logits > -o): a narrower band can only raise it."""
    model = build_sam("mobile", resolve_checkpoint("bundled:mobile_public")).eval()
    source = SyntheticSource.from_split("heldout", 1, height=192, width=256)
    item = source.load(next(iter(source.entries())))
    scores = {}
    for offset in (1.0, 0.5):
        amg = AutomaticMaskGenerator(
            model,
            points_per_side=6,
            pred_iou_thresh=0.0,
            stability_score_thresh=0.0,
            stability_score_offset=offset,
            box_nms_thresh=1.0,
        )
        with torch.no_grad():
            masks = amg.generate(item.image)
        scores[offset] = np.array([m["stability_score"] for m in masks])
    assert scores[1.0].shape == scores[0.5].shape and scores[1.0].size > 0
    assert (scores[0.5] >= scores[1.0] - 1e-6).all()
    assert scores[0.5].mean() > scores[1.0].mean()
