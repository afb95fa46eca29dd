"""What the audit reads: shards (files, directories, run directories) and their Parquet index.

A run directory is one holding ``shards/`` (and usually ``index/``); a directory named
``shards`` finds its index in the sibling ``index/``; any other directory is read for its
``*.tar`` files and may hold an ``index/`` of its own. Provenance (stage, round, source per
mask) comes from the index file of each shard (``engine.dataset.index.index_file_paths``),
read one shard at a time; without an index, stage and round are parsed from the shard name
(``stage1-r02-000007.tar``) and sources are unknown.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.dataset.index import index_file_paths
from engine.dataset.reader import (
    DatasetReadError,
    MemberProblem,
    decode_sample,
    expand_shard_paths,
    iter_raw_samples,
)
from engine.sa1b import ImageRecord

SHARD_NAME = re.compile(r"(?P<stage>.+)-r(?P<round>\d+)-\d{6}\.tar")
UNKNOWN_GROUP = "unknown"


@dataclass
class ShardInput:
    path: Path
    index_dir: Path | None


@dataclass
class AuditInputs:
    shards: list[ShardInput]
    default_out: Path  # where audit.json goes unless told otherwise


def _index_beside(directory: Path) -> Path | None:
    for candidate in (directory / "index", directory.parent / "index"):
        if candidate.is_dir():
            return candidate
    return None


def resolve_inputs(paths: list[str | Path]) -> AuditInputs:
    """Expand PATHs (shard files, directories, globs, run directories) into shards + index.

    The default output directory is ``<run>/audit`` for a run directory or a ``shards``
    directory, else ``audit/`` beside the first path. Raises ``ValueError`` naming a path that
    holds no shard.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise ValueError("give at least one shard, shard directory or run directory")
    shards: list[ShardInput] = []
    default_out: Path | None = None
    for item in paths:
        path = Path(item)
        if path.is_dir() and (path / "shards").is_dir():
            run, shard_dir = path, path / "shards"
        elif path.is_dir() and path.name == "shards":
            run, shard_dir = path.parent, path
        elif path.is_dir():
            run, shard_dir = path, path
        else:
            run, shard_dir = (
                (path.parent.parent if path.parent.name == "shards" else path.parent),
                None,
            )
        index_dir = _index_beside(shard_dir if shard_dir is not None else path.parent)
        found = expand_shard_paths(shard_dir if shard_dir is not None else item)
        if not found:
            raise ValueError(f"no .tar shard in {item!s}")
        if default_out is None:
            default_out = run / "audit"
        seen = {s.path for s in shards}
        shards.extend(ShardInput(p, index_dir) for p in found if p not in seen)
    return AuditInputs(shards=shards, default_out=default_out)


def group_name(stage: str | None, round: int | None) -> str:
    """``("stage1", 2)`` → ``"stage1/r02"``; unknown stage → ``"unknown"``."""
    if not stage:
        return UNKNOWN_GROUP
    return f"{stage}/r{int(round or 0):02d}"


def group_from_shard_name(name: str) -> str:
    match = SHARD_NAME.fullmatch(Path(name).name)
    return group_name(match["stage"], int(match["round"])) if match else UNKNOWN_GROUP


@dataclass
class MaskProvenance:
    source: str | None = None
    clicks: int | None = None
    seconds: float | None = None
    hand_fixed: bool | None = None
    granularity: str | None = None
    parent_id: int | None = None


@dataclass
class ImageProvenance:
    """Index rows of one image: its group and each mask's provenance by annotation id."""

    group: str
    masks: dict[int, MaskProvenance] = field(default_factory=dict)


MASK_COLUMNS = [
    "key",
    "stage",
    "round",
    "annotation_id",
    "source",
    "clicks",
    "seconds",
    "hand_fixed",
]
LEVEL_COLUMNS = ["granularity", "parent_id"]  # absent from indexes written before them


class ShardProvenance:
    """The index rows of one shard, kept as columns; ``get(key)`` builds one image's view.

    Holding a shard's mask rows as Python objects would cost ~150 B per mask (1.1M masks in
    an SA-1B-sized shard); as Arrow columns plus one row range per key it is a few bytes.
    """

    def __init__(self, images: pa.Table | None, masks: pa.Table | None, fallback: str):
        self.fallback = fallback  # group for rows with an empty stage
        self.groups: dict[str, str] = {}
        if images is not None:
            for key, stage, rnd in zip(*(images[c].to_pylist() for c in ("key", "stage", "round"))):
                self.groups[key] = group_name(stage, rnd) if stage else fallback
        self.masks = masks
        self.ranges: dict[str, tuple[int, int]] = {}
        if masks is not None and masks.num_rows:
            order = pc.sort_indices(masks, [("key", "ascending")])  # stable: ids keep order
            self.masks = masks.take(order)
            keys = pc.dictionary_encode(self.masks["key"]).combine_chunks()
            codes = keys.indices.to_numpy()
            bounds = np.r_[0, np.flatnonzero(np.diff(codes)) + 1, codes.size]
            names = keys.dictionary.to_pylist()
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                self.ranges[names[codes[lo]]] = (int(lo), int(hi))

    def get(self, key: str) -> ImageProvenance | None:
        span = self.ranges.get(key)
        group = self.groups.get(key)
        if span is None:
            return None if group is None else ImageProvenance(group)
        rows = self.masks.slice(span[0], span[1] - span[0]).to_pydict()
        if group is None:
            stage = rows["stage"][0]
            group = group_name(stage, rows["round"][0]) if stage else self.fallback
        image = ImageProvenance(group)
        levels = rows.get("granularity") or [None] * len(rows["annotation_id"])
        parents = rows.get("parent_id") or [None] * len(rows["annotation_id"])
        for i, ann_id in enumerate(rows["annotation_id"]):
            image.masks[int(ann_id)] = MaskProvenance(
                source=rows["source"][i],
                clicks=rows["clicks"][i],
                seconds=rows["seconds"][i],
                hand_fixed=rows["hand_fixed"][i],
                granularity=levels[i],
                parent_id=parents[i],
            )
        return image


def read_shard_provenance(shard: ShardInput) -> ShardProvenance:
    """The index rows of one shard (none when it has no index files).

    An image's group is its image row's stage/round, or the shard name's when the stage is
    empty; per-mask provenance is looked up by annotation id.
    """
    images = masks = None
    if shard.index_dir is not None:
        images_path, masks_path = index_file_paths(shard.index_dir, shard.path.name)
        if images_path.is_file():
            images = pq.read_table(images_path, columns=["key", "stage", "round"])
        if masks_path.is_file():
            present = pq.read_schema(masks_path).names
            columns = MASK_COLUMNS + [c for c in LEVEL_COLUMNS if c in present]
            masks = pq.read_table(masks_path, columns=columns)
    return ShardProvenance(images, masks, group_from_shard_name(shard.path.name))


@dataclass
class ReadCounts:
    """Samples read and skipped while auditing (``problems`` keeps the first 100 messages)."""

    samples: int = 0
    skipped: int = 0
    failed_shards: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, message: str) -> None:
        if len(self.problems) < 100:
            self.problems.append(message)

    def merge(self, other: ReadCounts) -> None:
        self.samples += other.samples
        self.skipped += other.skipped
        self.failed_shards += other.failed_shards
        for message in other.problems:
            self.problem(message)


def iter_shard(
    path: Path, counts: ReadCounts, on_error: str = "skip"
) -> Iterator[tuple[str, ImageRecord, bytes]]:
    """``(key, record, jpeg_bytes)`` of one shard, records parsed but JPEGs left undecoded.

    ``on_error="raise"`` raises ``DatasetReadError`` on the first bad sample or shard;
    ``"skip"`` counts it in ``counts`` and goes on (a damaged shard ends at the damage).
    """
    raw_samples = iter_raw_samples(path)
    while True:
        try:
            item = next(raw_samples)
        except StopIteration:
            return
        except DatasetReadError as exc:
            if on_error == "raise":
                raise
            counts.failed_shards += 1
            counts.problem(str(exc))
            return
        if isinstance(item, MemberProblem):
            if on_error == "raise":
                raise DatasetReadError(f"{item.shard}: {item.name!r}: {item.reason}")
            counts.problem(f"{item.shard}: {item.name!r}: {item.reason}")
            continue
        try:
            key, _, record = decode_sample(item, decode_images=False)
        except DatasetReadError as exc:
            if on_error == "raise":
                raise DatasetReadError(f"{item.shard}: {item.key}: {exc}") from exc
            counts.skipped += 1
            counts.problem(f"{item.shard}: {item.key}: {exc}")
            continue
        counts.samples += 1
        yield key, record, item.files["jpg"]
