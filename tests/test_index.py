"""The Parquet index: fixed schemas, one row per mask / image; pyarrow, pandas, DuckDB read it."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from dataset_support import make_image, make_record, write_dataset

from engine.dataset import (
    IMAGE_SCHEMA,
    MASK_SCHEMA,
    ShardWriter,
    read_image_index,
    read_mask_index,
)
from engine.dataset.index import index_file_paths, index_tables, shard_of_index_file
from engine.records import LEVEL_PART
from engine.sa1b import Provenance

MASK_COLUMNS = [
    "key",
    "shard",
    "stage",
    "round",
    "annotation_id",
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "area",
    "predicted_iou",
    "stability_score",
    "source",
    "clicks",
    "seconds",
    "model_iou",
    "hand_fixed",
    "level",
    "granularity",
    "parent_id",
]
IMAGE_COLUMNS = [
    "key",
    "shard",
    "image_id",
    "file_name",
    "width",
    "height",
    "masks",
    "status",
    "stage",
    "round",
    "blurred_boxes",
]


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path, n=6, maxcount=4, stage="stage2", round=3)


def test_layout_one_file_per_shard_and_kind(dataset):
    shards, index, _ = dataset
    stems = [p.name.removesuffix(".tar") for p in sorted(shards.iterdir())]
    assert stems == ["stage1-r00-000000", "stage1-r00-000001"]
    assert sorted(p.name for p in (index / "masks").iterdir()) == [
        f"masks-{s}.parquet" for s in stems
    ]
    assert sorted(p.name for p in (index / "images").iterdir()) == [
        f"images-{s}.parquet" for s in stems
    ]
    for stem in stems:
        images, masks = index_file_paths(index, f"{stem}.tar")
        assert pq.read_schema(images).equals(IMAGE_SCHEMA)
        assert pq.read_schema(masks).equals(MASK_SCHEMA)
        assert shard_of_index_file(images) == shard_of_index_file(masks) == f"{stem}.tar"


def test_schemas_are_the_documented_columns():
    assert MASK_SCHEMA.names == MASK_COLUMNS
    assert IMAGE_SCHEMA.names == IMAGE_COLUMNS


def test_mask_rows_carry_record_and_provenance(dataset):
    _, index, data = dataset
    rows = read_mask_index(index).to_pylist()
    expected = [
        (key, ann)
        for key, _, record in data
        for ann in record.annotations  # samples hold 0..3 masks each
    ]
    assert len(rows) == len(expected) == sum(i % 4 for i in range(6))
    for row, (key, ann) in zip(rows, expected):
        prov = ann.provenance
        assert row["key"] == key
        assert row["shard"] == (
            "stage1-r00-000000.tar" if key < "img_0004" else "stage1-r00-000001.tar"
        )
        assert (row["stage"], row["round"]) == ("stage2", 3)  # the writer's: provenance has none
        assert row["annotation_id"] == ann.id
        assert [row["bbox_x"], row["bbox_y"], row["bbox_w"], row["bbox_h"]] == ann.bbox
        assert row["area"] == ann.area
        assert row["predicted_iou"] == ann.predicted_iou
        assert row["stability_score"] == ann.stability_score
        assert row["source"] == prov.source
        assert row["clicks"] == prov.clicks and row["seconds"] == prov.seconds
        assert row["model_iou"] == prov.model_iou and row["hand_fixed"] == prov.hand_fixed
        assert row["level"] == prov.level
    assert {r["level"] for r in rows} == {None, LEVEL_PART}
    assert {r["source"] for r in rows} == {"model", "simulated", "annotator"}


def test_image_rows(dataset):
    _, index, data = dataset
    rows = read_image_index(index).to_pylist()
    assert [r["key"] for r in rows] == [k for k, _, _ in data]
    for row, (_, _, record) in zip(rows, data):
        assert row["image_id"] == record.image_id
        assert row["file_name"] == record.file_name
        assert (row["width"], row["height"]) == (record.width, record.height)
        assert row["masks"] == len(record.annotations)
        assert (row["status"], row["stage"], row["round"]) == ("ok", "stage2", 3)
        assert row["blurred_boxes"] is None  # written without a privacy filter


def test_mask_provenance_stage_wins_over_the_shard_stage():
    record = make_record(1, n_masks=2)
    record.annotations[0].provenance = Provenance(stage="stage1", round=4, source="annotator")
    _, masks = index_tables("s-000000.tar", [("k", record, "ok")], stage="stage2", round=0)
    assert masks.column("stage").to_pylist() == ["stage1", "stage2"]
    assert masks.column("round").to_pylist() == [4, 0]


@pytest.mark.parametrize("kind", ["dir", "subdir", "file"])
def test_read_helpers_accept_dir_subdir_or_file(dataset, kind):
    _, index, _ = dataset
    images_file, masks_file = index_file_paths(index, "stage1-r00-000001.tar")
    where = {"dir": (index, index), "subdir": (index / "images", index / "masks")}
    images_at, masks_at = where.get(kind, (images_file, masks_file))
    images, masks = read_image_index(images_at), read_mask_index(masks_at)
    assert images.schema.equals(IMAGE_SCHEMA) and masks.schema.equals(MASK_SCHEMA)
    assert images.num_rows == (6 if kind != "file" else 2)
    assert masks.num_rows == (7 if kind != "file" else 1)  # 0+1+2+3+0+1 masks; 0+1 in shard 1


def test_read_helpers_ignore_temporary_files_and_handle_empty(tmp_path):
    with ShardWriter(tmp_path / "s", tmp_path / "i", "p"):
        pass
    (tmp_path / "i" / "masks" / ".masks-p-000000.parquet.tmp").write_bytes(b"partial")
    assert read_mask_index(tmp_path / "i").num_rows == 0
    assert read_image_index(tmp_path / "i").schema.equals(IMAGE_SCHEMA)
    with pytest.raises(ValueError, match="no masks index"):
        read_mask_index(tmp_path / "nowhere")


def test_pyarrow_dataset_reads_each_kind_as_one_table(dataset):
    _, index, _ = dataset
    masks = pads.dataset(index / "masks", format="parquet").to_table()
    images = pads.dataset(index / "images", format="parquet").to_table()
    assert masks.num_rows == 7 and images.num_rows == 6
    assert masks.schema.names == MASK_COLUMNS


def test_pandas_reads_the_index(dataset):
    _, index, data = dataset
    masks = pd.read_parquet(index / "masks")
    per_source = masks.groupby("source")["annotation_id"].count().to_dict()
    sources = [a.provenance.source for _, _, r in data for a in r.annotations]
    assert per_source == {s: sources.count(s) for s in set(sources)}
    assert per_source == {"model": 4, "simulated": 2, "annotator": 1}
    images = pd.read_parquet(index / "images")
    assert images["masks"].sum() == len(masks)


def test_duckdb_queries_the_index(dataset):
    _, index, data = dataset
    glob = str(index / "masks" / "*.parquet")
    rows = duckdb.sql(
        f"SELECT key, count(*) AS n, sum(area) AS area FROM read_parquet('{glob}') "
        "GROUP BY key ORDER BY key"
    ).fetchall()
    expected = [
        (key, len(r.annotations), sum(a.area for a in r.annotations))
        for key, _, r in data
        if r.annotations
    ]
    assert rows == expected


def test_recovered_rows_have_null_provenance():
    record = make_record(2, n_masks=2)
    images, masks = index_tables(
        "s-000000.tar", [("k", record, "recovered")], "s", 1, provenance_known=False
    )
    assert images.column("status").to_pylist() == ["recovered"]
    for column in (
        "source", "clicks", "seconds", "model_iou", "hand_fixed", "level", "granularity",
        "parent_id",
    ):  # fmt: skip
        assert masks.column(column).to_pylist() == [None, None]
    assert masks.column("area").to_pylist() == [a.area for a in record.annotations]
    assert make_image(2).shape[:2] == (record.height, record.width)
