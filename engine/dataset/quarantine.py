"""The quarantine log: one JSON line per input that could not be used (``quarantine.jsonl``).

Each line is ``QuarantineRecord.to_json()``: ``{"key": str, "path": str, "reason": str}``.
Appends are flushed and fsynced one by one; a key is written at most once, so re-running a
round over the same inputs does not duplicate lines. A line torn by a crash (no trailing
newline) is cut off when the log is opened again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.dataset.atomic import DatasetWriteError, fsync_dir
from engine.records import QuarantineRecord


def _parse(path: Path) -> tuple[list[QuarantineRecord], int]:
    """Records of complete lines and the byte length those lines cover."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # a torn last line (no newline) is not a record
    records = []
    for number, line in enumerate(data[:end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            records.append(
                QuarantineRecord(key=item["key"], path=item["path"], reason=item["reason"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a quarantine record: {exc}") from exc
    return records, end


def read_quarantine(path: str | Path) -> list[QuarantineRecord]:
    """All records of a quarantine log in file order (empty if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return _parse(path)[0]


class QuarantineLog:
    """Append-only, idempotent-per-key log of quarantined inputs at ``path`` (JSON lines)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._keys: set[str] = set()
        if self.path.exists():
            records, end = _parse(self.path)
            self._keys = {r.key for r in records}
            if end != self.path.stat().st_size:
                try:
                    os.truncate(self.path, end)
                except OSError as exc:
                    raise DatasetWriteError(f"cannot repair {self.path}: {exc}") from exc

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> set[str]:
        """Keys logged so far (a copy)."""
        return set(self._keys)

    def add(self, record: QuarantineRecord) -> bool:
        """Append ``record`` durably unless its key is already logged; True if written."""
        if not isinstance(record, QuarantineRecord):
            raise TypeError(f"record must be a QuarantineRecord, got {type(record).__name__}")
        if record.key in self._keys:
            return False
        line = json.dumps(record.to_json()) + "\n"  # ASCII: escapes lone surrogates too
        created = not self.path.exists()
        data = line.encode("utf-8")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                try:
                    written = 0
                    while written < len(data):
                        written += os.write(fd, data[written:])
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)  # no torn line for the next append to follow
                    raise
            finally:
                os.close(fd)
            if created:
                fsync_dir(self.path.parent)
        except OSError as exc:
            raise DatasetWriteError(f"cannot append to {self.path}: {exc}") from exc
        self._keys.add(record.key)
        return True
