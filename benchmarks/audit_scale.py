"""Audit at scale: 10,000 images × 100 masks, wall time and peak RSS against a read+decode baseline.

    .venv/bin/python benchmarks/audit_scale.py [--images 10000] [--masks 100] [--workers 2]

1. Generates a run directory (SA-1B shards + Parquet index, through ``ShardWriter``) of small
   ``--height × --width`` images with ``--masks`` random ellipse / rectangle masks each. Mask
   sets come from a pool of ``--pool`` distinct records cycled under new keys (generation
   would otherwise dominate); every image is still audited in full.
2. Baseline, in this run: read every record (``ShardReader``, records only) and RLE-decode
   every mask with pycocotools.
3. The audit (``run_audit`` without a reference: every per-mask step runs — decode,
   centres, concavity hulls, pairwise IoU, union — plus plots, HTML and the per-image
   Parquet table). Steps 2 and 3 each run in a fresh interpreter that reports its own peak
   RSS and its worker processes' (``ru_maxrss``: the largest single process).

Prints the times, the ratio audit / baseline and the peak RSS of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_record(rng: np.random.Generator, h: int, w: int, n: int, image_id: int):
    from engine.masks import masks_to_rles
    from engine.sa1b import ImageRecord, MaskRecord, Provenance

    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0, h, (n, 1, 1)), rng.uniform(0, w, (n, 1, 1))
    ry, rx = rng.uniform(1.5, h / 3, (n, 1, 1)), rng.uniform(1.5, w / 3, (n, 1, 1))
    ellipse = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    boxes = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    masks = np.where(rng.random((n, 1, 1)) < 0.5, ellipse, boxes)
    masks[:, int(h / 2), int(w / 2)] |= ~masks.any(axis=(1, 2))  # no empty mask
    rles = masks_to_rles(masks)
    annotations = []
    for i, (m, rle) in enumerate(zip(masks, rles)):
        ys, xs = np.nonzero(m)
        annotations.append(
            MaskRecord(
                id=i,
                segmentation=rle,
                bbox=[
                    float(xs.min()),
                    float(ys.min()),
                    float(np.ptp(xs) + 1),
                    float(np.ptp(ys) + 1),
                ],
                area=int(m.sum()),
                predicted_iou=float(rng.uniform(0.85, 1.0)),
                stability_score=float(rng.uniform(0.9, 1.0)),
                point_coords=[[float(xs[0]), float(ys[0])]],
                crop_box=[0.0, 0.0, float(w), float(h)],
                provenance=Provenance(stage="stage3", round=0, source="model"),
            )
        )
    return ImageRecord(image_id, w, h, f"img_{image_id}.jpg", annotations)


def generate(root: Path, images: int, masks: int, h: int, w: int, pool: int) -> float:
    from engine.dataset import ShardWriter

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    records = [make_record(rng, h, w, masks, i) for i in range(pool)]
    pixels = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(8)]
    with ShardWriter(
        root / "shards", root / "index", "stage3-r00", maxcount=1000, stage="stage3", round=0
    ) as writer:
        for i in range(images):
            record = records[i % pool]
            record.image_id = i
            record.file_name = f"img_{i:06d}.jpg"
            writer.write(f"img_{i:06d}", pixels[i % len(pixels)], record)
    return time.perf_counter() - started


PEAKS = """
import resource
class _Peaks:  # peak RSS (KiB) of this process and of its largest child, then CPU seconds
    def __iter__(self):
        usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        yield from (u.ru_maxrss for u in usage)
        yield sum(u.ru_utime + u.ru_stime for u in usage)
PEAKS = _Peaks()
"""

BASELINE = (
    PEAKS
    + """
import sys, time
from pycocotools import mask as mask_utils
from engine.dataset import ShardReader
t = time.perf_counter(); n = 0
for _, _, record in ShardReader(sys.argv[1], decode_images=False):
    rles = [{"size": a.segmentation["size"], "counts": a.segmentation["counts"].encode()}
            for a in record.annotations]
    n += mask_utils.decode(rles).shape[2]
print(time.perf_counter() - t, n, *PEAKS)
"""
)

AUDIT = (
    PEAKS
    + """
import sys, time
from engine.audit import run_audit
t = time.perf_counter()
s = run_audit(sys.argv[1], out_dir=sys.argv[2], workers=int(sys.argv[3]))
print(time.perf_counter() - t, s["dataset"]["masks"], *PEAKS)
"""
)


def run_child(code: str, *args: str) -> tuple[float, int, float, float, float]:
    """Run ``code`` in a fresh interpreter:
    ``(seconds, count, rss_mib, largest_worker_rss_mib, cpu_seconds incl. workers)``."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    return float(out[0]), int(out[1]), int(out[2]) / 1024, int(out[3]) / 1024, float(out[4])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--masks", type=int, default=100)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--pool", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="keep the dataset here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="audit-scale-") as tmp:
        root = args.dir or Path(tmp)
        if not (root / "shards").is_dir():
            seconds = generate(root, args.images, args.masks, args.height, args.width, args.pool)
            print(f"generated {args.images} images × {args.masks} masks in {seconds:.1f} s")
        base_s, base_n, base_rss, _, base_cpu = run_child(BASELINE, str(root / "shards"))
        print(
            f"baseline read + pycocotools decode: {base_s:.1f} s wall, {base_cpu:.1f} s CPU "
            f"({base_n} masks), peak RSS {base_rss:.0f} MiB"
        )
        audit_s, audit_n, audit_rss, worker_rss, audit_cpu = run_child(
            AUDIT, str(root), str(Path(tmp) / "audit"), str(args.workers)
        )
        print(
            f"audit ({args.workers} workers): {audit_s:.1f} s wall, {audit_cpu:.1f} s CPU "
            f"({audit_n} masks), peak RSS {audit_rss:.0f} MiB (largest worker "
            f"{worker_rss:.0f} MiB)"
        )
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"load average after the run (1/5/15 min): {load} on {os.cpu_count()} CPUs")
        print(
            f"ratio audit / baseline: {audit_s / base_s:.1f}x wall, "
            f"{audit_cpu / base_cpu:.1f}x CPU; "
            f"{audit_n / audit_s:,.0f} masks/s; {args.images / audit_s:,.0f} images/s"
        )
        print(
            json.dumps(
                {
                    "images": args.images,
                    "masks_per_image": args.masks,
                    "size_hw": [args.height, args.width],
                    "workers": args.workers,
                    "baseline_s": round(base_s, 2),
                    "audit_s": round(audit_s, 2),
                    "ratio": round(audit_s / base_s, 2),
                    "baseline_cpu_s": round(base_cpu, 1),
                    "audit_cpu_s": round(audit_cpu, 1),
                    "audit_peak_rss_mib": round(audit_rss),
                    "worker_peak_rss_mib": round(worker_rss),
                }
            )
        )


if __name__ == "__main__":
    main()
