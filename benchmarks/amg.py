"""Automatic mask generation: ours (engine.amg) against the official SamAutomaticMaskGenerator.

Same weights (our SAM and its official twin, random weights planted as in the tests so that
masks survive lowered thresholds), same parameters, same images, same process; each repeat
runs ours then the official generator, and the best repeat of each is kept. The image
encoder's time is measured by wrapping its forward, so "rest" is everything after the image
embedding (decoding, filtering, upsampling, NMS, RLE). Ratios are official / ours (> 1 means
ours is faster). Times are process CPU seconds by default (``--clock cpu``; run with
``--threads 1`` so that CPU time is the work done): on a shared machine wall time mostly
measures the neighbours. ``--clock wall`` gives wall time. Agreement: share of official masks
with a partner of ours at IoU ≥ 0.99, and the reverse.

    .venv/bin/python benchmarks/amg.py                     # tiny and vit_b geometry
    .venv/bin/python benchmarks/amg.py --only tiny --repeats 3

vit_b geometry keeps the official numbers except the encoder depth (2 of 12 blocks, global
attention in the second): one full vit_b encoder pass takes ~13 s on this CPU and the
encoder is the same work for both generators, timed separately.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from amg_peer import agreement, install_cv2_stand_in, plant  # noqa: E402
from official_peer import official_from_ours  # noqa: E402
from segment_anything import SamAutomaticMaskGenerator  # noqa: E402

from engine.amg import AutomaticMaskGenerator  # noqa: E402
from engine.model import PRESETS, build_sam  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "data" / "photos"
LOW = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.8}


CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}
now = time.process_time


class EncoderClock:
    """Accumulates the time of ``model.image_encoder`` calls."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds = 0.0
        encoder = model.image_encoder
        inner = encoder.forward

        def timed(x: torch.Tensor) -> torch.Tensor:
            start = now()
            out = inner(x)
            self.seconds += now() - start
            return out

        encoder.forward = timed


def models(geometry: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(1)
    if geometry == "tiny":
        ours = build_sam("tiny")
    else:
        preset = dict(PRESETS["vit_b"], encoder_depth=2, encoder_global_attn_indexes=(1,))
        ours = build_sam(preset)
    plant(ours)
    return ours, official_from_ours(ours)


def photo(name: str, longest: int | None) -> np.ndarray:
    image = Image.open(PHOTOS / name).convert("RGB")
    if longest is not None:
        scale = longest / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
    return np.asarray(image).copy()


def run(generate, image: np.ndarray, clock: EncoderClock) -> tuple[float, float, list[dict]]:
    clock.seconds = 0.0
    start = now()
    with torch.no_grad():
        anns = generate(image)
    return now() - start, clock.seconds, anns


def bench(geometry: str, cases: list[tuple[str, np.ndarray, dict]], repeats: int) -> None:
    ours_model, official_model = models(geometry)
    ours_clock, official_clock = EncoderClock(ours_model), EncoderClock(official_model)
    for label, image, params in cases:
        ours_gen = AutomaticMaskGenerator(ours_model, **params)
        official_gen = SamAutomaticMaskGenerator(official_model, output_mode="coco_rle", **params)
        best_ours, best_official = None, None
        for _ in range(repeats):
            o = run(ours_gen.generate, image, ours_clock)
            f = run(official_gen.generate, image, official_clock)
            best_ours = o if best_ours is None or o[0] < best_ours[0] else best_ours
            best_official = f if best_official is None or f[0] < best_official[0] else best_official
        (o_total, o_enc, o_anns), (f_total, f_enc, f_anns) = best_ours, best_official
        o_rest, f_rest = o_total - o_enc, f_total - f_enc
        agree = agreement(o_anns, f_anns)
        print(
            f"| {geometry} | {label} | {image.shape[1]}×{image.shape[0]} | "
            f"{params.get('points_per_side')}² | {params.get('crop_n_layers', 0)} | "
            f"{f_total:.2f} / {o_total:.2f} | {f_total / o_total:.2f}× | "
            f"{f_enc:.2f} / {o_enc:.2f} | {f_enc / o_enc:.2f}× | "
            f"{f_rest:.2f} / {o_rest:.2f} | {f_rest / o_rest:.2f}× | "
            f"{len(f_anns)} / {len(o_anns)} | "
            f"{agree.official_matched:.3f} / {agree.ours_matched:.3f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["tiny", "vit_b"], default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (both sides)")
    parser.add_argument(
        "--photos",
        nargs="+",
        default=["dog.jpg", "groceries.jpg", "truck.jpg"],
        help="photos for the tiny geometry (resized to 256 px)",
    )
    parser.add_argument("--no-large", action="store_true", help="skip the 2250×1500 photo")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="cpu")
    args = parser.parse_args()
    global now
    now = CLOCK[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    install_cv2_stand_in()
    torch.set_grad_enabled(False)
    print(
        f"torch threads {torch.get_num_threads()}; {args.clock} seconds, official / ours; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| geometry | image | size | grid | crop layers | total s | total × | encoder s "
        "| encoder × | rest s | rest × | masks | matched |"
    )
    print("|" + "---|" * 13)
    big = photo("cars.jpg", None)  # 2250×1500
    if args.only in (None, "tiny"):
        cases = []
        for name in args.photos:
            for crops in (0, 1):
                params = {**LOW, "points_per_side": 32, "crop_n_layers": crops}
                cases.append((name, photo(name, 256), params))
        for crops in () if args.no_large else (0, 1):
            params = {**LOW, "points_per_side": 16, "crop_n_layers": crops}
            cases.append(("cars.jpg", big, params))
        bench("tiny", cases, args.repeats)
    if args.only in (None, "vit_b"):
        dog = photo("dog.jpg", 1024)
        cases = [
            ("dog.jpg", dog, {**LOW, "points_per_side": 16}),
            ("dog.jpg", dog, {**LOW, "points_per_side": 16, "crop_n_layers": 1}),
        ]
        if not args.no_large:
            cases.append(("cars.jpg", big, {**LOW, "points_per_side": 16}))
        bench("vit_b", cases, 1)


if __name__ == "__main__":
    main()
