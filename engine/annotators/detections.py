"""An external detector's boxes for the semi-automatic stage's pre-fill (as in the paper).

The file is COCO "results" JSON: a list of ``{"image_id", "bbox": [x, y, w, h], "score"}``
(``category_id`` is ignored: the engine's detector is class-agnostic, one class "object").
An entry may name its image by ``file_name`` instead of (or as well as) ``image_id``, and may
give the ``width``/``height`` of the image the detector saw. The file may also be a COCO
dataset dict ``{"images": [{id, file_name, width, height}], "annotations": [detections]}``,
whose ``images`` give each detection's file name and size.

A box is matched to an image by file name (base name) when its entry or the file's ``images``
name one, else by image id; a box with a known
detector image size is rescaled to the decoded image (sources shrink large images to
``max_short_side``). Without a size, boxes are taken in the decoded image's pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path


class DetectionsError(ValueError):
    """A detections file that cannot be used; the message names the file and entry."""


@dataclass(frozen=True)
class Detection:
    """One box (XYWH, in the pixels of a ``width×height`` image when those are known)."""

    box_xywh: tuple[float, float, float, float]
    score: float
    width: int | None = None
    height: int | None = None

    def scaled_to(self, width: int, height: int) -> list[float]:
        """The box in a ``width×height`` image (unchanged when the source size is unknown)."""
        x, y, w, h = self.box_xywh
        if not self.width or not self.height:
            return [x, y, w, h]
        sx, sy = width / self.width, height / self.height
        return [x * sx, y * sy, w * sx, h * sy]


@dataclass
class Detections:
    """Boxes by image id and by file name; ``for_image`` gives one image's, best first."""

    by_id: dict[int, list[Detection]] = field(default_factory=dict)
    by_name: dict[str, list[Detection]] = field(default_factory=dict)

    def add(self, detection: Detection, image_id: int | None, file_name: str | None) -> None:
        if file_name:
            self.by_name.setdefault(Path(file_name).name, []).append(detection)
        elif image_id is not None:
            self.by_id.setdefault(image_id, []).append(detection)

    def for_image(
        self, image_id: int, file_name: str, width: int, height: int
    ) -> list[tuple[list[float], float]]:
        """``[(box_xywh, score)]`` of one image, in its pixels, highest score first."""
        found = self.by_name.get(Path(file_name).name) or self.by_id.get(image_id, [])
        ranked = sorted(found, key=lambda d: -d.score)
        return [(d.scaled_to(width, height), d.score) for d in ranked]


def load_detections(path: str | Path) -> Detections:
    """Read a detections file (see the module docstring); raises ``DetectionsError``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DetectionsError(f"{path}: not a readable COCO results JSON: {exc}") from exc
    images: dict[int, dict] = {}
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        for i, image in enumerate(data.get("images", [])):
            try:
                images[int(image["id"])] = image
            except (KeyError, TypeError, ValueError) as exc:
                raise DetectionsError(f"{path}: images[{i}] needs an id") from exc
        data = data["annotations"]
    if not isinstance(data, list):
        raise DetectionsError(f"{path}: a COCO results file is a JSON list of detections")
    found = Detections()
    for i, det in enumerate(data):
        try:
            image_id = int(det["image_id"]) if det.get("image_id") is not None else None
            image = images.get(image_id, {}) if image_id is not None else {}
            file_name = det.get("file_name") or image.get("file_name")
            box = [float(v) for v in det["bbox"]]
            score = float(det.get("score", 1.0))
            width = det.get("width", image.get("width"))
            height = det.get("height", image.get("height"))
            size = (int(width), int(height)) if width and height else (None, None)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DetectionsError(f"{path}: entry {i} needs image_id, bbox [x, y, w, h]") from exc
        if image_id is None and not file_name:
            raise DetectionsError(f"{path}: entry {i} names no image (image_id or file_name)")
        if len(box) != 4 or box[2] <= 0 or box[3] <= 0 or not all(map(math.isfinite, box)):
            raise DetectionsError(f"{path}: entry {i} has a bad bbox {det['bbox']!r}")
        found.add(Detection(tuple(box), score, *size), image_id, file_name)
    return found
