"""Dataset I/O cost: our atomic ShardWriter / ShardReader / validate against webdataset.

Samples are SA-1B-sized: 1500×2250 RGB images with 100 rectangle/ellipse masks each. The
baseline, measured in the same run on the same samples, is ``webdataset.ShardWriter`` (not
atomic, no index) for writing and ``webdataset.WebDataset(...).decode("rgb8")`` for reading.

    .venv/bin/python benchmarks/dataset_io.py [--images 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import webdataset as wds

from engine.dataset import ShardReader, ShardWriter
from engine.dataset.validate import validate_paths
from engine.masks import mask_bbox_xywh, masks_to_rles
from engine.sa1b import ImageRecord, MaskRecord

H, W, MASKS = 1500, 2250, 100


def make_sample(seed: int) -> tuple[str, np.ndarray, ImageRecord]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([(yy // 7) % 256, (xx // 9) % 256, ((yy + xx) // 11) % 256], axis=-1)
    image = (base + rng.integers(0, 24, size=(H, W, 3))).astype(np.uint8)
    masks = np.zeros((MASKS, H, W), dtype=bool)
    for i in range(MASKS):
        cy, cx = rng.integers(0, H), rng.integers(0, W)
        ry, rx = rng.integers(10, 300), rng.integers(10, 300)
        if i % 2:
            masks[i, max(cy - ry, 0) : cy + ry, max(cx - rx, 0) : cx + rx] = True
        else:
            y0, y1, x0, x1 = max(cy - ry, 0), min(cy + ry, H), max(cx - rx, 0), min(cx + rx, W)
            sub_y, sub_x = np.ogrid[y0:y1, x0:x1]
            masks[i, y0:y1, x0:x1] = ((sub_y - cy) / ry) ** 2 + ((sub_x - cx) / rx) ** 2 <= 1
    annotations = [
        MaskRecord(
            id=i,
            segmentation=rle,
            bbox=[float(v) for v in mask_bbox_xywh(m)],
            area=int(m.sum()),
            predicted_iou=0.9,
            stability_score=0.96,
            point_coords=[[float(W // 2), float(H // 2)]],
            crop_box=[0.0, 0.0, float(W), float(H)],
        )
        for i, (m, rle) in enumerate(zip(masks, masks_to_rles(masks)))
    ]
    record = ImageRecord(
        image_id=seed, width=W, height=H, file_name=f"sa_{seed}.jpg", annotations=annotations
    )
    return f"sa_{seed}", image, record


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()
    samples = [make_sample(s) for s in range(args.images)]
    n = len(samples)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def write_ours() -> None:
            with ShardWriter(root / "shards", root / "index", "bench", maxcount=8) as writer:
                for key, image, record in samples:
                    writer.write(key, image, record)

        def write_wds() -> None:
            (root / "wds").mkdir()
            pattern = str(root / "wds" / "bench-%06d.tar")
            with wds.ShardWriter(pattern, maxcount=8, verbose=0) as sink:
                for key, image, record in samples:
                    sink.write({"__key__": key, "jpg": image, "json": record.to_json()})

        def read_ours() -> None:
            assert sum(1 for _ in ShardReader(root / "shards")) == n

        def read_ours_records() -> None:
            assert sum(1 for _ in ShardReader(root / "shards", decode_images=False)) == n

        def read_wds() -> None:
            urls = sorted(str(p) for p in (root / "wds").glob("*.tar"))
            dataset = wds.WebDataset(urls, shardshuffle=False).decode("rgb8")
            assert sum(1 for _ in dataset) == n

        def read_wds_records() -> None:
            urls = sorted(str(p) for p in (root / "wds").glob("*.tar"))
            dataset = wds.WebDataset(urls, shardshuffle=False)
            assert sum(1 for s in dataset if json.loads(s["json"])) == n

        report = {}
        report["write"] = (timed(write_ours), timed(write_wds))
        report["read (images + records)"] = (timed(read_ours), timed(read_wds))
        report["read (records only)"] = (timed(read_ours_records), timed(read_wds_records))
        validate_s = timed(lambda: validate_paths([root / "shards"]))
        size = sum(p.stat().st_size for p in (root / "shards").glob("*.tar"))
    print(f"{n} images of {H}x{W} with {MASKS} masks each; {size / n / 1e6:.2f} MB per sample")
    print(f"{'step':<26}{'ours img/s':>12}{'webdataset img/s':>18}{'time ours/wds':>15}")
    for step, (ours, base) in report.items():
        print(f"{step:<26}{n / ours:>12.1f}{n / base:>18.1f}{ours / base:>15.2f}")
    print(f"{'validate (RLE, area, box)':<26}{n / validate_s:>12.1f}")


if __name__ == "__main__":
    main()
