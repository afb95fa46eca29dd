"""Stage 3's box-NMS threshold: composed config → task → generator, and a bad one refused."""

from __future__ import annotations

import pytest

from engine.amg import PRESETS, AutomaticMaskGenerator
from engine.annotators.simulated import SimulatedAnnotator
from engine.model import build_sam
from stages.hydra_app import compose_config, to_dataclass
from stages.round_tasks import TaskFactory
from stages.rounds import RoundPlan


def _factory(overrides: list[str], tmp_path) -> TaskFactory:
    cfg = to_dataclass(compose_config("run", overrides))
    return TaskFactory(SimulatedAnnotator(), cfg.stages, tmp_path, cfg.data, cfg.model.preset)


def _stage3_generator(factory: TaskFactory) -> AutomaticMaskGenerator:
    task = factory(RoundPlan(stage=3, round=0, entries=(), retrain=False))
    return AutomaticMaskGenerator.from_preset(task.preset, build_sam("tiny"), **task.generator)


def test_the_default_is_sa1b_s_and_an_override_reaches_the_generator(tmp_path):
    assert (
        _stage3_generator(_factory([], tmp_path)).box_nms_thresh
        == PRESETS["sa1b"]["box_nms_thresh"]
    )
    factory = _factory(["stages.fully_automatic.box_nms_thresh=0.8"], tmp_path)
    factory.check()
    assert _stage3_generator(factory).box_nms_thresh == 0.8


def test_an_out_of_range_threshold_is_refused_by_the_check(tmp_path):
    factory = _factory(["stages.fully_automatic.box_nms_thresh=1.5"], tmp_path)
    with pytest.raises(ValueError, match="stages.fully_automatic.box_nms_thresh"):
        factory.check()
