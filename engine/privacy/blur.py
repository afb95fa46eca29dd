"""Blurring of detected regions, and the filter that runs detectors then blurs.

``blur_regions`` is a pure function; ``PrivacyFilter`` is the step the pipeline runs on every
image just before the shard writer encodes its JPEG (SA-1B's released images had faces and
licence plates blurred in the same way).
"""

from __future__ import annotations

import numpy as np

from engine.privacy.detector import PrivacyBox, PrivacyDetector


def padded_box(box: PrivacyBox, padding: float, height: int, width: int) -> tuple[int, ...]:
    """``(x0, y0, x1, y1)`` of ``box`` grown by ``padding`` × its size per side, clipped."""
    pad_x, pad_y = round(box.w * padding), round(box.h * padding)
    x0, y0 = max(0, box.x - pad_x), max(0, box.y - pad_y)
    x1, y1 = min(width, box.x + box.w + pad_x), min(height, box.y + box.h + pad_y)
    return x0, y0, x1, y1


def blur_regions(
    image_rgb: np.ndarray, boxes: list[PrivacyBox], strength: float = 0.25, padding: float = 0.1
) -> np.ndarray:
    """A copy of ``image_rgb`` (``H×W×3`` uint8) with every box Gaussian-blurred.

    Each box is grown by ``padding`` × its width/height per side and clipped to the image;
    the blur's sigma is ``strength`` × the padded box's shorter side (so a large face is as
    unreadable as a small one). Pixels outside the padded boxes are unchanged.
    """
    import cv2

    if not strength > 0:
        raise ValueError(f"strength must be > 0, got {strength}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    out = np.array(image_rgb, dtype=np.uint8, copy=True)
    height, width = out.shape[:2]
    for box in boxes:
        x0, y0, x1, y1 = padded_box(box, padding, height, width)
        if x1 <= x0 or y1 <= y0:
            continue
        sigma = max(1.0, strength * min(x1 - x0, y1 - y0))
        region = np.ascontiguousarray(out[y0:y1, x0:x1])
        out[y0:y1, x0:x1] = cv2.GaussianBlur(
            region, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT
        )
    return out


class PrivacyFilter:
    """Runs ``detectors`` on an image and blurs what they find (``blur_regions``).

    Args:
        detectors: ``PrivacyDetector`` objects, run in order (at least one).
        strength, padding: passed to ``blur_regions``.
    """

    def __init__(
        self, detectors: list[PrivacyDetector], strength: float = 0.25, padding: float = 0.1
    ) -> None:
        if not detectors:
            raise ValueError("PrivacyFilter needs at least one detector")
        if not strength > 0:
            raise ValueError(f"strength must be > 0, got {strength}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.detectors = list(detectors)
        self.strength = float(strength)
        self.padding = float(padding)

    def __call__(self, image_rgb: np.ndarray) -> tuple[np.ndarray, list[PrivacyBox]]:
        """``(blurred copy, boxes)``; the image itself is returned when nothing is found."""
        boxes = [box for detector in self.detectors for box in detector.detect(image_rgb)]
        if not boxes:
            return image_rgb, []
        return blur_regions(image_rgb, boxes, self.strength, self.padding), boxes
