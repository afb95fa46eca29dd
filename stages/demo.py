"""Temporary demo for ``sa-engine run``: the predictor on a generated image, masks drawn.

Builds the ``tiny`` model with RANDOM weights (untrained: the masks show the plumbing, not
segmentation quality), draws a few coloured shapes, prompts the predictor with one click
per shape and writes ``<out-dir>/predictor_demo.png`` (left: image and clicks; right: the
best-scoring mask per click). A later stage replaces this with the full pipeline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from engine.model import SamPredictor, build_sam

COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48)]


def make_scene(height: int = 240, width: int = 320) -> tuple[np.ndarray, np.ndarray]:
    """An RGB ``H×W×3`` uint8 image with three shapes, and one click ``(x, y)`` per shape."""
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack([90 + 60 * xs / width, 110 + 40 * ys / height, 140 + 0 * xs], axis=-1)
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.rectangle([20, 30, 120, 140], fill=(200, 60, 60))
    draw.ellipse([150, 40, 260, 150], fill=(60, 160, 80))
    draw.polygon([(90, 220), (170, 150), (240, 225)], fill=(240, 200, 40))
    clicks = np.array([[70, 85], [205, 95], [170, 200]], dtype=float)
    return np.asarray(image).copy(), clicks


def overlay(image: np.ndarray, masks: list[np.ndarray], clicks: np.ndarray) -> Image.Image:
    """Side-by-side PNG: the image with clicks, and the masks blended in colour."""
    blended = image.astype(np.float32)
    for i, mask in enumerate(masks):
        colour = np.array(COLOURS[i % len(COLOURS)], np.float32)
        blended[mask] = 0.45 * blended[mask] + 0.55 * colour
    left = Image.fromarray(image)
    right = Image.fromarray(blended.astype(np.uint8))
    for panel in (left, right):
        draw = ImageDraw.Draw(panel)
        for i, (x, y) in enumerate(clicks):
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(255, 255, 255), outline=COLOURS[i])
    canvas = Image.new("RGB", (2 * image.shape[1] + 10, image.shape[0]), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (image.shape[1] + 10, 0))
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sa-engine run", description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("demo_out"))
    parser.add_argument("--seed", type=int, default=0)
    args, ignored = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if ignored:
        print(f"note: the temporary demo ignores {ignored}")
    torch.manual_seed(args.seed)
    model = build_sam("tiny")
    print("model: 'tiny' preset with RANDOM weights (untrained) — masks are not meaningful")
    predictor = SamPredictor(model)
    image, clicks = make_scene()
    predictor.set_image(image)
    masks = []
    for x, y in clicks:
        candidates, scores, _ = predictor.predict(np.array([[x, y]]), np.array([1]))
        best = int(np.argmax(scores))
        masks.append(candidates[best])
        area, score = int(candidates[best].sum()), float(scores[best])
        print(f"click ({x:.0f}, {y:.0f}): mask of {area} px, predicted IoU {score:.2f}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / "predictor_demo.png"
    overlay(image, masks, clicks).save(path)
    print(f"wrote {path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
