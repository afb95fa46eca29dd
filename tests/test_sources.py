"""The source interface, keys, iter_items and the folder source (local, file://, fsspec)."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.fs as pafs
import pytest
from PIL import Image

from engine.data import (
    DecodeError,
    ImageSource,
    SourceEntry,
    check_key,
    iter_items,
    key_from_path,
    open_source,
)
from engine.data.coco import CocoSource
from engine.data.folder import FolderSource
from engine.data.synthetic import SyntheticSource
from engine.data.webdataset_source import WebDatasetSource
from engine.records import ImageItem, QuarantineRecord


def png(color: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def make_tree(root: Path) -> list[str]:
    """A small directory of images (and non-images); returns the image paths in order."""
    files = {
        "b.png": png((1, 0, 0)),
        "a.jpg": png((2, 0, 0)),  # PNG bytes under a .jpg name: still an image
        "notes.txt": b"not an image",
        "sub/c.PNG": png((3, 0, 0)),
        "sub/deeper/d.webp": png((4, 0, 0)),
        "a_b/x.gif": png((5, 0, 0)),
        "with space.png": png((6, 0, 0)),
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return ["a.jpg", "a_b/x.gif", "b.png", "sub/c.PNG", "sub/deeper/d.webp", "with space.png"]


# -- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "key"),
    [("a.jpg", "a_jpg"), ("cats/img-01.JPG", "cats_img-01_JPG"), ("x/y/z.png", "x_y_z_png")],
)
def test_plain_paths_give_readable_keys(path: str, key: str) -> None:
    assert key_from_path(path) == key


@pytest.mark.parametrize(
    "path", ["with space.jpg", "a_b.jpg", "a.b.jpg", "dir/ünï.png", "x" * 200 + ".jpg", "noext"]
)
def test_other_paths_get_a_slug_and_a_hash(path: str) -> None:
    key = key_from_path(path)
    assert check_key(key) == key and len(key) <= 120
    assert key.rsplit("-", 1)[1].isalnum() and len(key.rsplit("-", 1)[1]) == 12


def test_keys_of_colliding_looking_paths_are_distinct() -> None:
    paths = ["a/b.jpg", "a_b.jpg", "a_b_jpg.jpg", "a b.jpg", "a/b.png", "a/b/jpg", "A/b.jpg"]
    keys = [key_from_path(p) for p in paths]
    assert len(set(keys)) == len(keys)
    assert all(check_key(k) for k in keys)


@pytest.mark.parametrize("bad", ["a.b", "a/b", "", "ключ", None])
def test_check_key_refuses_unsafe_keys(bad: object) -> None:
    with pytest.raises(ValueError, match="key must match"):
        check_key(bad)  # type: ignore[arg-type]


# -- iter_items and open_source ----------------------------------------------------------------


class ListSource:
    """A toy source: entries named by the list, ``bad`` ones fail to decode."""

    name = "list"

    def __init__(self, names: list[str], bad: set[str]) -> None:
        self.names, self.bad = names, bad

    def entries(self):  # noqa: ANN201
        for i, n in enumerate(self.names):
            yield SourceEntry(key=n, path=f"mem:{n}", index=i)

    def load(self, entry: SourceEntry) -> ImageItem:
        if entry.key in self.bad:
            raise DecodeError(f"{entry.key} is broken")
        return ImageItem(key=entry.key, image=np.zeros((8, 8, 3), np.uint8), file_name=entry.key)


def test_iter_items_routes_failures_and_counts_the_limit_on_items() -> None:
    source = ListSource(["a", "b", "c", "d", "e"], bad={"b", "c"})
    assert isinstance(source, ImageSource)
    records: list[QuarantineRecord] = []
    items = list(iter_items(source, records.append, limit=2))
    assert [i.key for i in items] == ["a", "d"]
    assert [(r.key, r.path, r.reason) for r in records] == [
        ("b", "mem:b", "b is broken"),
        ("c", "mem:c", "c is broken"),
    ]
    assert [i.key for i in iter_items(source)] == ["a", "d", "e"]  # logged, not raised
    assert list(iter_items(source, limit=0)) == []


@pytest.mark.parametrize("limit", [-1, 1.5, True, "3"])
def test_iter_items_rejects_a_bad_limit(limit: object) -> None:
    with pytest.raises(ValueError, match="limit"):
        list(iter_items(ListSource(["a"], set()), limit=limit))  # type: ignore[arg-type]


def test_open_source_dispatches_by_kind(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert isinstance(open_source("folder", root=str(tmp_path)), FolderSource)
    assert isinstance(open_source("synthetic", seed_start=0, count=2), SyntheticSource)
    with pytest.raises(ValueError, match="unknown source kind 'ftp'"):
        open_source("ftp")


# -- folder ------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["path", "file_uri", "arrow_fs"])
def test_folder_lists_images_in_sorted_order_with_keys(tmp_path: Path, form: str) -> None:
    expected = make_tree(tmp_path)
    if form == "path":
        source = FolderSource(str(tmp_path))
    elif form == "file_uri":
        source = FolderSource(f"file://{tmp_path}")
    else:
        source = FolderSource(str(tmp_path), filesystem=pafs.LocalFileSystem())
    entries = list(source.entries())
    assert [e.path for e in entries] == [str(tmp_path / p) for p in expected]
    assert [e.index for e in entries] == list(range(len(expected)))
    assert [e.key for e in entries] == [key_from_path(p) for p in expected]
    assert entries[0].key == "a_jpg" and entries[3].key == "sub_c_PNG"
    assert all(e.error is None for e in entries)
    items = list(iter_items(source))
    assert [int(i.image[0, 0, 0]) for i in items] == [2, 5, 1, 3, 4, 6]
    assert items[3].file_name == "sub/c.PNG"
    assert list(source.entries()) == entries  # deterministic


def test_folder_pickles_small(tmp_path: Path) -> None:
    make_tree(tmp_path)
    source = FolderSource(f"file://{tmp_path}")
    clone = pickle.loads(pickle.dumps(source))
    assert len(pickle.dumps(source)) < 2000
    assert list(clone.entries()) == list(source.entries())


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*.png", ["b.png", "with space.png"]),
        ("sub/*", ["sub/c.PNG"]),
        ("**/*.png", ["b.png", "with space.png"]),
        ("**/*.[Pp][Nn][Gg]", ["b.png", "sub/c.PNG", "with space.png"]),
        ("**", ["a.jpg", "a_b/x.gif", "b.png", "sub/c.PNG", "sub/deeper/d.webp", "with space.png"]),
        ("sub/**/d.*", ["sub/deeper/d.webp"]),
    ],
)
def test_folder_globs(tmp_path: Path, pattern: str, expected: list[str]) -> None:
    make_tree(tmp_path)
    source = FolderSource(f"{tmp_path}/{pattern}")
    assert [e.path for e in source.entries()] == [str(tmp_path / p) for p in expected]


def test_folder_single_file_and_missing_root(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (entry,) = FolderSource(str(tmp_path / "b.png")).entries()
    assert entry.key == "b_png"
    with pytest.raises(ValueError, match="does not exist"):
        FolderSource(str(tmp_path / "nope"))


class CountingHandler(pafs.FSSpecHandler):
    """An fsspec-backed pyarrow handler that counts directory listings."""

    listings = 0

    def get_file_info_selector(self, selector):  # noqa: ANN001, ANN201
        CountingHandler.listings += 1
        return super().get_file_info_selector(selector)


def test_folder_lists_lazily_one_directory_at_a_time() -> None:
    memory = fsspec.filesystem("memory")
    for d in range(20):
        memory.pipe(f"/lazy/d{d:02d}/img.png", png((d, 0, 0)))
    CountingHandler.listings = 0
    source = FolderSource("/lazy", filesystem=pafs.PyFileSystem(CountingHandler(memory)))
    entries = source.entries()
    first = next(entries)
    assert first.key == "d00_img_png"
    assert CountingHandler.listings == 2  # the root and d00, not the 19 other folders
    assert len(list(entries)) == 19 and CountingHandler.listings == 21


def test_folder_on_an_fsspec_filesystem() -> None:
    memory = fsspec.filesystem("memory")
    memory.pipe("/fs/x/a.png", png((9, 8, 7)))
    memory.pipe("/fs/readme.md", b"# nothing")
    source = FolderSource("/fs", filesystem=memory)
    (item,) = iter_items(source)
    assert item.key == "x_a_png" and item.image[0, 0].tolist() == [9, 8, 7]


class FailingHandler(pafs.FSSpecHandler):
    """Listing ``/bad`` fails, as an unreadable directory does on any filesystem."""

    def get_file_info_selector(self, selector):  # noqa: ANN001, ANN201
        if selector.base_dir.rstrip("/").endswith("bad"):
            raise PermissionError(13, "Permission denied", selector.base_dir)
        return super().get_file_info_selector(selector)


def test_unreadable_directory_is_quarantined_not_fatal() -> None:
    memory = fsspec.filesystem("memory")
    memory.pipe("/perm/bad/a.png", png((1, 1, 1)))
    memory.pipe("/perm/good/b.png", png((2, 2, 2)))
    source = FolderSource("/perm", filesystem=pafs.PyFileSystem(FailingHandler(memory)))
    records: list[QuarantineRecord] = []
    items = list(iter_items(source, records.append))
    assert [i.key for i in items] == ["good_b_png"]
    assert len(records) == 1 and "cannot list directory" in records[0].reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory; see the fsspec test")
def test_unreadable_local_directory_is_quarantined(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "sub").chmod(0)
    try:
        records: list[QuarantineRecord] = []
        items = list(iter_items(FolderSource(str(tmp_path)), records.append))
    finally:
        (tmp_path / "sub").chmod(0o755)
    assert len(items) == 4 and "cannot list directory" in records[0].reason


def test_symlink_loops_broken_links_and_pipes_become_quarantine_records(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "sub" / "up").symlink_to(tmp_path)  # loops back to the root
    (tmp_path / "self").symlink_to(tmp_path / "self")  # ELOOP
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")  # dangling image
    (tmp_path / "gone.txt").symlink_to(tmp_path / "missing.txt")  # dangling non-image: ignored
    (tmp_path / "alias").symlink_to(tmp_path / "sub" / "deeper")  # a fine directory link
    os.mkfifo(tmp_path / "pipe.jpg")  # reading it would block forever
    records: list[QuarantineRecord] = []
    items = list(iter_items(FolderSource(str(tmp_path)), records.append))
    assert sorted(i.file_name for i in items) == sorted(make_tree(tmp_path) + ["alias/d.webp"])
    reasons = {Path(r.path).name: r.reason for r in records}
    assert set(reasons) == {"up", "self", "gone.png", "pipe.jpg"}
    assert reasons["pipe.jpg"] == "not a regular file"
    assert "leads back to the root" in reasons["up"]
    assert "symlink loop" in reasons["self"]
    assert "broken symlink" in reasons["gone.png"]
    assert all(check_key(r.key) for r in records)


def test_every_source_kind_is_an_image_source(tmp_path: Path, shared_data: Path) -> None:
    make_tree(tmp_path)
    coco = shared_data / "coco-permissive"
    import tarfile

    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        info = tarfile.TarInfo("k.png")
        data = png((1, 2, 3))
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    for source in (
        FolderSource(str(tmp_path)),
        CocoSource(str(coco / "images"), str(coco / "instances_val.json")),
        WebDatasetSource(str(tmp_path / "s.tar")),
        SyntheticSource(0, 1),
    ):
        assert isinstance(source, ImageSource)
        assert isinstance(source.name, str)
        first = next(iter(source.entries()))
        assert pickle.loads(pickle.dumps(first)) == first
        assert check_key(first.key)
