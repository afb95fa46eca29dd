"""Granularity and parent links from the stage tasks (simulated annotator, pre-fill, AMG) and
in the index of a tiny run through all three stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from reliability_support import output, run_args, sa_engine

from engine import masks as mask_ops
from engine.annotators.simulated import CostModel, SimulatedAnnotator
from engine.audit.run import run_audit
from engine.data.synthetic import SyntheticSource
from engine.dataset.index import read_mask_index
from engine.dataset.validate import validate_paths
from engine.model import SamPredictor, build_sam
from engine.records import (
    GRANULARITIES,
    LEVEL_NAMES,
    LEVEL_PART,
    LEVEL_SUBPART,
    LEVEL_WHOLE,
    ImageItem,
    ReferenceMask,
)
from engine.sa1b import MaskRecord, Provenance
from engine.tasks import AssistedManualTask, SemiAutomaticTask

# Exact masks (accept only IoU 1, else the brush makes the reference), no time limits.
EXACT = SimulatedAnnotator(
    accept_iou=1.0, max_clicks=1, cost=CostModel(max_seconds_per_mask=1e9, seconds_per_image=1e9)
)


@pytest.fixture(scope="module")
def predictor() -> SamPredictor:
    torch.manual_seed(0)
    return SamPredictor(build_sam("tiny"))


def _reference_of(record, item: ImageItem) -> dict[int, int]:
    """annotation id → index of the reference it equals (exact masks)."""
    counts = {ref.rle["counts"]: i for i, ref in enumerate(item.references)}
    return {a.id: counts[a.segmentation["counts"]] for a in record.annotations}


def test_assisted_manual_masks_take_the_reference_level_and_parent(predictor):
    source = SyntheticSource(seed_start=7, count=1, height=96, width=128)
    item = source.load(next(iter(source.entries())))
    levels = {r.level for r in item.references}
    assert levels == {LEVEL_WHOLE, LEVEL_PART, LEVEL_SUBPART}, levels  # the scene has all
    record = AssistedManualTask(EXACT)(predictor, item)
    made_from = _reference_of(record, item)
    mask_of = {ref: ann_id for ann_id, ref in made_from.items()}
    linked = 0
    for ann in record.annotations:
        ref = item.references[made_from[ann.id]]
        assert ann.provenance.granularity == LEVEL_NAMES[ref.level]
        expected = mask_of.get(ref.parent_index) if ref.parent_index is not None else None
        assert ann.provenance.parent_id == expected
        linked += expected is not None
    assert linked >= 2  # parts and subparts point at their enclosing masks


def _rect(y0: int, y1: int, x0: int, x1: int) -> dict:
    mask = np.zeros((64, 64), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask_ops.mask_to_rle(mask)


@dataclass(frozen=True)
class _FixedPrefill(SemiAutomaticTask):
    """Pre-fills exactly the whole object (a model mask at ``granularity`` level)."""

    def _prefill(self, predictor, item):
        rle = item.references[0].rle
        prov = Provenance(stage=self.stage, source="model", granularity="part")
        box = mask_ops.rle_bbox_xywh(rle)
        return [MaskRecord(0, rle, box, mask_ops.rle_area(rle), 0.9, 0.9, [], box, prov)]


def test_semi_automatic_links_added_parts_to_the_prefilled_whole(predictor):
    refs = [
        ReferenceMask(_rect(4, 60, 4, 60), LEVEL_WHOLE, 1, None),
        ReferenceMask(_rect(10, 40, 10, 40), LEVEL_PART, 1, 0),
        ReferenceMask(_rect(12, 20, 12, 20), LEVEL_SUBPART, 1, 1),
    ]
    image = np.full((64, 64, 3), 90, dtype=np.uint8)
    item = ImageItem("k", image, "k.jpg", 0, refs)
    record = _FixedPrefill(EXACT)(predictor, item)
    rows = [(a.provenance.source, a.provenance.granularity, a.provenance.parent_id)
            for a in record.annotations]  # fmt: skip
    # the model's own level for the pre-fill; the annotator's masks from the references
    assert rows == [("model", "part", None), ("simulated", "part", 0), ("simulated", "subpart", 1)]


def test_tiny_run_has_granularity_for_every_stage_and_valid_parent_links(tmp_path):
    args = run_args(
        tmp_path,
        "gran",
        "data.count=4",
        "stages.semi_automatic.rounds=1",
        "stages.semi_automatic.images_per_round=1",
        "stages.prefill.points_per_side=4",
        "stages.prefill.pred_iou_thresh=0.0",
        "stages.prefill.stability_score_thresh=0.0",
    )
    result = sa_engine(*args)
    assert result.returncode == 0, output(result)
    run_dir = tmp_path / "gran"
    rows = read_mask_index(run_dir / "index").to_pylist()
    stages = {r["stage"] for r in rows}
    assert stages == {"assisted_manual", "semi_automatic", "fully_automatic"}, stages
    assert all(r["granularity"] in GRANULARITIES for r in rows)
    ids = {(r["key"], r["annotation_id"]) for r in rows}
    parents = [r for r in rows if r["parent_id"] is not None]
    assert parents, "the simulated annotator labels parts of labelled wholes"
    for row in parents:
        assert (row["key"], row["parent_id"]) in ids and row["parent_id"] != row["annotation_id"]
        assert row["source"] == "simulated"
    by_id = {(r["key"], r["annotation_id"]): r for r in rows}
    for row in parents:  # a part's parent is a whole, a subpart's a part (or a whole)
        parent = by_id[(row["key"], row["parent_id"])]
        if parent["source"] != "simulated":
            continue  # a pre-filled parent has the model's level
        assert GRANULARITIES.index(parent["granularity"]) < GRANULARITIES.index(row["granularity"])
    simulated = [r for r in rows if r["source"] == "simulated"]
    assert {r["granularity"] for r in simulated} >= {"whole", "part"}
    report = validate_paths([run_dir / "shards"])
    assert report.ok, [str(p) for p in report.problems]
    # the run's audit counts the levels and parent links per stage/round, as the index has them
    audit = run_audit(run_dir, out_dir=tmp_path / "audit")
    for name in GRANULARITIES:
        assert sum(g["granularity"][name] for g in audit["groups"].values()) == sum(
            r["granularity"] == name for r in rows
        )
    assert sum(g["with_parent"] for g in audit["groups"].values()) == len(parents)
    html = (tmp_path / "audit" / "audit.html").read_text()
    assert "whole / part / subpart" in html
