"""A run's dataset (or one stage / round of it) as one COCO instances JSON, for CVAT or Label
Studio, that ``stages.annotator=coco`` (``engine.annotators.coco_import``) reads back.

``export_coco(run_dir, out)`` streams ``<run>/shards/*.tar`` and their Parquet index files
(``<run>/index``) once and writes::

    images       {"id", "file_name", "width", "height", "sa_engine_key", "sa_engine_image_id"}
    annotations  {"id", "image_id", "category_id": 1, "segmentation", "bbox" (XYWH), "area",
                  "iscrowd": 0, "predicted_iou", "stability_score", "stage", "round",
                  "source", "sa_engine_annotation_id"}
    categories   [{"id": 1, "name": "object"}]

``file_name`` is the record's own (the source image's name): the importer finds an image by
its base name, so a corrected file re-imports into a new run over the same source. Width,
height and masks are the shard's (the SA-1B-resized image); ``images_dir`` writes those very
images under those names, which is what a labelling tool must be given. ``segmentation`` is
compressed RLE (``counts`` a str) or polygons (``engine.dataset.coco_polygons``: holes are
filled). Images are selected by their index row's ``stage`` (a name, e.g. ``"semi_automatic"``)
and ``round``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow.parquet as pq
from PIL import Image

from engine import masks as mask_ops
from engine.dataset.atomic import write_bytes_atomic
from engine.dataset.coco_polygons import mask_to_polygons
from engine.dataset.index import index_file_paths
from engine.dataset.reader import (
    MemberProblem,
    decode_image,
    decode_sample,
    expand_shard_paths,
    iter_raw_samples,
)
from engine.sa1b import ImageRecord, MaskRecord

CATEGORY = "object"
SEGMENTATIONS = ("rle", "polygon")
JPEG_SUFFIXES = (".jpg", ".jpeg")


@dataclass
class ExportSummary:
    """What ``export_coco`` wrote: counts, and masks whose holes polygons could not keep."""

    path: Path
    images: int = 0
    annotations: int = 0
    holes_filled: int = 0


def annotation_json(
    ann: MaskRecord,
    ann_id: int,
    image_id: int,
    provenance: dict,
    segmentation: str = "rle",
) -> tuple[dict, bool]:
    """``(COCO annotation, holes_filled)`` of one SA-1B mask; ``provenance`` holds the index
    row's ``stage``, ``round`` and ``source``."""
    holes = False
    if segmentation == "rle":
        seg: object = {"size": list(ann.segmentation["size"]), "counts": ann.segmentation["counts"]}
    elif segmentation == "polygon":
        seg, holes = mask_to_polygons(mask_ops.rle_to_mask(ann.segmentation))
    else:
        raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "segmentation": seg,
        "bbox": [float(v) for v in ann.bbox],
        "area": int(ann.area),
        "iscrowd": 0,
        "predicted_iou": float(ann.predicted_iou),
        "stability_score": float(ann.stability_score),
        "stage": provenance["stage"],
        "round": int(provenance["round"]),
        "source": provenance["source"],
        "sa_engine_annotation_id": int(ann.id),
    }, holes


def image_json(key: str, record: ImageRecord, image_id: int) -> dict:
    """The COCO ``images`` entry of one shard sample (``file_name`` is the record's)."""
    return {
        "id": image_id,
        "file_name": record.file_name,
        "width": int(record.width),
        "height": int(record.height),
        "sa_engine_key": key,
        "sa_engine_image_id": int(record.image_id),
    }


def safe_relative_name(file_name: str) -> PurePosixPath:
    """``file_name`` as a relative path that stays inside a folder; ``ValueError`` otherwise."""
    path = PurePosixPath(file_name)
    if not file_name or "\\" in file_name or "\x00" in file_name or path.is_absolute():
        raise ValueError(f"image file name {file_name!r} cannot be written under a folder")
    if any(part in ("", ".", "..") for part in file_name.split("/")):
        raise ValueError(f"image file name {file_name!r} holds an empty, '.' or '..' part")
    return path


def image_file_bytes(jpeg: bytes, file_name: str) -> bytes:
    """The shard's JPEG as a file named ``file_name``: as stored for ``.jpg``/``.jpeg``,
    re-encoded (losslessly from the decoded pixels) in the format the suffix names, else."""
    suffix = PurePosixPath(file_name).suffix.lower()
    if suffix in JPEG_SUFFIXES:
        return jpeg
    formats = Image.registered_extensions()
    if suffix not in formats:
        return jpeg
    buffer = io.BytesIO()
    Image.fromarray(decode_image(jpeg)).save(buffer, format=formats[suffix])
    return buffer.getvalue()


def _index_rows(index_dir: Path, shard: Path) -> tuple[dict, dict]:
    """``({key: (stage, round)}, {(key, annotation_id): provenance})`` of one shard."""
    images_path, masks_path = index_file_paths(index_dir, shard.name)
    for path in (images_path, masks_path):
        if not path.is_file():
            raise ValueError(f"{shard}: index file {path} is missing (sa-engine validate)")
    images = pq.read_table(images_path, columns=["key", "stage", "round"]).to_pylist()
    masks = pq.read_table(
        masks_path, columns=["key", "annotation_id", "stage", "round", "source"]
    ).to_pylist()
    by_key = {row["key"]: (row["stage"], row["round"]) for row in images}
    by_mask = {(row["key"], row["annotation_id"]): row for row in masks}
    return by_key, by_mask


def export_coco(
    run_dir: str | Path,
    out: str | Path,
    stage: str | None = None,
    round: int | None = None,
    segmentation: str = "rle",
    images_dir: str | Path | None = None,
) -> ExportSummary:
    """Write the COCO JSON of a run's images (those of ``stage``/``round`` when given) to
    ``out`` (atomically) and, with ``images_dir``, the images under their ``file_name``.

    Raises ``ValueError`` when the run has no shards or index, nothing matches the selection,
    two images share a base name (the importer could not tell them apart) or a file name
    would leave ``images_dir``; ``DatasetReadError`` on a damaged shard.
    """
    if segmentation not in SEGMENTATIONS:
        raise ValueError(f"segmentation must be one of {SEGMENTATIONS}, got {segmentation!r}")
    run_dir = Path(run_dir)
    shards_dir, index_dir = run_dir / "shards", run_dir / "index"
    if not shards_dir.is_dir() or not index_dir.is_dir():
        raise ValueError(f"{run_dir} is not a run directory (needs shards/ and index/)")
    summary = ExportSummary(Path(out))
    images: list[dict] = []
    annotations: list[dict] = []
    base_names: dict[str, str] = {}
    for shard in expand_shard_paths(shards_dir):
        by_key, by_mask = _index_rows(index_dir, shard)
        wanted = {
            key
            for key, (s, r) in by_key.items()
            if (stage is None or s == stage) and (round is None or r == round)
        }
        if not wanted:
            continue
        for raw in iter_raw_samples(shard):
            if isinstance(raw, MemberProblem):
                raise ValueError(f"{raw.shard}: {raw.name!r}: {raw.reason}")
            if raw.key not in wanted:
                continue
            key, _, record = decode_sample(raw, decode_images=False)
            name = PurePosixPath(record.file_name).name
            if name in base_names:
                raise ValueError(
                    f"images {base_names[name]!r} and {key!r} share the file name {name!r}: "
                    "a re-import could not tell them apart"
                )
            base_names[name] = key
            image_id = len(images) + 1
            images.append(image_json(key, record, image_id))
            for ann in record.annotations:
                row = by_mask.get((key, ann.id))
                if row is None:
                    raise ValueError(f"{shard}: {key}: mask {ann.id} has no index row")
                entry, holes = annotation_json(
                    ann, len(annotations) + 1, image_id, row, segmentation
                )
                annotations.append(entry)
                summary.holes_filled += holes
            if images_dir is not None:
                target = Path(images_dir) / safe_relative_name(record.file_name)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(image_file_bytes(raw.files["jpg"], record.file_name))
    if not images:
        wanted_text = f"stage={stage!r} round={round!r}" if stage or round is not None else "any"
        raise ValueError(f"{run_dir}: no image in the shards matches ({wanted_text})")
    document = {
        "info": {"description": f"sa-engine run {run_dir.name}", "stage": stage, "round": round},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": CATEGORY, "supercategory": CATEGORY}],
    }
    summary.path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(summary.path, (json.dumps(document) + "\n").encode())
    summary.images, summary.annotations = len(images), len(annotations)
    return summary
