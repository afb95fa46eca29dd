"""Privacy filter: detect faces and licence plates and blur them before shards are written.

See ``docs/privacy.md``.
"""

from engine.privacy.blur import PrivacyFilter, blur_regions, padded_box
from engine.privacy.detector import (
    LABEL_FACE,
    LABEL_PLATE,
    HaarDetector,
    PrivacyBox,
    PrivacyDetector,
)

__all__ = [
    "LABEL_FACE",
    "LABEL_PLATE",
    "HaarDetector",
    "PrivacyBox",
    "PrivacyDetector",
    "PrivacyFilter",
    "blur_regions",
    "padded_box",
]
