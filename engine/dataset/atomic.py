"""Crash-safe file writing: temporary name in the same directory, fsync, rename, fsync the dir.

A reader (or a crash) never sees a half-written file under its final name: either the old
state or the whole new file. Failures raise ``DatasetWriteError`` naming the path and remove
the temporary file when they can.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO


class DatasetWriteError(OSError):
    """Writing a shard, an index file or a log failed; the message names the path."""


def temp_path(path: Path) -> Path:
    """The temporary name used while ``path`` is being written: ``.{name}.tmp`` beside it."""
    return path.with_name(f".{path.name}.tmp")


def open_for_write(path: Path) -> BinaryIO:
    """Open ``path`` for binary writing, truncating it (a hook tests replace to inject faults)."""
    return open(path, "wb")  # noqa: SIM115 - the caller closes it


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> None:
    """Remove a file if it is there; errors are ignored (best-effort clean-up after a failure)."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def close_synced(handle: BinaryIO) -> None:
    """Flush, fsync and close a file opened for writing (raises ``OSError`` on failure)."""
    try:
        handle.flush()
        os.fsync(handle.fileno())
    finally:
        handle.close()


def write_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` durably to ``temp_path(path)`` and return that name (not renamed yet)."""
    tmp = temp_path(Path(path))
    try:
        handle = open_for_write(tmp)
    except OSError as exc:
        raise DatasetWriteError(f"cannot write {path}: {exc}") from exc
    try:
        try:
            handle.write(data)
        finally:
            close_synced(handle)
    except OSError as exc:
        remove_quietly(tmp)
        raise DatasetWriteError(f"cannot write {path}: {exc}") from exc
    return tmp


def commit(tmp: Path, final: Path) -> None:
    """Rename a finished temporary file to its final name and fsync the directory."""
    try:
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        raise DatasetWriteError(f"cannot rename {tmp} to {final}: {exc}") from exc


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename, fsync dir)."""
    path = Path(path)
    tmp = write_temp(path, data)
    try:
        commit(tmp, path)
    except DatasetWriteError:
        remove_quietly(tmp)
        raise
