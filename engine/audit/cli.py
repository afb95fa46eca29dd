"""``sa-engine audit``: the quality audit from the command line.

    sa-engine audit PATH... [--reference FILE] [--out DIR] [--workers N]
                    [--tracking-uri URI] [--experiment NAME]
    sa-engine audit PATH... --export-sample N [--seed S] [--out DIR]
    sa-engine audit --compare RUN_A RUN_B [--out DIR]

PATH: shard files, directories of shards, or run directories (``<run>/shards`` +
``<run>/index``). DIR defaults to ``<run>/audit`` (``<run>/audit/sample`` for a sample).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.audit.compare import compare, format_text
from engine.audit.run import run_audit
from engine.audit.sample import export_sample


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sa-engine audit",
        description="Audit an SA-1B-format dataset: statistics, agreement with a reference, "
        "an HTML report and MLflow metrics.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="shards, directories or runs")
    parser.add_argument(
        "--reference",
        metavar="FILE",
        help="reference masks: a COCO JSON (e.g. a corrected sample) or SA-1B shards",
    )
    parser.add_argument("--out", metavar="DIR", help="output directory (default: <run>/audit)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument(
        "--gallery",
        type=int,
        default=4,
        metavar="K",
        help="images per gallery row: best, worst, random (default 4)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random gallery row / sample seed")
    parser.add_argument(
        "--concavity-masks",
        type=int,
        default=None,
        metavar="N",
        help="concavity of at most N masks per image (default: all)",
    )
    parser.add_argument(
        "--on-error",
        choices=("skip", "raise"),
        default="skip",
        help="bad samples: skip and count (default) or stop",
    )
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (logs the audit)")
    parser.add_argument("--experiment", help="MLflow experiment (logs the audit)")
    parser.add_argument(
        "--export-sample",
        type=int,
        metavar="N",
        help="export a random sample of N images as COCO JSON + overlays",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("RUN_A", "RUN_B"),
        help="compare two audits (audit.json files, audit or run directories)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.compare:
            if args.paths:
                parser.error("--compare takes two audits and no PATH")
            table = compare(args.compare[0], args.compare[1], args.out)
            print(format_text(table))
            return 0
        if not args.paths:
            parser.error("give at least one PATH (or --compare RUN_A RUN_B)")
        if args.export_sample is not None:
            path = export_sample(
                args.paths, args.export_sample, args.seed, args.out, on_error=args.on_error
            )
            print(f"sample written: {path} (images/ and overlays/ beside it)")
            return 0
        tracker = make_tracker(args.tracking_uri, args.experiment)
        summary = run_audit(
            args.paths,
            reference=args.reference,
            out_dir=args.out,
            tracker=tracker,
            gallery_size=args.gallery,
            seed=args.seed,
            workers=args.workers,
            concavity_masks=args.concavity_masks,
            on_error=args.on_error,
        )
    except ValueError as exc:
        print(f"sa-engine audit: {exc}", file=sys.stderr)
        return 2
    print(summary_text(summary))
    return 0


def make_tracker(tracking_uri: str | None, experiment: str | None):
    """A ``Tracker`` when either is given, else ``None``. A new experiment in a local sqlite
    store keeps its artifacts beside the database (``<db dir>/mlartifacts``), not in the
    current directory (MLflow's default for sqlite stores)."""
    if not (tracking_uri or experiment):
        return None
    from engine.tracking import Tracker

    artifacts = None
    if tracking_uri and tracking_uri.startswith("sqlite:///"):
        artifacts = Path(tracking_uri[len("sqlite:///") :]).parent / "mlartifacts"
    return Tracker(tracking_uri, experiment or "sa-engine-audit", artifact_location=artifacts)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def summary_text(summary: dict) -> str:
    """A few lines for the terminal: counts, agreement, where the files are."""
    d, read = summary["dataset"], summary["read"]
    lines = [
        f"images {d['images']:,}  masks {d['masks']:,}  masks/image "
        f"{(d['masks_per_image'] or 0):.1f}  skipped {read['skipped']}",
    ]
    if summary.get("reference"):
        lines.append(
            "matched pairs IoU>=0.75 / 0.90: "
            f"{_pct(summary['iou_above']['0.75'])} / {_pct(summary['iou_above']['0.90'])}  "
            f"recall@0.75 / 0.90: {_pct(summary['recall']['0.75'])} / "
            f"{_pct(summary['recall']['0.90'])}"
        )
    lines.append(f"report: {summary['files']['html']}")
    lines.append(f"numbers: {summary['files']['json']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
