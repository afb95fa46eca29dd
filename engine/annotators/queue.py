"""The round queue: what a round run with ``annotator=human`` hands to the annotation tool.

The pipeline writes one queue file per round, ``<run_dir>/queues/<prefix>.json`` (prefix like
``stage1-r00``); the web tool (``sa-engine annotate``) reads it and serves its images. Format::

    {"stage": str, "round": int, "prefix": str,
     "preset": str,                 # model preset name (engine.model.PRESETS)
     "checkpoint": str | null,      # path relative to run_dir; null = random init of preset
     "source": {"kind": str, ...},  # kwargs of engine.data.open_source(kind, **kwargs)
     "entries": [SourceEntry as a dict, ...],
     "prefill": {key: [SA-1B annotation dicts]},   # semi-automatic pre-fill (may be empty)
     "target_images": int}          # the round is done when this many images are done

The human work itself lives in ``<run_dir>/human/<prefix>/`` (``engine.annotators.human_store``).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.data.sources import SourceEntry, check_key
from engine.dataset.atomic import write_bytes_atomic

QUEUES_DIR = "queues"
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,119}")


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a safe file-name stem (``stage1-r00``), else ``ValueError``."""
    if not isinstance(prefix, str) or not PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(f"prefix must match {PREFIX_PATTERN.pattern}, got {prefix!r}")
    return prefix


def entry_from_dict(data: dict) -> SourceEntry:
    """Rebuild a ``SourceEntry`` from ``dataclasses.asdict`` output (lists back to tuples)."""
    if not isinstance(data, dict):
        raise ValueError(f"an entry must be an object, got {type(data).__name__}")
    members = tuple(tuple(m) for m in data.get("members", ()))
    entry = SourceEntry(**{**data, "members": members})
    check_key(entry.key)
    return entry


@dataclass
class RoundQueue:
    """One round's queue of images for human annotators (see the module docstring)."""

    stage: str
    round: int
    prefix: str
    preset: str
    checkpoint: str | None
    source: dict
    entries: list[SourceEntry]
    prefill: dict[str, list[dict]] = field(default_factory=dict)
    target_images: int = 0

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if not isinstance(self.round, int) or isinstance(self.round, bool) or self.round < 0:
            raise ValueError(f"round must be a non-negative int, got {self.round!r}")
        if not isinstance(self.source, dict) or not isinstance(self.source.get("kind"), str):
            raise ValueError(f"source must be {{'kind': str, ...}}, got {self.source!r}")
        keys = [e.key for e in self.entries]
        if len(set(keys)) != len(keys):
            raise ValueError("entries hold duplicate keys")
        for key in keys:
            check_key(key)
        unknown = set(self.prefill) - set(keys)
        if unknown:
            raise ValueError(f"prefill names keys not in entries: {sorted(unknown)[:5]}")
        target = self.target_images
        if not isinstance(target, int) or isinstance(target, bool) or target < 0:
            raise ValueError(f"target_images must be a non-negative int, got {target!r}")
        if target > len(keys):
            raise ValueError(f"target_images {target} exceeds the {len(keys)} entries")

    @property
    def keys(self) -> list[str]:
        """Image keys in queue order."""
        return [e.key for e in self.entries]

    def entry(self, key: str) -> SourceEntry:
        """The entry named ``key``; ``KeyError`` when the queue does not hold it."""
        for entry in self.entries:
            if entry.key == key:
                return entry
        raise KeyError(key)

    def to_json(self) -> dict:
        return {
            "stage": self.stage,
            "round": int(self.round),
            "prefix": self.prefix,
            "preset": self.preset,
            "checkpoint": self.checkpoint,
            "source": dict(self.source),
            "entries": [asdict(e) for e in self.entries],
            "prefill": {k: list(v) for k, v in self.prefill.items()},
            "target_images": int(self.target_images),
        }

    @classmethod
    def from_json(cls, data: dict) -> RoundQueue:
        """Parse a queue document; raises ``ValueError`` naming the bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"a queue must be a JSON object, got {type(data).__name__}")
        missing = [
            name
            for name in ("stage", "round", "prefix", "preset", "source", "entries")
            if name not in data
        ]
        if missing:
            raise ValueError(f"queue is missing {missing}")
        entries = data["entries"]
        if not isinstance(entries, list):
            raise ValueError("queue.entries must be a list")
        prefill = data.get("prefill") or {}
        if not isinstance(prefill, dict) or not all(isinstance(v, list) for v in prefill.values()):
            raise ValueError("queue.prefill must be {key: [annotation dicts]}")
        entries = [entry_from_dict(e) for e in entries]
        return cls(
            stage=str(data["stage"]),
            round=data["round"],
            prefix=data["prefix"],
            preset=str(data["preset"]),
            checkpoint=data.get("checkpoint"),
            source=data["source"],
            entries=entries,
            prefill=prefill,
            target_images=data.get("target_images", len(entries)),
        )


def queue_path(run_dir: str | Path, prefix: str) -> Path:
    """``<run_dir>/queues/<prefix>.json``."""
    return Path(run_dir) / QUEUES_DIR / f"{check_prefix(prefix)}.json"


def write_queue(run_dir: str | Path, queue: RoundQueue) -> Path:
    """Write ``queue`` atomically to ``queues/<prefix>.json`` and return the path."""
    path = queue_path(run_dir, queue.prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(queue.to_json(), indent=1, sort_keys=True).encode("utf-8")
    write_bytes_atomic(path, data)
    return path


def read_queue(run_dir: str | Path, prefix: str) -> RoundQueue:
    """Read ``queues/<prefix>.json``; ``FileNotFoundError`` when the round has no queue."""
    path = queue_path(run_dir, prefix)
    queue = RoundQueue.from_json(json.loads(path.read_text(encoding="utf-8")))
    if queue.prefix != prefix:
        raise ValueError(f"{path} holds prefix {queue.prefix!r}, not {prefix!r}")
    return queue


def list_queues(run_dir: str | Path) -> list[str]:
    """Prefixes of all queue files under ``run_dir``, sorted (``stage1-r00`` < ``stage1-r01``)."""
    folder = Path(run_dir) / QUEUES_DIR
    if not folder.is_dir():
        return []
    return sorted(
        p.stem for p in folder.glob("*.json") if p.is_file() and PREFIX_PATTERN.fullmatch(p.stem)
    )
