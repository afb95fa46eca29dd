"""``sa-engine export-coco``: a run (or one stage / round of it) as COCO JSON for CVAT or
Label Studio; the corrected file comes back with ``stages.annotator=coco``.

    sa-engine export-coco RUN_DIR --out FILE [--stage N] [--round N]
                          [--format rle|polygon] [--images DIR]

``--stage``: 1 (assisted-manual), 2 (semi-automatic) or 3 (fully automatic); ``--round``: the
round within the stage (the ``rNN`` of the shard names). ``--images DIR`` also writes the
images, as stored in the shards, under the file names the JSON gives.
"""

from __future__ import annotations

import argparse
import sys

from engine.dataset.coco_export import SEGMENTATIONS, export_coco
from engine.dataset.reader import DatasetReadError
from stages.rounds import STAGE_NAMES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sa-engine export-coco",
        description="Export a run's masks as COCO instances JSON (RLE or polygons).",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (shards/ + index/)")
    parser.add_argument("--out", required=True, metavar="FILE", help="the COCO JSON to write")
    parser.add_argument(
        "--stage", type=int, choices=sorted(STAGE_NAMES), help="only this stage (1, 2 or 3)"
    )
    parser.add_argument("--round", type=int, metavar="N", help="only round N (of each stage)")
    parser.add_argument(
        "--format",
        choices=SEGMENTATIONS,
        default="rle",
        help="segmentation as compressed RLE (default) or polygons (holes are filled)",
    )
    parser.add_argument(
        "--images", metavar="DIR", help="also write the images under their COCO file names"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.round is not None and args.round < 0:
        print(f"sa-engine export-coco: --round must be >= 0, got {args.round}", file=sys.stderr)
        return 2
    try:
        summary = export_coco(
            args.run_dir,
            args.out,
            stage=STAGE_NAMES[args.stage] if args.stage is not None else None,
            round=args.round,
            segmentation=args.format,
            images_dir=args.images,
        )
    except (ValueError, DatasetReadError, OSError) as exc:
        print(f"sa-engine export-coco: {exc}", file=sys.stderr)
        return 2
    print(f"{summary.images} images, {summary.annotations} masks written to {summary.path}")
    if summary.holes_filled:
        print(
            f"{summary.holes_filled} masks had holes that polygons cannot keep (use --format rle)"
        )
    if args.images:
        print(f"images: {args.images}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
