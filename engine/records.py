"""Typed records that cross module boundaries (sources → workers → stages → writer → audit).

Formats, everywhere in sa-engine:
- images are RGB ``uint8`` arrays of shape ``H×W×3``;
- masks are COCO compressed RLE dicts ``{"size": [h, w], "counts": str}`` once they leave
  the model (see ``engine.masks``);
- boxes in records are XYWH (SA-1B / COCO), points are ``[x, y]`` in original-image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Granularity levels of a reference mask (synthetic scenes record them; COCO is "whole").
LEVEL_WHOLE = 0
LEVEL_PART = 1
LEVEL_SUBPART = 2
LEVEL_NAMES = {LEVEL_WHOLE: "whole", LEVEL_PART: "part", LEVEL_SUBPART: "subpart"}

# Granularity of a dataset mask (the ``granularity`` column of the index), coarse to fine.
GRANULARITY_WHOLE, GRANULARITY_PART, GRANULARITY_SUBPART = "whole", "part", "subpart"
GRANULARITIES = (GRANULARITY_WHOLE, GRANULARITY_PART, GRANULARITY_SUBPART)


def granularity_of_level(level: int | None) -> str:
    """The granularity name of a reference ``LEVEL_*`` (``"whole"`` when unknown)."""
    if level is None:
        return GRANULARITY_WHOLE
    if level not in LEVEL_NAMES:
        raise ValueError(f"level must be one of {sorted(LEVEL_NAMES)} or None, got {level!r}")
    return LEVEL_NAMES[level]


# Who produced a mask (the ``source`` column of the index).
SOURCE_MODEL = "model"  # fully automatic or confident pre-fill, no human
SOURCE_SIMULATED = "simulated"  # simulated annotator
SOURCE_ANNOTATOR = "annotator"  # a real person (web tool or imported COCO)
SOURCES = (SOURCE_MODEL, SOURCE_SIMULATED, SOURCE_ANNOTATOR)


@dataclass
class ReferenceMask:
    """A ground-truth mask that comes with a source image (COCO, SA-1B tar, synthetic).

    ``rle`` is COCO compressed RLE at the item's image size; ``level`` is one of the
    ``LEVEL_*`` constants when known; ``object_id`` groups the levels of one object;
    ``parent_index`` points at the enclosing reference (index in the item's list) if any.
    """

    rle: dict
    level: int | None = None
    object_id: int | None = None
    parent_index: int | None = None
    iscrowd: bool = False


@dataclass
class ImageItem:
    """One decoded image from a source, ready for a worker."""

    key: str  # stable, tar-member-safe
    image: np.ndarray  # H×W×3 uint8 RGB (after EXIF orientation and optional resize)
    file_name: str  # original file name (SA-1B ``file_name``)
    image_id: int = 0
    references: list[ReferenceMask] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass
class QuarantineRecord:
    """An input that could not be used, and why (written to ``quarantine.jsonl``)."""

    key: str
    path: str
    reason: str

    def to_json(self) -> dict:
        return {"key": self.key, "path": self.path, "reason": self.reason}
