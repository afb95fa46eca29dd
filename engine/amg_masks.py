"""Per-crop mask work of the automatic generator: from decoder outputs to RLE survivors.

``CropMasks`` holds the masks that survived so far, one row each (RLE, XYXY box with
inclusive ends, predicted IoU, stability, prompt point, area). ``filter_decoded`` applies the
official filters to one decoder call's outputs — predicted IoU, stability score, inner crop
edge — plus ``max_mask_fraction``, upsampling only the low-res logits that pass the IoU filter
and only inside their windows (``engine.amg_upsample``); a mask becomes RLE as soon as it
survives, so no full-size mask outlives its group.

Each mask also gets a granularity level from its multimask output index: per prompt, the
decoder's outputs are ranked by area on the low-res grid, largest ``LEVEL_WHOLE``, then
``LEVEL_PART``, smallest ``LEVEL_SUBPART`` (``multimask_levels``; docs/dataset.md says why a
rank, not a fixed index table). A single-mask output is ``LEVEL_WHOLE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine import masks as mask_ops
from engine.amg_upsample import UpsamplePlan
from engine.records import LEVEL_WHOLE


@dataclass
class CropMasks:
    """Masks of one crop or image; ``boxes``/``points`` in the frame named by the caller."""

    rles: list[dict] = field(default_factory=list)
    boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.int64))
    iou_preds: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    stability: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    areas: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    crop_boxes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 4, dtype=torch.int64))
    levels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))  # LEVEL_*

    def __len__(self) -> int:
        return len(self.rles)

    def select(self, keep: torch.Tensor | np.ndarray) -> CropMasks:
        """Rows ``keep`` (indices or a bool mask), in that order."""
        idx = np.flatnonzero(np.asarray(keep)) if _is_bool(keep) else np.asarray(keep)
        idx = idx.astype(np.int64)
        t = torch.as_tensor(idx)
        return CropMasks(
            rles=[self.rles[i] for i in idx.tolist()],
            boxes=self.boxes[t],
            iou_preds=self.iou_preds[t],
            stability=self.stability[t],
            points=self.points[idx],
            areas=self.areas[idx],
            crop_boxes=self.crop_boxes[t],
            levels=self.levels[idx],
        )

    @staticmethod
    def cat(parts: list[CropMasks]) -> CropMasks:
        if not parts:
            return CropMasks()
        return CropMasks(
            rles=[r for p in parts for r in p.rles],
            boxes=torch.cat([p.boxes for p in parts]),
            iou_preds=torch.cat([p.iou_preds for p in parts]),
            stability=torch.cat([p.stability for p in parts]),
            points=np.concatenate([p.points for p in parts]),
            areas=np.concatenate([p.areas for p in parts]),
            crop_boxes=torch.cat([p.crop_boxes for p in parts]),
            levels=np.concatenate([p.levels for p in parts]),
        )


def _is_bool(keep: torch.Tensor | np.ndarray) -> bool:
    return (isinstance(keep, torch.Tensor) and keep.dtype == torch.bool) or (
        isinstance(keep, np.ndarray) and keep.dtype == bool
    )


@dataclass
class FilterSettings:
    """The thresholds ``filter_decoded`` applies (official names)."""

    pred_iou_thresh: float
    stability_score_thresh: float
    stability_score_offset: float
    mask_threshold: float
    max_mask_fraction: float


def filter_decoded(
    low_res_logits: torch.Tensor,
    iou_preds: torch.Tensor,
    points: np.ndarray,
    plan: UpsamplePlan,
    crop_box: list[int],
    image_hw: tuple[int, int],
    settings: FilterSettings,
) -> CropMasks:
    """Filter one decoder call's masks and encode the survivors.

    ``low_res_logits`` is ``B×K×h×w`` (K masks per prompt), ``iou_preds`` ``B×K``, ``points``
    the ``B×2`` prompts in crop pixels. Boxes and points of the result are in crop
    coordinates; RLEs are in the full ``image_hw`` frame. Row order is the official one
    (prompt-major, then mask index).
    """
    k = low_res_logits.shape[1]
    logits = low_res_logits.flatten(0, 1).detach().to("cpu", torch.float32)
    ious = iou_preds.flatten(0, 1).detach().to("cpu", torch.float32)
    pts = np.repeat(points, k, axis=0)
    valid = plan.low_valid_size()
    levels = multimask_levels(logits.view(low_res_logits.shape), settings.mask_threshold, valid)
    levels = levels.reshape(-1)
    if settings.pred_iou_thresh > 0.0:
        keep = ious > settings.pred_iou_thresh
        logits, ious, pts, levels = logits[keep], ious[keep], pts[keep.numpy()], levels[keep]
    if len(ious) == 0:
        return CropMasks()
    t, off = settings.mask_threshold, settings.stability_score_offset
    windows = plan.windows(logits, t - abs(off))
    candidates = np.arange(len(ious))
    if settings.stability_score_thresh > 0.0:  # no support: stability is 0/0, never passes
        candidates = candidates[(windows[:, 2] > 0) & (windows[:, 3] > 0)]
    crop_x0, crop_y0 = crop_box[0], crop_box[1]
    image_area = image_hw[0] * image_hw[1]
    parts, order = [], []
    full = plan.prefer_full(windows[candidates])
    groups = plan.full_groups(len(candidates)) if full else plan.groups(windows[candidates])
    for group in groups:
        idx = candidates[group]
        if full:
            up, origin = plan.upsample_full(logits[idx])
        else:
            up, origin = plan.upsample(logits[idx], windows[idx])  # padding cells are -inf
        # numpy from here: its single-threaded compares and reductions beat torch's on CPU
        high = (up > t + off).sum(axis=(1, 2))
        low = (up > t - off).sum(axis=(1, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            stability = high.astype(np.float32) / low.astype(np.float32)
        keep = np.ones(len(idx), dtype=bool)
        if settings.stability_score_thresh > 0.0:
            keep &= stability >= settings.stability_score_thresh
        binary = up > t if keep.all() else up[keep] > t
        del up
        idx, stability, origin = idx[keep], stability[keep], origin[keep]
        boxes = _boxes_xyxy(binary, origin)
        near_edge = mask_ops.is_box_near_crop_edge(
            torch.as_tensor(boxes), crop_box, [0, 0, image_hw[1], image_hw[0]]
        ).numpy()
        areas = binary.sum(axis=(1, 2))
        keep = ~near_edge
        if settings.max_mask_fraction < 1.0:
            keep &= areas < settings.max_mask_fraction * image_area
        offsets = origin[keep] + np.array([crop_y0, crop_x0])
        parts.append(
            CropMasks(
                rles=mask_ops.windows_to_rles(binary[keep], offsets, image_hw),
                boxes=torch.as_tensor(boxes[keep]),
                iou_preds=ious[torch.as_tensor(idx[keep])],
                stability=torch.as_tensor(stability[keep]),
                points=pts[idx[keep]],
                areas=areas[keep].astype(np.int64),
                levels=levels[idx[keep]],
            )
        )
        order.append(idx[keep])
    if not parts:
        return CropMasks()
    merged = CropMasks.cat(parts)
    merged.crop_boxes = torch.zeros(len(merged), 4, dtype=torch.int64)
    return merged.select(np.argsort(np.concatenate(order), kind="stable"))


def multimask_levels(
    low_res_logits: torch.Tensor, mask_threshold: float, valid_hw: tuple[int, int] | None = None
) -> np.ndarray:
    """Granularity ``LEVEL_*`` (``int8``, ``B×K``) of each of ``K`` masks per prompt.

    ``low_res_logits`` is ``B×K×h×w``; areas are counted above ``mask_threshold`` inside the
    top-left ``valid_hw`` of the grid (the part that covers the image, not the padding).
    Per prompt the largest mask is ``LEVEL_WHOLE`` (0), the next ``LEVEL_PART`` (1), the
    rest ``LEVEL_SUBPART`` (2); equal areas rank by output index (lower is coarser).
    """
    b, k = low_res_logits.shape[:2]
    if k == 1:
        return np.full((b, 1), LEVEL_WHOLE, dtype=np.int8)
    grid = low_res_logits.detach().to("cpu", torch.float32).numpy()  # no copy when on CPU
    if valid_hw is not None:
        grid = grid[..., : valid_hw[0], : valid_hw[1]]
    areas = (grid > mask_threshold).sum(axis=(2, 3))  # B×K; numpy: ~8× torch's on CPU
    order = np.argsort(-areas, axis=1, kind="stable")  # coarse to fine
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(k)[None].repeat(b, 0), axis=1)
    return np.minimum(ranks, 2).astype(np.int8)


def _boxes_xyxy(binary: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """XYXY boxes (inclusive ends) of ``N×h×w`` windows placed at ``origin`` (row, column);
    ``[0, 0, 0, 0]`` for an empty mask, as the official ``batched_mask_to_box``."""
    rows = binary.any(axis=2)
    cols = binary.any(axis=1)
    present = rows.any(axis=1)
    top = np.argmax(rows, axis=1)
    bottom = rows.shape[1] - 1 - np.argmax(rows[:, ::-1], axis=1)
    left = np.argmax(cols, axis=1)
    right = cols.shape[1] - 1 - np.argmax(cols[:, ::-1], axis=1)
    boxes = np.stack([left, top, right, bottom], axis=1) + origin[:, [1, 0, 1, 0]]
    boxes[~present] = 0
    return boxes.astype(np.int64)
