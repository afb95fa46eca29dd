"""QuarantineLog: durable JSON lines, one per key, torn last line repaired."""

from __future__ import annotations

import json

import pytest

from engine.dataset import DatasetWriteError, QuarantineLog, read_quarantine
from engine.records import QuarantineRecord


def _record(key: str, reason: str = "truncated JPEG") -> QuarantineRecord:
    return QuarantineRecord(key=key, path=f"/data/{key}.jpg", reason=reason)


def test_lines_are_the_records_json(tmp_path):
    path = tmp_path / "quarantine.jsonl"
    log = QuarantineLog(path)
    assert log.add(_record("a")) is True
    assert log.add(_record("b", "0 bytes")) is True
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"key": "a", "path": "/data/a.jpg", "reason": "truncated JPEG"},
        {"key": "b", "path": "/data/b.jpg", "reason": "0 bytes"},
    ]
    assert read_quarantine(path) == [_record("a"), _record("b", "0 bytes")]


def test_idempotent_per_key_across_reopen(tmp_path):
    path = tmp_path / "quarantine.jsonl"
    log = QuarantineLog(path)
    log.add(_record("a"))
    assert log.add(_record("a", "other reason")) is False
    again = QuarantineLog(path)
    assert "a" in again and len(again) == 1
    assert again.add(_record("a")) is False
    assert again.add(_record("c")) is True
    assert [r.key for r in read_quarantine(path)] == ["a", "c"]


def test_torn_last_line_is_cut_on_open(tmp_path):
    path = tmp_path / "quarantine.jsonl"
    QuarantineLog(path).add(_record("a"))
    with open(path, "ab") as handle:
        handle.write(b'{"key": "b", "pa')  # a crash in the middle of an append
    assert [r.key for r in read_quarantine(path)] == ["a"]
    log = QuarantineLog(path)
    assert "b" not in log
    log.add(_record("b"))
    assert read_quarantine(path) == [_record("a"), _record("b")]


def test_unusual_paths_survive(tmp_path):
    path = tmp_path / "q.jsonl"
    record = QuarantineRecord(key="k", path="/data/caf\u00e9 \udcff.jpg", reason='bad "quote"\n')
    QuarantineLog(path).add(record)
    assert read_quarantine(path) == [record]


def test_malformed_line_is_named(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"key": "a", "path": "p", "reason": "r"}\nnot json\n')
    with pytest.raises(ValueError, match="q.jsonl:2"):
        read_quarantine(path)


def test_missing_file_reads_empty_and_bad_record_type(tmp_path):
    assert read_quarantine(tmp_path / "absent.jsonl") == []
    with pytest.raises(TypeError, match="QuarantineRecord"):
        QuarantineLog(tmp_path / "q.jsonl").add({"key": "a"})


def test_unwritable_location_gives_named_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DatasetWriteError, match="file/q.jsonl"):
        QuarantineLog(blocker / "q.jsonl").add(_record("a"))
