"""ShardWriter under write errors: named errors, no partial final files, resumable directory."""

from __future__ import annotations

import errno
import os
import stat

import pytest
from dataset_support import samples, write_dataset

from engine.dataset import DatasetWriteError, ShardReader, ShardWriter, atomic, written_keys
from engine.dataset.index import STATUS_OK, STATUS_RECOVERED, read_image_index, read_mask_index
from engine.dataset.validate import validate_paths


class _FailingFile:
    """A real file whose writes fail with ``error`` once ``limit`` bytes have been written."""

    def __init__(self, path, limit: int, error: int) -> None:
        self._file = open(path, "wb")  # noqa: SIM115
        self._limit = limit
        self._error = error
        self._written = 0

    def write(self, data) -> int:
        if self._written + len(data) > self._limit:
            raise OSError(self._error, os.strerror(self._error))
        self._written += len(data)
        return self._file.write(data)

    def __getattr__(self, name):  # tell, flush, fileno, close
        return getattr(self._file, name)


def _fail_opening(monkeypatch, match: str, limit: int = 0, error: int = errno.ENOSPC):
    """Make ``atomic.open_for_write`` give failing files for temp names containing ``match``."""
    real = atomic.open_for_write

    def opener(path):
        if match in path.name:
            if limit < 0:
                raise OSError(error, os.strerror(error), str(path))
            return _FailingFile(path, limit, error)
        return real(path)

    monkeypatch.setattr(atomic, "open_for_write", opener)


def _final_and_temp(directory):
    names = sorted(p.name for p in directory.rglob("*") if p.is_file())
    return names, [n for n in names if n.endswith(".tmp")]


def _resume_and_finish(shards, index, data):
    done = written_keys(shards, "stage1-r00")
    with ShardWriter(shards, index, "stage1-r00", maxcount=2) as writer:
        for key, image, record in data:
            if key not in done:
                writer.write(key, image, record)
    report = validate_paths([shards])
    assert report.ok, [str(p) for p in report.problems]
    assert sorted(k for k, _, _ in ShardReader(shards)) == [k for k, _, _ in data]


@pytest.mark.parametrize("limit", [0, 1500, 4000])
def test_disk_full_while_writing_a_shard(tmp_path, monkeypatch, limit):
    shards, index = tmp_path / "shards", tmp_path / "index"
    data = samples(5)
    _fail_opening(monkeypatch, "-000001.tar", limit=limit)
    writer = ShardWriter(shards, index, "stage1-r00", maxcount=2)
    writer.write(*data[0])
    writer.write(*data[1])  # shard 0 complete
    with pytest.raises(DatasetWriteError, match="stage1-r00-000001.tar") as caught:
        for sample in data[2:]:
            writer.write(*sample)
    assert caught.value.__cause__.errno == errno.ENOSPC
    names, temps = _final_and_temp(tmp_path)
    assert temps == []
    assert [n for n in names if n.endswith(".tar")] == ["stage1-r00-000000.tar"]
    with pytest.raises(RuntimeError, match="new one"):
        writer.write(*data[4])
    assert writer.close() == ["stage1-r00-000000.tar"]
    monkeypatch.undo()
    _resume_and_finish(shards, index, data)


def test_disk_full_while_writing_the_index(tmp_path, monkeypatch):
    shards, index = tmp_path / "shards", tmp_path / "index"
    data = samples(3)
    _fail_opening(monkeypatch, "masks-stage1-r00-000000", limit=100)
    writer = ShardWriter(shards, index, "stage1-r00", maxcount=2)
    writer.write(*data[0])
    with pytest.raises(DatasetWriteError, match="masks-stage1-r00-000000.parquet"):
        writer.write(*data[1])
    names, temps = _final_and_temp(tmp_path)
    assert names == [] and temps == []  # neither the shard nor its index got a final name
    monkeypatch.undo()
    _resume_and_finish(shards, index, data)


@pytest.mark.parametrize("error", [errno.EACCES, errno.EROFS])
def test_unwritable_directory_gives_named_error(tmp_path, monkeypatch, error):
    """What a read-only mount or a directory without write permission answers to open()."""
    shards, index = tmp_path / "shards", tmp_path / "index"
    _fail_opening(monkeypatch, ".tar.tmp", limit=-1, error=error)
    with ShardWriter(shards, index, "stage1-r00") as writer:
        with pytest.raises(DatasetWriteError, match=r"shards/stage1-r00-000000\.tar") as caught:
            writer.write(*samples(1)[0])
    assert caught.value.__cause__.errno == error
    assert _final_and_temp(tmp_path) == ([], [])


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_gives_named_error(tmp_path):
    shards, index = tmp_path / "shards", tmp_path / "index"
    shards.mkdir()
    shards.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with ShardWriter(shards, index, "stage1-r00") as writer:
            with pytest.raises(DatasetWriteError, match="stage1-r00-000000.tar"):
                writer.write(*samples(1)[0])
    finally:
        shards.chmod(stat.S_IRWXU)
    assert list(shards.iterdir()) == []


def test_directory_that_cannot_be_created_gives_named_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DatasetWriteError, match="file/shards"):
        ShardWriter(blocker / "shards", tmp_path / "index", "p")


def test_index_rename_failure_is_completed_on_reopen_with_provenance(tmp_path, monkeypatch):
    shards, index = tmp_path / "shards", tmp_path / "index"
    data = samples(4)
    real_replace = os.replace

    def replace(src, dst):
        if os.fspath(dst).endswith("images-stage1-r00-000000.parquet"):
            raise OSError(errno.EIO, "I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    writer = ShardWriter(shards, index, "stage1-r00", maxcount=2, stage="stage1")
    writer.write(*data[0])
    with pytest.raises(DatasetWriteError, match="images-stage1-r00-000000.parquet"):
        writer.write(*data[1])
    monkeypatch.undo()
    assert (shards / "stage1-r00-000000.tar").exists()  # the shard itself was complete
    assert (index / "images" / ".images-stage1-r00-000000.parquet.tmp").exists()
    assert not validate_paths([shards]).ok  # a shard without index rows is detected
    reopened = ShardWriter(shards, index, "stage1-r00", maxcount=2, stage="stage1")
    assert reopened.recovered == ["stage1-r00-000000.tar"]
    images = read_image_index(index).to_pydict()
    assert images["status"] == [STATUS_OK, STATUS_OK]  # from the staged file, not rebuilt
    assert read_mask_index(index).to_pydict()["source"] == ["model"]
    reopened.close()
    _resume_and_finish(shards, index, data)


def test_missing_index_is_rebuilt_from_the_shard(tmp_path):
    shards, index, data = write_dataset(tmp_path, n=5, maxcount=2, stage="stage1")
    for kind in ("images", "masks"):
        (index / kind / f"{kind}-stage1-r00-000001.parquet").unlink()
    writer = ShardWriter(shards, index, "stage1-r00", maxcount=2, stage="stage1")
    assert writer.recovered == ["stage1-r00-000001.tar"]
    writer.close()
    images = read_image_index(index).to_pydict()
    rebuilt = [s for s, shard in zip(images["status"], images["shard"]) if shard.endswith("01.tar")]
    assert rebuilt == [STATUS_RECOVERED, STATUS_RECOVERED]
    masks = read_mask_index(index).to_pydict()
    for shard, source, clicks, stage in zip(
        masks["shard"], masks["source"], masks["clicks"], masks["stage"]
    ):
        assert stage == "stage1"
        assert (source is None and clicks is None) == shard.endswith("01.tar")
    assert validate_paths([shards]).ok


def test_reopen_removes_temp_files_of_its_prefix_only(tmp_path):
    shards, index, _ = write_dataset(tmp_path, n=2, maxcount=2)
    own = shards / ".stage1-r00-000001.tar.tmp"
    other = shards / ".stage2-r00-000000.tar.tmp"
    own_index = index / "masks" / ".masks-stage1-r00-000001.parquet.tmp"
    for path in (own, other, own_index):
        path.write_bytes(b"partial")
    ShardWriter(shards, index, "stage1-r00").close()
    assert not own.exists() and not own_index.exists()
    assert other.exists()


def test_interrupt_in_the_middle_of_a_sample_leaves_no_half_sample(tmp_path, monkeypatch):
    import tarfile

    shards, index = tmp_path / "shards", tmp_path / "index"
    data = samples(3)
    real_addfile = tarfile.TarFile.addfile

    def addfile(self, info, fileobj=None):
        if info.name == "img_0001.json":
            raise KeyboardInterrupt
        return real_addfile(self, info, fileobj)

    monkeypatch.setattr(tarfile.TarFile, "addfile", addfile)
    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(shards, index, "stage1-r00", maxcount=5) as writer:
            for sample in data:
                writer.write(*sample)
    monkeypatch.undo()
    assert _final_and_temp(tmp_path) == ([], [])  # the open shard was dropped, not committed
    _resume_and_finish(shards, index, data)
