"""Interactive-segmentation evaluation with the standard simulated user (``engine.clicks``).

``evaluate_interactive(predictor, items)`` runs, on every reference mask of every item:
- clicks: the first click at the object's most interior point, each next one at the most
  interior point of the largest error region (positive in a missed region, negative in a
  false one), up to ``max_clicks`` (20). The first click asks for multimask output and the
  simulated user keeps the mask with the highest *predicted* IoU (a simulated annotator may
  instead pick the best by true IoU); later clicks ask for one mask and feed the previous
  mask's low-res logits back as the mask prompt, as in SAM's interactive use;
- a box prompt: the tight XYXY box of the mask (inclusive pixel indices), single output.

It reports mIoU after 1, 3 and 5 clicks, NoC@85 and NoC@90 (clicks to reach IoU 0.85 /
0.90; ``max_clicks`` when never reached) and the box-prompt mIoU. IoU is measured at the
original image resolution. The predictor needs the ``SamPredictor`` interface: ``set_image``,
``original_size``, ``transform.apply_coords_torch``/``apply_boxes_torch``, ``device`` and
``predict_torch``. One embedding per image; all objects' clicks are decoded in one batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engine.clicks import next_click
from engine.masks import rle_to_mask
from engine.records import ImageItem

CLICK_COUNTS = (1, 3, 5)
# COCO's object-size buckets (area in pixels at the original image size)
SIZE_BUCKETS = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, float("inf"))}
NOC_THRESHOLDS = (0.85, 0.90)
MAX_CLICKS = 20


@dataclass
class InteractiveMetrics:
    """Means over all evaluated objects. ``miou_at[k]`` = mIoU after ``k`` clicks;
    ``miou_1click_by_size`` / ``objects_by_size``: the same per COCO size bucket (small
    < 32², medium < 96², large ≥ 96² pixels; buckets without objects are left out)."""

    miou_at: dict[int, float]
    noc: dict[float, float]
    box_miou: float
    objects: int
    images: int
    miou_1click_by_size: dict[str, float] = field(default_factory=dict)
    objects_by_size: dict[str, int] = field(default_factory=dict)
    per_object_ious: list[list[float]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, float]:
        """Flat metric names for logging: ``miou_1click``, ``noc_90``, ``box_miou``…"""
        out = {f"miou_{k}click": v for k, v in sorted(self.miou_at.items())}
        out.update({f"noc_{round(t * 100)}": v for t, v in sorted(self.noc.items())})
        out.update(box_miou=self.box_miou, objects=float(self.objects), images=float(self.images))
        out.update({f"miou_1click_{name}": v for name, v in self.miou_1click_by_size.items()})
        out.update({f"objects_{name}": float(n) for name, n in self.objects_by_size.items()})
        return out


def batch_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU per mask of two ``N×H×W`` bool stacks (1.0 where both are empty)."""
    inter = np.logical_and(pred, gt).reshape(len(gt), -1).sum(1)
    union = np.logical_or(pred, gt).reshape(len(gt), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def clicks_to_reach(ious: Sequence[float], threshold: float, max_clicks: int) -> int:
    """NoC: the first click count (1-based) whose IoU ≥ ``threshold``, else ``max_clicks``."""
    for k, iou in enumerate(ious[:max_clicks], start=1):
        if iou >= threshold:
            return k
    return max_clicks


def reference_masks(item: ImageItem) -> np.ndarray:
    """The item's non-empty, non-crowd reference masks as ``N×H×W`` bool."""
    masks = [rle_to_mask(ref.rle) for ref in item.references if not ref.iscrowd]
    masks = [m for m in masks if m.any()]
    if not masks:
        return np.zeros((0, item.height, item.width), dtype=bool)
    return np.stack(masks)


def _decode(
    predictor: Any,
    coords: np.ndarray | None,
    labels: np.ndarray | None,
    boxes: np.ndarray | None,
    mask_input: torch.Tensor | None,
    multimask: bool,
) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """One batched ``predict_torch`` call with prompts in original-image pixels."""
    size = predictor.original_size
    device = predictor.device
    points = None
    if coords is not None:
        pts = torch.as_tensor(coords, dtype=torch.float, device=device)
        pts = predictor.transform.apply_coords_torch(pts, size)
        points = (pts, torch.as_tensor(labels, dtype=torch.int, device=device))
    box_t = None
    if boxes is not None:
        box_t = torch.as_tensor(boxes, dtype=torch.float, device=device)
        box_t = predictor.transform.apply_boxes_torch(box_t, size)
    with torch.no_grad():
        masks, iou_pred, low_res = predictor.predict_torch(
            point_coords=points[0] if points else None,
            point_labels=points[1] if points else None,
            boxes=box_t,
            mask_input=mask_input,
            multimask_output=multimask,
        )
    return masks.cpu().numpy().astype(bool), iou_pred.float().cpu().numpy(), low_res


def _tight_boxes_xyxy(gts: np.ndarray) -> np.ndarray:
    boxes = []
    for gt in gts:
        ys, xs = np.nonzero(gt)
        boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
    return np.asarray(boxes, dtype=np.float32)


def evaluate_image(
    predictor: Any,
    image: np.ndarray,
    gts: np.ndarray,
    max_clicks: int = MAX_CLICKS,
    keep_going_until: int = max(CLICK_COUNTS),
    stop_at_iou: float = max(NOC_THRESHOLDS),
) -> tuple[np.ndarray, np.ndarray]:
    """Click-by-click IoUs (``N×max_clicks``) and box IoUs (``N``) of one image's masks.

    An object stops receiving clicks once it has had ``keep_going_until`` clicks and reached
    ``stop_at_iou`` (or has no error left); its last IoU is carried forward.
    """
    predictor.set_image(image)
    n = len(gts)
    box_masks, _, _ = _decode(predictor, None, None, _tight_boxes_xyxy(gts), None, False)
    box_ious = batch_iou(box_masks[:, 0], gts)
    ious = np.zeros((n, max_clicks))
    coords = np.zeros((n, 0, 2), dtype=np.float32)
    labels = np.zeros((n, 0), dtype=np.int64)
    preds: list[np.ndarray | None] = [None] * n
    logits: torch.Tensor | None = None
    active = np.ones(n, dtype=bool)
    for k in range(max_clicks):
        new_pts = np.zeros((n, 2), dtype=np.float32)
        new_lab = np.zeros(n, dtype=np.int64)
        for i in np.flatnonzero(active):
            click = next_click(gts[i], preds[i])
            if click is None:  # nothing left to correct
                active[i] = False
                continue
            new_pts[i] = (click.x, click.y)
            new_lab[i] = click.label
        if k > 0:
            ious[:, k] = ious[:, k - 1]  # carried forward for objects that stopped
        if not active.any():
            continue
        idx = np.flatnonzero(active)
        coords = np.concatenate([coords, new_pts[:, None]], axis=1)
        labels = np.concatenate([labels, new_lab[:, None]], axis=1)
        mask_input = (
            logits[torch.as_tensor(idx, device=logits.device)] if logits is not None else None
        )
        masks, iou_pred, low_res = _decode(
            predictor, coords[idx], labels[idx], None, mask_input, multimask=k == 0
        )
        best = iou_pred.argmax(axis=1)
        chosen = masks[np.arange(len(idx)), best]
        chosen_logits = low_res[torch.arange(len(idx)), torch.as_tensor(best)][:, None]
        if logits is None:
            logits = torch.zeros((n, *chosen_logits.shape[1:]), device=chosen_logits.device)
        logits[torch.as_tensor(idx, device=logits.device)] = chosen_logits.float()
        for j, i in enumerate(idx):
            preds[i] = chosen[j]
        ious[idx, k] = batch_iou(chosen, gts[idx])
        done = (ious[:, k] >= stop_at_iou) & (k + 1 >= keep_going_until)
        active &= ~done
    return ious, box_ious


def evaluate_interactive(
    predictor: Any,
    items: Iterable[ImageItem],
    max_clicks: int = MAX_CLICKS,
    click_counts: Sequence[int] = CLICK_COUNTS,
    noc_thresholds: Sequence[float] = NOC_THRESHOLDS,
    max_objects_per_image: int | None = None,
) -> InteractiveMetrics:
    """Interactive metrics over ``items`` (each with reference masks); see the module doc."""
    if max_clicks < max(click_counts):
        raise ValueError(f"max_clicks={max_clicks} < the largest click count {click_counts}")
    all_ious: list[np.ndarray] = []
    box_ious: list[np.ndarray] = []
    areas: list[np.ndarray] = []
    images = 0
    for item in items:
        gts = reference_masks(item)
        if max_objects_per_image is not None:
            gts = gts[:max_objects_per_image]
        if len(gts) == 0:
            continue
        ious, boxes = evaluate_image(
            predictor, item.image, gts, max_clicks, max(click_counts), max(noc_thresholds)
        )
        all_ious.append(ious)
        box_ious.append(boxes)
        areas.append(gts.reshape(len(gts), -1).sum(axis=1))
        images += 1
    if not all_ious:
        raise ValueError("no reference mask to evaluate: the items hold no usable references")
    ious = np.concatenate(all_ious)
    area = np.concatenate(areas)
    buckets = {name: (area >= lo) & (area < hi) for name, (lo, hi) in SIZE_BUCKETS.items()}
    return InteractiveMetrics(
        miou_at={k: float(ious[:, k - 1].mean()) for k in click_counts},
        noc={
            t: float(np.mean([clicks_to_reach(row, t, max_clicks) for row in ious]))
            for t in noc_thresholds
        },
        box_miou=float(np.concatenate(box_ious).mean()),
        objects=len(ious),
        images=images,
        miou_1click_by_size={n: float(ious[b, 0].mean()) for n, b in buckets.items() if b.any()},
        objects_by_size={n: int(b.sum()) for n, b in buckets.items() if b.any()},
        per_object_ious=ious.tolist(),
    )
