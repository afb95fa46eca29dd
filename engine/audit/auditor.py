"""The audit of a stream of images: statistics, reference metrics, gallery, per-image rows.

``Auditor.add(key, record, ...)`` measures one SA-1B record and adds it to bounded
accumulators; ``audit_shard`` runs it over one shard (what a worker process does);
``Auditor.merge`` combines shards. Per-image rows are handed out with ``take_rows`` so the
caller can write them to Parquet as it goes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.audit.gallery import Gallery, GalleryCandidate
from engine.audit.inputs import (
    ImageProvenance,
    ReadCounts,
    ShardInput,
    group_from_shard_name,
    iter_shard,
    read_shard_provenance,
)
from engine.audit.match import Matching, match_masks
from engine.audit.metrics import THRESHOLDS, ReferenceMetrics, threshold_key
from engine.audit.reference import ReferenceSet
from engine.audit.stats import OVERLAP_THRESHOLDS, DatasetStats, check_rles, measure_image
from engine.masks import rle_area
from engine.records import GRANULARITIES
from engine.sa1b import ImageRecord


@dataclass
class AuditOptions:
    """Knobs of one audit (plain values, picklable for worker processes)."""

    gallery_size: int = 4  # images per gallery row (best, worst, random)
    seed: int = 0  # random gallery row
    concavity_masks: int | None = None  # per image; None = every mask
    on_error: str = "skip"  # "skip" (count bad samples) or "raise"

    def __post_init__(self) -> None:
        if self.on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {self.on_error!r}")
        if self.concavity_masks is not None and self.concavity_masks < 0:
            raise ValueError(f"concavity_masks must be >= 0 or None, got {self.concavity_masks}")
        if self.gallery_size < 0:
            raise ValueError(f"gallery_size must be >= 0, got {self.gallery_size}")


class GroupSummary:
    """Reference-free per-group counts for the header table (stage/round → images, masks…)."""

    def __init__(self) -> None:
        self.images = 0
        self.masks = 0
        self.predicted_iou_sum = 0.0
        self.with_provenance = 0  # masks whose index row gives clicks/seconds
        self.clicks = 0
        self.seconds = 0.0
        self.hand_fixed = 0
        self.whole = self.part = self.subpart = 0  # masks by granularity (index rows that say)
        self.with_parent = 0  # masks whose index row links a parent mask

    def merge(self, other: GroupSummary) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)

    def to_json(self) -> dict:
        n, p = self.masks, self.with_provenance
        return {
            "images": self.images,
            "masks": self.masks,
            "masks_per_image": n / self.images if self.images else None,
            "mean_predicted_iou": self.predicted_iou_sum / n if n else None,
            "clicks_per_mask": self.clicks / p if p else None,
            "seconds_per_mask": self.seconds / p if p else None,
            "hand_fixed_share": self.hand_fixed / p if p else None,
            "granularity": {"whole": self.whole, "part": self.part, "subpart": self.subpart},
            "with_parent": self.with_parent,
        }


def _mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


REFERENCE_COLUMNS = (
    ["references", "matched", "mean_matched_iou", "mean_reference_iou"]
    + [f"recall_{threshold_key(t)}" for t in THRESHOLDS]
    + [f"precision_{threshold_key(t)}" for t in THRESHOLDS]
)


def _reference_row(matching: Matching) -> dict:
    """The reference columns of one image's row."""
    n_ref, n_gen = matching.n_reference, matching.n_generated
    row = {
        "references": n_ref,
        "matched": int(matching.iou.size),
        "mean_matched_iou": float(matching.iou.mean()) if matching.iou.size else None,
        "mean_reference_iou": float(matching.reference_iou.mean()) if n_ref else None,
    }
    for t in THRESHOLDS:
        hits = int((matching.iou >= t).sum())
        row[f"recall_{threshold_key(t)}"] = hits / n_ref if n_ref else None
        row[f"precision_{threshold_key(t)}"] = hits / n_gen if n_gen else None
    return row


class Auditor:
    """Accumulates the audit of any number of images (bounded memory, mergeable)."""

    def __init__(self, reference: ReferenceSet | None = None, options: AuditOptions | None = None):
        self.reference = reference
        self.options = options or AuditOptions()
        self.stats = DatasetStats()
        self.metrics = ReferenceMetrics() if reference is not None else None
        self.groups: dict[str, GroupSummary] = {}
        self.gallery = Gallery(self.options.gallery_size, self.options.seed)
        self.read = ReadCounts()
        self.images_with_reference = 0
        self._rows: list[dict] = []

    def add(
        self,
        key: str,
        record: ImageRecord,
        shard: str = "",
        provenance: ImageProvenance | None = None,
        jpeg: bytes | None = None,
    ) -> dict:
        """Audit one image; returns its per-image row (also kept for ``take_rows``).

        ``provenance`` comes from the index (group and per-mask source); without it the group
        is parsed from the shard name. ``jpeg`` (the sample's image bytes) is only needed for
        the gallery. Raises ``ValueError`` (before anything is counted) when the record's
        masks do not fit its image or do not decode.
        """
        measures = measure_image(record, self.options.concavity_masks)
        rles = [a.segmentation for a in record.annotations]
        refs = self.reference.lookup(key, record) if self.reference is not None else None
        if refs:
            check_rles([r.rle for r in refs], record.height, record.width)
        matching = match_masks(rles, [r.rle for r in refs]) if refs is not None else None
        ref_areas = np.array([rle_area(r.rle) for r in refs or []], dtype=np.float64)

        self.stats.add(measures)
        group = provenance.group if provenance is not None else group_from_shard_name(shard)
        sources = self._add_to_group(group, record, provenance, measures.predicted_iou)
        n = len(record.annotations)
        image_area = max(record.width * record.height, 1)
        row = {
            "key": key,
            "shard": shard,
            "group": group,
            "image_id": int(record.image_id),
            "file_name": record.file_name,
            "width": int(record.width),
            "height": int(record.height),
            "masks": n,
            "coverage": measures.coverage,
            "mean_relative_area": float(measures.shapes.area.mean() / image_area) if n else None,
            "mean_concavity": _mean(measures.shapes.concavity),
            "mean_predicted_iou": float(measures.predicted_iou.mean()) if n else None,
            "mean_stability_score": float(measures.stability_score.mean()) if n else None,
        }
        for t in OVERLAP_THRESHOLDS:
            row[f"pairs_iou_above_{t:.2f}"] = measures.pairs_above[t]
        row.update(dict.fromkeys(REFERENCE_COLUMNS))
        if matching is not None:
            self.images_with_reference += 1
            levels = [r.level for r in refs]
            self.metrics.add_image(
                matching, levels, ref_areas, measures.predicted_iou, group, sources
            )
            row.update(_reference_row(matching))
        if self.reference is not None:
            score = row["mean_reference_iou"]
        else:
            score = row["mean_predicted_iou"]
        if jpeg is not None and self.gallery.wants(key, score):
            ref_rles = None if refs is None else [r.rle for r in refs]
            self.gallery.offer(GalleryCandidate(key, shard, score, record, jpeg, ref_rles))
        self._rows.append(row)
        return row

    def _add_to_group(
        self,
        group: str,
        record: ImageRecord,
        provenance: ImageProvenance | None,
        predicted_iou: np.ndarray,
    ) -> list[str | None]:
        """Count the image in its group's summary; returns each mask's source (or None)."""
        summary = self.groups.setdefault(group, GroupSummary())
        summary.images += 1
        summary.masks += len(record.annotations)
        summary.predicted_iou_sum += float(predicted_iou.sum())
        sources: list[str | None] = []
        for ann in record.annotations:
            mp = provenance.masks.get(ann.id) if provenance is not None else None
            sources.append(mp.source if mp is not None else None)
            if mp is not None and mp.granularity in GRANULARITIES:
                setattr(summary, mp.granularity, getattr(summary, mp.granularity) + 1)
            if mp is not None and mp.parent_id is not None:
                summary.with_parent += 1
            if mp is not None and mp.clicks is not None:
                summary.with_provenance += 1
                summary.clicks += int(mp.clicks)
                summary.seconds += float(mp.seconds or 0.0)
                summary.hand_fixed += int(bool(mp.hand_fixed))
        return sources

    def take_rows(self) -> list[dict]:
        """The per-image rows added since the last call (and forget them)."""
        rows, self._rows = self._rows, []
        return rows

    def merge(self, other: Auditor) -> None:
        """Add another auditor's accumulators (its rows are not taken over)."""
        self.stats.merge(other.stats)
        if self.metrics is not None and other.metrics is not None:
            self.metrics.merge(other.metrics)
        for name, summary in other.groups.items():
            self.groups.setdefault(name, GroupSummary()).merge(summary)
        self.gallery.merge(other.gallery)
        self.read.merge(other.read)
        self.images_with_reference += other.images_with_reference


def audit_shard(
    shard: ShardInput, reference: ReferenceSet | None, options: AuditOptions
) -> tuple[Auditor, list[dict]]:
    """Audit one shard: ``(auditor, rows)`` (a worker's unit of work; picklable result).

    A record whose masks do not fit its image size is a bad sample: skipped and counted (or
    raised with ``on_error="raise"``).
    """
    auditor = Auditor(reference, options)
    provenance = read_shard_provenance(shard)
    name = shard.path.name
    for key, record, jpeg in iter_shard(shard.path, auditor.read, options.on_error):
        try:
            auditor.add(key, record, name, provenance.get(key), jpeg)
        except ValueError as exc:
            if options.on_error == "raise":
                raise
            auditor.read.samples -= 1
            auditor.read.skipped += 1
            auditor.read.problem(f"{shard.path}: {key}: {exc}")
    rows = auditor.take_rows()
    auditor.reference = None  # do not ship the reference set back to the parent
    return auditor, rows
