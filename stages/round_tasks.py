"""Which per-image task each round runs, given the annotator kind.

- simulated: ``AssistedManualTask`` (stage 1) / ``SemiAutomaticTask`` (stage 2);
- coco: the round's masks come from a COCO JSON of corrected masks (``engine.annotators.
  coco_import``), e.g. made in CVAT or Label Studio;
- human: the web tool's store (``stages.human_round``);
stage 3 is always ``FullyAutomaticTask``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from engine.annotators.simulated import SimulatedAnnotator
from engine.tasks import AssistedManualTask, FullyAutomaticTask, SemiAutomaticTask
from stages.rounds import RoundPlan
from stages.run_config import StagesConfig


@dataclass
class TaskFactory:
    """``factory(plan)`` → the task of that round (see the module docstring)."""

    annotator: SimulatedAnnotator
    stages: StagesConfig
    run_dir: Path
    data: object
    preset: str

    def __post_init__(self) -> None:
        prefill = asdict(self.stages.prefill)
        self.covered_iou = prefill.pop("covered_iou")
        self.seconds_per_prefilled = prefill.pop("seconds_per_prefilled")
        self.detections_path = prefill.pop("detections")
        self.detection_score_thresh = prefill.pop("detection_score_thresh")
        self.detection_pred_iou_thresh = prefill.pop("detection_pred_iou_thresh")
        self.prefill = prefill
        automatic = asdict(self.stages.fully_automatic)
        self.amg_preset = automatic.pop("preset")
        automatic.pop("images")
        self.automatic = automatic
        self._detections = None
        self._coco = None

    def check(self) -> None:
        """Fail now (not mid-run) on bad AMG values or missing files."""
        from engine.amg import AutomaticMaskGenerator
        from engine.model import build_sam

        for group, values in (("prefill", self.prefill), ("fully_automatic", self.automatic)):
            for name, value in values.items():
                if name.endswith("_thresh") and not 0.0 <= value <= 1.0:
                    raise ValueError(f"stages.{group}.{name} must be in [0, 1], got {value}")
        probe = build_sam("tiny")
        try:
            AutomaticMaskGenerator(probe, **self.prefill)
        except ValueError as exc:
            raise ValueError(f"stages.prefill: {exc}") from exc
        try:
            AutomaticMaskGenerator.from_preset(self.amg_preset, probe, **self.automatic)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"stages.fully_automatic: {exc}") from exc
        for name in ("detection_score_thresh", "detection_pred_iou_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(
                    f"stages.prefill.{name} must be in [0, 1], got {getattr(self, name)}"
                )
        if not 0.0 < self.covered_iou <= 1.0:
            raise ValueError(
                f"stages.prefill.covered_iou must be in (0, 1], got {self.covered_iou}"
            )
        if self.detections_path:
            self._load_detections()
        if self.stages.annotator == "coco":
            self._load_coco()

    def __call__(self, plan: RoundPlan):
        if plan.stage == 3:
            return FullyAutomaticTask(
                generator=dict(self.automatic), preset=self.amg_preset, round=plan.round
            )
        if self.stages.annotator == "coco":
            from engine.annotators.coco_import import CocoImportTask

            return CocoImportTask(self._load_coco(), stage=plan.stage_name, round=plan.round)
        if self.stages.annotator == "human":
            from stages.human_round import HumanRound

            return HumanRound(
                self.run_dir,
                {"kind": self.data.kind, **self.data.source_kwargs()},
                self.preset,
                self.stages.human_poll_s,
                prefill=self._human_prefill_task(plan),
            )
        if plan.stage == 1:
            return AssistedManualTask(self.annotator, round=plan.round)
        return SemiAutomaticTask(
            self.annotator,
            prefill=dict(self.prefill),
            covered_iou=self.covered_iou,
            seconds_per_prefilled=self.seconds_per_prefilled,
            detections=self._load_detections() if self.detections_path else None,
            detection_score_thresh=self.detection_score_thresh,
            detection_pred_iou_thresh=self.detection_pred_iou_thresh,
            round=plan.round,
        )

    def _human_prefill_task(self, plan: RoundPlan):
        if plan.stage != 2:
            return None
        return SemiAutomaticTask(
            SimulatedAnnotator(),
            prefill=dict(self.prefill),
            detections=self._load_detections() if self.detections_path else None,
            detection_score_thresh=self.detection_score_thresh,
            detection_pred_iou_thresh=self.detection_pred_iou_thresh,
            round=plan.round,
        )

    def _load_detections(self):
        if self._detections is None:
            from engine.annotators.detections import load_detections

            self._detections = load_detections(self.detections_path)
        return self._detections

    def _load_coco(self):
        if self._coco is None:
            from engine.annotators.coco_import import load_corrected_masks

            self._coco = load_corrected_masks(self.stages.annotations)
        return self._coco
