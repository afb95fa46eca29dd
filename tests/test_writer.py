"""ShardWriter: round trips, rollover, determinism, readability by webdataset and tarfile."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import webdataset as wds
from dataset_support import H, W, make_image, make_record, samples, write_dataset
from PIL import Image

from engine.dataset import (
    ShardReader,
    ShardWriter,
    read_image_index,
    read_mask_index,
    written_keys,
)
from engine.dataset.writer import encode_jpeg, shard_name
from engine.sa1b import ImageRecord


def _jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(encode_jpeg(image, quality))).convert("RGB"))


def test_round_trip_records_and_images(tmp_path):
    shards, _, data = write_dataset(tmp_path, n=5, maxcount=2)
    read = list(ShardReader(shards))
    assert [k for k, _, _ in read] == [k for k, _, _ in data]
    for (_, image, record), (_, original, expected) in zip(read, data):
        assert record.to_json() == expected.to_json()
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, _jpeg_roundtrip(original, 90))
        assert np.abs(image.astype(int) - original).mean() < 3.0


@pytest.mark.parametrize("quality", [50, 95])
def test_jpeg_quality_is_used(tmp_path, quality):
    shards, _, data = write_dataset(tmp_path, n=1, jpeg_quality=quality)
    with tarfile.open(shards / shard_name("stage1-r00", 0)) as tar:
        jpg = tar.extractfile("img_0000.jpg").read()
    assert jpg == encode_jpeg(data[0][1], quality)


def test_shard_members_are_exactly_sa1b_samples(tmp_path):
    shards, _, data = write_dataset(tmp_path, n=2, maxcount=10)
    with tarfile.open(shards / "stage1-r00-000000.tar") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            "img_0000.jpg",
            "img_0000.json",
            "img_0001.jpg",
            "img_0001.json",
        ]
        for m in members:
            assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (0, 0, 0, "", "", 0o444)
            assert m.isfile()
        document = json.loads(tar.extractfile("img_0001.json").read())
    # exactly SA-1B JSON: no provenance keys anywhere
    assert document == data[1][2].to_json()
    assert set(document) == {"image", "annotations"}
    assert all("provenance" not in a and "source" not in a for a in document["annotations"])


@pytest.mark.parametrize("n, maxcount, expected", [(5, 2, [2, 2, 1]), (4, 2, [2, 2]), (3, 5, [3])])
def test_rollover_at_maxcount(tmp_path, n, maxcount, expected):
    shards, index, _ = write_dataset(tmp_path, n=n, maxcount=maxcount)
    names = sorted(p.name for p in shards.iterdir())
    assert names == [shard_name("stage1-r00", i) for i in range(len(expected))]
    counts = [sum(1 for _ in ShardReader(shards / name)) for name in names]
    assert counts == expected
    images = read_image_index(index).to_pydict()
    assert [images["shard"].count(name) for name in names] == expected


def test_rollover_at_maxsize_keeps_every_shard_under_it(tmp_path):
    data = samples(6)  # ~2.5 kB of tar members each
    maxsize = tarfile.RECORDSIZE  # 10240: room for 3 samples plus the end-of-archive blocks
    with ShardWriter(tmp_path / "s", tmp_path / "i", "p", maxcount=100, maxsize=maxsize) as w:
        for sample in data:
            w.write(*sample)
    files = sorted((tmp_path / "s").iterdir())
    assert len(files) == 2
    assert all(f.stat().st_size <= maxsize for f in files)
    keys = [k for f in files for k, _, _ in ShardReader(f, decode_images=False)]
    assert keys == [k for k, _, _ in data]


def test_sample_larger_than_maxsize_gets_its_own_shard(tmp_path):
    with ShardWriter(tmp_path / "s", tmp_path / "i", "p", maxsize=1000) as writer:
        for sample in samples(2):
            writer.write(*sample)
    assert writer.shards_written == ["p-000000.tar", "p-000001.tar"]


def test_rewrite_is_byte_identical(tmp_path):
    a_shards, a_index, _ = write_dataset(tmp_path / "a", n=5, maxcount=2, stage="s1", round=2)
    b_shards, b_index, _ = write_dataset(tmp_path / "b", n=5, maxcount=2, stage="s1", round=2)
    for a_dir, b_dir in [
        (a_shards, b_shards),
        (a_index / "images", b_index / "images"),
        (a_index / "masks", b_index / "masks"),
    ]:
        a_files = sorted(a_dir.iterdir())
        assert [f.name for f in a_files] == sorted(f.name for f in b_dir.iterdir())
        for f in a_files:
            assert f.read_bytes() == (b_dir / f.name).read_bytes(), f.name


def test_readable_by_webdataset(tmp_path):
    shards, _, data = write_dataset(tmp_path, n=5, maxcount=2)
    urls = [str(p) for p in sorted(shards.iterdir())]
    got = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in got] == [k for k, _, _ in data]
    for sample, (_, _, record) in zip(got, data):
        assert set(sample) >= {"jpg", "json"}
        assert json.loads(sample["json"]) == record.to_json()
        assert Image.open(io.BytesIO(sample["jpg"])).size == (W, H)


def test_readable_by_plain_tarfile(tmp_path):
    shards, _, data = write_dataset(tmp_path, n=3, maxcount=3)
    with tarfile.open(shards / "stage1-r00-000000.tar") as tar:
        for key, _, record in data:
            assert ImageRecord.from_json(
                json.loads(tar.extractfile(f"{key}.json").read())
            ).to_json() == (record.to_json())


def test_close_returns_names_and_write_after_close_is_refused(tmp_path):
    writer = ShardWriter(tmp_path / "s", tmp_path / "i", "stage2-r01", maxcount=2)
    for sample in samples(3):
        writer.write(*sample)
    assert writer.close() == ["stage2-r01-000000.tar", "stage2-r01-000001.tar"]
    assert writer.close() == ["stage2-r01-000000.tar", "stage2-r01-000001.tar"]
    with pytest.raises(RuntimeError, match="closed"):
        writer.write("late", make_image(9), make_record(9))


def test_empty_writer_writes_no_shard(tmp_path):
    with ShardWriter(tmp_path / "s", tmp_path / "i", "p") as writer:
        pass
    assert writer.shards_written == []
    assert list((tmp_path / "s").iterdir()) == []


def test_duplicate_key_is_refused_also_after_reopen(tmp_path):
    shards, index, data = write_dataset(tmp_path, n=2)
    key, image, record = data[0]
    with ShardWriter(shards, index, "stage1-r00") as writer:
        with pytest.raises(ValueError, match="img_0000"):
            writer.write(key, image, record)
        writer.write("fresh", image, record)
        with pytest.raises(ValueError, match="fresh"):
            writer.write("fresh", image, record)
    assert written_keys(shards) == {"img_0000", "img_0001", "fresh"}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"prefix": "bad/prefix"}, ValueError, "'bad/prefix'"),
        ({"prefix": ""}, ValueError, "prefix .* got ''"),
        ({"maxcount": 0}, ValueError, "maxcount .* got 0"),
        ({"maxcount": 2.5}, ValueError, "maxcount .* got 2.5"),
        ({"maxsize": 0}, ValueError, "maxsize .* got 0"),
        ({"jpeg_quality": 0}, ValueError, "jpeg_quality .* got 0"),
        ({"jpeg_quality": "90"}, TypeError, "jpeg_quality .* got '90'"),
        ({"round": -1}, ValueError, "round .* got -1"),
        ({"stage": 1}, TypeError, "stage .* got 1"),
    ],
)
def test_bad_constructor_arguments_name_the_value(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        ShardWriter(tmp_path / "s", tmp_path / "i", **{"prefix": "p", **kwargs})


@pytest.mark.parametrize(
    "key, image, record, error, match",
    [
        ("a.b", make_image(0), make_record(0), ValueError, "a.b"),
        ("../x", make_image(0), make_record(0), ValueError, r"\.\./x"),
        ("/abs", make_image(0), make_record(0), ValueError, "/abs"),
        ("k", make_image(0).astype(np.float32), make_record(0), TypeError, "uint8"),
        ("k", make_image(0)[..., 0], make_record(0), ValueError, "H×W×3"),
        ("k", make_image(0, h=16), make_record(0), ValueError, "record says"),
        ("k", make_image(0), {"image": {}}, TypeError, "ImageRecord"),
        ("k", make_image(0, h=16), make_record(0, h=16, n_masks=0), None, None),
    ],
)
def test_bad_write_arguments(tmp_path, key, image, record, error, match):
    with ShardWriter(tmp_path / "s", tmp_path / "i", "p") as writer:
        if error is None:
            writer.write(key, image, record)
        else:
            with pytest.raises(error, match=match):
                writer.write(key, image, record)


def test_mask_size_must_match_image(tmp_path):
    record = make_record(0, n_masks=2)
    record.annotations[1].segmentation = make_record(0, n_masks=1, h=16).annotations[0].segmentation
    with ShardWriter(tmp_path / "s", tmp_path / "i", "p") as writer:
        with pytest.raises(ValueError, match="annotation 1"):
            writer.write("k", make_image(0), record)


def test_keys_with_folders_round_trip(tmp_path):
    with ShardWriter(tmp_path / "s", tmp_path / "i", "p") as writer:
        writer.write("photos/cat_01", make_image(1), make_record(1))
    [(key, _, record)] = list(ShardReader(tmp_path / "s"))
    assert key == "photos/cat_01" and record.to_json() == make_record(1).to_json()
    assert written_keys(tmp_path / "s") == written_keys(tmp_path / "i") == {"photos/cat_01"}


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda r: setattr(r.annotations[0].provenance, "level", 300), "does not fit the index"),
        (lambda r: setattr(r.annotations[0].provenance, "clicks", 2**40), "does not fit the index"),
    ],
)
def test_values_that_do_not_fit_the_index_fail_before_writing(tmp_path, edit, match):
    record = make_record(0, n_masks=2)
    edit(record)
    with ShardWriter(tmp_path / "s", tmp_path / "i", "p") as writer:
        with pytest.raises(ValueError, match=match):
            writer.write("k", make_image(0), record)
        writer.write("ok", make_image(1), make_record(1))  # the writer is still usable
    assert written_keys(tmp_path / "s") == {"ok"}


@pytest.mark.parametrize("status", ["", 3])
def test_bad_status(tmp_path, status):
    with ShardWriter(tmp_path / "s", tmp_path / "i", "p") as writer:
        with pytest.raises(ValueError, match="status"):
            writer.write("k", make_image(0), make_record(0), status=status)


def test_index_keeps_write_time_values_when_the_record_changes_later(tmp_path):
    record = make_record(0, n_masks=1)
    with ShardWriter(tmp_path / "s", tmp_path / "i", "p") as writer:
        writer.write("k", make_image(0), record, status="partial")
        record.annotations[0].area = 999_999  # a caller reusing its record object
    assert read_image_index(tmp_path / "i").column("status").to_pylist() == ["partial"]
    [(_, _, stored)] = list(ShardReader(tmp_path / "s", decode_images=False))
    areas = read_mask_index(tmp_path / "i").column("area").to_pylist()
    assert areas == [stored.annotations[0].area]
    assert stored.annotations[0].area != 999_999
