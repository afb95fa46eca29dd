"""The Parquet index of a dataset: one row per mask and one row per image, one file per shard.

Layout (``docs/dataset.md``)::

    index/masks/masks-{shard stem}.parquet     one row per mask   (MASK_SCHEMA)
    index/images/images-{shard stem}.parquet   one row per image  (IMAGE_SCHEMA)

Each kind reads as one table with ``pyarrow.dataset.dataset(index / "masks")``, pandas
(``pd.read_parquet(index / "masks")``) or DuckDB (``read_parquet('index/masks/*.parquet')``).
Provenance columns are null where it is unknown (an index rebuilt from a shard's JSON).
Files written before a column existed (``granularity``, ``parent_id``) read with that column
null: the readers pass ``MASK_SCHEMA``, which fills missing columns.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from engine.sa1b import ImageRecord

MASKS_DIR = "masks"
IMAGES_DIR = "images"

STATUS_OK = "ok"  # written by the writer with full provenance
STATUS_RECOVERED = "recovered"  # index rebuilt from the shard: provenance columns are null

MASK_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),
        pa.field("annotation_id", pa.int64(), nullable=False),
        pa.field("bbox_x", pa.float64(), nullable=False),
        pa.field("bbox_y", pa.float64(), nullable=False),
        pa.field("bbox_w", pa.float64(), nullable=False),
        pa.field("bbox_h", pa.float64(), nullable=False),
        pa.field("area", pa.int64(), nullable=False),
        pa.field("predicted_iou", pa.float64(), nullable=False),
        pa.field("stability_score", pa.float64(), nullable=False),
        pa.field("source", pa.string()),  # model | annotator | simulated
        pa.field("clicks", pa.int32()),
        pa.field("seconds", pa.float64()),
        pa.field("model_iou", pa.float64()),
        pa.field("hand_fixed", pa.bool_()),
        pa.field("level", pa.int8()),  # engine.records.LEVEL_*; null when unknown
        pa.field("granularity", pa.string()),  # whole | part | subpart; null when unknown
        pa.field("parent_id", pa.int64()),  # annotation_id of the enclosing mask, same key
    ]
)

IMAGE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("file_name", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("masks", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),
        pa.field("blurred_boxes", pa.int32()),  # privacy filter's boxes; null: not run
    ]
)


def index_file_paths(index_dir: str | Path, shard_name: str) -> tuple[Path, Path]:
    """``(images_path, masks_path)`` of the index files of shard ``shard_name`` (``x.tar``)."""
    stem = Path(shard_name).name.removesuffix(".tar")
    index_dir = Path(index_dir)
    return (
        index_dir / IMAGES_DIR / f"{IMAGES_DIR}-{stem}.parquet",
        index_dir / MASKS_DIR / f"{MASKS_DIR}-{stem}.parquet",
    )


def shard_of_index_file(path: str | Path) -> str:
    """The shard name (``x.tar``) an index file ``images-x.parquet``/``masks-x.parquet`` covers."""
    name = Path(path).name.removesuffix(".parquet")
    for kind in (IMAGES_DIR, MASKS_DIR):
        if name.startswith(kind + "-"):
            return name[len(kind) + 1 :] + ".tar"
    raise ValueError(f"not an index file name: {path}")


def index_tables(
    shard_name: str,
    entries: list[tuple[str, ImageRecord, str]],
    stage: str,
    round: int,
    provenance_known: bool = True,
    blurred_boxes: list[int | None] | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Build ``(images_table, masks_table)`` for one shard.

    ``entries`` are ``(key, record, status)`` in shard order. Mask rows take ``stage``/``round``
    from the mask's ``Provenance`` when it names a stage, else the shard's. With
    ``provenance_known=False`` (an index rebuilt from shard JSON) the provenance columns are
    null. ``blurred_boxes`` (one per entry) counts the regions the privacy filter blurred in
    each image (``None``: the filter did not run); omitted = all ``None``.
    """
    if blurred_boxes is None:
        blurred_boxes = [None] * len(entries)
    if len(blurred_boxes) != len(entries):
        raise ValueError(f"{len(blurred_boxes)} blurred_boxes for {len(entries)} entries")
    images: dict[str, list] = {f.name: [] for f in IMAGE_SCHEMA}
    masks: dict[str, list] = {f.name: [] for f in MASK_SCHEMA}
    for (key, record, status), blurred in zip(entries, blurred_boxes):
        images["key"].append(key)
        images["shard"].append(shard_name)
        images["image_id"].append(int(record.image_id))
        images["file_name"].append(record.file_name)
        images["width"].append(int(record.width))
        images["height"].append(int(record.height))
        images["masks"].append(len(record.annotations))
        images["status"].append(status)
        images["stage"].append(stage)
        images["round"].append(int(round))
        images["blurred_boxes"].append(None if blurred is None else int(blurred))
        for ann in record.annotations:
            prov = ann.provenance
            own_stage = provenance_known and prov.stage != ""
            masks["key"].append(key)
            masks["shard"].append(shard_name)
            masks["stage"].append(prov.stage if own_stage else stage)
            masks["round"].append(int(prov.round if own_stage else round))
            masks["annotation_id"].append(int(ann.id))
            for name, value in zip(("bbox_x", "bbox_y", "bbox_w", "bbox_h"), ann.bbox):
                masks[name].append(float(value))
            masks["area"].append(int(ann.area))
            masks["predicted_iou"].append(float(ann.predicted_iou))
            masks["stability_score"].append(float(ann.stability_score))
            known = provenance_known
            masks["source"].append(prov.source if known else None)
            masks["clicks"].append(int(prov.clicks) if known else None)
            masks["seconds"].append(float(prov.seconds) if known else None)
            model_iou = prov.model_iou if known else None
            masks["model_iou"].append(None if model_iou is None else float(model_iou))
            masks["hand_fixed"].append(bool(prov.hand_fixed) if known else None)
            level = prov.level if known else None
            masks["level"].append(None if level is None else int(level))
            masks["granularity"].append(prov.granularity if known else None)
            parent = prov.parent_id if known else None
            masks["parent_id"].append(None if parent is None else int(parent))
    return (
        pa.Table.from_pydict(images, schema=IMAGE_SCHEMA),
        pa.Table.from_pydict(masks, schema=MASK_SCHEMA),
    )


def table_to_parquet_bytes(table: pa.Table) -> bytes:
    """Serialise a table as one Parquet file (deterministic for equal tables)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _read(path: str | Path, kind: str, schema: pa.Schema) -> pa.Table:
    path = Path(path)
    if path.is_file():
        return pq.read_table(path, schema=schema)
    if (path / kind).is_dir():
        path = path / kind
    if not path.is_dir():
        raise ValueError(f"no {kind} index at {path}: give an index dir, its {kind}/ or a file")
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        return schema.empty_table()
    return pads.dataset([str(p) for p in files], format="parquet", schema=schema).to_table()


def read_mask_index(path: str | Path) -> pa.Table:
    """All mask rows under ``path`` (an index dir, its ``masks/`` dir or one file), MASK_SCHEMA.

    Rows come in file-name order (shard order), then shard order within a file.
    """
    return _read(path, MASKS_DIR, MASK_SCHEMA)


def read_image_index(path: str | Path) -> pa.Table:
    """All image rows under ``path`` (an index dir, its ``images/`` dir or one file)."""
    return _read(path, IMAGES_DIR, IMAGE_SCHEMA)
