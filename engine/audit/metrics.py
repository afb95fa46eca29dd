"""Reference metrics (the paper's agreement check), accumulated image by image.

For every image that has a reference, the generated masks are matched one-to-one to the
reference masks (``engine.audit.match``). Over a set of images:

- ``iou_above[t]`` = matched pairs with IoU ≥ t / matched pairs (the paper's "94% of pairs
  above 0.90"); ``recall[t]`` = matched pairs with IoU ≥ t / reference masks;
  ``precision[t]`` = matched pairs with IoU ≥ t / generated masks. Thresholds are keyed
  ``"0.50"``, ``"0.75"``, ``"0.90"``.
- recall per reference granularity level and per COCO size bucket of the reference area
  (small < 32², medium < 96², large ≥ 96² pixels);
- predicted-IoU calibration: each generated mask's ``predicted_iou`` against its actual IoU
  (its best IoU with any reference), in 10 bins, with the expected calibration error
  ``ECE = Σ_b n_b / N · |mean_predicted_b − mean_actual_b|``.

All of it is kept overall and per group (``"<stage>/r<round>"``); matched-pair counts are also
kept per mask source (model / simulated / annotator).
"""

from __future__ import annotations

import numpy as np

from engine.audit.hist import Histogram
from engine.audit.match import Matching
from engine.records import LEVEL_NAMES

THRESHOLDS = (0.50, 0.75, 0.90)
SIZE_BUCKETS = (("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, np.inf))
CALIBRATION_BINS = 10


def threshold_key(t: float) -> str:
    """``0.5`` → ``"0.50"`` (the key used in audit.json)."""
    return f"{t:.2f}"


def level_name(level: int | None) -> str:
    return "unknown" if level is None else LEVEL_NAMES.get(int(level), str(level))


def size_bucket(area: float) -> str:
    """COCO size bucket of a mask area in pixels."""
    for name, lo, hi in SIZE_BUCKETS:
        if lo <= area < hi:
            return name
    raise ValueError(f"area must be >= 0, got {area}")


def _share(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


class MatchCounts:
    """Matched-pair counts over a set of images (or of masks, for the per-source table)."""

    def __init__(self) -> None:
        self.images = 0
        self.references = 0
        self.masks = 0
        self.matched = 0
        self.iou_sum = 0.0
        self.above = dict.fromkeys(THRESHOLDS, 0)

    def add(self, references: int, masks: int, pair_iou: np.ndarray, images: int = 1) -> None:
        self.images += images
        self.references += references
        self.masks += masks
        self.matched += int(pair_iou.size)
        self.iou_sum += float(pair_iou.sum())
        for t in THRESHOLDS:
            self.above[t] += int((pair_iou >= t).sum())

    def merge(self, other: MatchCounts) -> None:
        self.images += other.images
        self.references += other.references
        self.masks += other.masks
        self.matched += other.matched
        self.iou_sum += other.iou_sum
        for t in THRESHOLDS:
            self.above[t] += other.above[t]

    def to_json(self, with_recall: bool = True) -> dict:
        """With ``with_recall=False`` (per-source counts) image and reference counts and
        recall are left out: they belong to images, not to a mask's source."""
        out = {
            "images": self.images,
            "references": self.references,
            "masks": self.masks,
            "matched": self.matched,
            "mean_matched_iou": _share(self.iou_sum, self.matched),
            "iou_above": {
                threshold_key(t): _share(self.above[t], self.matched) for t in THRESHOLDS
            },
            "precision": {threshold_key(t): _share(self.above[t], self.masks) for t in THRESHOLDS},
        }
        if with_recall:
            out["recall"] = {
                threshold_key(t): _share(self.above[t], self.references) for t in THRESHOLDS
            }
        else:
            del out["images"], out["references"]
        return out


class RecallCounts:
    """How many references (of one level or size bucket) were matched at IoU ≥ t."""

    def __init__(self) -> None:
        self.references = 0
        self.recalled = dict.fromkeys(THRESHOLDS, 0)

    def add(self, reference_iou: np.ndarray) -> None:
        self.references += int(reference_iou.size)
        for t in THRESHOLDS:
            self.recalled[t] += int((reference_iou >= t).sum())

    def merge(self, other: RecallCounts) -> None:
        self.references += other.references
        for t in THRESHOLDS:
            self.recalled[t] += other.recalled[t]

    def to_json(self) -> dict:
        return {
            "references": self.references,
            "recall": {
                threshold_key(t): _share(self.recalled[t], self.references) for t in THRESHOLDS
            },
        }


class Calibration:
    """Predicted vs actual IoU in ``CALIBRATION_BINS`` equal bins of predicted IoU on [0, 1]."""

    def __init__(self) -> None:
        self.count = np.zeros(CALIBRATION_BINS, dtype=np.int64)
        self.predicted = np.zeros(CALIBRATION_BINS)
        self.actual = np.zeros(CALIBRATION_BINS)

    def add(self, predicted: np.ndarray, actual: np.ndarray) -> None:
        p = np.clip(np.asarray(predicted, dtype=np.float64), 0.0, 1.0)
        b = np.minimum((p * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)
        self.count += np.bincount(b, minlength=CALIBRATION_BINS)
        self.predicted += np.bincount(b, weights=p, minlength=CALIBRATION_BINS)
        self.actual += np.bincount(b, weights=actual, minlength=CALIBRATION_BINS)

    def merge(self, other: Calibration) -> None:
        self.count += other.count
        self.predicted += other.predicted
        self.actual += other.actual

    def to_json(self) -> dict:
        total = int(self.count.sum())
        bins = []
        ece = 0.0
        for b in range(CALIBRATION_BINS):
            n = int(self.count[b])
            mean_p = self.predicted[b] / n if n else None
            mean_a = self.actual[b] / n if n else None
            if n:
                ece += n / total * abs(mean_p - mean_a)
            bins.append(
                {
                    "lo": b / CALIBRATION_BINS,
                    "hi": (b + 1) / CALIBRATION_BINS,
                    "masks": n,
                    "mean_predicted_iou": mean_p,
                    "mean_actual_iou": mean_a,
                }
            )
        return {
            "masks": total,
            "mean_predicted_iou": _share(self.predicted.sum(), total),
            "mean_actual_iou": _share(self.actual.sum(), total),
            "ece": ece if total else None,
            "bins": bins,
        }


class GroupMetrics:
    """Every reference metric for one set of images (the whole dataset, or one stage round)."""

    def __init__(self) -> None:
        self.counts = MatchCounts()
        self.by_level: dict[str, RecallCounts] = {}
        self.by_size = {name: RecallCounts() for name, _, _ in SIZE_BUCKETS}
        self.calibration = Calibration()
        self.matched_iou = Histogram.linear(0, 1, 100)

    def add(
        self,
        matching: Matching,
        reference_levels: list[int | None],
        reference_areas: np.ndarray,
        predicted_iou: np.ndarray,
    ) -> None:
        self.counts.add(matching.n_reference, matching.n_generated, matching.iou)
        self.matched_iou.add(matching.iou)
        names = [level_name(v) for v in reference_levels]
        for name in sorted(set(names)):
            pick = np.array([n == name for n in names])
            self.by_level.setdefault(name, RecallCounts()).add(matching.reference_iou[pick])
        buckets = np.array([size_bucket(a) for a in reference_areas])
        for name, _, _ in SIZE_BUCKETS:
            self.by_size[name].add(matching.reference_iou[buckets == name])
        self.calibration.add(predicted_iou, matching.best_iou)

    def merge(self, other: GroupMetrics) -> None:
        self.counts.merge(other.counts)
        for name, counts in other.by_level.items():
            self.by_level.setdefault(name, RecallCounts()).merge(counts)
        for name, counts in other.by_size.items():
            self.by_size[name].merge(counts)
        self.calibration.merge(other.calibration)
        self.matched_iou.merge(other.matched_iou)

    def to_json(self) -> dict:
        out = self.counts.to_json()
        out["recall_by_level"] = {k: v.to_json() for k, v in sorted(self.by_level.items())}
        out["recall_by_size"] = {k: v.to_json() for k, v in self.by_size.items()}
        out["calibration"] = self.calibration.to_json()
        out["matched_iou_histogram"] = self.matched_iou.to_json()
        return out


class ReferenceMetrics:
    """Overall, per-group (stage/round) and per-source reference metrics."""

    def __init__(self) -> None:
        self.overall = GroupMetrics()
        self.by_group: dict[str, GroupMetrics] = {}
        self.by_source: dict[str, MatchCounts] = {}

    def add_image(
        self,
        matching: Matching,
        reference_levels: list[int | None],
        reference_areas: np.ndarray,
        predicted_iou: np.ndarray,
        group: str,
        sources: list[str | None],
    ) -> None:
        """Add one image; ``sources[g]`` is generated mask ``g``'s source (None = unknown)."""
        args = (matching, reference_levels, reference_areas, predicted_iou)
        self.overall.add(*args)
        self.by_group.setdefault(group, GroupMetrics()).add(*args)
        names = ["unknown" if s is None else s for s in sources]
        pair_source = np.array([names[g] for g in matching.generated_index], dtype=object)
        for name in sorted(set(names)):
            masks = sum(1 for s in names if s == name)
            pair_iou = matching.iou[pair_source == name] if pair_source.size else np.zeros(0)
            self.by_source.setdefault(name, MatchCounts()).add(0, masks, pair_iou, images=0)

    def merge(self, other: ReferenceMetrics) -> None:
        self.overall.merge(other.overall)
        for name, group in other.by_group.items():
            self.by_group.setdefault(name, GroupMetrics()).merge(group)
        for name, counts in other.by_source.items():
            self.by_source.setdefault(name, MatchCounts()).merge(counts)

    def to_json(self) -> dict:
        """The ``reference`` block of audit.json (keys in docs/audit.md)."""
        out = self.overall.to_json()
        out["by_group"] = {k: v.to_json() for k, v in sorted(self.by_group.items())}
        out["by_source"] = {
            k: v.to_json(with_recall=False) for k, v in sorted(self.by_source.items())
        }
        return out
