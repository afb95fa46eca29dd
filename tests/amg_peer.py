"""Helpers for the automatic-mask-generator tests and benchmarks.

- ``planted_pair(seed)``: our ``tiny`` SAM with random weights made to give content-following
  masks (see ``plant``) and its official twin holding the same weights.
- ``shapes_image()``: a deterministic picture of coloured shapes on a plain background.
- ``install_cv2_stand_in()``: the official generator imports OpenCV for
  ``min_mask_region_area > 0`` and calls ``cv2.connectedComponentsWithStats(mask, 8)``; OpenCV
  is not a dependency here, so tests use this small stand-in built on ``scipy.ndimage``.
- ``agreement(ours, official)``: how many masks of each side have a partner with IoU ≥ 0.99,
  and the largest score differences between partners.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import numpy as np
import torch
from official_peer import official_from_ours
from PIL import Image, ImageDraw
from scipy import ndimage

from engine.masks import rle_iou
from engine.model import build_sam


def plant(model: torch.nn.Module, logit_scale: float = 1000.0) -> torch.nn.Module:
    """Make a random-weight SAM give content-following blobs instead of speckle.

    Random masks are periodic textures spanning the image: every pixel of a 4×4 upscaling
    block has its own transposed-conv weights, and the encoder's random blocks smear the
    picture. Box NMS then keeps one mask and crops keep none (every mask touches an inner
    crop edge). So: the encoder's blocks become identities (their output projections are
    zeroed; the embedding then describes each 16×16 patch), each upscaling kernel gets the
    same weights at every position, and the hypernetwork outputs are scaled up so that
    stability scores spread out. Both generators get the same weights.
    """
    with torch.no_grad():
        for block in model.image_encoder.blocks:
            for linear in (block.attn.proj, block.mlp.lin2):
                linear.weight.zero_()
                linear.bias.zero_()
        for layer in model.mask_decoder.output_upscaling:
            if isinstance(layer, torch.nn.ConvTranspose2d):
                layer.weight.copy_(layer.weight[:, :, :1, :1].expand_as(layer.weight).clone())
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(logit_scale)
    return model


def planted_pair(seed: int = 1, preset: str = "tiny") -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(ours, official)`` with identical planted random weights."""
    torch.manual_seed(seed)
    ours = plant(build_sam(preset))
    return ours, official_from_ours(ours)


def shapes_image(
    height: int = 192, width: int = 256, seed: int = 0, n_shapes: int = 10
) -> np.ndarray:
    """``H×W×3`` uint8: filled rectangles and ellipses in random colours on grey."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    for k in range(n_shapes):
        size = int(rng.integers(width // 17, width // 5))
        x = int(rng.integers(0, width - size))
        y = int(rng.integers(0, height - size))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if k % 2 else draw.rectangle)((x, y, x + size, y + size), fill=colour)
    return np.asarray(image).copy()


def _connected_components_with_stats(image: np.ndarray, connectivity: int = 8):
    structure = np.ones((3, 3), bool) if connectivity == 8 else None
    labels, n = ndimage.label(np.asarray(image) != 0, structure=structure)
    stats = np.zeros((n + 1, 5), dtype=np.int32)
    stats[:, 4] = np.bincount(labels.ravel(), minlength=n + 1)  # cv2.CC_STAT_AREA
    return n + 1, labels.astype(np.int32), stats, np.zeros((n + 1, 2))


def install_cv2_stand_in() -> None:
    """Put a ``cv2`` module with ``connectedComponentsWithStats`` in ``sys.modules`` unless
    OpenCV itself imports."""
    try:
        import cv2  # noqa: F401

        return
    except ImportError:
        pass
    cv2 = types.ModuleType("cv2")
    cv2.connectedComponentsWithStats = _connected_components_with_stats
    sys.modules["cv2"] = cv2


@dataclass
class Agreement:
    n_ours: int
    n_official: int
    official_matched: float  # share of official masks with a partner of ours at IoU >= 0.99
    ours_matched: float
    max_iou_pred_diff: float  # over matched pairs (best partner of each official mask)
    max_stability_diff: float
    same_boxes: float  # share of matched pairs with identical bbox, area, crop box, point


def agreement(ours: list[dict], official: list[dict], iou_min: float = 0.99) -> Agreement:
    if not ours or not official:
        return Agreement(len(ours), len(official), float(not official), float(not ours), 0, 0, 1)
    iou = rle_iou([a["segmentation"] for a in ours], [b["segmentation"] for b in official])
    best = iou.argmax(axis=0)
    matched = np.flatnonzero(iou.max(axis=0) >= iou_min)
    pairs = [(ours[best[j]], official[j]) for j in matched]
    keys = ("bbox", "area", "crop_box")
    return Agreement(
        n_ours=len(ours),
        n_official=len(official),
        official_matched=len(matched) / len(official),
        ours_matched=float((iou.max(axis=1) >= iou_min).mean()),
        max_iou_pred_diff=max(
            (abs(a["predicted_iou"] - b["predicted_iou"]) for a, b in pairs), default=0.0
        ),
        max_stability_diff=max(
            (abs(a["stability_score"] - b["stability_score"]) for a, b in pairs), default=0.0
        ),
        same_boxes=sum(
            all(a[k] == b[k] for k in keys) and np.allclose(a["point_coords"], b["point_coords"])
            for a, b in pairs
        )
        / max(len(pairs), 1),
    )
