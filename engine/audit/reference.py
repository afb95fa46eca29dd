"""Where reference masks come from: a COCO JSON (e.g. a human-corrected sample), a source, a dict.

A reference set answers ``lookup(key, record) -> list[ReferenceMask] | None``: ``None`` when
the image is not in the reference (it is then left out of the reference metrics), a list
(possibly empty) when it is. Reference masks are returned at the record's size; crowd regions
(``iscrowd``) are dropped — COCO does not score against them either.

Reference sets pickle cheaply (path or source, never loaded masks), so audit workers can
receive them and load lazily.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from engine import masks as mask_ops
from engine.records import LEVEL_WHOLE, ReferenceMask
from engine.sa1b import ImageRecord

EXPORT_CATEGORY = "object"  # the single class of our exported samples (sample.py)


@runtime_checkable
class ReferenceSet(Protocol):
    def lookup(self, key: str, record: ImageRecord) -> list[ReferenceMask] | None: ...


def resize_rle(rle: dict, height: int, width: int) -> dict:
    """Nearest-neighbour resize of an RLE mask to ``[height, width]`` (no-op if already)."""
    if list(rle["size"]) == [height, width]:
        return rle
    mask = mask_ops.rle_to_mask(rle).astype(np.uint8) * 255
    small = Image.fromarray(mask).resize((width, height), Image.NEAREST)
    return mask_ops.mask_to_rle(np.asarray(small) > 127)


def _segmentation_rle(segmentation: object, height: int, width: int) -> dict:
    """COCO polygons / uncompressed RLE / compressed RLE → compressed RLE with ``str`` counts."""
    if isinstance(segmentation, list):
        rings = [ring for ring in segmentation if len(ring) >= 6]
        if rings:
            rle = mask_utils.merge(mask_utils.frPyObjects(rings, height, width))
        else:
            rle = mask_utils.encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0]
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rle = {"size": list(segmentation["size"]), "counts": segmentation["counts"]}
    else:
        raise ValueError(f"segmentation must be polygons or an RLE dict, got {segmentation!r:.60}")
    counts = rle["counts"]
    return {
        "size": [int(s) for s in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


class CocoReference:
    """Reference masks from a COCO instances JSON (polygons, RLE; ``iscrowd`` dropped).

    An image of the dataset is found by key: the COCO ``file_name`` turned into a key the way
    sources make keys (``engine.data.sources.key_from_path``), or the name less its extension
    (our exported samples name images ``<key>.jpg``); failing that, by equal ``file_name``.
    The level of a reference is the annotation's ``"level"`` field when present, else
    ``LEVEL_WHOLE`` for a classic COCO file (COCO labels whole objects) and unknown (``None``)
    for a file whose only category is our export's ``"object"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"reference file not found: {self.path}")
        self._loaded = False

    def __getstate__(self) -> dict:
        return {"path": self.path, "_loaded": False}

    def _load(self) -> None:
        from engine.data.sources import key_from_path

        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"reference file {self.path} is not readable JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise ValueError(f"reference file {self.path} is not COCO JSON (no 'images' list)")
        names = {c.get("name") for c in data.get("categories", []) if isinstance(c, dict)}
        self.default_level = None if names == {EXPORT_CATEGORY} else LEVEL_WHOLE
        self._images: dict[int, dict] = {}
        self._by_key: dict[str, int] = {}
        self._by_name: dict[str, int] = {}
        for image in data["images"]:
            image_id, name = image["id"], str(image["file_name"])
            self._images[image_id] = image
            self._by_name.setdefault(name, image_id)
            self._by_key.setdefault(name.rsplit(".", 1)[0], image_id)  # <key>.jpg
            try:
                self._by_key.setdefault(key_from_path(name), image_id)
            except ValueError:
                pass
        self._annotations: dict[int, list[dict]] = {i: [] for i in self._images}
        for ann in data.get("annotations", []):
            if ann.get("image_id") in self._annotations:
                self._annotations[ann["image_id"]].append(ann)
        self._loaded = True

    @property
    def image_count(self) -> int:
        if not self._loaded:
            self._load()
        return len(self._images)

    def lookup(self, key: str, record: ImageRecord) -> list[ReferenceMask] | None:
        if not self._loaded:
            self._load()
        image_id = self._by_key.get(key, self._by_name.get(record.file_name))
        if image_id is None:
            return None
        image = self._images[image_id]
        h, w = int(image["height"]), int(image["width"])
        refs = []
        for ann in self._annotations[image_id]:
            if ann.get("iscrowd", 0):
                continue
            rle = resize_rle(
                _segmentation_rle(ann["segmentation"], h, w), record.height, record.width
            )
            level = ann.get("level", self.default_level)
            refs.append(ReferenceMask(rle=rle, level=level, object_id=ann.get("id")))
        return refs


class MappingReference:
    """References given directly: ``{key: [ReferenceMask, ...]}`` (tests, the pipeline)."""

    def __init__(self, references: Mapping[str, list[ReferenceMask]]) -> None:
        self.references = dict(references)

    def lookup(self, key: str, record: ImageRecord) -> list[ReferenceMask] | None:
        refs = self.references.get(key)
        if refs is None:
            return None
        return [r for r in refs if not r.iscrowd]


class SourceReference:
    """References from an ``engine.data`` source (synthetic levels, COCO, SA-1B tars), by key.

    The source's entries are listed once (lazily, in the process that looks up); ``load``
    decodes the entry's image too, so this costs one source decode per audited image.
    """

    def __init__(self, source: object) -> None:
        self.source = source
        self._entries: dict | None = None

    def __getstate__(self) -> dict:
        return {"source": self.source, "_entries": None}

    def lookup(self, key: str, record: ImageRecord) -> list[ReferenceMask] | None:
        from engine.data.decode import DecodeError

        if self._entries is None:
            self._entries = {e.key: e for e in self.source.entries() if e.error is None}
        entry = self._entries.get(key)
        if entry is None:
            return None
        try:
            item = self.source.load(entry)
        except DecodeError:
            return None
        return [
            ReferenceMask(
                rle=resize_rle(r.rle, record.height, record.width),
                level=r.level,
                object_id=r.object_id,
                parent_index=r.parent_index,
            )
            for r in item.references
            if not r.iscrowd
        ]


def open_reference(spec: str | Path | ReferenceSet | Mapping | None) -> ReferenceSet | None:
    """A reference set from a COCO JSON path, a ``{key: refs}`` mapping or a set (as is)."""
    if spec is None or isinstance(spec, ReferenceSet):
        return spec
    if isinstance(spec, Mapping):
        return MappingReference(spec)
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if path.suffix.lower() == ".json":
            return CocoReference(path)
        from engine.data.sources import open_source

        if path.is_dir() or path.suffix == ".tar":
            return SourceReference(open_source("webdataset", shards=str(path)))
        raise ValueError(f"reference must be a COCO .json file or SA-1B shards, got {spec!r}")
    raise TypeError(f"reference must be a path, a mapping or a ReferenceSet, got {spec!r}")
