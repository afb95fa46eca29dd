"""Synthetic scene generator speed on one core, against JPEG decoding in the same run.

    .venv/bin/python benchmarks/synthetic.py [--images 200] [--height 384] [--width 512]
    .venv/bin/python benchmarks/synthetic.py --samples docs/images --height 288 --width 384

Target: >= 50 images/s on one core at 384×512 (reference masks included). The baseline is
PIL decoding a JPEG (quality 90) of a scene of the same size into an RGB array — what a
file-based source costs per image before any mask work — so the ratio says how the
generator compares with reading real images on the same machine. The two are measured in
alternation, best of ``--repeats``; rates are given from wall time and from the process's CPU
time (the fairer figure on a shared machine, where other processes take the core away).
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

SAMPLE_SEEDS = (4, 13, 36)  # scenes with many masks at every level
GRID_SEEDS = (20, 21, 22, 23, 24, 25)


def _seconds(fn, items: list) -> tuple[float, float]:
    """(wall, CPU) seconds to run ``fn`` over ``items``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for item in items:
        fn(item)
    return time.perf_counter() - wall, time.process_time() - cpu


def benchmark(images: int, height: int, width: int, repeats: int) -> None:
    seeds = list(split_seeds(SPLIT_PUBLIC, images))
    refs = [render_scene(s, height, width)[1] for s in seeds[: min(50, images)]]
    buffer = io.BytesIO()
    Image.fromarray(render_scene(seeds[0], height, width)[0]).save(buffer, "JPEG", quality=90)
    jpeg = buffer.getvalue()

    def decode(_: int) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))

    # Alternate the two measurements so that both see the same machine load; keep the best.
    best = {"synthetic": (float("inf"), float("inf")), "jpeg": (float("inf"), float("inf"))}
    jobs = {
        "synthetic": (lambda s: render_scene(s, height, width), seeds),
        "jpeg": (decode, list(range(max(images, 200)))),
    }
    for _ in range(repeats):
        for name, (fn, items) in jobs.items():
            wall, cpu = _seconds(fn, items)
            best[name] = (
                min(best[name][0], wall / len(items)),
                min(best[name][1], cpu / len(items)),
            )
    (syn_wall, syn_cpu), (jpg_wall, jpg_cpu) = best["synthetic"], best["jpeg"]
    per_level: dict[str, list[int]] = {}
    for r in refs:
        for name, n in level_counts(r).items():
            per_level.setdefault(name, []).append(n)
    print(f"synthetic scenes {height}x{width}, {images} seeds, best of {repeats}, 1 thread")
    cpu = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"  cpus allowed: {cpu}, load average: {os.getloadavg()[0]:.2f}")
    print("                                               wall img/s   CPU img/s  CPU ms/img")
    print(
        f"  render_scene (image + RLE reference masks): {1 / syn_wall:10.1f}"
        f"  {1 / syn_cpu:10.1f}  {1000 * syn_cpu:10.2f}"
    )
    print(
        f"  baseline PIL JPEG decode (q90, same size):  {1 / jpg_wall:10.1f}"
        f"  {1 / jpg_cpu:10.1f}  {1000 * jpg_cpu:10.2f}"
    )
    print(f"  ratio synthetic / JPEG decode (CPU time): {jpg_cpu / syn_cpu:.3f}")
    verdict = "met" if 1 / syn_cpu >= 50 else "NOT met"
    print(f"  target >= 50 images/s per core (CPU time): {verdict}")
    means = {k: statistics.mean(v) for k, v in sorted(per_level.items())}
    summary = ", ".join(f"{k} {v:.1f}" for k, v in means.items())
    print(f"  mean reference masks per image: {summary}")


def write_samples(directory: Path, height: int, width: int) -> None:
    """``synthetic_levels_<seed>.png`` (image | whole | part | sub-part masks) and
    ``synthetic_grid.png`` (six scenes), as palette PNGs small enough for the docs."""
    directory.mkdir(parents=True, exist_ok=True)
    for seed in SAMPLE_SEEDS:
        image, refs = render_scene(seed, height, width)
        _save(
            Image.fromarray(level_panels(image, refs)), directory / f"synthetic_levels_{seed}.png"
        )
        print(f"  seed {seed}: {level_counts(refs)}")
    tiles = [render_scene(seed, height // 2, width // 2)[0] for seed in GRID_SEEDS]
    rows = [np.concatenate(tiles[i : i + 3], axis=1) for i in (0, 3)]
    _save(Image.fromarray(np.concatenate(rows, axis=0)), directory / "synthetic_grid.png")


def _save(image: Image.Image, path: Path) -> None:
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--height", type=int, default=384)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
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
