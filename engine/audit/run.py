"""``run_audit``: shards in, audit.json + audit.html + images.parquet (+ MLflow) out.

Shards are audited one at a time (``workers=1``) or in a pool of spawned processes, each
returning a small mergeable ``Auditor`` and the shard's per-image rows; the parent merges the
accumulators and appends the rows to ``images.parquet`` as shards finish, so memory is bounded
by one shard's rows plus fixed-size histograms and the gallery, whatever the dataset size.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.audit.auditor import REFERENCE_COLUMNS, AuditOptions, Auditor, audit_shard
from engine.audit.inputs import ShardInput, resolve_inputs
from engine.audit.metrics import THRESHOLDS, threshold_key
from engine.audit.plots import close_figures, figure_png, make_figures
from engine.audit.privacy import privacy_summary
from engine.audit.reference import ReferenceSet, open_reference
from engine.audit.report import write_html, write_json
from engine.audit.stats import OVERLAP_THRESHOLDS
from engine.progress import progress_bar

SCHEMA_VERSION = 1
MAX_LOGGED_TABLE_ROWS = 5000  # per-image rows logged with log_table; above: Parquet only

ROW_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("group", pa.string()),
        ("image_id", pa.int64()),
        ("file_name", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("masks", pa.int32()),
        ("coverage", pa.float64()),
        ("mean_relative_area", pa.float64()),
        ("mean_concavity", pa.float64()),
        ("mean_predicted_iou", pa.float64()),
        ("mean_stability_score", pa.float64()),
    ]
    + [(f"pairs_iou_above_{t:.2f}", pa.int64()) for t in OVERLAP_THRESHOLDS]
    + [
        (name, pa.int32() if name in ("references", "matched") else pa.float64())
        for name in REFERENCE_COLUMNS
    ]
)


def _shard_results(
    shards: list[ShardInput], reference: ReferenceSet | None, options: AuditOptions, workers: int
) -> Iterator[tuple[Auditor, list[dict]]]:
    """``audit_shard`` over every shard, in order, at most ``2 × workers`` in flight."""
    if workers <= 1 or len(shards) <= 1:
        for shard in shards:
            yield audit_shard(shard, reference, options)
        return
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending = []
        for shard in shards:
            pending.append(pool.submit(audit_shard, shard, reference, options))
            if len(pending) >= 2 * workers:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()


def _reference_name(reference: object) -> str | None:
    if reference is None:
        return None
    if isinstance(reference, (str, Path)):
        return str(reference)
    path = getattr(reference, "path", None)
    return str(path) if path is not None else type(reference).__name__


def build_summary(
    auditor: Auditor,
    shards: list[ShardInput],
    paths: Sequence,
    reference: object,
    options: AuditOptions,
) -> dict:
    """The audit.json document (keys documented in docs/audit.md)."""
    summary: dict = {
        "schema_version": SCHEMA_VERSION,
        "inputs": {
            "paths": [str(p) for p in paths],
            "shards": [str(s.path) for s in shards],
            "indexed_shards": sum(1 for s in shards if s.index_dir is not None),
        },
        "options": {
            "gallery_size": options.gallery_size,
            "seed": options.seed,
            "concavity_masks": options.concavity_masks,
            "on_error": options.on_error,
        },
        "read": {
            "samples": auditor.read.samples,
            "skipped": auditor.read.skipped,
            "failed_shards": auditor.read.failed_shards,
            "problems": list(auditor.read.problems),
        },
        "dataset": auditor.stats.to_json(),
        "groups": {name: g.to_json() for name, g in sorted(auditor.groups.items())},
        "privacy": privacy_summary(shards),
        "reference_info": None,
        "reference": None,
    }
    if auditor.metrics is not None:
        ref = auditor.metrics.to_json()
        summary["reference_info"] = {
            "source": _reference_name(reference),
            "images_with_reference": auditor.images_with_reference,
            "matching": "hungarian",
        }
        summary["reference"] = ref
        summary["iou_above"] = ref["iou_above"]
        summary["recall"] = ref["recall"]
    return summary


def summary_metrics(summary: dict) -> dict[str, float]:
    """The numbers of a summary as flat MLflow metric names (``None`` values left out)."""
    d = summary["dataset"]
    out = {
        "images": d["images"],
        "masks": d["masks"],
        "masks_per_image": d["masks_per_image"],
        "skipped_images": summary["read"]["skipped"],
    }
    privacy = summary.get("privacy")
    if privacy:
        out["privacy_blurred_boxes"] = privacy["blurred_boxes"]
        out["privacy_images_blurred"] = privacy["images_blurred"]
    for name, hist in d["histograms"].items():
        out[f"{name}_mean"] = hist["mean"]
        out[f"{name}_p50"] = hist["p50"]
    for kind in ("pairs_iou_above", "masks_with_iou_above"):
        for t, v in d["overlap"][kind].items():
            out[f"overlap_{kind}_{t}"] = v
    ref = summary.get("reference")
    if ref:
        out["mean_matched_iou"] = ref["mean_matched_iou"]
        out["calibration_ece"] = ref["calibration"]["ece"]
        for kind in ("iou_above", "recall", "precision"):
            for t in THRESHOLDS:
                out[f"{kind}_{threshold_key(t)}"] = ref[kind][threshold_key(t)]
        for table in ("recall_by_level", "recall_by_size"):
            for name, v in ref[table].items():
                for t, value in v["recall"].items():
                    out[f"{table}/{name}/{t}"] = value
        for name, g in ref["by_group"].items():
            for kind in ("iou_above", "recall", "precision"):
                for t, value in g[kind].items():
                    out[f"group/{name}/{kind}_{t}"] = value
            out[f"group/{name}/calibration_ece"] = g["calibration"]["ece"]
    for name, g in summary["groups"].items():
        out[f"group/{name}/masks_per_image"] = g["masks_per_image"]
    return {k: float(v) for k, v in out.items() if v is not None}


def run_audit(
    paths: str | Path | Sequence[str | Path],
    reference: str | Path | ReferenceSet | dict | None = None,
    out_dir: str | Path | None = None,
    tracker: object | None = None,
    gallery_size: int = 4,
    seed: int = 0,
    workers: int = 1,
    concavity_masks: int | None = None,
    on_error: str = "skip",
    progress: bool | None = None,
) -> dict:
    """Audit shards / run directories; write audit.json, audit.html and images.parquet.

    ``reference``: a COCO JSON path (e.g. a corrected sample), SA-1B shards, a ``{key:
    [ReferenceMask]}`` mapping or a ``ReferenceSet``. ``out_dir`` defaults to ``<run>/audit``.
    ``tracker`` (an ``engine.tracking.Tracker``) gets the numbers as metrics, the plots, the
    per-image table and the files, in a run named ``audit`` (nested under an active run).
    ``progress``: a bar of shards audited (images and masks so far) on stderr
    (``engine.progress``: None = ``$SA_ENGINE_PROGRESS`` or a terminal).
    Returns the summary (the content of audit.json).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    options = AuditOptions(gallery_size, seed, concavity_masks, on_error)
    inputs = resolve_inputs(list(paths))
    out = Path(out_dir) if out_dir is not None else inputs.default_out
    out.mkdir(parents=True, exist_ok=True)
    ref_set = open_reference(reference)
    started = time.perf_counter()
    total = Auditor(ref_set, options)
    rows_path = out / "images.parquet"
    bar = progress_bar(len(inputs.shards), "audit", unit="shard", enabled=progress)
    with bar, pq.ParquetWriter(rows_path, ROW_SCHEMA, compression="zstd") as writer:
        for auditor, rows in _shard_results(inputs.shards, ref_set, options, workers):
            total.merge(auditor)
            if rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=ROW_SCHEMA))
            bar.set_postfix(images=total.stats.images, masks=total.stats.masks, refresh=False)
            bar.update(1)
    gallery, problems = total.gallery.render()
    for message in problems:
        total.read.problem(message)
    summary = build_summary(total, inputs.shards, paths, reference, options)
    summary["gallery"] = [
        {"kind": g.kind, "key": g.key, "shard": g.shard, "score": g.score} for g in gallery
    ]
    summary["seconds"] = time.perf_counter() - started
    summary["files"] = {
        "json": str(out / "audit.json"),
        "html": str(out / "audit.html"),
        "images_table": str(rows_path),
    }
    figures = make_figures(summary)
    try:
        plots = {name: figure_png(fig) for name, fig in figures.items()}
        if tracker is None:
            write_json(summary, out / "audit.json")
            write_html(summary, plots, gallery, out / "audit.html")
        else:
            with tracker.run("audit", tags={"sa_engine.kind": "audit"}) as run_id:
                summary["mlflow_run_id"] = run_id
                files = [
                    write_json(summary, out / "audit.json"),
                    write_html(summary, plots, gallery, out / "audit.html"),
                ]
                _log(tracker, summary, figures, rows_path, files)
    finally:
        close_figures(figures)
    return summary


def _log(tracker, summary: dict, figures: dict, rows_path: Path, files: list[Path]) -> None:
    """Log one audit into the active run through ``engine.tracking.Tracker``."""
    tracker.log_metrics(summary_metrics(summary))
    for name, fig in figures.items():
        tracker.log_figure(fig, f"plots/{name}.png")
    if pq.read_metadata(rows_path).num_rows <= MAX_LOGGED_TABLE_ROWS:
        tracker.log_table(pq.read_table(rows_path).to_pydict(), "audit_images.json")
    tracker.log_artifact(rows_path)
    for path in files:
        tracker.log_artifact(path)
