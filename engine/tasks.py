"""Per-image work of each data-engine stage: ``task(predictor, item) -> ImageRecord``.

A task is a small, picklable object holding plain settings; a worker (Ray actor or the
in-process runner) calls it with its own predictor for every image. The round loop, the
writer and retraining live in ``stages/``.

- ``AssistedManualTask`` — the annotator labels objects with clicks on the current model.
- ``SemiAutomaticTask`` — the model's confident masks are pre-filled (AMG with strict
  thresholds, or box prompts from an external detector); the annotator labels only the
  reference objects those masks do not already cover.
- ``FullyAutomaticTask`` — AMG with the ``sa1b`` preset; no annotator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine import masks as mask_ops
from engine.amg import AutomaticMaskGenerator, to_mask_records
from engine.annotators.detections import Detections
from engine.annotators.simulated import AnnotatedMask, SimulatedAnnotator
from engine.model import SamPredictor
from engine.records import SOURCE_MODEL, SOURCE_SIMULATED, ImageItem, granularity_of_level
from engine.sa1b import ImageRecord, MaskRecord, Provenance


def image_record(item: ImageItem, masks: list[MaskRecord]) -> ImageRecord:
    """The SA-1B record of ``item`` holding ``masks`` (ids renumbered 0..n-1 in order)."""
    for i, mask in enumerate(masks):
        mask.id = i
    return ImageRecord(
        image_id=item.image_id,
        width=item.width,
        height=item.height,
        file_name=item.file_name,
        annotations=masks,
    )


def annotated_to_record(
    annotated: AnnotatedMask, width: int, height: int, stage: str, round_index: int
) -> MaskRecord:
    """A ``MaskRecord`` for a mask the simulated annotator accepted."""
    rle = annotated.rle
    first = annotated.clicks[0] if annotated.clicks else None
    return MaskRecord(
        id=0,
        segmentation=rle,
        bbox=mask_ops.rle_bbox_xywh(rle),
        area=mask_ops.rle_area(rle),
        predicted_iou=annotated.predicted_iou,
        stability_score=annotated.stability_score,
        point_coords=[[float(first.x), float(first.y)]] if first else [],
        crop_box=[0.0, 0.0, float(width), float(height)],
        provenance=Provenance(
            stage=stage,
            round=round_index,
            source=SOURCE_SIMULATED,
            clicks=len(annotated.clicks),
            seconds=round(annotated.seconds, 3),
            model_iou=round(annotated.model_iou, 6),
            hand_fixed=annotated.hand_fixed,
            level=annotated.level,
            granularity=granularity_of_level(annotated.level),
        ),
    )


def link_parents(
    masks: list[MaskRecord], annotated: dict[int, int], covered: dict[int, int], item: ImageItem
) -> list[MaskRecord]:
    """Set ``parent_id`` of the annotator's masks whose reference has a parent with a mask.

    ``annotated`` maps a reference index to the position in ``masks`` of the mask the
    annotator made from it (the annotation id once ``image_record`` numbers them); ``covered``
    maps references a pre-filled mask covers to that mask's position. Pre-filled masks get
    no parent: the model gives none.
    """
    has_mask = {**covered, **annotated}
    for ref_index, position in annotated.items():
        parent = item.references[ref_index].parent_index
        if parent is not None and has_mask.get(parent, position) != position:
            masks[position].provenance.parent_id = has_mask[parent]
    return masks


@dataclass(frozen=True)
class AssistedManualTask:
    """Stage 1: every object is labelled interactively."""

    annotator: SimulatedAnnotator
    stage: str = "assisted_manual"
    round: int = 0

    def __call__(self, predictor: SamPredictor, item: ImageItem) -> ImageRecord:
        predictor.set_image(item.image)
        accepted = self.annotator.annotate(predictor, item.references)
        masks = [
            annotated_to_record(a, item.width, item.height, self.stage, self.round)
            for a in accepted
        ]
        annotated = {a.reference_index: i for i, a in enumerate(accepted)}
        return image_record(item, link_parents(masks, annotated, {}, item))


@dataclass(frozen=True)
class SemiAutomaticTask:
    """Stage 2: confident masks pre-filled, the annotator adds the objects they miss.

    ``prefill`` holds ``AutomaticMaskGenerator`` arguments (strict thresholds); with
    ``detections`` (a detector's boxes, ``engine.annotators.detections``: matched by file name
    or id, rescaled to the decoded image) the pre-fill comes from box prompts scoring at least
    ``detection_score_thresh`` instead, kept when the predicted IoU is at least
    ``detection_pred_iou_thresh``.
    A reference counts as covered when a pre-filled mask overlaps it with IoU ≥
    ``covered_iou``; pre-filled masks cost ``seconds_per_prefilled`` each to look at.
    """

    annotator: SimulatedAnnotator
    prefill: dict = field(default_factory=dict)
    covered_iou: float = 0.75
    seconds_per_prefilled: float = 1.0
    detections: Detections | None = None
    detection_score_thresh: float = 0.5
    detection_pred_iou_thresh: float = 0.88
    stage: str = "semi_automatic"
    round: int = 0

    def __call__(self, predictor: SamPredictor, item: ImageItem) -> ImageRecord:
        predictor.set_image(item.image)
        prefilled = self._prefill(predictor, item)
        covered = self._covered(prefilled, item)
        spent = self.seconds_per_prefilled * len(prefilled)
        accepted = self.annotator.annotate(
            predictor, item.references, skip=set(covered), seconds_spent=spent
        )
        masks = prefilled + [
            annotated_to_record(a, item.width, item.height, self.stage, self.round)
            for a in accepted
        ]
        # an added mask whose parent reference was pre-filled links to that pre-filled mask
        annotated = {a.reference_index: len(prefilled) + i for i, a in enumerate(accepted)}
        return image_record(item, link_parents(masks, annotated, covered, item))

    def _prefill(self, predictor: SamPredictor, item: ImageItem) -> list[MaskRecord]:
        provenance = Provenance(stage=self.stage, round=self.round, source=SOURCE_MODEL)
        if self.detections is not None:
            return self._prefill_from_boxes(predictor, item, provenance)
        generator = AutomaticMaskGenerator(predictor.model, **self.prefill)
        return to_mask_records(generator.generate(item.image), provenance)

    def _prefill_from_boxes(
        self, predictor: SamPredictor, item: ImageItem, provenance: Provenance
    ) -> list[MaskRecord]:
        records = []
        boxes = self.detections.for_image(item.image_id, item.file_name, item.width, item.height)
        for box_xywh, score in boxes:
            if score < self.detection_score_thresh:
                continue
            x, y, w, h = box_xywh
            masks, ious, logits = predictor.predict(
                box=np.array([x, y, x + w, y + h], dtype=np.float32), multimask_output=False
            )
            if ious[0] < self.detection_pred_iou_thresh or not masks[0].any():
                continue
            rle = mask_ops.mask_to_rle(masks[0])
            records.append(
                MaskRecord(
                    id=0,
                    segmentation=rle,
                    bbox=mask_ops.rle_bbox_xywh(rle),
                    area=mask_ops.rle_area(rle),
                    predicted_iou=float(ious[0]),
                    stability_score=1.0,
                    point_coords=[[x + w / 2, y + h / 2]],
                    crop_box=[0.0, 0.0, float(item.width), float(item.height)],
                    provenance=Provenance(**vars(provenance)),
                )
            )
        return records

    def _covered(self, prefilled: list[MaskRecord], item: ImageItem) -> dict[int, int]:
        """``{reference index: index of the pre-filled mask covering it best}``."""
        if not prefilled or not item.references:
            return {}
        iou = mask_ops.rle_iou(
            [ref.rle for ref in item.references], [m.segmentation for m in prefilled]
        )
        best = iou.argmax(axis=1)
        return {int(i): int(best[i]) for i in np.flatnonzero(iou.max(axis=1) >= self.covered_iou)}


@dataclass(frozen=True)
class FullyAutomaticTask:
    """Stage 3: automatic masks only (``generator`` = ``AutomaticMaskGenerator`` arguments)."""

    generator: dict = field(default_factory=dict)
    preset: str = "sa1b"
    stage: str = "fully_automatic"
    round: int = 0

    def __call__(self, predictor: SamPredictor, item: ImageItem) -> ImageRecord:
        generator = AutomaticMaskGenerator.from_preset(
            self.preset, predictor.model, **self.generator
        )
        provenance = Provenance(stage=self.stage, round=self.round, source=SOURCE_MODEL)
        return image_record(item, to_mask_records(generator.generate(item.image), provenance))
