"""Plain shapes: a scene generator written only for this benchmark, and the 1-click test on it.

The project's own generator (``engine.data.synthetic``) draws creatures, boxes and vehicles
with parts; a model that learnt only those could be fitting their look. These scenes share
none of its code: ellipses, rectangles and triangles (random size, rotation and colour, some
striped) on a textured background (value noise of random scale plus a colour gradient), with
occlusion; each shape's visible pixels are its reference mask (no parts).

    .venv/bin/python benchmarks/plain_shapes.py CHECKPOINT [--preset mobile] [--images 20]

prints the interactive metrics (1-click mIoU, NoC@85/90, box mIoU) of the checkpoint on
``--images`` scenes (seeded, so every run sees the same ones). Target (issue 15): 1-click
mIoU ≥ 0.65 for the checkpoint of a bare ``sa-engine train``.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from engine.masks import masks_to_rles
from engine.records import LEVEL_WHOLE, ImageItem, ReferenceMask

MIN_SHAPES, MAX_SHAPES = 3, 12
MIN_VISIBLE = 150  # px: shapes hidden below this are not references


def _value_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth noise in [-1, 1]: a coarse random grid, bilinearly interpolated."""
    gh, gw = int(height / cell) + 2, int(width / cell) + 2
    grid = rng.uniform(-1, 1, (gh, gw))
    ys = np.arange(height) / cell
    xs = np.arange(width) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = rng.uniform(40, 215, 3)
    tilt = rng.uniform(-60, 60, 3)
    ramp = np.linspace(-0.5, 0.5, width)[None, :, None] * tilt
    texture = _value_noise(rng, height, width, rng.uniform(6, 30))[..., None] * rng.uniform(10, 40)
    return base + ramp + texture


def _shape_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One ellipse, rectangle or triangle covering ~0.5 %–15 % of the image."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    area = math.exp(rng.uniform(math.log(0.005), math.log(0.15))) * height * width
    cy, cx = rng.uniform(0.1, 0.9) * height, rng.uniform(0.1, 0.9) * width
    angle = rng.uniform(0, math.pi)
    aspect = math.exp(rng.uniform(-0.8, 0.8))
    u = (xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)
    v = -(xs - cx) * math.sin(angle) + (ys - cy) * math.cos(angle)
    kind = rng.choice(["ellipse", "rectangle", "triangle"])
    if kind == "ellipse":
        a = math.sqrt(area / math.pi * aspect)
        b = area / (math.pi * a)
        return (u / a) ** 2 + (v / b) ** 2 <= 1
    if kind == "rectangle":
        a = math.sqrt(area * aspect) / 2
        b = area / (4 * a)
        return (np.abs(u) <= a) & (np.abs(v) <= b)
    side = math.sqrt(4 * area / math.sqrt(3))  # equilateral, then stretched by the aspect
    r = side / math.sqrt(3)
    v = v / aspect
    inside = np.ones_like(u, dtype=bool)
    for k in range(3):
        theta = angle + k * 2 * math.pi / 3
        inside &= (u * math.cos(theta - angle) + v * math.sin(theta - angle)) <= r / 2
    return inside


def plain_scene(seed: int, height: int = 384, width: int = 512) -> ImageItem:
    """A scene of plain shapes with one reference mask per visible shape."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    image = _background(rng, height, width)
    owner = np.zeros((height, width), dtype=np.int32)
    count = int(rng.integers(MIN_SHAPES, MAX_SHAPES + 1))
    for index in range(1, count + 1):
        mask = _shape_mask(rng, height, width)
        colour = rng.uniform(0, 255, 3)
        fill = np.broadcast_to(colour, image.shape).copy()
        if rng.random() < 0.3:  # stripes in a second colour
            period = rng.uniform(6, 20)
            stripes = (np.arange(width)[None, :] + np.arange(height)[:, None]) // period % 2 == 1
            fill[stripes] = rng.uniform(0, 255, 3)
        image[mask] = fill[mask]
        owner[mask] = index
    image += rng.normal(0, 4, image.shape)
    pixels = np.clip(image, 0, 255).astype(np.uint8)
    masks = [owner == i for i in range(1, count + 1)]
    masks = [m for m in masks if m.sum() >= MIN_VISIBLE]
    refs = [
        ReferenceMask(rle=rle, level=LEVEL_WHOLE)
        for rle in masks_to_rles(np.stack(masks) if masks else np.zeros((0, height, width), bool))
    ]
    return ImageItem(
        key=f"plain-{seed:06d}",
        image=pixels,
        file_name=f"plain-{seed:06d}.jpg",
        image_id=seed,
        references=refs,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--preset", default="mobile")
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from engine.model import SamPredictor, build_sam
    from engine.train.evaluate import evaluate_interactive

    torch.set_num_threads(args.threads)
    model = build_sam(args.preset, args.checkpoint)
    items = [plain_scene(seed) for seed in range(args.images)]
    metrics = evaluate_interactive(SamPredictor(model), items).as_dict()
    print(json.dumps({k: round(v, 3) for k, v in metrics.items()}))


if __name__ == "__main__":
    main()
