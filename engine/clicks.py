"""The standard simulated user of interactive segmentation: where the next click goes.

Protocol (FACTS.md, "Interactive-segmentation evaluation"): the first click is at the interior
point of the object farthest from its boundary; each next click is at the interior point
farthest from the boundary of the largest error region of the current prediction — positive
in a missed region (false negative), negative in a false one (false positive).

Choices made here, documented in docs/training.md:
- "Largest error region" = the largest 4-connected component, by area, of the false-negative
  and false-positive pixels together (ties: the false-negative region first, then the one whose
  first pixel comes first in row-major order).
- "Farthest from the boundary" = the maximum of the Euclidean distance transform of the region
  padded by one background pixel on every side, so the image border counts as a boundary; ties
  go to the first pixel in row-major order (deterministic).

Masks are ``H×W`` bool arrays; a click is ``(x, y)`` in pixel coordinates of that array.
Used by the interactive evaluation (``engine.train.evaluate``) and the simulated annotator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# 4-connectivity (scipy's default structuring element for 2-D)
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class Click:
    """One simulated click: pixel ``(x, y)``; ``positive`` = "this pixel is object"."""

    x: int
    y: int
    positive: bool

    @property
    def label(self) -> int:
        """SAM point label: 1 for a positive click, 0 for a negative one."""
        return 1 if self.positive else 0


def _as_bool_mask(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be an H×W mask, got shape {mask.shape}")
    return mask.astype(bool, copy=False)


def farthest_interior_point(region: np.ndarray) -> tuple[int, int, float]:
    """The pixel of ``region`` (H×W bool) farthest from its boundary: ``(x, y, distance)``.

    The region is padded with background so the image border is a boundary too. Ties go to
    the first pixel in row-major order. Raises ``ValueError`` for an empty region.
    """
    region = _as_bool_mask(region, "region")
    if not region.any():
        raise ValueError("region is empty: there is no interior point to click")
    # the transform of the region's bounding box (padded) equals that of the whole frame:
    # the nearest background pixel of an inside pixel is never farther than the box edge + 1
    rows = np.flatnonzero(region.any(axis=1))
    cols = np.flatnonzero(region.any(axis=0))
    y0, x0 = rows[0], cols[0]
    crop = region[y0 : rows[-1] + 1, x0 : cols[-1] + 1]
    distance = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    flat = int(np.argmax(distance))
    y, x = divmod(flat, crop.shape[1])
    return int(x0 + x), int(y0 + y), float(distance[y, x])


def first_click(gt: np.ndarray) -> Click:
    """The first click on an object: positive, at its interior point farthest from the edge."""
    x, y, _ = farthest_interior_point(gt)
    return Click(x, y, True)


def largest_error_region(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """The largest connected error region of ``pred`` against ``gt`` (both H×W).

    Returns ``(region H×W bool, positive)`` where ``positive`` is True for a missed region
    (false negative), or ``None`` when the prediction is exact.
    """
    gt = _as_bool_mask(gt, "gt")
    pred = _as_bool_mask(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} must have the same H×W")
    best: tuple[int, np.ndarray, bool] | None = None
    for errors, positive in ((gt & ~pred, True), (pred & ~gt, False)):
        if not errors.any():
            continue
        labels, count = ndimage.label(errors, structure=_FOUR_CONNECTED)
        areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        index = int(np.argmax(areas))  # first label on ties = first in row-major order
        if best is None or areas[index] > best[0]:
            best = (int(areas[index]), labels == index + 1, positive)
    if best is None:
        return None
    return best[1], best[2]


def next_click(gt: np.ndarray, pred: np.ndarray | None) -> Click | None:
    """The simulated user's next click given the current prediction.

    ``pred=None`` (nothing predicted yet) gives the first click. Returns ``None`` when the
    prediction already equals ``gt`` (nothing left to correct).
    """
    if pred is None:
        return first_click(gt)
    found = largest_error_region(gt, pred)
    if found is None:
        return None
    region, positive = found
    x, y, _ = farthest_interior_point(region)
    return Click(x, y, positive)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two H×W masks (1.0 when both are empty)."""
    a = _as_bool_mask(a, "a")
    b = _as_bool_mask(b, "b")
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)
