"""COCO source: an images directory plus an instances JSON; annotations become reference masks.

Polygons, uncompressed RLE (``iscrowd`` regions) and compressed RLE are all turned into
compressed RLE with pycocotools, as ``COCO.annToRLE`` does (one polygon ring with fewer than
three points is skipped rather than read as a box). Every annotation becomes
``ReferenceMask(level=LEVEL_WHOLE, object_id=<annotation id>, iscrowd=...)``.

Problems in the JSON raise ``AnnotationError`` naming the file and the field; with
``on_error="skip"`` the affected image is quarantined instead (an annotation naming an image
that does not exist becomes an entry of its own, quarantined). A JSON file that does not parse
always raises.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator

import numpy as np
from pycocotools import mask as mask_utils

from engine.data import fs as fsutil
from engine.data.decode import (
    DecodeError,
    DecodeOptions,
    ReferenceSizeError,
    decode_image,
    fit_references,
)
from engine.data.sources import SourceEntry, key_from_path
from engine.masks import RLEError, rle_to_mask
from engine.records import LEVEL_WHOLE, ImageItem, ReferenceMask

ON_ERROR = ("raise", "skip")


class AnnotationError(ValueError):
    """A COCO JSON problem; the message names the file and the field."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class CocoSource:
    """Images of a COCO dataset with their instance masks.

    ``images_dir`` and ``annotations`` are local paths or URIs (or paths inside
    ``filesystem``). Entries follow the order of the JSON ``images`` list; keys come from
    ``file_name``; ``image_id`` is the COCO id.
    """

    def __init__(
        self,
        images_dir: str,
        annotations: str,
        on_error: str = "raise",
        filesystem: object | None = None,
        max_short_side: int | None = 1500,
        max_pixels: int = DecodeOptions.max_pixels,
        min_side: int = DecodeOptions.min_side,
        max_bytes: int = fsutil.DEFAULT_MAX_BYTES,
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.name = f"coco:{annotations}"
        self.on_error = on_error
        self.options = DecodeOptions(max_short_side, max_pixels, min_side)
        self.max_bytes = max_bytes
        self._fs, self._images_dir, self._prefix = fsutil.resolve(images_dir, filesystem)
        json_fs, json_path, _ = fsutil.resolve(annotations, filesystem)
        self._json = annotations
        try:
            raw = fsutil.read_bytes(json_fs, json_path, max_bytes)
        except DecodeError as exc:
            raise AnnotationError(f"{annotations}: {exc.reason}") from None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError too
            raise AnnotationError(f"{annotations}: not valid JSON: {exc}") from None
        # images: (image_id, file_name, height, width, error); annotations by image id.
        self._images: list[tuple[int, str, int, int, str | None]] = []
        self._anns: dict[int, list[tuple[int, object, bool]]] = {}
        self._orphans: list[tuple[int, str]] = []  # (annotation index, error)
        self._parse(data)

    # -- index ---------------------------------------------------------------------------

    def _fail(self, message: str) -> str:
        if self.on_error == "raise":
            raise AnnotationError(f"{self._json}: {message}")
        return message

    def _parse(self, data: object) -> None:
        if not isinstance(data, dict):
            raise AnnotationError(f"{self._json}: top level must be an object")
        for name in ("images", "annotations"):
            if not isinstance(data.get(name), list):
                raise AnnotationError(f"{self._json}: '{name}' must be a list")
        by_id: dict[int, int] = {}
        errors: dict[int, str] = {}
        for i, image in enumerate(data["images"]):
            where = f"images[{i}]"
            if not isinstance(image, dict):
                raise AnnotationError(f"{self._json}: {where} must be an object")
            for field, check in (("id", _is_int), ("file_name", _is_name)):
                if not check(image.get(field)):
                    raise AnnotationError(
                        f"{self._json}: {where}.{field} is missing or invalid: {image.get(field)!r}"
                    )
            image_id = image["id"]
            if image_id in by_id:
                raise AnnotationError(f"{self._json}: {where}.id {image_id} is a duplicate")
            height, width = image.get("height"), image.get("width")
            error = None
            if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
                error = self._fail(
                    f"{where}.height/width must be positive ints, got {height!r}/{width!r}"
                )
                height, width = 0, 0
            by_id[image_id] = len(self._images)
            self._images.append((image_id, image["file_name"], height, width, error))
            self._anns[image_id] = []
        for i, ann in enumerate(data["annotations"]):
            where = f"annotations[{i}]"
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            if image_id not in by_id:
                self._orphans.append(
                    (i, self._fail(f"{where}.image_id {image_id!r} names no image in 'images'"))
                )
                continue
            _, _, height, width, _ = self._images[by_id[image_id]]
            problem = _annotation_problem(ann, where, height, width)
            if problem is not None:
                errors.setdefault(image_id, self._fail(problem))
                continue
            iscrowd = bool(ann.get("iscrowd", 0))
            self._anns[image_id].append((ann["id"], ann["segmentation"], iscrowd))
        for image_id, error in errors.items():
            image_id, name, height, width, old = self._images[by_id[image_id]]
            self._images[by_id[image_id]] = (image_id, name, height, width, old or error)

    def _raise(self, message: str) -> None:
        if self.on_error == "raise":
            raise AnnotationError(f"{self._json}: {message}")
        raise DecodeError(message)

    # -- source interface ------------------------------------------------------------------

    def entries(self) -> Iterator[SourceEntry]:
        """One entry per image in JSON order, then one per orphan annotation."""
        for index, (image_id, name, _, _, error) in enumerate(self._images):
            yield SourceEntry(
                key=key_from_path(name),
                path=self._prefix + posixpath.join(self._images_dir, name),
                index=index,
                image_id=image_id,
                error=error,
            )
        for n, (ann_index, error) in enumerate(self._orphans):
            yield SourceEntry(
                key=f"coco-annotation-{ann_index}",
                path=f"{self._json}#annotations[{ann_index}]",
                index=len(self._images) + n,
                error=error,
            )

    def load(self, entry: SourceEntry) -> ImageItem:
        """Decode one image and its masks; raises ``DecodeError`` (``AnnotationError`` for a
        mask/image size mismatch when ``on_error="raise"``)."""
        if entry.error is not None:
            raise DecodeError(entry.error)
        position = entry.index
        image_id, name, height, width, _ = self._images[position]
        data = fsutil.read_bytes(self._fs, entry.path[len(self._prefix) :], self.max_bytes)
        decoded = decode_image(data, self.options)
        refs = [
            ReferenceMask(
                rle=_to_rle(segmentation, height, width),
                level=LEVEL_WHOLE,
                object_id=ann_id,
                iscrowd=iscrowd,
            )
            for ann_id, segmentation, iscrowd in self._anns[image_id]
        ]
        if (height, width) not in (decoded.stored_hw, decoded.oriented_hw):
            stored_h, stored_w = decoded.stored_hw
            message = (
                f"images[{position}] (id {image_id}, {name!r}).height/width {height}×{width} "
                f"disagree with the image file ({stored_h}×{stored_w})"
            )
            self._raise(message)
        try:
            for ref, (ann_id, segmentation, _) in zip(refs, self._anns[image_id]):
                if isinstance(segmentation, dict) and not isinstance(segmentation["counts"], list):
                    try:
                        rle_to_mask(ref.rle)  # compressed RLE from the file: check it decodes
                    except RLEError as exc:
                        raise ReferenceSizeError(
                            f"annotation id {ann_id}: segmentation.counts: {exc}"
                        ) from None
            refs = fit_references(refs, decoded)
        except ReferenceSizeError as exc:
            self._raise(f"image {image_id} ({name!r}): {exc.reason}")
        return ImageItem(
            key=entry.key,
            image=decoded.image,
            file_name=name,
            image_id=image_id,
            references=refs,
        )


def _is_name(value: object) -> bool:
    return isinstance(value, str) and bool(value) and ".." not in value.split("/")


def _annotation_problem(ann: object, where: str, height: int, width: int) -> str | None:
    """Why an annotation cannot be used, naming the field; ``None`` when it is fine."""
    if not isinstance(ann, dict):
        return f"{where} must be an object"
    if not _is_int(ann.get("id")):
        return f"{where}.id is missing or not an int: {ann.get('id')!r}"
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        for k, ring in enumerate(seg):
            if not isinstance(ring, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in ring
            ):
                return f"{where}.segmentation[{k}] must be a list of numbers"
            if len(ring) % 2:
                return f"{where}.segmentation[{k}] has an odd number of coordinates"
        return None
    if isinstance(seg, dict):
        size = seg.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(s) for s in size)):
            return f"{where}.segmentation.size must be [h, w], got {size!r}"
        if size != [height, width]:
            return f"{where}.segmentation.size {size} != image height/width [{height}, {width}]"
        counts = seg.get("counts")
        if isinstance(counts, list):
            if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != height * width:
                return f"{where}.segmentation.counts (uncompressed) must sum to h*w"
        elif not isinstance(counts, (str, bytes)):
            return f"{where}.segmentation.counts must be a string or a list of ints"
        return None
    return f"{where}.segmentation must be polygons (list) or RLE (dict), got {seg!r:.60}"


def _to_rle(segmentation: object, height: int, width: int) -> dict:
    """COCO segmentation (polygons / uncompressed RLE / compressed RLE) → compressed RLE."""
    if isinstance(segmentation, list):
        rings = [ring for ring in segmentation if len(ring) >= 6]
        if rings:
            rle = mask_utils.merge(mask_utils.frPyObjects(rings, height, width))
        else:  # no usable ring: an empty mask
            rle = mask_utils.encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0]
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": [height, width], "counts": segmentation["counts"]}
    counts = rle["counts"]
    return {
        "size": [height, width],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }
