"""``sa-engine validate``: each injected corruption is caught and named by shard/key/field."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dataset_support import make_record, write_dataset

from engine.dataset.index import index_file_paths
from engine.dataset.validate import main, validate_paths
from engine.masks import mask_to_rle
from stages import cli

SHARD0 = "stage1-r00-000000.tar"


@pytest.fixture
def run(tmp_path):
    """A run directory: ``shards/`` (3 shards: 2 + 2 + 1 samples) and ``index/``."""
    shards, index, data = write_dataset(tmp_path, n=5, maxcount=2)
    return shards, index, data


def _members(path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def _write_members(path, members) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _edit_json(path, key: str, edit) -> None:
    members = []
    for name, data in _members(path):
        if name == f"{key}.json":
            document = json.loads(data)
            edit(document)
            data = json.dumps(document).encode()
        members.append((name, data))
    _write_members(path, members)


def _fields(report) -> set[tuple[str, str | None, str]]:
    return {(p.shard.rsplit("/", 1)[-1], p.key, p.field) for p in report.problems}


def test_clean_run_passes(run, capsys):
    shards, index, _ = run
    report = validate_paths([shards])
    assert report.ok, [str(p) for p in report.problems]
    assert (report.shards, report.samples, report.masks, report.indexed_shards) == (3, 5, 6, 3)
    assert main([str(shards)]) == 0
    assert cli.main(["validate", str(shards / SHARD0), str(shards / "*-000002.tar")]) == 0
    out = capsys.readouterr().out
    assert "3 shards, 5 samples, 6 masks; index compared for 3 shards; OK" in out
    assert "2 shards, 3 samples" in out


@pytest.mark.parametrize("cut", ["inside_a_member", "at_a_member_boundary", "before_end_blocks"])
def test_truncated_tar(run, cut):
    shards, _, _ = run
    with tarfile.open(shards / SHARD0) as tar:
        members = tar.getmembers()
    ends = [m.offset_data + -(-m.size // 512) * 512 for m in members]
    size = {
        "inside_a_member": members[2].offset_data + 100,
        "at_a_member_boundary": ends[2],
        "before_end_blocks": ends[-1],
    }[cut]
    raw = (shards / SHARD0).read_bytes()
    (shards / SHARD0).write_bytes(raw[:size])
    report = validate_paths([shards])
    assert (SHARD0, None, "tar") in _fields(report)


def test_json_without_masks(run):
    shards, _, _ = run
    _edit_json(shards / SHARD0, "img_0001", lambda d: d.pop("annotations"))
    fields = _fields(validate_paths([shards]))
    assert (SHARD0, "img_0001", "annotations") in fields


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d["image"].pop("width"), "image.width"),
        (lambda d: d["annotations"][0].pop("bbox"), "annotations[0].bbox"),
        (lambda d: d["annotations"][0].update(area="12"), "annotations[0].area"),
        (lambda d: d["annotations"][0].update(area=1), "annotations[0].area"),
        (lambda d: d.update(image=[]), "image"),
    ],
)
def test_json_with_missing_or_wrong_fields(run, edit, field):
    shards, _, _ = run
    _edit_json(shards / SHARD0, "img_0001", edit)
    assert (SHARD0, "img_0001", field) in _fields(validate_paths([shards]))


def test_json_that_is_not_json(run):
    shards, _, _ = run
    members = [(n, b"{oops" if n == "img_0000.json" else d) for n, d in _members(shards / SHARD0)]
    _write_members(shards / SHARD0, members)
    assert (SHARD0, "img_0000", "json") in _fields(validate_paths([shards]))


def test_rle_of_wrong_size(run):
    shards, _, _ = run
    import numpy as np

    small = np.zeros((16, 48), dtype=bool)
    small[2:5, 3:9] = True

    def edit(document):
        document["annotations"][0]["segmentation"] = mask_to_rle(small)

    _edit_json(shards / SHARD0, "img_0001", edit)
    problems = validate_paths([shards]).problems
    [problem] = [p for p in problems if p.key == "img_0001"]
    assert problem.field == "annotations[0].segmentation.size"
    assert "[16, 48]" in problem.message


def test_record_size_disagreeing_with_the_jpeg(run):
    """The record and its RLEs agree with each other (16×48) but not with the 32×48 JPEG."""
    shards, _, _ = run
    other = make_record(1, n_masks=1, h=16).to_json()
    other["image"]["image_id"] = 1
    _edit_json(shards / SHARD0, "img_0001", lambda d: d.update(other))
    fields = _fields(validate_paths([shards]))
    assert (SHARD0, "img_0001", "image.height/width") in fields
    assert (SHARD0, "img_0001", "annotations[0].segmentation.size") in fields


def test_duplicate_ids_within_an_image(run):
    shards, _, _ = run
    _edit_json(shards / SHARD0, "img_0001", lambda d: d["annotations"][0].update(id=7))
    _edit_json(shards / SHARD0, "img_0001", lambda d: d["annotations"].append(d["annotations"][0]))
    problems = [p for p in validate_paths([shards]).problems if p.key == "img_0001"]
    assert any(p.field == "annotations[1]" and "duplicate id 7" in p.message for p in problems)


def test_duplicate_key_across_shards(tmp_path):
    write_dataset(tmp_path, n=3, prefix="stage1-r00")
    write_dataset(tmp_path, n=2, prefix="stage1-r01")  # same keys img_0000, img_0001 again
    report = validate_paths([tmp_path / "shards"])
    duplicates = [p for p in report.problems if p.field == "key"]
    assert sorted(p.key for p in duplicates) == ["img_0000", "img_0001"]
    assert all(p.shard.endswith("stage1-r01-000000.tar") for p in duplicates)
    assert all("stage1-r00-000000.tar" in p.message for p in duplicates)


def test_missing_jpg(run):
    shards, _, _ = run
    members = [(n, d) for n, d in _members(shards / SHARD0) if n != "img_0001.jpg"]
    _write_members(shards / SHARD0, members)
    assert (SHARD0, "img_0001", ".jpg") in _fields(validate_paths([shards]))


def test_unexpected_and_unsafe_members(run):
    shards, _, _ = run
    members = _members(shards / SHARD0)
    _write_members(shards / SHARD0, [*members, ("img_0001.txt", b"x"), ("../up.json", b"{}")])
    fields = _fields(validate_paths([shards]))
    assert (SHARD0, "img_0001", ".txt") in fields
    assert (SHARD0, "../up.json", "member") in fields


def test_undecodable_jpeg(run):
    shards, _, _ = run
    members = [
        (n, b"\xff\xd8junk" if n == "img_0000.jpg" else d) for n, d in _members(shards / SHARD0)
    ]
    _write_members(shards / SHARD0, members)
    assert (SHARD0, "img_0000", ".jpg") in _fields(validate_paths([shards]))


def _edit_index(index, shard: str, kind: str, edit) -> None:
    path = index_file_paths(index, shard)[0 if kind == "images" else 1]
    pq.write_table(edit(pq.read_table(path)), path)


def test_index_mask_row_disagreeing(run):
    shards, index, _ = run

    def bump_area(table: pa.Table) -> pa.Table:
        i = table.schema.get_field_index("area")
        return table.set_column(i, "area", pc.add(table.column("area"), 1))

    _edit_index(index, SHARD0, "masks", bump_area)
    problems = validate_paths([shards]).problems
    assert {(p.key, p.field) for p in problems} == {("img_0001", "index.masks[id 0].area")}
    assert "index has" in problems[0].message


def test_index_image_row_missing_or_wrong(run):
    shards, index, _ = run
    _edit_index(index, SHARD0, "images", lambda t: t.slice(0, 1))
    _edit_index(
        index,
        "stage1-r00-000001.tar",
        "images",
        lambda t: t.set_column(4, "width", pa.array([48, 47], pa.int32())),
    )
    fields = _fields(validate_paths([shards]))
    assert (SHARD0, "img_0001", "index.images") in fields
    assert ("stage1-r00-000001.tar", "img_0003", "index.images.width") in fields


def test_index_rows_for_a_key_not_in_the_shard(run):
    shards, index, _ = run
    other = index_file_paths(index, "stage1-r00-000001.tar")[1]
    _edit_index(index, SHARD0, "masks", lambda t: pa.concat_tables([t, pq.read_table(other)]))
    problems = validate_paths([shards]).problems
    assert problems and all(p.field.startswith("index.masks") for p in problems)
    assert {p.key for p in problems} == {"img_0002", "img_0003"}


def test_missing_and_orphan_index_files(run):
    shards, index, _ = run
    index_file_paths(index, SHARD0)[1].unlink()
    (shards / "stage1-r00-000002.tar").unlink()  # its index files stay behind
    fields = _fields(validate_paths([shards]))
    assert (SHARD0, None, "index.masks") in fields
    assert ("images-stage1-r00-000002.parquet", None, "index") in fields
    assert ("masks-stage1-r00-000002.parquet", None, "index") in fields


def test_index_options(run, tmp_path):
    shards, index, _ = run
    moved = tmp_path / "elsewhere"
    index.rename(moved)
    assert validate_paths([shards]).indexed_shards == 0  # nothing beside: not compared
    assert validate_paths([shards], index_dir=moved).indexed_shards == 3
    index_file_paths(moved, SHARD0)[0].unlink()
    assert main([str(shards), "--index", str(moved)]) == 1
    assert main([str(shards), "--index", str(moved), "--no-index"]) == 0


def test_decode_images_option(run):
    shards, _, _ = run
    members = _members(shards / SHARD0)
    jpg = dict(members)["img_0000.jpg"]
    cut = [(n, jpg[:-50] if n == "img_0000.jpg" else d) for n, d in members]
    _write_members(shards / SHARD0, cut)
    assert validate_paths([shards]).ok  # the header alone still reads
    report = validate_paths([shards], decode_images=True)
    assert _fields(report) == {(SHARD0, "img_0000", ".jpg")}


def test_cli_prints_each_problem_and_fails(run, tmp_path, capsys):
    shards, _, _ = run
    members = [(n, d) for n, d in _members(shards / SHARD0) if n != "img_0000.json"]
    _write_members(shards / SHARD0, members)
    assert cli.main(["validate", str(shards), str(tmp_path / "missing")]) == 1
    out = capsys.readouterr().out
    assert f"{shards / SHARD0}: img_0000: .json: missing" in out
    assert f"{tmp_path / 'missing'}: -: path:" in out
    assert "problem(s)" in out.splitlines()[-1]


def test_official_tars_without_index(tmp_path):
    shards, index, _ = write_dataset(tmp_path, n=2)
    official = tmp_path / "official"
    official.mkdir()
    renamed = [(n.replace("img_", "sa_"), d) for n, d in _members(shards / "stage1-r00-000000.tar")]
    _write_members(official / "sa_000000.tar", renamed)
    report = validate_paths([official])
    assert report.ok and report.samples == 2 and report.indexed_shards == 0
