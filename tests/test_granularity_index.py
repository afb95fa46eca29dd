"""The index's ``granularity`` and ``parent_id`` columns: written from provenance, null for a
recovered index, old files without them still read and validate, bad links are reported."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dataset_support import make_image, make_record

from engine.dataset import ShardWriter, read_mask_index
from engine.dataset.index import MASK_SCHEMA, index_file_paths, index_tables
from engine.dataset.validate import validate_paths
from engine.sa1b import Provenance

NEW_COLUMNS = ("granularity", "parent_id")


def _record(seed: int = 3):
    """Three masks: a whole (0), its part (1) and the part's subpart (2)."""
    record = make_record(seed, n_masks=3)
    for ann, (level, parent) in zip(
        record.annotations, [("whole", None), ("part", 0), ("subpart", 1)]
    ):
        ann.provenance.granularity, ann.provenance.parent_id = level, parent
    return record


def _write(root, records: list) -> tuple:
    shards, index = root / "shards", root / "index"
    with ShardWriter(shards, index, "stage1-r00", maxcount=10) as writer:
        for i, record in enumerate(records):
            writer.write(f"img_{i:04d}", make_image(i), record)
    return shards, index


def _edit_masks(index, edit) -> None:
    _, path = index_file_paths(index, "stage1-r00-000000.tar")
    pq.write_table(edit(pq.read_table(path)), path)


def test_rows_carry_granularity_and_parent_links():
    _, masks = index_tables("s-000000.tar", [("k", _record(), "ok")], "s", 0)
    assert masks.column("granularity").to_pylist() == ["whole", "part", "subpart"]
    assert masks.column("parent_id").to_pylist() == [None, 0, 1]
    _, recovered = index_tables(
        "s-000000.tar", [("k", _record(), "recovered")], "s", 0, provenance_known=False
    )
    for column in NEW_COLUMNS:
        assert recovered.column(column).to_pylist() == [None, None, None]


def test_provenance_refuses_unknown_levels_and_bad_parents():
    with pytest.raises(ValueError, match="granularity must be one of"):
        Provenance(granularity="object")
    with pytest.raises(TypeError, match="parent_id must be an int or None"):
        Provenance(parent_id="0")
    assert Provenance().granularity == "whole" and Provenance().parent_id is None


def test_written_index_round_trips_and_validates(tmp_path):
    shards, index = _write(tmp_path, [_record(3), _record(4)])
    table = read_mask_index(index)
    assert table.column("granularity").to_pylist() == ["whole", "part", "subpart"] * 2
    assert table.column("parent_id").to_pylist() == [None, 0, 1] * 2
    report = validate_paths([shards])
    assert report.ok, [str(p) for p in report.problems]


def test_old_index_without_the_columns_reads_and_validates(tmp_path):
    shards, index = _write(tmp_path, [_record(3)])
    _edit_masks(index, lambda t: t.drop_columns(list(NEW_COLUMNS)))
    _, path = index_file_paths(index, "stage1-r00-000000.tar")
    assert not set(NEW_COLUMNS) & set(pq.read_schema(path).names)
    for where in (index, index / "masks", path):
        table = read_mask_index(where)
        assert table.schema.equals(MASK_SCHEMA)
        assert table.column("granularity").to_pylist() == [None] * 3
        assert table.column("parent_id").to_pylist() == [None] * 3
        assert table.column("area").to_pylist() == [a.area for a in _record(3).annotations]
    report = validate_paths([shards])
    assert report.ok, [str(p) for p in report.problems]


def _set(column: str, values: list):
    def edit(table: pa.Table) -> pa.Table:
        i = table.schema.get_field_index(column)
        return table.set_column(
            i, table.schema.field(i), pa.array(values, table.schema.field(i).type)
        )

    return edit


@pytest.mark.parametrize(
    "column, values, field, message",
    [
        ("granularity", ["whole", "object", "subpart"], "index.masks[id 1].granularity", "not one"),
        ("parent_id", [None, 0, 7], "index.masks[id 2].parent_id", "no mask 7 in this image"),
        ("parent_id", [None, 1, 1], "index.masks[id 1].parent_id", "its own parent"),
        ("parent_id", [2, 0, 1], "index.masks[id 0].parent_id", "form a cycle"),
    ],
)
def test_validate_reports_bad_levels_and_links(tmp_path, column, values, field, message):
    shards, index = _write(tmp_path, [_record(3)])
    _edit_masks(index, _set(column, values))
    problems = validate_paths([shards]).problems
    assert problems, "the edit must be reported"
    assert {p.field for p in problems} >= {field}
    assert all(p.key == "img_0000" for p in problems)
    assert any(message in p.message for p in problems if p.field == field)
