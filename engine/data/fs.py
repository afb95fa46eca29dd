"""Filesystem plumbing shared by the file-based sources (pyarrow filesystems, fsspec).

A location is a local path or a URI that ``pyarrow.fs.FileSystem.from_uri`` understands
(``file://``, ``s3://``, ``gs://``, ``hdfs://`` …). Callers may instead pass a filesystem: a
``pyarrow.fs.FileSystem`` or an fsspec ``AbstractFileSystem`` (wrapped with pyarrow's
``FSSpecHandler``), with the location then a path inside it.
"""

from __future__ import annotations

import os
import re
from fnmatch import fnmatchcase

import pyarrow.fs as pafs

from engine.data.decode import DecodeError

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: larger files are quarantined unread
_GLOB_CHARS = re.compile(r"[*?\[]")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def as_arrow_filesystem(filesystem: object) -> pafs.FileSystem:
    """A pyarrow filesystem from a pyarrow or fsspec filesystem object."""
    if isinstance(filesystem, pafs.FileSystem):
        return filesystem
    try:
        from fsspec import AbstractFileSystem
    except ImportError:  # pragma: no cover - fsspec ships with the stack
        AbstractFileSystem = ()  # type: ignore[assignment]
    if isinstance(filesystem, AbstractFileSystem):
        return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
    raise TypeError(
        "filesystem must be a pyarrow.fs.FileSystem or an fsspec AbstractFileSystem, "
        f"got {type(filesystem).__name__}"
    )


def resolve(location: str, filesystem: object | None = None) -> tuple[pafs.FileSystem, str, str]:
    """``(filesystem, path inside it, display prefix)`` for a location.

    The display prefix (``"s3://"`` …) turns a filesystem path back into a readable URL for
    quarantine records; it is empty for local paths. Glob characters after the scheme are
    kept in the returned path untouched.
    """
    if not isinstance(location, str) or not location:
        raise ValueError(f"location must be a non-empty path or URI, got {location!r}")
    if filesystem is not None:
        return as_arrow_filesystem(filesystem), location, ""
    match = _SCHEME.match(location)
    if match is None:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location)), ""
    base, pattern = split_glob(location)
    try:
        fs, path = pafs.FileSystem.from_uri(base)
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot open filesystem for {location!r}: {exc}") from exc
    if pattern:
        path = f"{path.rstrip('/')}/{pattern}"
    prefix = "" if isinstance(fs, pafs.LocalFileSystem) else f"{match.group(1)}://"
    return fs, path, prefix


def split_glob(path: str) -> tuple[str, str]:
    """Split ``dir/sub/*.jpg`` into (``dir/sub``, ``*.jpg``); the pattern is ``""`` if none."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if _GLOB_CHARS.search(part):
            return "/".join(parts[:i]) or "/", "/".join(parts[i:])
    return path, ""


def glob_match(pattern: str, relpath: str) -> bool:
    """Whether ``relpath`` matches a relative glob: ``*``, ``?`` and ``[…]`` stay within one
    component (``fnmatch`` rules, case-sensitive); ``**`` spans any number of directories."""
    return _match_parts(tuple(pattern.split("/")), tuple(relpath.split("/")))


def glob_depth(pattern: str) -> int | None:
    """How many directory levels a glob can descend (``None`` when it holds ``**``)."""
    parts = pattern.split("/")
    return None if "**" in parts else len(parts) - 1


def _match_parts(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match_parts(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    if not parts or not fnmatchcase(parts[0], pattern[0]):
        return False
    return _match_parts(pattern[1:], parts[1:])


def read_bytes(fs: pafs.FileSystem, path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The whole file, or ``DecodeError`` when it cannot be read or is over ``max_bytes``."""
    try:
        with fs.open_input_stream(path) as stream:
            data = stream.read(max_bytes + 1)
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except (OSError, ValueError) as exc:
        raise DecodeError(f"cannot read file: {exc}") from None
    if len(data) > max_bytes:
        raise DecodeError(f"file larger than max_bytes {max_bytes}")
    return bytes(data)


def read_range(fs: pafs.FileSystem, path: str, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` (a tar member), or ``DecodeError`` if short/unreadable."""
    try:
        with fs.open_input_file(path) as handle:
            data = handle.read_at(size, offset)
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except (OSError, ValueError) as exc:
        raise DecodeError(f"cannot read file: {exc}") from None
    if len(data) != size:
        raise DecodeError(f"truncated: wanted {size} bytes at offset {offset}, got {len(data)}")
    return bytes(data)
