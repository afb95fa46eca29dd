"""Demonstrated learning: the ``tiny`` preset trained from scratch on synthetic scenes.

Target (issue 5): on held-out synthetic images, 1-click mIoU ≥ 0.75 and NoC@90 ≤ 6 within
10 minutes of training on 2 CPU cores. Training runs on Ray Train (``--workers`` data-parallel
CPU workers, one torch thread each); the clock counts training steps only (not Ray start-up,
scene rendering or evaluation, which are reported beside it). Weights are snapshot every
``--snapshot-every-s`` seconds of training and every snapshot is evaluated afterwards with
the standard simulated user (``engine.train.evaluate``): the curve goes to ``--png``.

``--throughput`` instead measures samples/s (images per second of training steps) of short
fits with 1 and with 2 workers and prints the ratio (the 1-worker fit is the baseline).

    .venv/bin/python benchmarks/train_learning.py [--minutes 10] [--workers 2]
    .venv/bin/python benchmarks/train_learning.py --throughput [--steps 20]

Other processes share the machine: the 1-minute load average (``uptime``) is printed beside
every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from engine.data import iter_items
from engine.data.synthetic import SyntheticSource
from engine.model import PRESETS, SamPredictor, build_sam
from engine.train.data import TrainDataset
from engine.train.evaluate import evaluate_interactive
from engine.train.loop import TrainOptions
from engine.train.steplog import JsonlStepLog, read_step_log
from workers.cluster import local_cluster
from workers.trainer import fit_distributed

REPO = Path(__file__).resolve().parents[1]


def load_average() -> float:
    return os.getloadavg()[0]


class SnapshotCopier:
    """``on_checkpoint`` callback: copy each checkpoint's weights to ``folder/step-N.pt``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def __call__(self, step: int, path: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, self.folder / f"step-{step:06d}.pt")


def options_from(args: argparse.Namespace, steps: int) -> TrainOptions:
    return TrainOptions(
        steps=steps,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        decay_steps=tuple(args.decay_steps),
        weight_decay=args.weight_decay,
        layer_decay=args.layer_decay,
        grad_clip=1.0,
        images_per_step=args.images_per_step,
        masks_per_image=args.masks_per_image,
        num_iterations=args.num_iterations,
        checkpoint_every_s=args.snapshot_every_s,
        seed=args.seed,
    )


def fit(args, workdir: Path, options: TrainOptions, workers: int, time_limit_s: float | None):
    source = SyntheticSource.from_split("train", args.train_images)
    img_size = PRESETS[args.preset]["image_size"]
    log = workdir / f"log-{workers}.jsonl"
    started = time.perf_counter()
    with local_cluster(num_cpus=max(workers, 1)):
        result = fit_distributed(
            partial(build_sam, args.preset, None, drop_path_rate=args.drop_path),
            partial(TrainDataset.from_source, source, img_size, None, min_area=args.min_mask_area),
            options,
            workdir / f"train-{workers}.pt",
            num_workers=workers,
            cpus_per_worker=1,
            on_step=JsonlStepLog(log),
            on_checkpoint=SnapshotCopier(workdir / f"snapshots-{workers}"),
            storage_path=workdir / "ray",
            time_limit_s=time_limit_s,
        )
    return result, time.perf_counter() - started, read_step_log(log)


def evaluate_snapshots(args, workdir: Path, history: list[dict]) -> list[dict]:
    held_out = list(iter_items(SyntheticSource.from_split("heldout", args.eval_images)))
    clock = {}
    total = 0.0
    for record in history:
        total += record["seconds"]
        clock[record["step"]] = total
    points = []
    for path in sorted((workdir / f"snapshots-{args.workers}").glob("step-*.pt")):
        step = int(path.stem.split("-")[1])
        model = build_sam(args.preset, path)
        tic = time.perf_counter()
        metrics = evaluate_interactive(
            SamPredictor(model), held_out, max_objects_per_image=args.max_objects_per_image
        ).as_dict()
        point = {"step": step, "train_seconds": clock.get(step, 0.0), **metrics}
        point["eval_seconds"] = time.perf_counter() - tic
        point["load"] = load_average()
        points.append(point)
        print(
            f"  step {step:5d}  {point['train_seconds'] / 60:5.1f} min  "
            f"1-click mIoU {metrics['miou_1click']:.3f}  5-click {metrics['miou_5click']:.3f}  "
            f"NoC@85 {metrics['noc_85']:.2f}  NoC@90 {metrics['noc_90']:.2f}  "
            f"box {metrics['box_miou']:.3f}  1-click large "
            f"{metrics.get('miou_1click_large', float('nan')):.3f}  (load {point['load']:.1f})",
            flush=True,
        )
    return points


def resolution_ceiling(preset: str, items: list, grid: int | None = None) -> dict[str, float]:
    """mIoU an ideal decoder could reach with this preset's low-res grid.

    Each reference mask is resized into the input frame, area-averaged onto the low-res grid
    (``4 × image_size / output stride`` cells a side, or ``grid``) and turned into logits
    (coverage 0.5 → logit 0), then upsampled and thresholded as ``Sam.postprocess_masks`` does.
    Not a strict bound (a decoder may sharpen edges) but close: small masks lose most, their
    shape falls between cells.
    """
    import numpy as np
    import torch.nn.functional as F

    from engine.masks import rle_to_mask
    from engine.model import ResizeLongestSide

    size = PRESETS[preset]["image_size"]
    stride = PRESETS[preset].get("encoder_output_stride", 16)  # ViT presets: patch 16
    grid = grid or 4 * size // stride  # the embedding grid, 4× upscaled
    ious, areas = [], []
    for item in items:
        gts = np.stack([rle_to_mask(r.rle) for r in item.references])
        h, w = ResizeLongestSide.get_preprocess_shape(item.height, item.width, size)
        masks = torch.from_numpy(gts).float()[:, None]
        frame = F.interpolate(masks, (h, w), mode="bilinear", antialias=True)
        frame = F.pad(frame, (0, size - w, 0, size - h))
        coverage = F.adaptive_avg_pool2d(frame, (grid, grid)).clamp(1e-4, 1 - 1e-4)
        logits = F.interpolate(torch.logit(coverage), (size, size), mode="bilinear")
        logits = F.interpolate(logits[..., :h, :w], (item.height, item.width), mode="bilinear")
        pred = (logits[:, 0] > 0).numpy()
        inter = (pred & gts).reshape(len(gts), -1).sum(1)
        union = (pred | gts).reshape(len(gts), -1).sum(1)
        ious.append(inter / np.maximum(union, 1))
        areas.append(gts.reshape(len(gts), -1).sum(1))
    iou, area = np.concatenate(ious), np.concatenate(areas)
    out = {"low_res_grid": float(grid), "miou": float(iou.mean())}
    for name, lo, hi in (("small", 0, 32**2), ("medium", 32**2, 96**2), ("large", 96**2, 1e12)):
        chosen = (area >= lo) & (area < hi)
        if chosen.any():
            out[f"miou_{name}"] = float(iou[chosen].mean())
            out[f"objects_{name}"] = float(chosen.sum())
    return out


def plot_curve(points: list[dict], history: list[dict], png: Path, ceiling: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    minutes = [p["train_seconds"] / 60 for p in points]
    left.plot(minutes, [p["miou_1click"] for p in points], "o-", label="mIoU, 1 click")
    left.plot(minutes, [p["miou_5click"] for p in points], "s-", label="mIoU, 5 clicks")
    left.plot(minutes, [p["box_miou"] for p in points], "^-", label="mIoU, box")
    left.plot(
        minutes,
        [p.get("miou_1click_large", float("nan")) for p in points],
        "v--",
        label="mIoU, 1 click, large objects",
    )
    left.axhline(
        ceiling["miou"],
        color="black",
        linestyle="-.",
        linewidth=1,
        label=f"resolution ceiling {ceiling['miou']:.2f}",
    )
    left.axhline(0.75, color="grey", linestyle="--", linewidth=1, label="target 1-click 0.75")
    left.set_xlabel("training time (min)")
    left.set_ylabel("mIoU (held-out synthetic)")
    left.set_ylim(0, 1)
    left.legend(loc="upper left", fontsize=8)
    twin = left.twinx()
    twin.plot(minutes, [p["noc_90"] for p in points], "d:", color="tab:red", label="NoC@90")
    twin.axhline(6, color="tab:red", linestyle=":", linewidth=1)
    twin.set_ylabel("NoC@90 (clicks, cap 20)", color="tab:red")
    twin.set_ylim(0, 20)
    total = 0.0
    xs, losses = [], []
    for record in history:
        total += record["seconds"]
        xs.append(total / 60)
        losses.append(record["loss"])
    right.plot(xs, losses, linewidth=0.6, alpha=0.5, label="loss per step")
    window = max(1, len(losses) // 40)
    smooth = [
        sum(losses[max(0, i - window) : i + 1]) / len(losses[max(0, i - window) : i + 1])
        for i in range(len(losses))
    ]
    right.plot(xs, smooth, linewidth=1.5, label=f"running mean ({window} steps)")
    right.set_xlabel("training time (min)")
    right.set_ylabel("training loss (20·focal + dice + IoU MSE)")
    right.legend()
    fig.suptitle("tiny preset from scratch on synthetic scenes (2 CPU workers)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def run_learning(args, workdir: Path) -> dict:
    print(f"load before: {load_average():.2f}", flush=True)
    held_out = list(iter_items(SyntheticSource.from_split("heldout", args.eval_images)))
    ceiling = resolution_ceiling(args.preset, held_out)
    print(f"resolution ceiling of preset {args.preset!r} on the held-out masks: {ceiling}")
    options = options_from(args, steps=10**6)
    result, wall, history = fit(args, workdir, options, args.workers, args.minutes * 60)
    train_s = sum(r["seconds"] for r in history)
    images = sum(r["images"] for r in history)
    print(
        f"trained {result.step} steps, {images} images in {train_s / 60:.1f} min of steps "
        f"({wall / 60:.1f} min wall with Ray start-up and scene rendering); "
        f"{images / train_s:.2f} samples/s; load {load_average():.2f}",
        flush=True,
    )
    points = evaluate_snapshots(args, workdir, history)
    final = points[-1]
    plot_curve(points, history, Path(args.png), ceiling)
    verdict = {
        "miou_1click": final["miou_1click"],
        "noc_90": final["noc_90"],
        "miou_1click_target_met": final["miou_1click"] >= 0.75,
        "noc_90_target_met": final["noc_90"] <= 6,
    }
    print(json.dumps(verdict), flush=True)
    return {
        "steps": result.step,
        "train_seconds": train_s,
        "wall_seconds": wall,
        "images": images,
        "curve": points,
        "verdict": verdict,
    }


def run_throughput(args, workdir: Path) -> dict:
    out = {}
    for workers in (1, 2):
        load = load_average()
        options = options_from(args, steps=args.steps)
        result, wall, history = fit(args, workdir, options, workers, None)
        timed = history[2:]  # the first steps include lazy initialisation
        seconds = sum(r["seconds"] for r in timed)
        rate = sum(r["images"] for r in timed) / seconds
        out[workers] = {"samples_per_s": rate, "wall_s": wall, "load": load}
        print(
            f"{workers} worker(s): {rate:.3f} samples/s ({len(timed)} steps timed, "
            f"{wall:.0f} s wall incl. Ray start-up; load {load:.2f})",
            flush=True,
        )
    print(f"ratio 2 workers / 1 worker: {out[2]['samples_per_s'] / out[1]['samples_per_s']:.2f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--train-images", type=int, default=200)
    parser.add_argument("--eval-images", type=int, default=10)
    parser.add_argument("--max-objects-per-image", type=int, default=None)
    parser.add_argument("--masks-per-image", type=int, default=16)
    parser.add_argument(
        "--min-mask-area", type=int, default=256, help="train on masks of ≥ this many input px"
    )
    parser.add_argument("--images-per-step", type=int, default=1)
    parser.add_argument("--num-iterations", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--decay-steps", type=int, nargs="*", default=[])
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--layer-decay", type=float, default=1.0)
    parser.add_argument("--drop-path", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snapshot-every-s", type=float, default=120.0)
    parser.add_argument("--ceiling-only", action="store_true", help="print the ceiling, exit")
    parser.add_argument("--grid", type=int, default=None, help="low-res grid for the ceiling")
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--steps", type=int, default=20, help="steps per fit (--throughput)")
    parser.add_argument("--png", default=str(REPO / "docs" / "images" / "training_curve.png"))
    parser.add_argument("--json", default="", help="write the results here too")
    parser.add_argument("--workdir", default="", help="keep checkpoints and logs here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sa-engine-train-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.ceiling_only:
        held_out = list(iter_items(SyntheticSource.from_split("heldout", args.eval_images)))
        print(json.dumps(resolution_ceiling(args.preset, held_out, args.grid), indent=2))
        return
    out = run_throughput(args, workdir) if args.throughput else run_learning(args, workdir)
    out["args"] = vars(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
