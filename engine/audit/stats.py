"""Reference-free dataset statistics (the paper's section 5): per image, then accumulated.

Per image (``measure_image``): mask areas, centres of mass, concavity, pairwise overlap and the
share of pixels covered, from the SA-1B record's COCO RLEs. Areas, boxes, IoUs and the union
come straight from RLE (pycocotools, no decode); centres and concavity decode the masks in
chunks of ``chunk`` (an ``H×W×chunk`` uint8 array at a time).

Conventions: a pixel ``(x, y)`` is the unit square ``[x, x+1) × [y, y+1)``; a centre is the
centre of mass of the pixel squares (so it is ``(x + 0.5, y + 0.5)`` for a single pixel) and is
reported normalised by the image width / height. Concavity is ``1 − area / hull_area`` where the
hull is the convex hull of the pixel *squares* (their corners), so a filled rectangle scores
exactly 0 and every mask scores in ``[0, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from scipy.spatial import ConvexHull

from engine import masks as mask_ops
from engine.audit.hist import Histogram, Histogram2D
from engine.sa1b import ImageRecord

OVERLAP_THRESHOLDS = (0.5, 0.9)


def coco_rles(rles: list[dict]) -> list[dict]:
    """SA-1B RLE dicts (``counts`` str) in the form pycocotools takes (``counts`` bytes)."""
    out = []
    for rle in rles:
        counts = rle["counts"]
        out.append(
            {
                "size": [int(rle["size"][0]), int(rle["size"][1])],
                "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
            }
        )
    return out


def _hull_concavity(left: np.ndarray, right: np.ndarray, rows: np.ndarray, area: int) -> float:
    """Concavity from per-row extents: row ``rows[i]`` spans pixels ``[left[i], right[i])``."""
    y0 = rows.astype(np.float64)
    y1 = y0 + 1.0
    l = left.astype(np.float64)
    r = right.astype(np.float64)
    points = np.concatenate(
        [np.stack([l, y0], 1), np.stack([l, y1], 1), np.stack([r, y0], 1), np.stack([r, y1], 1)]
    )
    hull_area = ConvexHull(points).volume  # in 2-D, "volume" is the area
    return max(0.0, float(1.0 - area / hull_area))  # hull ⊇ mask: only rounding goes < 0


def concavity(mask: np.ndarray) -> float:
    """``1 − area / convex-hull area`` of one ``H×W`` binary mask (NaN when it is empty)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {mask.shape}")
    m = mask.astype(bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return float("nan")
    left = m[rows].argmax(axis=1)
    right = m.shape[1] - m[rows, ::-1].argmax(axis=1)
    return _hull_concavity(left, right, rows, int(m.sum()))


@dataclass
class MaskShapes:
    """Per-mask shape numbers of one image (length ``N`` arrays)."""

    area: np.ndarray  # int64 pixels
    centre_xy: np.ndarray  # N×2 float, normalised to [0, 1] by width / height; NaN if empty
    concavity: np.ndarray  # float; NaN where empty or not computed


def mask_shapes(
    rles: list[dict], height: int, width: int, concavity_masks: int | None = None, chunk: int = 16
) -> MaskShapes:
    """Areas, centres and concavity of ``rles`` (all ``[height, width]``).

    ``concavity_masks`` caps how many masks get a concavity (evenly spaced over the list;
    ``None`` = all); the rest are NaN. Decoding goes ``chunk`` masks at a time.
    """
    n = len(rles)
    area = np.zeros(n, dtype=np.int64)
    centre = np.full((n, 2), np.nan)
    conc = np.full(n, np.nan)
    if n == 0:
        return MaskShapes(area, centre, conc)
    want = np.ones(n, dtype=bool)
    if concavity_masks is not None and concavity_masks < n:
        want[:] = False
        want[np.unique(np.linspace(0, n - 1, max(concavity_masks, 0)).round().astype(int))] = True
    xs = np.arange(width, dtype=np.float64) + 0.5
    ys = np.arange(height, dtype=np.float64) + 0.5
    coco = coco_rles(rles)
    for start in range(0, n, chunk):
        block = mask_utils.decode(coco[start : start + chunk])  # H×W×c uint8, Fortran order
        col = block.sum(axis=0, dtype=np.int64)  # W×c
        row = block.sum(axis=1, dtype=np.int64)  # H×c
        a = col.sum(axis=0)
        area[start : start + block.shape[2]] = a
        with np.errstate(invalid="ignore", divide="ignore"):
            centre[start : start + block.shape[2], 0] = (xs @ col) / a / width
            centre[start : start + block.shape[2], 1] = (ys @ row) / a / height
        todo = [k for k in range(block.shape[2]) if want[start + k] and a[k] > 0]
        if not todo:
            continue
        left = block.argmax(axis=1)  # H×c: first foreground column per row
        right = width - block[:, ::-1, :].argmax(axis=1)  # exclusive end per row
        for k in todo:
            rows = np.flatnonzero(row[:, k])
            conc[start + k] = _hull_concavity(left[rows, k], right[rows, k], rows, int(a[k]))
    return MaskShapes(area, centre, conc)


def pairwise_iou(rles: list[dict]) -> np.ndarray:
    """``N×N`` IoU between the masks of one image, with 0 on the diagonal."""
    iou = mask_ops.rle_iou(rles, rles)
    np.fill_diagonal(iou, 0.0)
    return iou


def coverage(rles: list[dict], height: int, width: int) -> float:
    """Share of the image's pixels covered by at least one mask."""
    if not rles or height * width == 0:
        return 0.0
    union = mask_utils.merge(coco_rles(rles), intersect=False)
    return float(mask_utils.area(union)) / float(height * width)


@dataclass
class ImageMeasures:
    """Everything the reference-free audit needs from one image."""

    width: int
    height: int
    shapes: MaskShapes
    nn_iou: np.ndarray  # per mask: max IoU with another mask of the same image
    pairs: int  # unordered mask pairs
    pairs_above: dict[float, int]  # pairs with IoU > t, t in OVERLAP_THRESHOLDS
    coverage: float
    predicted_iou: np.ndarray
    stability_score: np.ndarray


def measure_image(record: ImageRecord, concavity_masks: int | None = None) -> ImageMeasures:
    """Measure one SA-1B record (masks must be ``[height, width]``; raises ``ValueError``)."""
    rles = [a.segmentation for a in record.annotations]
    for ann in record.annotations:
        if list(ann.segmentation["size"]) != [record.height, record.width]:
            raise ValueError(
                f"annotation {ann.id}: RLE size {ann.segmentation['size']} != image "
                f"[{record.height}, {record.width}]"
            )
    shapes = mask_shapes(rles, record.height, record.width, concavity_masks)
    n = len(rles)
    if n > 1:
        iou = pairwise_iou(rles)
        nn_iou = iou.max(axis=1)
        upper = iou[np.triu_indices(n, k=1)]
        pairs_above = {t: int((upper > t).sum()) for t in OVERLAP_THRESHOLDS}
    else:
        nn_iou = np.zeros(n)
        pairs_above = dict.fromkeys(OVERLAP_THRESHOLDS, 0)
    return ImageMeasures(
        width=record.width,
        height=record.height,
        shapes=shapes,
        nn_iou=nn_iou,
        pairs=n * (n - 1) // 2,
        pairs_above=pairs_above,
        coverage=coverage(rles, record.height, record.width),
        predicted_iou=np.array([a.predicted_iou for a in record.annotations], dtype=np.float64),
        stability_score=np.array([a.stability_score for a in record.annotations], dtype=float),
    )


class DatasetStats:
    """Accumulates ``ImageMeasures`` into fixed-bin histograms (bounded memory, mergeable)."""

    def __init__(self) -> None:
        self.images = 0
        self.masks = 0
        self.empty_masks = 0
        self.pairs = 0
        self.pairs_above = dict.fromkeys(OVERLAP_THRESHOLDS, 0)
        self.masks_with_overlap = dict.fromkeys(OVERLAP_THRESHOLDS, 0)
        self.hists = {
            "masks_per_image": Histogram.linear(0, 400, 80),
            "relative_area": Histogram.log(1e-6, 1.0, 60),
            "concavity": Histogram.linear(0, 1, 50),
            "coverage": Histogram.linear(0, 1, 50),
            "nn_iou": Histogram.linear(0, 1, 50),
            "predicted_iou": Histogram.linear(0, 1, 50),
            "stability_score": Histogram.linear(0, 1, 50),
            "image_width": Histogram.linear(0, 4096, 64),
            "image_height": Histogram.linear(0, 4096, 64),
        }
        grid = np.linspace(0, 1, 33)
        self.centres = Histogram2D(grid, grid)

    def add(self, m: ImageMeasures) -> None:
        n = m.shapes.area.size
        self.images += 1
        self.masks += n
        self.empty_masks += int((m.shapes.area == 0).sum())
        self.pairs += m.pairs
        for t in OVERLAP_THRESHOLDS:
            self.pairs_above[t] += m.pairs_above[t]
            self.masks_with_overlap[t] += int((m.nn_iou > t).sum())
        h = self.hists
        h["masks_per_image"].add(n)
        image_area = max(m.width * m.height, 1)
        h["relative_area"].add(m.shapes.area[m.shapes.area > 0] / image_area)
        h["concavity"].add(m.shapes.concavity)
        h["coverage"].add(m.coverage)
        h["nn_iou"].add(m.nn_iou)
        h["predicted_iou"].add(m.predicted_iou)
        h["stability_score"].add(m.stability_score)
        h["image_width"].add(m.width)
        h["image_height"].add(m.height)
        self.centres.add(m.shapes.centre_xy[:, 0], m.shapes.centre_xy[:, 1])

    def merge(self, other: DatasetStats) -> None:
        self.images += other.images
        self.masks += other.masks
        self.empty_masks += other.empty_masks
        self.pairs += other.pairs
        for t in OVERLAP_THRESHOLDS:
            self.pairs_above[t] += other.pairs_above[t]
            self.masks_with_overlap[t] += other.masks_with_overlap[t]
        for name, hist in self.hists.items():
            hist.merge(other.hists[name])
        self.centres.merge(other.centres)

    def to_json(self) -> dict:
        """The ``dataset`` block of audit.json (keys documented in docs/audit.md)."""

        def share(num: int, den: int) -> float | None:
            return num / den if den else None

        return {
            "images": self.images,
            "masks": self.masks,
            "empty_masks": self.empty_masks,
            "masks_per_image": self.masks / self.images if self.images else None,
            "overlap": {
                "pairs": self.pairs,
                "pairs_iou_above": {
                    f"{t:.2f}": share(self.pairs_above[t], self.pairs) for t in OVERLAP_THRESHOLDS
                },
                "masks_with_iou_above": {
                    f"{t:.2f}": share(self.masks_with_overlap[t], self.masks)
                    for t in OVERLAP_THRESHOLDS
                },
            },
            "histograms": {name: hist.to_json() for name, hist in self.hists.items()},
            "centre_heatmap": self.centres.to_json(),
        }
