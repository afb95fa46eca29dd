"""Shared test set-up.

The official ``segment-anything`` package (a test-only peer) imports four torchvision
functions. torchvision's wheels do not import beside the CPU torch build used here
(``RuntimeError: operator torchvision::nms does not exist``), so when it cannot be imported we
install small, independent stand-ins under ``sys.modules["torchvision"]`` — in tests only.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _reference_box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _reference_batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Greedy per-category NMS, torchvision semantics: suppress when IoU > threshold."""
    boxes = boxes.float()
    order = torch.sort(scores, descending=True, stable=True).indices
    area = _reference_box_area(boxes)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        lt = torch.maximum(boxes[i, :2], boxes[:, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[:, 2:])
        wh = (rb - lt).clamp(min=0)
        inter = wh[:, 0] * wh[:, 1]
        iou = inter / (area[i] + area - inter)
        suppressed |= (iou > iou_threshold) & (idxs == idxs[i])
    return torch.tensor(keep, dtype=torch.int64)


def _reference_resize(image: Image.Image, size: list[int] | tuple[int, int]) -> Image.Image:
    h, w = size
    return image.resize((w, h), Image.BILINEAR)


def _reference_to_pil_image(pic: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(pic))


def _install_torchvision_stand_ins() -> None:
    try:
        import torchvision  # noqa: F401

        return
    except Exception:  # RuntimeError at import beside the CPU torch build
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    boxes.batched_nms = _reference_batched_nms
    boxes.box_area = _reference_box_area
    ops.boxes = boxes
    ops.batched_nms = _reference_batched_nms
    ops.box_area = _reference_box_area
    functional.resize = _reference_resize
    functional.to_pil_image = _reference_to_pil_image
    transforms.functional = functional
    tv.ops = ops
    tv.transforms = transforms
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.ops": ops,
            "torchvision.ops.boxes": boxes,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
        }
    )


_install_torchvision_stand_ins()


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (real photos and COCO masks); skips when this clone has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (CI has it; clones do not)")
    return SHARED_DATA
