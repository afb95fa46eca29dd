"""Synthetic scene generator speed on one core, against JPEG decoding in the same run.

    .venv/bin/python benchmarks/synthetic.py [--images 200] [--height 384] [--width 512]
    .venv/bin/python benchmarks/synthetic.py --samples docs/images   # the docs pictures

Target: >= 50 images/s on one core at 384×512 (reference masks included). The baseline is
PIL decoding a JPEG (quality 90) of a scene of the same size into an RGB array — what a
file-based source costs per image before any mask work — so the ratio says how the
generator compares with reading real images on the same machine.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import io  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data.preview import level_counts, level_panels  # noqa: E402
from engine.data.synthetic import SPLIT_PUBLIC, render_scene, split_seeds  # noqa: E402

SAMPLE_SEEDS = (2, 5, 11)


def _rate(fn, items: list, repeats: int) -> float:
    """Best-of-``repeats`` items per second of ``fn`` over ``items``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def benchmark(images: int, height: int, width: int, repeats: int) -> None:
    seeds = list(split_seeds(SPLIT_PUBLIC, images))
    refs = [render_scene(s, height, width)[1] for s in seeds[: min(50, images)]]
    buffer = io.BytesIO()
    Image.fromarray(render_scene(seeds[0], height, width)[0]).save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()

    def decode(_: int) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))

    synthetic = _rate(lambda s: render_scene(s, height, width), seeds, repeats)
    baseline = _rate(decode, list(range(max(images, 200))), repeats)
    per_level: dict[str, list[int]] = {}
    for r in refs:
        for name, n in level_counts(r).items():
            per_level.setdefault(name, []).append(n)
    print(f"synthetic scenes {height}x{width}, {images} seeds, best of {repeats}, 1 thread")
    cpu = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"  cpus allowed: {cpu}, load average: {os.getloadavg()[0]:.2f}")
    print(f"  render_scene (image + RLE reference masks): {synthetic:8.1f} images/s")
    print(f"  baseline PIL JPEG decode (q90, same size):  {baseline:8.1f} images/s")
    print(f"  ratio synthetic / JPEG decode: {synthetic / baseline:.3f}")
    print(f"  target >= 50 images/s: {'met' if synthetic >= 50 else 'NOT met'}")
    means = {k: statistics.mean(v) for k, v in sorted(per_level.items())}
    summary = ", ".join(f"{k} {v:.1f}" for k, v in means.items())
    print(f"  mean reference masks per image: {summary}")


def write_samples(directory: Path, height: int, width: int) -> None:
    """``synthetic_<seed>.png``: image | whole | part | sub-part masks (palette PNG)."""
    directory.mkdir(parents=True, exist_ok=True)
    for seed in SAMPLE_SEEDS:
        image, refs = render_scene(seed, height, width)
        row = Image.fromarray(level_panels(image, refs))
        path = directory / f"synthetic_{seed}.png"
        row.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        print(f"wrote {path} ({path.stat().st_size // 1024} KB, {level_counts(refs)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=Path, help="write the docs pictures into this folder")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):  # one core, as the target says
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if args.samples:
        write_samples(args.samples, args.height, args.width)
        return
    benchmark(args.images, args.height, args.width, args.repeats)


if __name__ == "__main__":
    main()
