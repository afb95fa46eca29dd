"""ShardReader: in-stream reading, error policy, official SA-1B tars, malicious members."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest
from dataset_support import H, W, make_image, make_record, write_dataset

from engine.dataset import DatasetReadError, ShardReader, UnsafeMemberError
from engine.dataset.reader import expand_shard_paths, split_member_name
from engine.dataset.writer import encode_jpeg, encode_record


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, b""


def make_tar(path, members) -> None:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


def sample_members(key: str, seed: int, image=None, record=None, prefix: str = ""):
    image = make_image(seed) if image is None else image
    record = make_record(seed) if record is None else record
    return [
        _file(f"{prefix}{key}.jpg", encode_jpeg(image, 90)),
        _file(f"{prefix}{key}.json", encode_record(record)),
    ]


def test_expand_paths_files_dirs_globs(tmp_path):
    for name in ("b.tar", "a.tar", ".hidden.tar.tmp", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert expand_shard_paths(tmp_path) == [tmp_path / "a.tar", tmp_path / "b.tar"]
    assert expand_shard_paths(str(tmp_path / "b.tar")) == [tmp_path / "b.tar"]
    assert expand_shard_paths([str(tmp_path / "*.tar"), tmp_path / "a.tar"]) == [
        tmp_path / "a.tar",
        tmp_path / "b.tar",
    ]
    with pytest.raises(ValueError, match="nothing_here"):
        expand_shard_paths(tmp_path / "nothing_here*.tar")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("sa_1.jpg", ("sa_1", "jpg")),
        ("./sa_1.json", ("sa_1", "json")),
        ("a/b/k.seg.json", ("a/b/k", "seg.json")),
        ("README", ("README", "")),
    ],
)
def test_split_member_name(name, expected):
    assert split_member_name(name) == expected


def test_bad_on_error_is_named(tmp_path):
    with pytest.raises(ValueError, match="'ignore'"):
        ShardReader(tmp_path, on_error="ignore")


def _mixed_shard(path) -> None:
    """good_0, five broken samples, good_1."""
    wrong_size = make_record(3, h=16)
    make_tar(
        path,
        [
            *sample_members("good_0", 0),
            _file("bad_json.jpg", encode_jpeg(make_image(1), 90)),
            _file("bad_json.json", b'{"image": '),
            _file("no_json.jpg", encode_jpeg(make_image(2), 90)),
            _file("no_jpg.json", encode_record(make_record(2))),
            *sample_members("wrong_size", 3, record=wrong_size),
            _file("bad_jpg.jpg", b"\xff\xd8 not really a jpeg"),
            _file("bad_jpg.json", encode_record(make_record(4))),
            *sample_members("good_1", 5),
        ],
    )


def test_skip_policy_counts_and_reports(tmp_path):
    _mixed_shard(tmp_path / "mixed.tar")
    reader = ShardReader(tmp_path / "mixed.tar", on_error="skip")
    got = list(reader)
    assert [k for k, _, _ in got] == ["good_0", "good_1"]
    assert got[1][2].to_json() == make_record(5).to_json()
    assert (reader.stats.samples, reader.stats.skipped_samples) == (2, 5)
    assert reader.stats.failed_shards == reader.stats.skipped_members == 0
    messages = "\n".join(reader.stats.problems)
    for key, why in [
        ("bad_json", "json"),
        ("no_json", "missing .json"),
        ("no_jpg", "missing .jpg"),
        ("wrong_size", "16x48"),
        ("bad_jpg", "does not decode"),
    ]:
        assert f"mixed.tar: {key}: " in messages and why in messages
    assert "skipped 5 samples" in reader.stats.summary()


def test_raise_policy_stops_at_the_first_bad_sample(tmp_path):
    _mixed_shard(tmp_path / "mixed.tar")
    got = []
    with pytest.raises(DatasetReadError, match="mixed.tar: bad_json: json"):
        for sample in ShardReader(tmp_path / "mixed.tar"):
            got.append(sample[0])
    assert got == ["good_0"]


def test_records_only_mode_skips_jpeg_decoding(tmp_path):
    _mixed_shard(tmp_path / "mixed.tar")
    reader = ShardReader(tmp_path / "mixed.tar", decode_images=False, on_error="skip")
    got = list(reader)
    assert [k for k, _, _ in got] == ["good_0", "wrong_size", "bad_jpg", "good_1"]
    assert all(image is None for _, image, _ in got)


@pytest.mark.parametrize("cut", ["middle", "member_boundary", "no_end_blocks"])
def test_truncated_shard(tmp_path, cut):
    shards, _, data = write_dataset(tmp_path, n=6, maxcount=3)
    first = shards / "stage1-r00-000000.tar"
    raw = first.read_bytes()
    with tarfile.open(first) as tar:
        members = tar.getmembers()
    end_of_second = members[3].offset_data + -(-members[3].size // 512) * 512
    size = {
        "middle": len(raw) // 3,
        "member_boundary": end_of_second,
        "no_end_blocks": members[-1].offset_data + -(-members[-1].size // 512) * 512,
    }[cut]
    first.write_bytes(raw[:size])
    reader = ShardReader(shards, decode_images=False, on_error="skip")
    keys = [k for k, _, _ in reader]
    assert reader.stats.failed_shards == 1
    assert "stage1-r00-000000.tar" in reader.stats.problems[0]
    assert keys[-3:] == [k for k, _, _ in data[3:]]  # the next shard is still read
    assert set(keys[:-3]) < {k for k, _, _ in data[:3]}  # never a partial sample
    with pytest.raises(DatasetReadError, match="truncated"):
        list(ShardReader(first, decode_images=False))


@pytest.mark.parametrize("content", [b"", b"this is not a tar file" * 40])
def test_not_a_tar(tmp_path, content):
    (tmp_path / "x.tar").write_bytes(content)
    reader = ShardReader(tmp_path / "x.tar", on_error="skip")
    assert list(reader) == [] and reader.stats.failed_shards == 1
    with pytest.raises(DatasetReadError, match="x.tar"):
        list(ShardReader(tmp_path / "x.tar"))


def test_official_sa1b_layout(tmp_path):
    """``sa_*.tar`` with ``sa_<id>.jpg``/``.json``, default json.dumps spacing, ``./`` names."""
    members = []
    for image_id, prefix in [(1, ""), (23, "./")]:
        record = make_record(image_id)
        record.file_name = f"sa_{image_id}.jpg"
        document = json.dumps(record.to_json()).encode()
        members += [
            _file(f"{prefix}sa_{image_id}.jpg", encode_jpeg(make_image(image_id), 90)),
            _file(f"{prefix}sa_{image_id}.json", document),
        ]
    dir_info = tarfile.TarInfo("./")
    dir_info.type = tarfile.DIRTYPE
    make_tar(tmp_path / "sa_000000.tar", [(dir_info, b""), *members])
    got = list(ShardReader(tmp_path))
    assert [k for k, _, _ in got] == ["sa_1", "sa_23"]
    assert got[1][2].file_name == "sa_23.jpg" and got[1][1].shape == (H, W, 3)


MALICIOUS = [
    _file("../evil.json", b"{}"),
    _file("a/../../evil.jpg", b"x"),
    _file("/etc/evil.jpg", b"x"),
    _special("link.jpg", tarfile.SYMTYPE, "/etc/passwd"),
    _special("hard.json", tarfile.LNKTYPE, "good_0.json"),
    _special("dev.jpg", tarfile.CHRTYPE),
    _special("fifo.jpg", tarfile.FIFOTYPE),
]


@pytest.mark.parametrize("member", MALICIOUS, ids=lambda m: m[0].name)
def test_malicious_members_are_rejected(tmp_path, monkeypatch, member):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # a reader that extracted would write here or above
    shard = work / "evil.tar"
    make_tar(shard, [*sample_members("good_0", 0), member, *sample_members("good_1", 1)])
    with pytest.raises(UnsafeMemberError, match=r"evil\.tar"):
        list(ShardReader(shard))
    reader = ShardReader(shard, on_error="skip")
    assert [k for k, _, _ in reader] == ["good_0", "good_1"]
    assert reader.stats.skipped_members == 1 and reader.stats.skipped_samples == 0
    assert member[0].name in reader.stats.problems[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "evil.tar"]
    assert not os.path.exists("/etc/evil.jpg")
