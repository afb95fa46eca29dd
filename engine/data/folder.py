"""Folder source: the images under a directory or glob, on local disk or any pyarrow filesystem.

Listing is lazy (one directory at a time, depth first) and deterministic: names are sorted
within each directory, so the order is that of the relative paths compared component by
component. Keys come from the relative paths (``engine.data.sources.key_from_path``).
On local disk a symlink loop, a broken symlink with an image extension or an unreadable
directory becomes an entry with ``error`` set (quarantined by ``iter_items``), never a hang.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Iterator

import pyarrow.fs as pafs

from engine.data import fs as fsutil
from engine.data.decode import DecodeError, DecodeOptions, decode_item
from engine.data.sources import SourceEntry, key_from_path
from engine.records import ImageItem

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
DEFAULT_MAX_DEPTH = 64


class FolderSource:
    """Images under ``root``: a directory, a glob (``photos/**/*.jpg``) or a URI of either.

    ``filesystem`` (pyarrow or fsspec) makes ``root`` a path inside it. Extensions are
    matched case-insensitively. Decoding follows ``DecodeOptions`` (see ``decode.py``).
    """

    def __init__(
        self,
        root: str,
        filesystem: object | None = None,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
        max_short_side: int | None = 1500,
        max_pixels: int = DecodeOptions.max_pixels,
        min_side: int = DecodeOptions.min_side,
        max_bytes: int = fsutil.DEFAULT_MAX_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self.name = f"folder:{root}"
        self.options = DecodeOptions(max_short_side, max_pixels, min_side)
        self.extensions = tuple(e.lower() for e in extensions)
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self._fs, path, self._prefix = fsutil.resolve(root, filesystem)
        base, self._pattern = fsutil.split_glob(path)
        self._base = base.rstrip("/") or "/"
        info = self._fs.get_file_info(self._base)
        if info.type == pafs.FileType.NotFound:
            raise ValueError(f"folder source root {root!r} does not exist")
        self._single_file = info.type == pafs.FileType.File and not self._pattern
        self._local = isinstance(self._fs, pafs.LocalFileSystem)

    def entries(self) -> Iterator[SourceEntry]:
        """Image files (and broken inputs found on the way), lazily, in sorted order."""
        if self._single_file:
            listing: Iterator[tuple[str, str | None]] = iter(
                [(posixpath.basename(self._base), None)]
            )
            base = posixpath.dirname(self._base)
        else:
            listing = self._walk_local() if self._local else self._walk_arrow()
            base = self._base
        for index, (relpath, error) in enumerate(listing):
            yield SourceEntry(
                key=key_from_path(relpath),
                path=self._prefix + posixpath.join(base, relpath),
                index=index,
                error=error,
            )

    def load(self, entry: SourceEntry) -> ImageItem:
        """Read and decode one file; raises ``DecodeError``."""
        if entry.error is not None:
            raise DecodeError(entry.error)
        path = entry.path[len(self._prefix) :]
        data = fsutil.read_bytes(self._fs, path, self.max_bytes)
        base = posixpath.dirname(self._base) if self._single_file else self._base
        file_name = posixpath.relpath(path, base) if base != "/" else path.lstrip("/")
        return decode_item(data, entry.key, file_name, options=self.options)

    # -- listing -------------------------------------------------------------------------

    def _wanted(self, relpath: str) -> bool:
        if not relpath.lower().endswith(self.extensions):
            return False
        return not self._pattern or fsutil.glob_match(self._pattern, relpath)

    def _depth_limit(self) -> int:
        depth = fsutil.glob_depth(self._pattern) if self._pattern else None
        return self.max_depth if depth is None else min(depth, self.max_depth)

    def _walk_local(self) -> Iterator[tuple[str, str | None]]:
        """os.scandir walk that follows directory symlinks but not back into an ancestor."""
        root_stat = os.stat(self._base)
        yield from self._scan_local(self._base, "", {(root_stat.st_dev, root_stat.st_ino): ""})

    def _scan_local(
        self, directory: str, rel: str, ancestors: dict[tuple[int, int], str]
    ) -> Iterator[tuple[str, str | None]]:
        try:
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield rel or ".", f"cannot list directory: {exc.strerror or exc}"
            return
        depth = rel.count("/") + 1 if rel else 0
        for child in children:
            relpath = f"{rel}/{child.name}" if rel else child.name
            try:
                st = os.stat(child.path)  # follows symlinks
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    yield relpath, "symlink loop (too many levels of symbolic links)"
                elif child.is_symlink() and self._wanted(relpath):
                    yield relpath, f"broken symlink: {exc.strerror or exc}"
                elif not child.is_symlink() and self._wanted(relpath):
                    yield relpath, f"cannot stat file: {exc.strerror or exc}"
                continue
            if stat.S_ISDIR(st.st_mode):
                ident = (st.st_dev, st.st_ino)
                if ident in ancestors:
                    target = ancestors[ident] or "the root"
                    yield relpath, f"symlink loop: directory leads back to {target}"
                    continue
                if depth >= self._depth_limit():
                    if depth >= self.max_depth:
                        yield relpath, f"directory deeper than max_depth {self.max_depth}"
                    continue
                yield from self._scan_local(child.path, relpath, {**ancestors, ident: relpath})
            elif self._wanted(relpath):
                # A FIFO or device named like an image would block or stream forever.
                yield relpath, None if stat.S_ISREG(st.st_mode) else "not a regular file"

    def _walk_arrow(self, rel: str = "") -> Iterator[tuple[str, str | None]]:
        """Generic pyarrow walk (object stores have no symlinks; depth is still bounded)."""
        directory = f"{self._base.rstrip('/')}/{rel}" if rel else self._base
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(directory, recursive=False))
        except (OSError, ValueError) as exc:
            yield rel or ".", f"cannot list directory: {exc}"
            return
        depth = rel.count("/") + 1 if rel else 0
        for info in sorted(infos, key=lambda i: i.base_name):
            relpath = f"{rel}/{info.base_name}" if rel else info.base_name
            if info.type == pafs.FileType.Directory:
                if depth >= self._depth_limit():
                    if depth >= self.max_depth:
                        yield relpath, f"directory deeper than max_depth {self.max_depth}"
                    continue
                yield from self._walk_arrow(relpath)
            elif info.type == pafs.FileType.File and self._wanted(relpath):
                yield relpath, None
