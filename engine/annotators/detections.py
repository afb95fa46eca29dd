"""An external detector's boxes for the semi-automatic stage's pre-fill (as in the paper).

The file is COCO "results" JSON: a list of ``{"image_id", "bbox": [x, y, w, h], "score"}``
(``category_id`` is ignored: the engine's detector is class-agnostic, one class "object").
"""

from __future__ import annotations

import json
import math
from pathlib import Path


class DetectionsError(ValueError):
    """A detections file that cannot be used; the message names the file and entry."""


def load_detections(path: str | Path) -> dict[int, list[tuple[list[float], float]]]:
    """``{image_id: [(box_xywh, score), ...]}`` sorted by score, highest first."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DetectionsError(f"{path}: not a readable COCO results JSON: {exc}") from exc
    if not isinstance(data, list):
        raise DetectionsError(f"{path}: a COCO results file is a JSON list of detections")
    found: dict[int, list[tuple[list[float], float]]] = {}
    for i, det in enumerate(data):
        try:
            image_id = int(det["image_id"])
            box = [float(v) for v in det["bbox"]]
            score = float(det.get("score", 1.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectionsError(f"{path}: entry {i} needs image_id, bbox [x, y, w, h]") from exc
        if len(box) != 4 or box[2] <= 0 or box[3] <= 0 or not all(map(math.isfinite, box)):
            raise DetectionsError(f"{path}: entry {i} has a bad bbox {det['bbox']!r}")
        found.setdefault(image_id, []).append((box, score))
    for boxes in found.values():
        boxes.sort(key=lambda b: -b[1])
    return found
