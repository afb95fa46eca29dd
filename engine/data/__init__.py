"""Image sources: folder, COCO, WebDataset (SA-1B tars) and synthetic scenes.

Every source lists cheap, picklable ``SourceEntry`` objects and decodes one with ``load``;
``iter_items`` runs the loop and quarantines inputs that cannot be used. See docs/data.md.
"""

from engine.data.coco import AnnotationError, CocoSource
from engine.data.decode import DecodeError, DecodeOptions, decode_image, decode_item
from engine.data.folder import FolderSource
from engine.data.sources import (
    SOURCE_KINDS,
    ImageSource,
    SourceEntry,
    check_key,
    iter_items,
    key_from_path,
    open_source,
)
from engine.data.synthetic import (
    SPLIT_HELDOUT,
    SPLIT_PUBLIC,
    SPLIT_TRAIN,
    SPLITS,
    SyntheticSource,
    render_scene,
    split_seeds,
)
from engine.data.webdataset_source import WebDatasetSource

__all__ = [
    "SOURCE_KINDS",
    "SPLITS",
    "SPLIT_HELDOUT",
    "SPLIT_PUBLIC",
    "SPLIT_TRAIN",
    "AnnotationError",
    "CocoSource",
    "DecodeError",
    "DecodeOptions",
    "FolderSource",
    "ImageSource",
    "SourceEntry",
    "SyntheticSource",
    "WebDatasetSource",
    "check_key",
    "decode_image",
    "decode_item",
    "iter_items",
    "key_from_path",
    "open_source",
    "render_scene",
    "split_seeds",
]
