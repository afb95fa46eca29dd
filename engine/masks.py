"""Mask maths as pure functions.

Conventions: a binary mask is an ``H×W`` bool/uint8 array; a stack is ``N×H×W``; COCO RLE is a
dict ``{"size": [h, w], "counts": str}`` (compressed, column-major, as in SA-1B JSON); boxes
are XYWH unless the name says ``xyxy``.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


class RLEError(ValueError):
    """An RLE dict that is malformed or does not decode."""


def mask_to_rle(mask: np.ndarray) -> dict:
    """Encode one ``H×W`` binary mask as COCO compressed RLE with ``counts`` as ``str``."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def masks_to_rles(masks: np.ndarray) -> list[dict]:
    """Encode an ``N×H×W`` stack in one C call; returns ``N`` RLE dicts."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be N×H×W, got shape {masks.shape}")
    if masks.shape[0] == 0:
        return []
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8, copy=False))
    return [
        {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode()}
        for r in mask_utils.encode(fortran)
    ]


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
    if any(c < 48 or c > 111 for c in counts):
        raise RLEError("RLE 'counts' holds characters outside the COCO alphabet")
    return {"size": [size[0], size[1]], "counts": counts}


def rle_to_mask(rle: dict) -> np.ndarray:
    """Decode COCO RLE (compressed ``str``/``bytes`` or uncompressed list) to ``H×W`` bool.

    Raises ``RLEError`` when the dict is malformed or its runs do not fill ``h*w`` pixels.
    """
    coco = _coco_rle(rle)
    h, w = coco["size"]
    if h == 0 or w == 0:
        return np.zeros((h, w), dtype=bool)
    counts = coco["counts"]
    # pycocotools silently truncates/pads bad counts; decode the run lengths ourselves first.
    total = sum(_decode_counts(counts))
    if total != h * w:
        raise RLEError(f"RLE runs cover {total} pixels but size {h}x{w} needs {h * w}")
    return mask_utils.decode(coco).astype(bool)


def _decode_counts(counts: bytes) -> list[int]:
    """Run lengths of a COCO compressed counts string (the LEB128-like format in maskApi.c)."""
    runs: list[int] = []
    p = 0
    n = len(counts)
    while p < n:
        x = 0
        k = 0
        more = True
        while more:
            if p >= n:
                raise RLEError("RLE 'counts' ends in the middle of a number")
            c = counts[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise RLEError("RLE 'counts' decodes to a negative run length")
        runs.append(x)
    return runs


def rle_area(rle: dict) -> int:
    """Number of foreground pixels of an RLE mask."""
    return int(mask_utils.area(_coco_rle(rle)))


def rle_bbox_xywh(rle: dict) -> list[int]:
    """Tight XYWH box of an RLE mask in whole pixels (``[0, 0, 0, 0]`` when empty)."""
    return [int(v) for v in mask_utils.toBbox(_coco_rle(rle))]


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


def rle_iou(rles_a: list[dict], rles_b: list[dict]) -> np.ndarray:
    """Pairwise IoU matrix ``len(a)×len(b)`` of two RLE lists (pycocotools, no crowd)."""
    if not rles_a or not rles_b:
        return np.zeros((len(rles_a), len(rles_b)), dtype=np.float64)
    a = [_coco_rle(r) for r in rles_a]
    b = [_coco_rle(r) for r in rles_b]
    return np.asarray(mask_utils.iou(a, b, [0] * len(b)), dtype=np.float64).reshape(len(a), len(b))
