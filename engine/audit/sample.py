"""The human audit loop: export a reproducible random sample for correction, then re-import it.

``export_sample(paths, n, seed, out_dir)`` picks ``n`` images by a stable hash of
``(seed, key)`` (the same sample whatever the shard order or split, see
``engine.audit.select``) and writes, under ``out_dir``::

    annotations.json     COCO instances JSON: images named <key>.jpg, one category "object",
                         masks as compressed RLE (+ predicted_iou, stability_score, the SA-1B
                         annotation id) — CVAT and Label Studio import it
    images/<key>.jpg     the images, byte for byte as stored in the shards
    overlays/<key>.png   the masks drawn over each image, for a quick look
    keys.txt             the sampled keys, one per line, sorted

The corrected file, exported back from the tool as COCO JSON, is the ``--reference`` of a
later audit (``engine.audit.reference.CocoReference`` finds images by the ``<key>`` stem):
its ``iou_above`` numbers are the paper's automatic-vs-corrected agreement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from engine.audit.gallery import overlay_png
from engine.audit.inputs import ReadCounts, iter_shard, resolve_inputs
from engine.audit.reference import EXPORT_CATEGORY
from engine.audit.select import Selection, random_priority
from engine.sa1b import ImageRecord


def sample_keys(paths: str | Path | Sequence[str | Path], n: int, seed: int = 0) -> list[str]:
    """The keys ``export_sample`` would pick (sorted), reading records only."""
    selection = Selection(n)
    counts = ReadCounts()
    for shard in resolve_inputs(_as_list(paths)).shards:
        for key, _, _ in iter_shard(shard.path, counts):
            selection.offer(random_priority(seed, key), key, None)
    return sorted(key for _, key, _ in selection.items())


def _as_list(paths: str | Path | Sequence[str | Path]) -> list:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


def coco_document(samples: list[tuple[str, ImageRecord]], seed: int) -> dict:
    """COCO instances JSON for ``(key, record)`` pairs sorted by key (ids count from 1)."""
    images, annotations = [], []
    for image_id, (key, record) in enumerate(samples, start=1):
        images.append(
            {
                "id": image_id,
                "file_name": f"{key}.jpg",
                "width": record.width,
                "height": record.height,
                "sa_engine_key": key,
                "sa_engine_image_id": record.image_id,
                "original_file_name": record.file_name,
            }
        )
        for ann in record.annotations:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": {
                        "size": list(ann.segmentation["size"]),
                        "counts": ann.segmentation["counts"],
                    },
                    "area": ann.area,
                    "bbox": list(ann.bbox),
                    "iscrowd": 0,
                    "predicted_iou": ann.predicted_iou,
                    "stability_score": ann.stability_score,
                    "sa_engine_annotation_id": ann.id,
                }
            )
    return {
        "info": {
            "description": "sa-engine audit sample for human correction",
            "seed": seed,
            "images": len(images),
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": EXPORT_CATEGORY, "supercategory": EXPORT_CATEGORY}],
    }


def export_sample(
    paths: str | Path | Sequence[str | Path],
    n: int,
    seed: int = 0,
    out_dir: str | Path | None = None,
    overlay_side: int = 1024,
    on_error: str = "skip",
) -> Path:
    """Write a random sample of ``n`` images (see module doc); returns ``annotations.json``.

    One streaming pass: a sampled image's JPEG goes to ``images/`` when it is picked and is
    deleted if a later image displaces it, so memory holds at most ``n`` records.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    paths = _as_list(paths)
    inputs = resolve_inputs(paths)
    out = Path(out_dir) if out_dir is not None else inputs.default_out / "sample"
    images_dir, overlays_dir = out / "images", out / "overlays"
    images_dir.mkdir(parents=True, exist_ok=True)
    overlays_dir.mkdir(parents=True, exist_ok=True)
    selection = Selection(n)
    counts = ReadCounts()
    for shard in inputs.shards:
        for key, record, jpeg in iter_shard(shard.path, counts, on_error):
            priority = random_priority(seed, key)
            if not selection.would_keep(priority, key):
                continue
            before = {k for _, k, _ in selection.items()}
            selection.offer(priority, key, record)
            image_path = images_dir / f"{key}.jpg"  # keys may hold "/": sub-folders
            image_path.parent.mkdir(parents=True, exist_ok=True)
            image_path.write_bytes(jpeg)
            for dropped in before - {k for _, k, _ in selection.items()}:
                (images_dir / f"{dropped}.jpg").unlink()
    chosen = sorted(((key, record) for _, key, record in selection.items()), key=lambda x: x[0])
    for key, record in chosen:
        jpeg = (images_dir / f"{key}.jpg").read_bytes()
        rles = [a.segmentation for a in record.annotations]
        overlay = overlays_dir / f"{key}.png"
        overlay.parent.mkdir(parents=True, exist_ok=True)
        overlay.write_bytes(overlay_png(jpeg, rles, max_side=overlay_side))
    document = coco_document(chosen, seed)
    path = out / "annotations.json"
    path.write_text(json.dumps(document, indent=1) + "\n")
    (out / "keys.txt").write_text("".join(f"{key}\n" for key, _ in chosen))
    return path
