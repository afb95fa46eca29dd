"""Stream SA-1B samples out of WebDataset tar shards (ours and the official ``sa_*.tar``).

A sample is the consecutive tar members sharing a key (webdataset's rule: the key is the
member name up to the first dot of its base name): ``<key>.jpg`` + ``<key>.json``. Members are
read in-stream with ``tarfile`` (``r|*``); nothing is extracted to disk and member names are
never used as paths. Links, devices, absolute names and names with ``..`` are rejected.

Errors follow an explicit policy: ``on_error="raise"`` raises ``DatasetReadError`` at the first
bad sample, member or shard; ``"skip"`` skips it and counts it in ``ShardReader.stats``.
"""

from __future__ import annotations

import glob
import io
import json
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from engine.sa1b import ImageRecord, SA1BFormatError

ON_ERROR = ("raise", "skip")
END_OF_ARCHIVE = bytes(1024)  # two zero blocks close every tar archive


class DatasetReadError(Exception):
    """A shard, member or sample that cannot be read; the message names shard and key."""


class UnsafeMemberError(DatasetReadError):
    """A tar member that is a link/device or whose name is absolute or contains ``..``."""


@dataclass
class RawSample:
    """The bytes of one sample: ``files`` maps extension (``"jpg"``, ``"json"``) to content."""

    shard: str
    key: str
    files: dict[str, bytes] = field(default_factory=dict)
    duplicate_exts: list[str] = field(default_factory=list)


@dataclass
class MemberProblem:
    """A member that was not read (unsafe or unnamed); reading the shard went on past it."""

    shard: str
    name: str
    reason: str


@dataclass
class ReadStats:
    """What a reader did: counts plus one message per problem (``shard: key: reason``)."""

    shards: int = 0
    samples: int = 0  # yielded
    skipped_samples: int = 0
    skipped_members: int = 0
    failed_shards: int = 0  # shards abandoned part-way (unreadable, truncated)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.samples} samples from {self.shards} shards; skipped {self.skipped_samples} "
            f"samples, {self.skipped_members} members; {self.failed_shards} shards failed"
        )


def expand_shard_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """Files as given, directories as their ``*.tar`` (sorted, hidden files left out), globs.

    Raises ``ValueError`` naming a path that matches nothing.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.tar") if not p.name.startswith("."))
        elif path.is_file():
            found = [path]
        else:
            found = [Path(p) for p in sorted(glob.glob(str(item))) if Path(p).is_file()]
            if not found:
                raise ValueError(f"no shard file, directory or glob match: {item!r}")
        out.extend(p for p in found if p not in out)
    return out


def member_problem(info: tarfile.TarInfo) -> str | None:
    """Why a member must not be read, or ``None`` when it is a safely named file or dir."""
    if info.issym() or info.islnk():
        return f"link member ({info.linkname!r}) rejected"
    if not (info.isfile() or info.isdir()):
        return "not a regular file"
    name = info.name
    if any(c in name for c in ("\x00", "\\")):
        return "name holds NUL or backslash"
    if name.startswith("/"):
        return "absolute member name rejected"
    parts = name.split("/")
    while parts and parts[0] == ".":
        parts = parts[1:]
    if any(p in ("", ".", "..") for p in parts):
        return "member name with '..' or empty/'.' component rejected"
    return None


def split_member_name(name: str) -> tuple[str, str]:
    """``(key, ext)`` of a member name, webdataset's rule: ``"./a/sa_1.seg.json"`` → ``("a/sa_1",
    "seg.json")``. ``ext`` is empty when the base name has no dot."""
    while name.startswith("./"):
        name = name[2:]
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def _has_end_marker(path: Path, offset: int) -> bool:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(len(END_OF_ARCHIVE)) == END_OF_ARCHIVE


def iter_raw_samples(path: str | Path) -> Iterator[RawSample | MemberProblem]:
    """Samples of one shard in member order, plus a ``MemberProblem`` per rejected member.

    Raises ``DatasetReadError`` (after the samples before the damage) when the tar is
    unreadable, a member is short, or an uncompressed tar lacks its end-of-archive blocks
    (truncated at a member boundary); the sample in progress is then dropped.
    """
    path = Path(path)
    shard = str(path)
    current: RawSample | None = None
    with open(path, "rb") as handle:
        try:
            tar = tarfile.open(fileobj=handle, mode="r|*")
            for info in tar:
                problem = member_problem(info)
                key, ext = split_member_name(info.name)
                if problem is None and info.isfile() and not (key and ext):
                    problem = "member name has no '<key>.<ext>' form"
                if problem is not None:
                    yield MemberProblem(shard, info.name, problem)
                    continue
                if info.isdir():
                    continue
                member = tar.extractfile(info)
                data = member.read() if member is not None else b""
                if len(data) != info.size:
                    raise DatasetReadError(f"{shard}: member {info.name!r} is truncated")
                if current is not None and current.key != key:
                    yield current
                    current = None
                if current is None:
                    current = RawSample(shard, key)
                if ext in current.files:
                    current.duplicate_exts.append(ext)
                current.files[ext] = data
            compressed = getattr(tar.fileobj, "comptype", "tar") != "tar"
            end = tar.offset
        except (tarfile.TarError, EOFError, OSError) as exc:
            lost = f" (sample {current.key!r} lost)" if current is not None else ""
            raise DatasetReadError(f"{shard}: unreadable or truncated tar: {exc}{lost}") from exc
    if not compressed and not _has_end_marker(path, end):
        lost = f" (sample {current.key!r} lost)" if current is not None else ""
        raise DatasetReadError(f"{shard}: truncated tar: no end-of-archive blocks{lost}")
    if current is not None:
        yield current


def decode_image(data: bytes) -> np.ndarray:
    """JPEG (or any PIL format) bytes → ``H×W×3`` uint8 RGB; raises ``DatasetReadError``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:  # PIL raises OSError, SyntaxError, DecompressionBombError, ...
        raise DatasetReadError(f"image does not decode: {exc}") from exc


def parse_record(data: bytes) -> ImageRecord:
    """SA-1B JSON bytes → ``ImageRecord`` (schema checked); raises ``DatasetReadError``."""
    try:
        return ImageRecord.from_json(json.loads(data))
    except (ValueError, SA1BFormatError) as exc:  # JSONDecodeError and UnicodeError too
        raise DatasetReadError(f"json: {exc}") from exc
    except RecursionError:  # nesting deeper than the parser's stack
        raise DatasetReadError("json: nested too deeply to parse") from None


def decode_sample(
    raw: RawSample, decode_images: bool = True
) -> tuple[str, np.ndarray | None, ImageRecord]:
    """``(key, image H×W×3 uint8 or None, record)``; raises ``DatasetReadError`` naming why."""
    missing = [f".{ext}" for ext in ("jpg", "json") if ext not in raw.files]
    if missing:
        raise DatasetReadError(f"missing {' and '.join(missing)}")
    if raw.duplicate_exts:
        raise DatasetReadError(f"duplicate members .{', .'.join(raw.duplicate_exts)}")
    record = parse_record(raw.files["json"])
    if not decode_images:
        return raw.key, None, record
    image = decode_image(raw.files["jpg"])
    if image.shape[:2] != (record.height, record.width):
        raise DatasetReadError(
            f"image is {image.shape[0]}x{image.shape[1]} (HxW) but the record says "
            f"{record.height}x{record.width}"
        )
    return raw.key, image, record


class ShardReader:
    """Iterate ``(key, image_rgb, ImageRecord)`` over shards: files, directories or globs.

    ``decode_images=False`` is the records-only mode (``image`` is ``None``, no JPEG decode).
    ``on_error``: ``"raise"`` or ``"skip"`` (skips are counted in ``stats``).
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        decode_images: bool = True,
        on_error: str = "raise",
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.shards = expand_shard_paths(paths)
        self.decode_images = decode_images
        self.on_error = on_error
        self.stats = ReadStats()

    def _problem(self, message: str, error: type[DatasetReadError] = DatasetReadError) -> None:
        if self.on_error == "raise":
            raise error(message)
        self.stats.problems.append(message)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray | None, ImageRecord]]:
        for shard in self.shards:
            self.stats.shards += 1
            raw_samples = iter_raw_samples(shard)
            while True:
                try:
                    item = next(raw_samples)
                except StopIteration:
                    break
                except DatasetReadError as exc:
                    self.stats.failed_shards += 1
                    self._problem(str(exc))
                    break
                if isinstance(item, MemberProblem):
                    self.stats.skipped_members += 1
                    self._problem(f"{item.shard}: {item.name!r}: {item.reason}", UnsafeMemberError)
                    continue
                try:
                    sample = decode_sample(item, self.decode_images)
                except DatasetReadError as exc:
                    self.stats.skipped_samples += 1
                    self._problem(f"{item.shard}: {item.key}: {exc}")
                    continue
                self.stats.samples += 1
                yield sample
