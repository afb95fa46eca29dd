"""Image sources: folder, COCO, WebDataset (SA-1B tars) and synthetic scenes.

Every source lists cheap, picklable ``SourceEntry`` objects and decodes one with ``load``;
``iter_items`` runs the loop and quarantines inputs that cannot be used. See docs/data.md.
"""

from engine.data.decode import DecodeError, DecodeOptions, decode_image, decode_item
from engine.data.sources import (
    ImageSource,
    SourceEntry,
    check_key,
    iter_items,
    key_from_path,
    open_source,
)

__all__ = [
    "DecodeError",
    "DecodeOptions",
    "ImageSource",
    "SourceEntry",
    "check_key",
    "decode_image",
    "decode_item",
    "iter_items",
    "key_from_path",
    "open_source",
]
