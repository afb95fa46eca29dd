"""WebDataset source: SA-1B samples in tar shards built here with plain ``tarfile``."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

from engine.data import iter_items, open_source
from engine.data.webdataset_source import WebDatasetSource
from engine.masks import mask_to_rle, rle_to_mask
from engine.records import QuarantineRecord
from engine.sa1b import ImageRecord, MaskRecord

H, W = 24, 32


def jpeg(value: int, height: int = H, width: int = W) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (value, value, value)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def box_mask(i: int, height: int = H, width: int = W) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[i : i + 6, 2 * i : 2 * i + 8] = True
    return mask


def sa1b_json(image_id: int, n_masks: int, height: int = H, width: int = W) -> bytes:
    annotations = [
        MaskRecord(
            id=100 + i,
            segmentation=mask_to_rle(box_mask(i, height, width)),
            bbox=[2.0 * i, float(i), 8.0, 6.0],
            area=48,
            predicted_iou=0.9,
            stability_score=0.95,
            point_coords=[[2.0 * i + 1, i + 1.0]],
            crop_box=[0.0, 0.0, float(width), float(height)],
        )
        for i in range(n_masks)
    ]
    record = ImageRecord(image_id, width, height, f"sa_{image_id}.jpg", annotations)
    return json.dumps(record.to_json()).encode()


def add(tar: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = "/etc/passwd"
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def write_shard(path: Path, samples: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            add(tar, name, data)
    return path


def good_samples(first_id: int, count: int) -> list[tuple[str, bytes]]:
    out = []
    for image_id in range(first_id, first_id + count):
        out += [
            (f"sa_{image_id}.jpg", jpeg(image_id)),
            (f"sa_{image_id}.json", sa1b_json(image_id, 3)),
        ]
    return out


def test_sa1b_samples_become_items_with_reference_masks(tmp_path: Path) -> None:
    shard = write_shard(tmp_path / "sa_000000.tar", good_samples(1, 3))
    source = WebDatasetSource(str(shard))
    entries = list(source.entries())
    assert [e.key for e in entries] == ["sa_1", "sa_2", "sa_3"]
    assert [e.path for e in entries] == [f"{shard}#sa_{i}" for i in (1, 2, 3)]
    assert {m[0] for m in entries[0].members} == {"jpg", "json"}
    items = list(iter_items(source))
    for image_id, item in enumerate(items, start=1):
        assert (item.key, item.file_name, item.image_id) == (
            f"sa_{image_id}",
            f"sa_{image_id}.jpg",
            image_id,
        )
        assert item.image.shape == (H, W, 3) and abs(int(item.image[5, 5, 0]) - image_id) <= 2
        assert [r.object_id for r in item.references] == [100, 101, 102]
        assert all(r.level is None and r.parent_index is None for r in item.references)
        for i, ref in enumerate(item.references):
            np.testing.assert_array_equal(rle_to_mask(ref.rle), box_mask(i))


def test_several_shards_by_list_brace_glob_directory_and_uri(tmp_path: Path) -> None:
    for n in range(3):
        write_shard(tmp_path / f"sa_{n:06d}.tar", good_samples(10 * n, 2))
    expected = ["sa_0", "sa_1", "sa_10", "sa_11", "sa_20", "sa_21"]
    forms = [
        [str(tmp_path / f"sa_{n:06d}.tar") for n in range(3)],
        str(tmp_path / "sa_{000000..000002}.tar"),
        str(tmp_path / "sa_*.tar"),
        str(tmp_path),
        f"file://{tmp_path}/sa_{{000000..000002}}.tar",
    ]
    for shards in forms:
        source = WebDatasetSource(shards)
        assert [e.key for e in source.entries()] == expected, shards
    assert len(source.shard_paths) == 3
    assert isinstance(open_source("webdataset", shards=str(tmp_path)), WebDatasetSource)
    with pytest.raises(ValueError, match="no tar shards found"):
        WebDatasetSource(str(tmp_path / "none_*.tar"))


def test_streaming_listing_on_an_fsspec_filesystem(tmp_path: Path) -> None:
    shard = write_shard(tmp_path / "s.tar", good_samples(1, 2))
    memory = fsspec.filesystem("memory")
    memory.pipe("/shards/s.tar", shard.read_bytes())
    source = WebDatasetSource("/shards/s.tar", filesystem=memory)
    items = list(iter_items(source))
    assert [i.key for i in items] == ["sa_1", "sa_2"] and len(items[1].references) == 3


def test_pickles_small_and_loads_in_a_copy(tmp_path: Path) -> None:
    shard = write_shard(tmp_path / "s.tar", good_samples(1, 2))
    source = WebDatasetSource(str(shard))
    entries = list(source.entries())
    clone = pickle.loads(pickle.dumps(source))
    assert len(pickle.dumps(source)) < 2000
    assert clone.load(pickle.loads(pickle.dumps(entries[1]))).image_id == 2


def test_unsafe_and_odd_members_are_quarantined_never_extracted(tmp_path: Path) -> None:
    shard = tmp_path / "shards" / "bad.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        add(tar, "../evil.jpg", jpeg(1))
        add(tar, "/abs.jpg", jpeg(2))
        add(tar, "a/../../up.jpg", jpeg(3))
        add(tar, "link.jpg", b"", tarfile.SYMTYPE)
        add(tar, "noext", b"x")
        add(tar, "sa_1.jpg", jpeg(4))
        add(tar, "sa_1.json", sa1b_json(1, 1))
        add(tar, "only.json", sa1b_json(2, 1))  # no image
        add(tar, "plain.jpg", jpeg(5))  # no JSON: an image without references
        add(tar, "dup.jpg", jpeg(6))
        add(tar, "dup.jpg", jpeg(7))
    records: list[QuarantineRecord] = []
    items = list(iter_items(WebDatasetSource(str(shard)), records.append))
    assert [(i.key, i.file_name, len(i.references)) for i in items] == [
        ("sa_1", "sa_1.jpg", 1),
        ("plain", "plain.jpg", 0),
    ]
    reasons = {r.path.split("#", 1)[1]: r.reason for r in records}
    assert set(reasons) == {"../evil.jpg", "/abs.jpg", "a/../../up.jpg", "link.jpg", "noext",
                            "only", "dup"}  # fmt: skip
    for name in ("../evil.jpg", "/abs.jpg", "a/../../up.jpg"):
        assert "unsafe tar member name" in reasons[name]
    assert "link or device" in reasons["link.jpg"]
    assert "has no image member" in reasons["only"]
    assert "duplicate member" in reasons["dup"]
    keys = [r.key for r in records]
    assert len(set(keys)) == len(keys) and all("." not in k and "/" not in k for k in keys)
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "up.jpg").exists()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bad.tar", "shards"]


@pytest.mark.parametrize(
    ("json_bytes", "reason"),
    [
        (b"{not json", "JSON member does not parse"),
        (b'{"image": {}, "annotations": []}', "not an SA-1B record: image.image_id is missing"),
        (sa1b_json(1, 2, height=H + 1), "RLE size [25, 32]"),
    ],
)
def test_bad_json_quarantines_the_sample(tmp_path: Path, json_bytes: bytes, reason: str) -> None:
    shard = write_shard(
        tmp_path / "s.tar", [("sa_1.jpg", jpeg(1)), ("sa_1.json", json_bytes)] + good_samples(2, 1)
    )
    records: list[QuarantineRecord] = []
    items = list(iter_items(WebDatasetSource(str(shard)), records.append))
    assert [i.key for i in items] == ["sa_2"]
    assert records[0].key == "sa_1" and reason in records[0].reason


def test_truncated_shard_keeps_the_complete_samples(tmp_path: Path) -> None:
    shard = write_shard(tmp_path / "s.tar", good_samples(1, 4))
    data = shard.read_bytes()
    members = [(m.name, m.offset_data) for m in tarfile.open(shard)]
    cut = dict(members)["sa_3.json"] + 10  # inside the JSON of the third sample
    shard.write_bytes(data[:cut])
    records: list[QuarantineRecord] = []
    items = list(iter_items(WebDatasetSource(str(shard)), records.append))
    assert [i.key for i in items] == ["sa_1", "sa_2"]
    assert [r.key for r in records][0] == "sa_3"  # its JSON is cut short
    assert any("cannot read tar" in r.reason or "truncated" in r.reason for r in records)


def test_missing_shard_is_quarantined(tmp_path: Path) -> None:
    records: list[QuarantineRecord] = []
    items = list(iter_items(WebDatasetSource(str(tmp_path / "gone.tar")), records.append))
    assert items == [] and "cannot open shard" in records[0].reason


def test_reads_shards_written_by_the_engine_writer(tmp_path: Path) -> None:
    from engine.dataset import ShardWriter
    from engine.sa1b import ImageRecord

    image = np.full((H, W, 3), 90, dtype=np.uint8)
    record = ImageRecord.from_json(json.loads(sa1b_json(5, 2)))
    with ShardWriter(tmp_path / "shards", tmp_path / "index", "stage1-r00", maxcount=1) as w:
        w.write("img-a", image, record)
        w.write("img-b", image, record)
    items = list(iter_items(WebDatasetSource(str(tmp_path / "shards"))))
    assert [i.key for i in items] == ["img-a", "img-b"]
    assert items[0].image_id == 5 and len(items[0].references) == 2
