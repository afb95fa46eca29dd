"""Privacy detectors: find faces and licence plates to blur before an image is written.

A detector is anything with ``detect(image_rgb) -> list[PrivacyBox]`` (``PrivacyDetector``);
``HaarDetector`` is the default, OpenCV's bundled Haar cascades (frontal faces, Russian-style
licence plates) run on the equalised grey image. Boxes are XYWH in image pixels.

OpenCV 5 dropped the cascade classifier and its data files, so this needs
``opencv-python-headless<5`` (``pyproject.toml`` pins it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

LABEL_FACE = "face"
LABEL_PLATE = "plate"
CASCADES = {
    LABEL_FACE: "haarcascade_frontalface_default.xml",
    LABEL_PLATE: "haarcascade_russian_plate_number.xml",
}


@dataclass(frozen=True)
class PrivacyBox:
    """A region to blur: ``label`` (face | plate | a detector's own) and XYWH pixels."""

    label: str
    x: int
    y: int
    w: int
    h: int


class PrivacyDetector(Protocol):
    """Finds regions to blur in an ``H×W×3`` uint8 RGB image."""

    def detect(self, image_rgb: np.ndarray) -> list[PrivacyBox]: ...


def _cv2():
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        raise RuntimeError(
            f"OpenCV {cv2.__version__} has no CascadeClassifier (OpenCV 5 removed it): "
            "install opencv-python-headless<5 (pip install -e . does)"
        )
    return cv2


class HaarDetector:
    """OpenCV's Haar cascades for faces and licence plates.

    Args:
        faces, plates: which cascades to run (at least one).
        scale_factor: image pyramid step of ``detectMultiScale`` (> 1).
        min_neighbors: overlapping hits a box needs; higher = fewer false positives (8 keeps
            the face and the plate of the shared test photos and halves false hits vs. 5).
        min_size: smallest box side in pixels (>= 1).
    """

    def __init__(
        self,
        faces: bool = True,
        plates: bool = True,
        scale_factor: float = 1.1,
        min_neighbors: int = 8,
        min_size: int = 24,
    ) -> None:
        self.check_arguments(faces, plates, scale_factor, min_neighbors, min_size)
        cv2 = _cv2()
        self.scale_factor = float(scale_factor)
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.cascades = {}
        for label, wanted in ((LABEL_FACE, faces), (LABEL_PLATE, plates)):
            if not wanted:
                continue
            path = Path(cv2.data.haarcascades) / CASCADES[label]
            cascade = cv2.CascadeClassifier(str(path))
            if cascade.empty():
                raise RuntimeError(f"cannot load the {label} cascade {path}")
            self.cascades[label] = cascade

    @staticmethod
    def check_arguments(
        faces: bool = True,
        plates: bool = True,
        scale_factor: float = 1.1,
        min_neighbors: int = 8,
        min_size: int = 24,
    ) -> None:
        """Raise ``ValueError``/``TypeError`` on arguments ``__init__`` would refuse."""
        if not (faces or plates):
            raise ValueError("HaarDetector needs faces=True or plates=True")
        if not scale_factor > 1.0:
            raise ValueError(f"scale_factor must be > 1, got {scale_factor}")
        if isinstance(min_neighbors, bool) or not isinstance(min_neighbors, int):
            raise TypeError(f"min_neighbors must be an int, got {min_neighbors!r}")
        if min_neighbors < 0:
            raise ValueError(f"min_neighbors must be >= 0, got {min_neighbors}")
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
            raise ValueError(f"min_size must be an int >= 1, got {min_size!r}")

    def detect(self, image_rgb: np.ndarray) -> list[PrivacyBox]:
        """Boxes of every enabled cascade, faces first, each sorted by (y, x)."""
        cv2 = _cv2()
        grey = cv2.equalizeHist(cv2.cvtColor(np.ascontiguousarray(image_rgb), cv2.COLOR_RGB2GRAY))
        boxes = []
        for label, cascade in self.cascades.items():
            found = cascade.detectMultiScale(
                grey,
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(self.min_size, self.min_size),
            )
            hits = sorted((int(y), int(x), int(w), int(h)) for x, y, w, h in found)
            boxes.extend(PrivacyBox(label, x, y, w, h) for y, x, w, h in hits)
        return boxes
