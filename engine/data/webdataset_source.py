"""WebDataset source: SA-1B samples (``<key>.jpg`` + ``<key>.json``) in tar shards.

Works on our shards and on the official SA-1B tars. Nothing is ever extracted: listing reads
tar headers (seeking over member data on local disk, streaming elsewhere) and records each
member's data offset and size; ``load`` reads those byte ranges back. Member names are never
used as file paths. As in WebDataset, a sample is a run of consecutive members sharing the
name up to the first dot of the base name. A member with an absolute name or a ``..``
component, a link or device member, a sample without an image, a duplicated member and an
unreadable shard each become a quarantined entry.

The JSON, when present, must be an SA-1B record (``engine.sa1b``); its masks become
``ReferenceMask(level=None, object_id=<annotation id>)`` (SA-1B does not record a level).
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator

import pyarrow.fs as pafs
from braceexpand import braceexpand

from engine.data import fs as fsutil
from engine.data.decode import DecodeError, DecodeOptions, decode_item
from engine.data.sources import KEY_PATTERN, SourceEntry, key_from_path
from engine.records import ImageItem, ReferenceMask
from engine.sa1b import ImageRecord, SA1BFormatError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
MAX_JSON_BYTES = 256 << 20


class WebDatasetSource:
    """Samples of one or more tar shards, in shard order then member order.

    ``shards`` is a path/URI, a list of them, a brace pattern (``sa_{000000..000009}.tar``),
    a glob, or a directory (all ``*.tar`` in it, sorted). Keys are the sample keys when they
    are already tar-member-safe (ours and SA-1B's are), else ``key_from_path`` of them.
    """

    def __init__(
        self,
        shards: str | list[str],
        filesystem: object | None = None,
        max_short_side: int | None = 1500,
        max_pixels: int = DecodeOptions.max_pixels,
        min_side: int = DecodeOptions.min_side,
    ) -> None:
        patterns = [shards] if isinstance(shards, str) else list(shards)
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise ValueError(f"shards must be a path or a non-empty list of paths, got {shards!r}")
        self.name = f"webdataset:{patterns[0]}" + (f" (+{len(patterns) - 1})" * (len(patterns) > 1))
        self.options = DecodeOptions(max_short_side, max_pixels, min_side)
        self._shards: list[tuple[pafs.FileSystem, str, str]] = []
        for pattern in patterns:
            for location in braceexpand(pattern):
                self._shards.extend(_expand(location, filesystem))
        if not self._shards:
            raise ValueError(f"no tar shards found for {shards!r}")
        self._shard_index = {prefix + path: i for i, (_, path, prefix) in enumerate(self._shards)}

    @property
    def shard_paths(self) -> list[str]:
        """Shard paths/URLs in reading order."""
        return [prefix + path for _, path, prefix in self._shards]

    def shard_sizes(self) -> list[tuple[str, int]]:
        """``(path/URL, size in bytes)`` per shard in reading order (-1: missing); no shard
        is opened."""
        sizes = []
        for fs, path, prefix in self._shards:
            info = fs.get_file_info(path)
            size = info.size if info.type == pafs.FileType.File and info.size is not None else -1
            sizes.append((prefix + path, int(size)))
        return sizes

    def entries(self) -> Iterator[SourceEntry]:
        """One entry per sample (and per problem found in the tar headers), lazily."""
        index = 0
        for fs, path, prefix in self._shards:
            for key, member, members, error in _list_shard(fs, path):
                yield SourceEntry(
                    key=key,
                    path=f"{prefix}{path}#{member}",
                    index=index,
                    members=members,
                    error=error,
                )
                index += 1

    def load(self, entry: SourceEntry) -> ImageItem:
        """Read the sample's members by offset and decode them; raises ``DecodeError``."""
        if entry.error is not None:
            raise DecodeError(entry.error)
        shard, _, member = entry.path.rpartition("#")
        fs, path, _ = self._shards[self._shard_index[shard]]
        members = {ext: (offset, size) for ext, offset, size in entry.members}
        image_ext = next(ext for ext in IMAGE_EXTS if ext in members)
        image_bytes = fsutil.read_range(fs, path, *members[image_ext])
        file_name = f"{member}.{image_ext}"
        image_id = 0
        refs: list[ReferenceMask] = []
        if "json" in members:
            offset, size = members["json"]
            if size > MAX_JSON_BYTES:
                raise DecodeError(f"JSON member larger than {MAX_JSON_BYTES} bytes")
            raw = fsutil.read_range(fs, path, offset, size)
            try:
                record = ImageRecord.from_json(json.loads(raw))
            except SA1BFormatError as exc:
                raise DecodeError(f"JSON member is not an SA-1B record: {exc}") from None
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int too long
                raise DecodeError(f"JSON member does not parse: {exc}") from None
            except RecursionError:
                raise DecodeError("JSON member does not parse: nested too deeply") from None
            file_name, image_id = record.file_name, record.image_id
            refs = [
                ReferenceMask(rle=dict(ann.segmentation), level=None, object_id=ann.id)
                for ann in record.annotations
            ]
        item = decode_item(image_bytes, entry.key, file_name, image_id, refs, self.options)
        return item


def _expand(location: str, filesystem: object | None) -> list[tuple[pafs.FileSystem, str, str]]:
    """A location → the shards it names: a file, a directory of ``*.tar`` or a glob."""
    fs, path, prefix = fsutil.resolve(location, filesystem)
    base, pattern = fsutil.split_glob(path)
    if not pattern:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            base, pattern = path, "*.tar"
        else:
            return [(fs, path, prefix)]  # a missing file is reported when listed
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, recursive="**" in pattern))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot list shards in {base!r}: {exc}") from exc
    found = []
    for info in infos:
        rel = posixpath.relpath(info.path, base)
        if info.type == pafs.FileType.File and fsutil.glob_match(pattern, rel):
            found.append(info.path)
    return [(fs, p, prefix) for p in sorted(found)]


def _safe_member_name(name: str) -> str | None:
    """The member name without a leading ``./``; ``None`` for absolute names or ``..``."""
    if name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
        return None
    while name.startswith("./"):
        name = name[2:]
    parts = name.split("/")
    if not name or any(part == ".." for part in parts):
        return None
    return name


Listed = tuple[str, str, tuple[tuple[str, int, int], ...], str | None]


def _problem(shard: str, member: str, reason: str) -> Listed:
    """An entry for a problem: its key hashes the shard path and the member name."""
    return key_from_path(f"{shard}#{member}"), member, (), reason


def _sample_key(prefix: str) -> str:
    return prefix if KEY_PATTERN.fullmatch(prefix) else key_from_path(prefix)


def _list_shard(fs: pafs.FileSystem, path: str) -> Iterator[Listed]:
    """``(key, member prefix, members, error)`` per sample or problem, in member order."""
    seen: set[str] = set()
    current: str | None = None
    members: dict[str, tuple[int, int]] = {}
    duplicate: str | None = None

    def flush() -> Iterator[Listed]:
        """Emit the pending sample, if any."""
        nonlocal current
        if current is None:
            return
        key = _sample_key(current)
        error = duplicate
        if error is None and not any(ext in members for ext in IMAGE_EXTS):
            error = f"sample has no image member ({'/'.join(IMAGE_EXTS)})"
        if key in seen:
            error = f"key {current!r} appears twice in the shard (members not consecutive?)"
            key = key_from_path(f"{path}#{current}#{len(seen)}")
        seen.add(key)
        flat = tuple((ext, offset, size) for ext, (offset, size) in members.items())
        yield key, current, flat, error
        current = None

    try:
        handle = (
            fs.open_input_file(path)
            if isinstance(fs, pafs.LocalFileSystem)
            else fs.open_input_stream(path)
        )
    except (OSError, ValueError) as exc:
        yield _problem(path, "", f"cannot open shard: {exc}")
        return
    with handle:
        try:
            mode = "r:" if isinstance(fs, pafs.LocalFileSystem) else "r|"
            with tarfile.open(fileobj=handle, mode=mode) as tar:
                for info in tar:
                    name = _safe_member_name(info.name)
                    if name is None:
                        yield from flush()
                        yield _problem(
                            path, info.name, "unsafe tar member name (absolute or '..'): ignored"
                        )
                        continue
                    if info.isdir():
                        continue
                    if not info.isfile():
                        yield from flush()
                        yield _problem(path, name, "tar member is a link or device: ignored")
                        continue
                    directory, base = posixpath.split(name)
                    stem, dot, ext = base.partition(".")
                    if not stem or not dot:
                        yield from flush()
                        yield _problem(path, name, "tar member name is not '<key>.<ext>': ignored")
                        continue
                    prefix = posixpath.join(directory, stem)
                    if prefix != current:
                        yield from flush()
                        current, members, duplicate = prefix, {}, None
                    ext = ext.lower()
                    if ext in members:
                        duplicate = f"duplicate member {name!r} in the sample"
                    members[ext] = (info.offset_data, info.size)
        except (tarfile.TarError, OSError, EOFError) as exc:
            yield from flush()
            yield _problem(path, "", f"cannot read tar: {exc}")
            return
    yield from flush()
