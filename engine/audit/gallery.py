"""The report's gallery: best, worst and random images, with their masks drawn.

Images are ranked by a per-image score (with a reference: the mean over reference masks of
their matched IoU, 0 when unmatched; without: the mean predicted IoU). Each of the three
selections is a bounded ``Selection`` holding the JPEG bytes and the record, so memory stays
bounded and per-shard galleries merge; drawing happens once, at the end, on thumbnails.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from engine.audit.select import Selection, random_priority
from engine.audit.stats import coco_rles
from engine.sa1b import ImageRecord

KINDS = ("best", "worst", "random")


@dataclass
class GalleryCandidate:
    """What is needed to draw one image later."""

    key: str
    shard: str
    score: float | None
    record: ImageRecord
    jpeg: bytes
    references: list[dict] | None = None  # reference RLEs, when the image has a reference


@dataclass
class GalleryImage:
    """One drawn gallery entry: ``png`` is the overlay thumbnail."""

    kind: str
    key: str
    shard: str
    score: float | None
    masks: int
    references: int | None
    png: bytes


class Gallery:
    """``k`` best, ``k`` worst (by score) and ``k`` random (by ``seed``) images."""

    def __init__(self, k: int = 4, seed: int = 0) -> None:
        self.k = k
        self.seed = seed
        self.selections = {kind: Selection(k) for kind in KINDS}

    def _priorities(self, key: str, score: float | None) -> dict[str, float]:
        out = {"random": random_priority(self.seed, key)}
        if score is not None:
            out["best"] = -score
            out["worst"] = score
        return out

    def wants(self, key: str, score: float | None) -> bool:
        """Whether an image would enter any selection (before reading its JPEG)."""
        priorities = self._priorities(key, score)
        return any(self.selections[k].would_keep(p, key) for k, p in priorities.items())

    def offer(self, candidate: GalleryCandidate) -> None:
        for kind, priority in self._priorities(candidate.key, candidate.score).items():
            self.selections[kind].offer(priority, candidate.key, candidate)

    def merge(self, other: Gallery) -> None:
        for kind in KINDS:
            self.selections[kind].merge(other.selections[kind])

    def render(self, max_side: int = 384) -> tuple[list[GalleryImage], list[str]]:
        """Draw every selected image (best first, worst first, then random).

        Returns ``(images, problems)``: an image whose JPEG does not decode is left out and
        named in ``problems`` (the reader does not decode images in records-only mode).
        """
        out, problems = [], []
        for kind in KINDS:
            for _, _, c in self.selections[kind].items():
                masks = [a.segmentation for a in c.record.annotations]
                try:
                    png = overlay_png(c.jpeg, masks, c.references, max_side=max_side)
                except OSError as exc:  # PIL: UnidentifiedImageError, truncated data
                    problems.append(f"{c.shard}: {c.key}: gallery image does not decode: {exc}")
                    continue
                refs = None if c.references is None else len(c.references)
                out.append(GalleryImage(kind, c.key, c.shard, c.score, len(masks), refs, png))
        return out, problems


def _thumbnail_masks(rles: list[dict], rows: np.ndarray, cols: np.ndarray) -> list[np.ndarray]:
    """Decode RLEs and sample them at the thumbnail's pixel ``rows``/``cols`` (nearest)."""
    from pycocotools import mask as mask_utils

    out = []
    coco = coco_rles(rles)
    for start in range(0, len(coco), 16):
        block = mask_utils.decode(coco[start : start + 16])
        small = block[rows][:, cols]
        out.extend(small[:, :, i].astype(bool) for i in range(small.shape[2]))
    return out


def draw_overlay(
    image: np.ndarray,
    masks: list[dict],
    references: list[dict] | None = None,
    max_side: int = 384,
    seed: int = 0,
) -> np.ndarray:
    """``H×W×3`` uint8 image → thumbnail (longest side ≤ ``max_side``) with masks drawn.

    Generated masks are filled in random colours (largest first, so small ones stay visible)
    with a darker outline; reference masks, when given, are outlined in white.
    """
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w, 1))
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    thumb = np.asarray(Image.fromarray(image).resize((tw, th), Image.BILINEAR), dtype=np.float32)
    rows = np.minimum((np.arange(th) / scale).astype(int), h - 1)
    cols = np.minimum((np.arange(tw) / scale).astype(int), w - 1)
    rng = np.random.default_rng(seed)
    small = _thumbnail_masks(masks, rows, cols)
    colours = rng.integers(40, 256, size=(len(small), 3)).astype(np.float32)
    for i in np.argsort([-m.sum() for m in small], kind="stable"):
        m = small[i]
        thumb[m] = 0.45 * thumb[m] + 0.55 * colours[i]
        edge = m & ~ndimage.binary_erosion(m)
        thumb[edge] = 0.6 * colours[i]
    if references:
        for m in _thumbnail_masks(references, rows, cols):
            thumb[m & ~ndimage.binary_erosion(m)] = 255.0
    return np.clip(thumb, 0, 255).astype(np.uint8)


def overlay_png(
    jpeg: bytes, masks: list[dict], references: list[dict] | None = None, max_side: int = 384
) -> bytes:
    """JPEG bytes + mask RLEs → PNG bytes of the overlay thumbnail (see ``draw_overlay``)."""
    with Image.open(io.BytesIO(jpeg)) as im:
        image = np.asarray(im.convert("RGB"))
    return png_bytes(draw_overlay(image, masks, references, max_side=max_side))


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
