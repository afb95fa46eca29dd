"""Mask maths as pure functions.

Conventions: a binary mask is an ``H×W`` bool/uint8 array; a stack is ``N×H×W``; COCO RLE is a
dict ``{"size": [h, w], "counts": str}`` (compressed, column-major, as in SA-1B JSON); boxes
are XYWH unless the name says ``xyxy``. Boxes computed from masks follow the official
automatic mask generator: ``xyxy`` holds the *inclusive* last row/column, so a one-pixel mask
at (x, y) has box ``[x, y, x, y]`` and XYWH ``[x, y, 0, 0]`` (pycocotools' ``toBbox`` gives
``[x, y, 1, 1]``).Point grids, crop boxes and NMS are in ``engine.amg_crops``.
"""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils
from scipy import ndimage

from engine.rle_codec import RLEError, decode_counts, encode_counts_batch, window_runs

__all__ = [
    "RLEError",
    "mask_to_rle",
    "masks_to_rles",
    "windows_to_rles",
    "rle_to_mask",
    "rle_area",
    "rle_bbox_xywh",
    "mask_area",
    "mask_bbox_xywh",
    "batched_mask_to_box_xyxy",
    "box_xyxy_to_xywh",
    "rle_iou",
    "stability_score",
    "remove_small_regions",
    "batched_nms",
    "build_point_grid",
    "build_all_layer_point_grids",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
]

# The 8-neighbourhood, as OpenCV's connectedComponents(connectivity=8) uses.
_EIGHT = np.ones((3, 3), dtype=bool)
# Frames pasted at a time when windows_to_rles encodes through pycocotools.
FRAME_CHUNK_BYTES = 1 << 27
# The characters a compressed counts string may hold ('0' .. 'o').
_ALPHABET = bytes(range(48, 112))
# pycocotools stores run lengths as uint32: a larger mask cannot be coded faithfully.
MAX_RLE_PIXELS = 2**32 - 1


def _rle_dict(size: tuple[int, int], counts: bytes) -> dict:
    return {"size": [int(size[0]), int(size[1])], "counts": counts.decode("ascii")}


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode one ``H×W`` binary mask as COCO compressed RLE with ``counts`` as ``str``."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    return _rle_dict(rle["size"], rle["counts"])


def masks_to_rles(masks: np.ndarray) -> list[dict]:
    """Encode an ``N×H×W`` stack in one C call; returns ``N`` RLE dicts."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be N×H×W, got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    if masks.shape[1] * masks.shape[2] == 0:
        return [_rle_dict(masks.shape[1:], b"") for _ in range(masks.shape[0])]
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8, copy=False))
    return [_rle_dict(r["size"], r["counts"]) for r in mask_utils.encode(fortran)]


def windows_to_rles(
    windows: np.ndarray, offsets_yx: np.ndarray, frame_hw: tuple[int, int]
) -> list[dict]:
    """RLE of ``N×h×w`` binary windows placed at ``offsets_yx`` (``N×2``, row then column)
    in an otherwise empty ``H×W`` frame.

    The result equals ``masks_to_rles`` of the pasted frames. Window cells outside the frame
    must be ``False``. When the windows are a good part of the frame they are pasted into
    full frames and encoded by pycocotools (C, a few frames at a time); otherwise the runs
    are computed from the windows alone (``engine.rle_codec``), never building the frames.
    """
    if windows.ndim != 3:
        raise ValueError(f"windows must be N×h×w, got shape {windows.shape}")
    n, h, w = windows.shape
    height, width = int(frame_hw[0]), int(frame_hw[1])
    if height * width == 0:
        return [_rle_dict((height, width), b"") for _ in range(n)]
    windows = windows.astype(bool, copy=False)
    if height * width > 4 * h * w:
        runs, lengths = window_runs(windows, offsets_yx, (height, width))
        return [_rle_dict((height, width), c) for c in encode_counts_batch(runs, lengths)]
    out = []
    per_chunk = max(1, FRAME_CHUNK_BYTES // (height * width))
    for start in range(0, n, per_chunk):
        stop = min(start + per_chunk, n)
        # C-order N×W×H is Fortran-order H×W×N: the layout pycocotools wants.
        frames = np.zeros((stop - start, width, height), dtype=np.uint8)
        for i in range(start, stop):  # one slice copy per mask; the encoding is in C
            y0, x0 = int(offsets_yx[i][0]), int(offsets_yx[i][1])
            ch, cw = min(h, height - y0), min(w, width - x0)
            frames[i - start, x0 : x0 + cw, y0 : y0 + ch] = windows[i, :ch, :cw].T
        encoded = mask_utils.encode(frames.transpose(2, 1, 0))
        out.extend(_rle_dict(r["size"], r["counts"]) for r in encoded)
    return out


def _coco_rle(rle: dict) -> dict:
    """Check an RLE dict and return it in the form pycocotools accepts."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise RLEError(f"RLE must be a dict with 'size' and 'counts', got {type(rle).__name__}")
    size = rle["size"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in size)
    ):
        raise RLEError(f"RLE 'size' must be [h, w] of non-negative ints, got {size!r}")
    if size[0] * size[1] > MAX_RLE_PIXELS:
        raise RLEError(
            f"RLE 'size' {list(size)} holds more than {MAX_RLE_PIXELS} pixels "
            "(pycocotools counts runs in 32 bits)"
        )
    counts = rle["counts"]
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError as exc:
            raise RLEError("RLE 'counts' string is not ASCII") from exc
    elif isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise RLEError("uncompressed RLE 'counts' must be non-negative ints")
        if sum(counts) != size[0] * size[1]:
            raise RLEError(f"uncompressed RLE counts sum to {sum(counts)}, not h*w")
        return mask_utils.frPyObjects({"size": list(size), "counts": counts}, *size)
    elif not isinstance(counts, bytes):
        raise RLEError(f"RLE 'counts' must be str, bytes or list, got {type(counts).__name__}")
    if counts.translate(None, _ALPHABET):
        raise RLEError("RLE 'counts' holds characters outside the COCO alphabet")
    return {"size": [size[0], size[1]], "counts": counts}


def _checked(rle: dict) -> dict:
    """``_coco_rle`` plus the run-length check pycocotools does not do (it can write out of
    bounds on bad counts): the runs must be well formed and cover exactly ``h*w`` pixels."""
    coco = _coco_rle(rle)
    if isinstance(rle["counts"], list):
        return coco
    h, w = coco["size"]
    total = int(decode_counts(coco["counts"]).sum())
    if total != h * w:
        raise RLEError(f"RLE runs cover {total} pixels but size {h}x{w} needs {h * w}")
    return coco


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode COCO RLE (compressed ``str``/``bytes`` or uncompressed list) to ``H×W`` bool.

    Raises ``RLEError`` when the dict is malformed or its runs do not fill ``h*w`` pixels.
    """
    coco = _checked(rle)
    h, w = coco["size"]
    if h == 0 or w == 0:
        return np.zeros((h, w), dtype=bool)
    return mask_utils.decode(coco).astype(bool)


def rle_area(rle: dict) -> int:
    """Number of foreground pixels of an RLE mask."""
    return int(mask_utils.area(_checked(rle)))


def rle_bbox_xywh(rle: dict) -> list[int]:
    """pycocotools' XYWH box of an RLE mask: ``[x0, y0, x1 - x0 + 1, y1 - y0 + 1]`` (one
    pixel wider and taller than the generator's boxes; ``[0, 0, 0, 0]`` when empty)."""
    return [int(v) for v in mask_utils.toBbox(_checked(rle))]


def mask_area(masks: np.ndarray) -> np.ndarray:
    """Areas of an ``N×H×W`` (or ``H×W``) stack."""
    return masks.reshape(*masks.shape[:-2], -1).sum(-1)


def mask_bbox_xywh(mask: np.ndarray) -> list[int]:
    """Tight XYWH box of one ``H×W`` mask: ``[x0, y0, x1 - x0 + 1, y1 - y0 + 1]``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0, 0, 0, 0]
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def batched_mask_to_box_xyxy(masks: torch.Tensor) -> torch.Tensor:
    """``…×H×W`` bool masks to ``…×4`` XYXY boxes with inclusive ends (``x1`` is the last
    column holding the mask); ``[0, 0, 0, 0]`` for an empty mask. Official-generator boxes."""
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.int64, device=masks.device)
    h, w = masks.shape[-2:]
    rows = masks.any(dim=-1)  # …×H
    cols = masks.any(dim=-2)  # …×W
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    bottom = torch.where(rows, ys, -1).amax(dim=-1)
    top = torch.where(rows, ys, h).amin(dim=-1)
    right = torch.where(cols, xs, -1).amax(dim=-1)
    left = torch.where(cols, xs, w).amin(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    return torch.where((bottom >= 0)[..., None], boxes, torch.zeros_like(boxes))


def box_xyxy_to_xywh(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """``…×4`` XYXY to XYWH with ``w = x1 - x0`` and ``h = y1 - y0`` (no +1)."""
    x0, y0, x1, y1 = boxes_xyxy.unbind(-1)
    return torch.stack([x0, y0, x1 - x0, y1 - y0], dim=-1)


def rle_iou(rles_a: list[dict], rles_b: list[dict]) -> np.ndarray:
    """Pairwise IoU matrix ``len(a)×len(b)`` of two RLE lists (pycocotools, no crowd)."""
    if not rles_a or not rles_b:
        return np.zeros((len(rles_a), len(rles_b)), dtype=np.float64)
    a = [_coco_rle(r) for r in rles_a]
    b = [_coco_rle(r) for r in rles_b]
    return np.asarray(mask_utils.iou(a, b, [0] * len(b)), dtype=np.float64).reshape(len(a), len(b))


def stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """``|logits > t + offset| / |logits > t − offset|`` over the last two dims (float32).

    ``logits`` is ``…×H×W``; the result is ``…``; an empty low-threshold mask gives NaN (as in
    the official code, so it never passes a threshold).
    """
    high = (logits > (mask_threshold + offset)).flatten(-2).sum(-1, dtype=torch.int64)
    low = (logits > (mask_threshold - offset)).flatten(-2).sum(-1, dtype=torch.int64)
    return high.to(torch.float32) / low.to(torch.float32)


def remove_small_regions(
    mask: np.ndarray, area_thresh: float, mode: str
) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or remove islands (``mode="islands"``) smaller than
    ``area_thresh`` pixels in an ``H×W`` bool mask, with 8-connected components.

    Returns ``(mask, changed)``. Holes are background components (including ones touching the
    image border) under the area; when every island is small, the largest one is kept.
    Same semantics as the official ``remove_small_regions`` (which uses OpenCV). Works on the
    mask's box plus a background margin, and on the whole frame only when that cannot decide.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0 or area_thresh <= 0:
        return _small_regions_full(mask, area_thresh, mode)
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    # Margin wide enough that the background ring around the box alone reaches the area.
    box_h, box_w = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    margin = 1 + int(area_thresh // (2 * (box_h + box_w)))
    y0, y1 = max(rows[0] - margin, 0), min(rows[-1] + margin + 1, h)
    x0, x1 = max(cols[0] - margin, 0), min(cols[-1] + margin + 1, w)
    window = mask[y0:y1, x0:x1]
    if mode == "islands":  # every island lies inside the box: the window decides
        result, changed = _small_regions_full(window, area_thresh, mode)
    else:
        regions, n = ndimage.label(~window, structure=_EIGHT)
        sizes = np.bincount(regions.ravel(), minlength=n + 1)[1:]
        # Background components reaching a window side that is not an image side continue
        # outside the window; their size there is unknown unless already large enough.
        edges = [regions[0] if y0 > 0 else None, regions[-1] if y1 < h else None,
                 regions[:, 0] if x0 > 0 else None, regions[:, -1] if x1 < w else None]  # fmt: skip
        open_labels = np.unique(np.concatenate([e for e in edges if e is not None] or [[0]]))
        open_labels = open_labels[open_labels > 0]
        if (sizes[open_labels - 1] < area_thresh).any():
            return _small_regions_full(mask, area_thresh, mode)
        small = sizes < area_thresh
        if not small.any():
            return mask, False
        result, changed = np.concatenate(([True], small))[regions], True
    if not changed:
        return mask, False
    out = mask.copy()
    out[y0:y1, x0:x1] = result
    return out, True


def _small_regions_full(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """``remove_small_regions`` on the whole frame (the official algorithm, with scipy)."""
    holes = mode == "holes"
    regions, n_labels = ndimage.label(~mask if holes else mask, structure=_EIGHT)
    sizes = np.bincount(regions.ravel(), minlength=n_labels + 1)[1:]
    small = sizes < area_thresh
    if not small.any():
        return mask, False
    if holes:
        fill = np.concatenate(([True], small))  # label 0 is the mask itself
        return fill[regions], True
    keep = np.concatenate(([False], ~small))
    if not keep.any():
        keep[int(np.argmax(sizes)) + 1] = True
    return keep[regions], True


def box_iou_xyxy(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """``N×M`` IoU of XYXY boxes (float32, torchvision arithmetic; 0/0 gives NaN)."""
    a = boxes_a.to(torch.float32)
    b = boxes_b.to(torch.float32)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def batched_nms(
    boxes_xyxy: torch.Tensor, scores: torch.Tensor, categories: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Greedy non-maximum suppression per category, as ``torchvision.ops.batched_nms``.

    Boxes are ``N×4`` XYXY, ``scores`` and ``categories`` length ``N``. Going down the scores
    (ties keep input order), a box is kept unless a kept box of the same category overlaps
    it with IoU ``> iou_threshold``. Returns the kept indices (int64), highest score first.
    """
    n = boxes_xyxy.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.sort(scores.detach().cpu(), descending=True, stable=True).indices
    boxes = boxes_xyxy.detach().cpu()[order].to(torch.float32).numpy()
    cats = categories.detach().cpu()[order].numpy()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    block = 1024  # rows of the overlap matrix (in score order) built at a time
    for start in range(0, n, block):
        stop = min(start + block, n)
        b = boxes[start:stop]
        lt = np.maximum(b[:, None, :2], boxes[None, :, :2])
        rb = np.minimum(b[:, None, 2:], boxes[None, :, 2:])
        wh = np.clip(rb - lt, 0, None)
        inter = wh[..., 0] * wh[..., 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (area[start:stop, None] + area[None, :] - inter)
        overlap = (iou > iou_threshold) & (cats[start:stop, None] == cats[None, :])
        for i in range(start, stop):
            if not suppressed[i]:
                keep.append(i)
                suppressed |= overlap[i - start]
    return order[torch.as_tensor(keep, dtype=torch.int64)]


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``n²×2`` points ``(x, y)`` in ``[0, 1]²``, cell centres of an ``n×n`` grid, row-major."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(
    n_per_side: int, n_layers: int, scale_per_layer: int
) -> list[np.ndarray]:
    """Grids for crop layers ``0..n_layers``: layer ``i`` has ``int(n / scale**i)`` per side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """Crop boxes (XYXY, ints) and their layer indices for an ``(H, W)`` image.

    Layer 0 is the whole image; layer ``i`` tiles it with ``2^i × 2^i`` crops overlapping by
    ``int(overlap_ratio * short_side * 2 / 2^i)`` pixels (official semantics and order:
    columns outer, rows inner).
    """
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]

    def crop_len(orig_len: int, n_crops: int, overlap: int) -> int:
        return int(np.ceil((overlap * (n_crops - 1) + orig_len) / n_crops))

    for i_layer in range(n_layers):
        n_per_side = 2 ** (i_layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / n_per_side))
        crop_w = crop_len(im_w, n_per_side, overlap)
        crop_h = crop_len(im_h, n_per_side, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n_per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(n_per_side)]
        for x0 in x0s:
            for y0 in y0s:
                boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
                layers.append(i_layer + 1)
    return boxes, layers


def is_box_near_crop_edge(
    boxes_xyxy: torch.Tensor,
    crop_box_xyxy: list[int],
    image_box_xyxy: list[int],
    atol: float = 20.0,
) -> torch.Tensor:
    """Which ``N×4`` boxes (in crop coordinates) come within ``atol`` pixels of an edge of
    the crop that is not also an edge of the image (such masks are cut by the crop)."""
    crop = torch.as_tensor(crop_box_xyxy, dtype=torch.float32)
    image = torch.as_tensor(image_box_xyxy, dtype=torch.float32)
    offset = torch.as_tensor(crop_box_xyxy[:2] * 2, dtype=torch.float32)
    boxes = boxes_xyxy.to(torch.float32) + offset
    near_crop = torch.isclose(boxes, crop[None, :], atol=atol, rtol=0)
    near_image = torch.isclose(boxes, image[None, :], atol=atol, rtol=0)
    return (near_crop & ~near_image).any(dim=1)
