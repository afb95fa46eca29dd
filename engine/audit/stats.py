"""Reference-free dataset statistics (the paper's section 5): per image, then accumulated.

Per image (``measure_image``): mask areas, centres of mass, concavity, pairwise overlap and the
share of pixels covered, from the SA-1B record's COCO RLEs. Areas, boxes, IoUs and the union
come straight from RLE (pycocotools, no decode); centres and concavity decode the masks in
chunks of ``chunk`` (an ``H×W×chunk`` uint8 array at a time).

Conventions: a pixel ``(x, y)`` is the unit square ``[x, x+1) × [y, y+1)``; a centre is the
centre of mass of the pixel squares (so it is ``(x + 0.5, y + 0.5)`` for a single pixel) and is
reported normalised by the image width / height. Concavity is ``1 − area / hull_area`` where the
hull is the convex hull of the pixel *squares* (their corners), so a filled rectangle scores
exactly 0 and every mask scores in ``[0, 1)``. The hull is computed for all masks of a chunk
at once from each column's top and bottom pixel (``hull_areas``), and checked in the tests
against ``scipy.spatial.ConvexHull`` of every pixel corner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

from engine.audit.hist import Histogram, Histogram2D
from engine.audit.rle_check import check_counts
from engine.sa1b import ImageRecord

OVERLAP_THRESHOLDS = (0.5, 0.9)


def coco_rles(rles: list[dict]) -> list[dict]:
    """SA-1B RLE dicts (``counts`` str) in the form pycocotools takes (``counts`` bytes)."""
    out = []
    for rle in rles:
        counts = rle["counts"]
        if isinstance(counts, bytes):
            out.append(rle)
            continue
        out.append(
            {
                "size": [int(rle["size"][0]), int(rle["size"][1])],
                "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
            }
        )
    return out


def _minorant_integral(seg: np.ndarray, y: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """Per segment, the integral over its ``y`` range of the convex minorant of points ``(y, x)``.

    Points are sorted by ``seg`` then strictly increasing ``y``. All segments are done at once:
    each pass drops every interior point on or above the chord of its live neighbours (such a
    point is no vertex of the lower hull, so dropping them together keeps the hull) until
    none is left to drop; the survivors are the hull's vertices. Returns ``n`` integrals.
    """
    alive = np.ones(y.size, dtype=bool)
    while True:
        idx = np.flatnonzero(alive)
        if idx.size < 3:
            break
        s, yy, xx = seg[idx], y[idx], x[idx]
        inner = (s[1:-1] == s[:-2]) & (s[1:-1] == s[2:])
        cross = (yy[2:] - yy[:-2]) * (xx[1:-1] - xx[:-2]) - (xx[2:] - xx[:-2]) * (
            yy[1:-1] - yy[:-2]
        )
        drop = inner & (cross >= 0)
        if not drop.any():
            break
        alive[idx[1:-1][drop]] = False
    idx = np.flatnonzero(alive)
    s, yy, xx = seg[idx], y[idx], x[idx]
    same = s[1:] == s[:-1]
    trapezoids = (yy[1:] - yy[:-1]) * (xx[1:] + xx[:-1]) / 2
    return np.bincount(s[1:][same], weights=trapezoids[same], minlength=n)


def hull_areas(start: np.ndarray, end: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Convex-hull areas of ``N`` masks given line by line (the hull of their pixel squares).

    ``start``, ``end``, ``present`` are ``L×N``: line ``i`` of mask ``k`` (a row, or a column —
    the area does not care) covers cells ``[start[i, k], end[i, k])`` when ``present[i, k]``.
    Only each line's two extremes matter for the hull. The hull's left side is the convex
    minorant of the extremes at the line edges ``i`` and ``i + 1``, its right side the concave
    majorant; the area is the integral between them. Empty masks get 0.
    """
    lines, n = present.shape
    big = np.int64(1) << 40
    lo = np.where(present, start, big)
    hi = np.where(present, end, -big)
    pad_lo, pad_hi = np.full((1, n), big), np.full((1, n), -big)
    # extremes at edge e (between lines e-1 and e): both neighbouring lines' squares touch it
    edge_lo = np.minimum(np.vstack([pad_lo, lo]), np.vstack([lo, pad_lo]))
    edge_hi = np.maximum(np.vstack([pad_hi, hi]), np.vstack([hi, pad_hi]))
    none = np.zeros((1, n), dtype=bool)
    valid = np.vstack([present, none]) | np.vstack([none, present])
    k, e = np.nonzero(valid.T)  # sorted by mask, then edge
    y = e.astype(np.float64)
    left = _minorant_integral(k, y, edge_lo[e, k].astype(np.float64), n)
    right = -_minorant_integral(k, y, -edge_hi[e, k].astype(np.float64), n)
    return right - left


def _concavity(area: np.ndarray, hull: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 1.0 - area / hull
    out[area == 0] = np.nan
    return np.maximum(out, 0.0)  # hull ⊇ mask: only rounding could go below 0


def concavity(mask: np.ndarray) -> float:
    """``1 − area / convex-hull area`` of one ``H×W`` binary mask (NaN when it is empty)."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {mask.shape}")
    m = mask.astype(bool)
    present = m.any(axis=1)
    left = m.argmax(axis=1)
    right = m.shape[1] - m[:, ::-1].argmax(axis=1)
    hull = hull_areas(left[:, None], right[:, None], present[:, None])
    return float(_concavity(np.array([m.sum()], dtype=np.float64), hull)[0])


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
        # pycocotools gives H×W×c in Fortran order: as c×W×H it is C-contiguous, each image
        # column a contiguous line (the hull is computed column by column: same area).
        block = mask_utils.decode(coco[start : start + chunk]).transpose(2, 1, 0).view(bool)
        stop = start + block.shape[0]
        col = np.count_nonzero(block, axis=2)  # c×W
        row = np.count_nonzero(block, axis=1)  # c×H
        a = col.sum(axis=1)
        area[start:stop] = a
        with np.errstate(invalid="ignore", divide="ignore"):
            centre[start:stop, 0] = (col @ xs) / a / width
            centre[start:stop, 1] = (row @ ys) / a / height
        todo = np.flatnonzero(want[start:stop] & (a > 0))
        if todo.size == 0:
            continue
        lines = block if todo.size == block.shape[0] else block[todo]
        top = lines.argmax(axis=2)  # c×W: first foreground row of each column
        bottom = height - lines[:, :, ::-1].argmax(axis=2)  # exclusive end
        hull = hull_areas(top.T, bottom.T, (col[todo] > 0).T)
        conc[start + todo] = _concavity(a[todo].astype(np.float64), hull)
    return MaskShapes(area, centre, conc)


def check_rles(rles: list[dict], height: int, width: int, ids: list | None = None) -> None:
    """Raise ``ValueError`` naming the masks (by ``ids``, else index) whose counts do not
    decode to exactly ``height × width`` pixels (see ``engine.audit.rle_check``)."""
    coco = coco_rles(rles)
    ok = check_counts([r["counts"] for r in coco], [height * width] * len(coco))
    if not ok.all():
        bad = [ids[i] if ids is not None else i for i in np.flatnonzero(~ok)]
        raise ValueError(f"masks {bad}: RLE counts do not decode to {height}x{width} pixels")


def pairwise_iou(rles: list[dict]) -> np.ndarray:
    """``N×N`` IoU between the masks of one image, with 0 on the diagonal.

    ``rles`` may already be in pycocotools form (``coco_rles``), which skips a conversion.
    """
    if len(rles) == 0:
        return np.zeros((0, 0))
    coco = coco_rles(rles)
    iou = np.asarray(mask_utils.iou(coco, coco, [0] * len(coco)), dtype=np.float64)
    iou = iou.reshape(len(coco), len(coco))
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
    rles = coco_rles(rles)  # converted once
    check_rles(rles, record.height, record.width, [a.id for a in record.annotations])
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
            "masks_per_image": Histogram.linear(0, 500, 500),  # one bin per count
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
