"""How well a checkpoint's predicted IoU tracks the true IoU: what stage 2's pre-fill and
stage 3's filters rely on.

    .venv/bin/python benchmarks/iou_calibration.py [CHECKPOINT] [--preset mobile]
        [--style studio] [--images 6] [--grid 16]

On the first ``--images`` held-out scenes it decodes (a) one first click per reference object
and (b) a ``--grid``² point grid over the image (the stage-3 prompts, no crops), 3 outputs
each, and prints the correlation of predicted with true IoU (for the grid: the best IoU with
any reference), and, per predicted-IoU threshold, how many grid masks pass and their mean
true IoU — against the masks whose true IoU is above 0.88 and what the model predicted for them —
and, for the top 50/100/200/400 grid masks by predicted IoU (what a threshold keeps), the share
with true IoU > 0.75 and > 0.9 and how many distinct references they match at > 0.75.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

THRESHOLDS = (0.7, 0.8, 0.88)
TOP_K = (50, 100, 200, 400)


def best_reference_iou(masks: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``K×H×W`` masks, its highest IoU with any of ``N×H×W`` references and
    that reference's index."""
    flat = masks.reshape(len(masks), -1).astype(np.float32)
    ref = refs.reshape(len(refs), -1).astype(np.float32)
    inter = flat @ ref.T
    union = flat.sum(1)[:, None] + ref.sum(1)[None] - inter
    iou = inter / np.maximum(union, 1)
    return iou.max(1), iou.argmax(1)


def top_k_report(predicted: np.ndarray, true: np.ndarray, reference: np.ndarray) -> dict:
    """For the ``TOP_K`` masks ranked highest by predicted IoU: the lowest predicted IoU among
    them, their shares with true IoU > 0.75 / > 0.9, and the distinct references (ids unique
    across images) they match at > 0.75."""
    order = np.argsort(-predicted, kind="stable")
    report = {}
    for k in TOP_K:
        top = order[:k]
        report[f"top{k}_threshold"] = float(predicted[top[-1]])
        report[f"top{k}_above_0.75"] = float(np.mean(true[top] > 0.75))
        report[f"top{k}_above_0.9"] = float(np.mean(true[top] > 0.9))
        report[f"top{k}_references"] = len(set(reference[top][true[top] > 0.75].tolist()))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", default="bundled:mobile_public")
    parser.add_argument("--preset", default="mobile")
    parser.add_argument("--style", default="studio")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from engine.clicks import first_click
    from engine.data import iter_items
    from engine.data.synthetic import SyntheticSource
    from engine.model import SamPredictor, build_sam
    from engine.train.evaluate import batch_iou, reference_masks
    from engine.weights import resolve_checkpoint

    torch.set_num_threads(args.threads)
    predictor = SamPredictor(build_sam(args.preset, resolve_checkpoint(args.checkpoint)).eval())
    source = SyntheticSource.from_split("heldout", args.images, style=args.style)
    click_pred, click_true, grid_pred, grid_true, grid_ref = [], [], [], [], []
    for index, item in enumerate(iter_items(source, limit=args.images)):
        refs = reference_masks(item)
        if not len(refs):
            continue
        predictor.set_image(item.image)
        clicks = [first_click(ref) for ref in refs]
        points = np.asarray([[(c.x, c.y)] for c in clicks], dtype=np.float32)
        masks, ious = _decode_points(predictor, points)
        for k in range(masks.shape[1]):
            click_pred.append(ious[:, k])
            click_true.append(batch_iou(masks[:, k], refs))
        h, w = refs.shape[1:]
        steps = (np.arange(args.grid) + 0.5) / args.grid
        grid = np.stack(np.meshgrid(steps * w, steps * h), -1).reshape(-1, 1, 2)
        masks, ious = _decode_points(predictor, grid.astype(np.float32))
        grid_pred.append(ious.reshape(-1))
        best, which = best_reference_iou(masks.reshape(-1, h, w), refs)
        grid_true.append(best)
        grid_ref.append(which + index * 1_000_000)
    cp, ct = np.concatenate(click_pred), np.concatenate(click_true)
    gp, gt = np.concatenate(grid_pred), np.concatenate(grid_true)
    good = gt > 0.88
    report = {
        "click_masks": len(cp),
        "click_corr": float(np.corrcoef(cp, ct)[0, 1]),
        "click_mean_predicted": float(cp.mean()),
        "click_mean_true": float(ct.mean()),
        "grid_masks": len(gp),
        "grid_corr": float(np.corrcoef(gp, gt)[0, 1]),
        "grid_true_above_0.88": int(good.sum()),
        "grid_true_above_0.88_mean_predicted": float(gp[good].mean()) if good.any() else None,
    }
    for t in THRESHOLDS:
        passed = gp >= t
        report[f"grid_predicted_ge_{t}"] = int(passed.sum())
        report[f"grid_predicted_ge_{t}_mean_true"] = (
            float(gt[passed].mean()) if passed.any() else None
        )
    report.update(top_k_report(gp, gt, np.concatenate(grid_ref)))
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}))


def _decode_points(predictor, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``N×1×2`` positive points in image pixels → ``N×3×H×W`` masks and ``N×3`` IoUs."""
    import torch

    size = predictor.original_size
    coords = predictor.transform.apply_coords_torch(torch.as_tensor(points), size)
    labels = torch.ones(points.shape[:2], dtype=torch.int)
    with torch.no_grad():
        masks, ious, _ = predictor.predict_torch(coords, labels, multimask_output=True)
    return masks.numpy().astype(bool), ious.float().numpy()


if __name__ == "__main__":
    main()
