"""Write SA-1B WebDataset shards atomically, with a Parquet index per shard.

A shard ``{prefix}-{n:06d}.tar`` holds ``<key>.jpg`` + ``<key>.json`` per image (exactly
SA-1B's sample; provenance goes to the index). Members have fixed mtime/uid/gid/uname/mode,
so the same inputs give byte-identical shards.

Commit order for one shard (a crash at any point leaves only complete shards):

1. members go to ``.{name}.tmp``; the tar is closed, flushed and fsynced;
2. its index files are written and fsynced under temporary names (``.images-….parquet.tmp``);
3. the shard is renamed to its final name and the directory fsynced;
4. the index files are renamed to their final names.

On (re)open, temporary shards of the prefix are removed and numbering continues after the last
complete shard. A complete shard without index files gets them from step 2's temporary files
(full provenance) or, if those are gone, rebuilt from the shard's JSON with null provenance and
``status="recovered"`` (listed in ``ShardWriter.recovered``).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import tarfile
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from engine.dataset import atomic
from engine.dataset.atomic import DatasetWriteError
from engine.dataset.index import (
    IMAGES_DIR,
    MASKS_DIR,
    STATUS_OK,
    STATUS_RECOVERED,
    index_file_paths,
    index_tables,
    table_to_parquet_bytes,
)
from engine.dataset.reader import DatasetReadError, ShardReader, split_member_name
from engine.sa1b import ImageRecord

KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*")
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
MEMBER_MODE = 0o444
TAR_FORMAT = tarfile.PAX_FORMAT


def shard_name(prefix: str, number: int) -> str:
    """`{prefix}-{number:06d}.tar`, e.g. `stage1-r02-000007.tar` for `("stage1-r02", 7)`."""
    return f"{prefix}-{number:06d}.tar"


def _shard_pattern(prefix: str | None) -> re.Pattern[str]:
    head = re.escape(prefix) if prefix is not None else r"[A-Za-z0-9_-]+"
    return re.compile(rf"({head})-(\d{{6}})\.tar")


def complete_shards(shard_dir: Path, prefix: str | None = None) -> dict[str, Path]:
    """Final-named shards in ``shard_dir`` (of ``prefix`` when given), by name, sorted."""
    pattern = _shard_pattern(prefix)
    if not shard_dir.is_dir():
        return {}
    return {p.name: p for p in sorted(shard_dir.iterdir()) if pattern.fullmatch(p.name)}


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = MEMBER_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info, data


def _member_bytes(info: tarfile.TarInfo) -> int:
    """Bytes a member takes in the tar: header block(s) plus data padded to 512."""
    header = len(info.tobuf(TAR_FORMAT, tarfile.ENCODING, "surrogateescape"))
    return header + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def _final_tar_size(content: int) -> int:
    """File size of a tar whose members take ``content`` bytes (end blocks, record padding)."""
    total = content + 2 * tarfile.BLOCKSIZE
    return -(-total // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def encode_jpeg(image_rgb: np.ndarray, quality: int) -> bytes:
    """``H×W×3`` uint8 RGB → baseline JPEG bytes (PIL; same input, same bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_rgb)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_record(record: ImageRecord) -> bytes:
    """``ImageRecord`` → compact SA-1B JSON bytes (field order of ``to_json``)."""
    return json.dumps(record.to_json(), separators=(",", ":")).encode("utf-8")


class ShardWriter:
    """Atomic, deterministic SA-1B shard writer with a per-shard Parquet index.

    Args:
        shard_dir: directory of the ``.tar`` shards (created if missing).
        index_dir: directory of the index (``images/`` and ``masks/`` are created inside).
        prefix: shard name prefix, ``[A-Za-z0-9_-]+``, e.g. ``"stage1-r02"``.
        maxcount: at most this many images per shard.
        maxsize: at most this many bytes per shard file (a single larger sample gets a shard
            of its own).
        jpeg_quality: PIL JPEG quality, 1–100.
        stage, round: written into every index row of this writer's shards.

    One writer per prefix at a time. Use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        shard_dir: str | Path,
        index_dir: str | Path,
        prefix: str,
        maxcount: int = 1000,
        maxsize: float = 3e9,
        jpeg_quality: int = 90,
        stage: str = "",
        round: int = 0,
    ) -> None:
        if not isinstance(prefix, str) or not PREFIX_PATTERN.fullmatch(prefix):
            raise ValueError(f"prefix must match [A-Za-z0-9_-]+, got {prefix!r}")
        if isinstance(maxcount, bool) or not isinstance(maxcount, int) or maxcount < 1:
            raise ValueError(f"maxcount must be an int >= 1, got {maxcount!r}")
        if isinstance(maxsize, bool) or not isinstance(maxsize, (int, float)) or not maxsize > 0:
            raise ValueError(f"maxsize must be a number > 0, got {maxsize!r}")
        if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, int):
            raise TypeError(f"jpeg_quality must be an int, got {jpeg_quality!r}")
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        if not isinstance(stage, str):
            raise TypeError(f"stage must be a str, got {stage!r}")
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise ValueError(f"round must be an int >= 0, got {round!r}")
        self.shard_dir = Path(shard_dir)
        self.index_dir = Path(index_dir)
        self.prefix = prefix
        self.maxcount = maxcount
        self.maxsize = maxsize
        self.jpeg_quality = jpeg_quality
        self.stage = stage
        self.round = round
        for folder in (self.shard_dir, self.index_dir / IMAGES_DIR, self.index_dir / MASKS_DIR):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatasetWriteError(f"cannot create directory {folder}: {exc}") from exc
        self.recovered: list[str] = []  # shards whose index files were completed on open
        try:
            existing = self._recover()
        except DatasetWriteError:
            raise
        except OSError as exc:  # listing or removing in an unreadable directory
            raise DatasetWriteError(f"cannot open {self.shard_dir} for writing: {exc}") from exc
        numbers = [int(_shard_pattern(prefix).fullmatch(n).group(2)) for n in existing]
        self._next_number = max(numbers, default=-1) + 1
        self._keys = written_keys(self.index_dir, prefix)
        self._written: list[str] = []
        self._tar: tarfile.TarFile | None = None
        self._handle = None
        self._rows: list[tuple[pa.Table, pa.Table]] = []  # per sample: (images, masks) rows
        self._content_bytes = 0
        self._closed = False
        self._failed = False

    # -- recovery -----------------------------------------------------------------------------

    def _recover(self) -> dict[str, Path]:
        """Remove this prefix's temporary shards, complete missing index files; see module doc."""
        shards = complete_shards(self.shard_dir, self.prefix)
        temp = re.compile(rf"\.{re.escape(self.prefix)}-\d{{6}}\.tar\.tmp")
        for path in self.shard_dir.iterdir():
            if temp.fullmatch(path.name):
                atomic.remove_quietly(path)
        stem = rf"{re.escape(self.prefix)}-\d{{6}}"
        index_temp = re.compile(rf"\.(images|masks)-({stem})\.parquet\.tmp")
        for kind_dir in (self.index_dir / IMAGES_DIR, self.index_dir / MASKS_DIR):
            for path in kind_dir.iterdir():
                match = index_temp.fullmatch(path.name)
                if not match:
                    continue
                final = kind_dir / path.name[1 : -len(".tmp")]
                name = f"{match.group(2)}.tar"
                if name in shards and not final.exists() and _readable(path):
                    atomic.commit(path, final)
                    if name not in self.recovered:
                        self.recovered.append(name)
                else:
                    atomic.remove_quietly(path)
        for name, path in shards.items():
            if not all(p.exists() for p in index_file_paths(self.index_dir, name)):
                self._rebuild_index(name, path)
                if name not in self.recovered:
                    self.recovered.append(name)
        self.recovered.sort()
        return shards

    def _rebuild_index(self, name: str, path: Path) -> None:
        reader = ShardReader(path, decode_images=False, on_error="raise")
        try:
            entries = [(key, record, STATUS_RECOVERED) for key, _, record in reader]
        except DatasetReadError as exc:
            raise DatasetWriteError(
                f"shard {path} has no index and cannot be read to rebuild it ({exc}); "
                "move it out of the shard directory"
            ) from exc
        tables = index_tables(name, entries, self.stage, self.round, provenance_known=False)
        for file, table in zip(index_file_paths(self.index_dir, name), tables):
            if not file.exists():  # keep the other kind's file, provenance and all
                atomic.write_bytes_atomic(file, table_to_parquet_bytes(table))

    # -- writing ------------------------------------------------------------------------------

    def write(
        self,
        key: str,
        image_rgb: np.ndarray,
        record: ImageRecord,
        status: str = STATUS_OK,
        blurred_boxes: int | None = None,
    ) -> None:
        """Add one sample: ``image_rgb`` is ``H×W×3`` uint8, ``record`` its SA-1B record.

        ``key`` (``[A-Za-z0-9_-]`` segments joined by ``/``) must be new for this prefix.
        ``status`` and ``blurred_boxes`` (regions the privacy filter blurred in ``image_rgb``;
        ``None``: no filter ran) go to the image index row.
        """
        if self._closed:
            raise RuntimeError("ShardWriter is closed; open a new ShardWriter to write more")
        if self._failed:
            raise RuntimeError("ShardWriter failed on an earlier write; open a new one to resume")
        if not isinstance(key, str) or len(key) > 200 or not KEY_PATTERN.fullmatch(key):
            raise ValueError(f"key must be [A-Za-z0-9_-] segments joined by '/', got {key!r}")
        if key in self._keys:
            raise ValueError(f"key {key!r} was already written under prefix {self.prefix!r}")
        if not isinstance(record, ImageRecord):
            raise TypeError(f"record must be an ImageRecord, got {type(record).__name__}")
        if not isinstance(image_rgb, np.ndarray) or image_rgb.dtype != np.uint8:
            raise TypeError(f"image_rgb must be a uint8 numpy array, got {type(image_rgb)}")
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"image_rgb must be H×W×3, got shape {image_rgb.shape}")
        size = [record.height, record.width]
        if list(image_rgb.shape[:2]) != size:
            raise ValueError(f"image is {image_rgb.shape[:2]} (H, W) but record says {size}")
        for ann in record.annotations:
            if list(ann.segmentation["size"]) != size:
                raise ValueError(
                    f"annotation {ann.id}: segmentation size {ann.segmentation['size']} != "
                    f"image [height, width] {size}"
                )
        if not isinstance(status, str) or not status:
            raise ValueError(f"status must be a non-empty str, got {status!r}")
        if blurred_boxes is not None and (
            isinstance(blurred_boxes, bool)
            or not isinstance(blurred_boxes, int)
            or blurred_boxes < 0
        ):
            raise ValueError(f"blurred_boxes must be an int >= 0 or None, got {blurred_boxes!r}")
        try:  # index rows now: a value that does not fit fails here, before any byte is written
            rows = index_tables(
                "", [(key, record, status)], self.stage, self.round, blurred_boxes=[blurred_boxes]
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            raise ValueError(f"record of {key!r} does not fit the index: {exc}") from exc
        members = [
            _member(f"{key}.jpg", encode_jpeg(image_rgb, self.jpeg_quality)),
            _member(f"{key}.json", encode_record(record)),
        ]
        sample_bytes = sum(_member_bytes(info) for info, _ in members)
        if self._rows and _final_tar_size(self._content_bytes + sample_bytes) > self.maxsize:
            self._finish_shard()
        if self._tar is None:
            self._open_shard()
        try:
            for info, data in members:
                self._tar.addfile(info, io.BytesIO(data))
        except BaseException as exc:  # never leave half a sample in a shard that gets closed
            self._abort_and_raise(exc)
        self._rows.append(rows)
        self._keys.add(key)
        self._content_bytes += sample_bytes
        if len(self._rows) >= self.maxcount:
            self._finish_shard()

    def _current_paths(self) -> tuple[Path, Path]:
        final = self.shard_dir / shard_name(self.prefix, self._next_number)
        return final, atomic.temp_path(final)

    def _open_shard(self) -> None:
        _, tmp = self._current_paths()
        try:
            self._handle = atomic.open_for_write(tmp)
            self._tar = tarfile.open(fileobj=self._handle, mode="w", format=TAR_FORMAT)
        except BaseException as exc:
            self._abort_and_raise(exc)

    def _abort_and_raise(self, exc: BaseException, extra: tuple[Path, ...] = ()) -> NoReturn:
        """Drop the shard in progress and ``extra`` temp files; raise ``DatasetWriteError``
        naming the shard for an ``OSError``, else re-raise ``exc`` (e.g. KeyboardInterrupt)."""
        final, tmp = self._current_paths()
        self._failed = True
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
        self._tar = self._handle = None
        self._rows = []
        for path in (tmp, *extra):
            atomic.remove_quietly(path)
        if isinstance(exc, OSError):
            raise DatasetWriteError(f"cannot write shard {final}: {exc}") from exc
        raise exc

    def _shard_tables(self, name: str) -> tuple[pa.Table, pa.Table]:
        """The shard's ``(images, masks)`` tables from the per-sample rows, ``shard`` filled."""
        tables = []
        for kind in range(2):
            table = pa.concat_tables([rows[kind] for rows in self._rows]).combine_chunks()
            column = pa.array([name] * table.num_rows, pa.string())
            i = table.schema.get_field_index("shard")
            tables.append(table.set_column(i, table.schema.field(i), column))
        return tables[0], tables[1]

    def _finish_shard(self) -> None:
        final, tmp = self._current_paths()
        staged: list[Path] = []
        try:
            self._tar.close()
            atomic.close_synced(self._handle)
            tables = self._shard_tables(final.name)
            for file, table in zip(index_file_paths(self.index_dir, final.name), tables):
                staged.append(atomic.write_temp(file, table_to_parquet_bytes(table)))
            atomic.commit(tmp, final)
        except BaseException as exc:  # DatasetWriteError included
            self._abort_and_raise(exc, tuple(staged))
        self._tar = self._handle = None
        self._rows = []
        self._content_bytes = 0
        self._next_number += 1
        self._written.append(final.name)
        try:
            for file in index_file_paths(self.index_dir, final.name):
                atomic.commit(atomic.temp_path(file), file)
        except BaseException:
            self._failed = True  # the shard is complete; reopening completes its index
            raise

    def close(self) -> list[str]:
        """Finish the shard in progress; returns the shard names this writer completed."""
        if not self._closed:
            self._closed = True
            if self._rows and not self._failed:
                self._finish_shard()
        return list(self._written)

    @property
    def shards_written(self) -> list[str]:
        """Names of the shards completed so far by this writer."""
        return list(self._written)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _readable(parquet_path: Path) -> bool:
    try:
        pq.read_metadata(parquet_path)
    except Exception:  # torn or empty file: pyarrow raises ArrowInvalid/OSError
        return False
    return True


def written_keys(shard_dir_or_index_dir: str | Path, prefix: str | None = None) -> set[str]:
    """Keys already in complete shards (of ``prefix`` when given); empty if the dir is absent.

    With an index directory (it has ``images/``) the keys come from the image index; with a
    shard directory from the member names of the final-named ``.tar`` files.
    """
    path = Path(shard_dir_or_index_dir)
    if not path.is_dir():
        return set()
    keys: set[str] = set()
    images_dir = path / IMAGES_DIR
    if images_dir.is_dir():
        head = re.escape(prefix) if prefix is not None else r"[A-Za-z0-9_-]+"
        pattern = re.compile(rf"images-{head}-\d{{6}}\.parquet")
        for file in sorted(images_dir.iterdir()):
            if pattern.fullmatch(file.name):
                keys.update(pq.read_table(file, columns=["key"]).column("key").to_pylist())
        return keys
    for shard in complete_shards(path, prefix).values():
        with tarfile.open(shard, mode="r:") as tar:
            for info in tar:
                if info.isfile():
                    keys.add(split_member_name(info.name)[0])
    return keys
