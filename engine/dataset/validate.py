"""``sa-engine validate PATH...``: check SA-1B shards (and their Parquet index) end to end.

Checks, per shard: the tar reads to its end-of-archive blocks; member names are safe; every
key has exactly ``.jpg`` + ``.json``; the JSON passes ``engine.sa1b.validate`` (schema, RLE
decodes to the record's size, area/bbox agree, ids unique within the image); the JPEG's size
equals the record's width/height (so every RLE size matches the image); keys are unique across
all shards; and, when an index is found (``--index DIR``, else ``<shards>/../index`` or
``<shards>/index``), its image and mask rows agree with the shard. Prints each problem as
``shard: key: field: message`` and a summary; exit status 1 on any problem.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from engine import sa1b
from engine.dataset.index import IMAGES_DIR, MASKS_DIR, index_file_paths, shard_of_index_file
from engine.dataset.reader import (
    DatasetReadError,
    MemberProblem,
    RawSample,
    decode_image,
    expand_shard_paths,
    iter_raw_samples,
)
from engine.progress import progress_bar
from engine.records import GRANULARITIES

SAMPLE_EXTS = ("jpg", "json")
OUR_SHARD_NAME = re.compile(r"[A-Za-z0-9_-]+-\d{6}\.tar")
IMAGE_COLUMNS = ("image_id", "file_name", "width", "height", "masks")
MASK_COLUMNS = (
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "area",
    "predicted_iou",
    "stability_score",
)


@dataclass
class Problem:
    """One finding: where (shard, key — ``None`` for shard-level) and which field."""

    shard: str
    key: str | None
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.shard}: {self.key if self.key is not None else '-'}: {self.field}: " + (
            self.message
        )


@dataclass
class ValidationReport:
    """Counts and problems of one validation run; ``ok`` when there are no problems."""

    shards: int = 0
    samples: int = 0
    masks: int = 0
    indexed_shards: int = 0  # shards whose index rows were compared
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        verdict = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        return (
            f"{self.shards} shards, {self.samples} samples, {self.masks} masks; index compared "
            f"for {self.indexed_shards} shards; {verdict}"
        )


def _field_of(message: str) -> str:
    """The field a ``engine.sa1b.validate`` message starts with (``annotations[2].area``)."""
    match = re.match(r"'?([\w\[\].]+)'?", re.sub(r"^(\S+) \(id [^)]*\)", r"\1", message))
    return match.group(1) if match else "json"


def _find_index(shard_dir: Path, index_dir: Path | None) -> Path | None:
    """``index_dir`` if given, else ``<shard_dir>/../index`` or ``<shard_dir>/index`` when it
    has ``images/`` or ``masks/`` and ``shard_dir`` holds shards named like ours
    (``{prefix}-{n:06d}.tar``; official ``sa_000000.tar`` tars come without an index)."""
    if index_dir is not None:
        return index_dir
    if not any(OUR_SHARD_NAME.fullmatch(p.name) for p in shard_dir.glob("*.tar")):
        return None
    for candidate in (shard_dir.parent / "index", shard_dir / "index"):
        if (candidate / IMAGES_DIR).is_dir() or (candidate / MASKS_DIR).is_dir():
            return candidate
    return None


@dataclass
class _Summary:
    """What the index must say about one sample (kept instead of the whole record)."""

    image: dict
    masks: dict[int, dict]


class _Validator:
    def __init__(self, index_dir: Path | None, check_index: bool, decode_images: bool) -> None:
        self.index_dir = index_dir
        self.check_index = check_index
        self.decode_images = decode_images
        self.report = ValidationReport()
        self.key_shard: dict[str, str] = {}
        self._index_of: dict[Path, Path | None] = {}

    def find_index(self, shard_dir: Path) -> Path | None:
        if shard_dir not in self._index_of:
            self._index_of[shard_dir] = _find_index(shard_dir, self.index_dir)
        return self._index_of[shard_dir]

    def problem(self, shard: str, key: str | None, field_name: str, message: str) -> None:
        self.report.problems.append(Problem(shard, key, field_name, message))

    def shard(self, path: Path) -> None:
        name = str(path)
        self.report.shards += 1
        samples: dict[str, _Summary | None] = {}
        readable = True
        raw_samples = iter_raw_samples(path)
        while True:
            try:
                item = next(raw_samples)
            except StopIteration:
                break
            except DatasetReadError as exc:
                self.problem(name, None, "tar", str(exc))
                readable = False
                break
            if isinstance(item, MemberProblem):
                self.problem(name, item.name, "member", item.reason)
            else:
                self.sample(item, samples)
        if not (self.check_index and readable):
            return
        index = self.find_index(path.parent)
        if index is not None:
            self.report.indexed_shards += 1
            self.compare_index(path, index, samples)

    def sample(self, raw: RawSample, samples: dict[str, _Summary | None]) -> None:
        shard, key = raw.shard, raw.key
        self.report.samples += 1
        if key in self.key_shard:
            where = "earlier in this shard" if self.key_shard[key] == shard else self.key_shard[key]
            self.problem(shard, key, "key", f"duplicate key (also {where})")
        else:
            self.key_shard[key] = shard
        samples.setdefault(key, None)
        for ext in SAMPLE_EXTS:
            if ext not in raw.files:
                self.problem(shard, key, f".{ext}", "missing")
        for ext in raw.files:
            if ext not in SAMPLE_EXTS:
                self.problem(shard, key, f".{ext}", "unexpected member (expected .jpg, .json)")
        for ext in raw.duplicate_exts:
            self.problem(shard, key, f".{ext}", "member appears twice")
        record = self.record(raw)
        image_size = self.image_size(raw)
        if record is None:
            return
        self.report.masks += len(record["annotations"])
        if image_size is not None:
            self.compare_sizes(shard, key, record, image_size)
        samples[key] = _Summary(
            image={**record["image"], "masks": len(record["annotations"])},
            masks={a["id"]: a for a in record["annotations"]},
        )

    def record(self, raw: RawSample) -> dict | None:
        """The parsed JSON when it passes the SA-1B validator, else ``None`` (problems noted)."""
        if "json" not in raw.files:
            return None
        try:
            data = json.loads(raw.files["json"])
        except ValueError as exc:
            self.problem(raw.shard, raw.key, "json", f"not JSON: {exc}")
            return None
        errors = sa1b.validate(data)
        for message in errors:
            self.problem(raw.shard, raw.key, _field_of(message), message)
        return None if errors else data

    def image_size(self, raw: RawSample) -> tuple[int, int] | None:
        """Decoded ``(height, width)`` of the JPEG (header only unless ``decode_images``)."""
        if "jpg" not in raw.files:
            return None
        data = raw.files["jpg"]
        try:
            if self.decode_images:
                return decode_image(data).shape[:2]
            with Image.open(io.BytesIO(data)) as im:
                if im.format != "JPEG":
                    self.problem(raw.shard, raw.key, ".jpg", f"not a JPEG ({im.format})")
                return im.size[1], im.size[0]
        except Exception as exc:  # PIL raises OSError, SyntaxError, ...
            self.problem(raw.shard, raw.key, ".jpg", f"does not decode: {exc}")
            return None

    def compare_sizes(self, shard: str, key: str, record: dict, size: tuple[int, int]) -> None:
        h, w = size
        image = record["image"]
        if (image["height"], image["width"]) == (h, w):
            return  # the validator already matched every RLE size to height/width
        self.problem(
            shard,
            key,
            "image.height/width",
            f"record says {image['height']}x{image['width']} but the JPEG is {h}x{w} (HxW)",
        )
        for i, ann in enumerate(record["annotations"]):
            if list(ann["segmentation"]["size"]) != [h, w]:
                self.problem(
                    shard,
                    key,
                    f"annotations[{i}].segmentation.size",
                    f"{ann['segmentation']['size']} != decoded image [h, w] {[h, w]}",
                )

    def compare_index(self, path: Path, index: Path, samples: dict[str, _Summary | None]) -> None:
        shard = str(path)
        images_path, masks_path = index_file_paths(index, path.name)
        tables = {}
        for kind, file in (("images", images_path), ("masks", masks_path)):
            try:
                tables[kind] = pq.read_table(file).to_pylist()
            except FileNotFoundError:
                self.problem(shard, None, f"index.{kind}", f"no index file {file}")
            except Exception as exc:  # pyarrow raises ArrowInvalid etc. for a bad file
                self.problem(shard, None, f"index.{kind}", f"unreadable index file {file}: {exc}")
        if "images" in tables:
            self.compare_image_rows(shard, path.name, tables["images"], samples)
        if "masks" in tables:
            self.compare_mask_rows(shard, path.name, tables["masks"], samples)

    def compare_image_rows(
        self, shard: str, name: str, rows: list[dict], samples: dict[str, _Summary | None]
    ) -> None:
        seen: set[str] = set()
        for row in rows:
            key = row.get("key")
            where = "index.images"
            if key in seen:
                self.problem(shard, key, where, "duplicate image row")
                continue
            seen.add(key)
            if key not in samples:
                self.problem(shard, key, where, "image row for a key that is not in the shard")
                continue
            if row.get("shard") != name:
                self.problem(shard, key, f"{where}.shard", f"{row.get('shard')!r} != {name!r}")
            summary = samples[key]
            if summary is None:
                continue
            for column in IMAGE_COLUMNS:
                if row.get(column) != summary.image[column]:
                    self.problem(
                        shard,
                        key,
                        f"{where}.{column}",
                        f"index has {row.get(column)!r}, shard has {summary.image[column]!r}",
                    )
        for key in samples:
            if key not in seen:
                self.problem(shard, key, "index.images", "no image row for this key")

    def compare_mask_rows(
        self, shard: str, name: str, rows: list[dict], samples: dict[str, _Summary | None]
    ) -> None:
        seen: set[tuple[str, int]] = set()
        for row in rows:
            key, ann_id = row.get("key"), row.get("annotation_id")
            where = f"index.masks[id {ann_id}]"
            if (key, ann_id) in seen:
                self.problem(shard, key, where, "duplicate mask row")
                continue
            seen.add((key, ann_id))
            summary = samples.get(key)
            if key not in samples:
                self.problem(shard, key, where, "mask row for a key that is not in the shard")
                continue
            if row.get("shard") != name:
                self.problem(shard, key, f"{where}.shard", f"{row.get('shard')!r} != {name!r}")
            if summary is None:
                continue
            ann = summary.masks.get(ann_id)
            if ann is None:
                self.problem(shard, key, where, "mask row for an id that is not in the JSON")
                continue
            shard_values = dict(zip(MASK_COLUMNS, [*ann["bbox"], ann["area"]]))
            shard_values["predicted_iou"] = ann["predicted_iou"]
            shard_values["stability_score"] = ann["stability_score"]
            for column, expected in shard_values.items():
                value = row.get(column)
                if value is None or not math.isclose(value, expected, rel_tol=1e-9, abs_tol=0):
                    message = f"index has {value!r}, JSON has {expected!r}"
                    self.problem(shard, key, f"{where}.{column}", message)
        for key, summary in samples.items():
            for ann_id in summary.masks if summary is not None else ():
                if (key, ann_id) not in seen:
                    self.problem(shard, key, f"index.masks[id {ann_id}]", "no mask row")
        self.check_granularity(shard, rows)

    def check_granularity(self, shard: str, rows: list[dict]) -> None:
        """``granularity`` is a known level or null; ``parent_id`` is null or names another
        mask row of the same key, and following parents never comes back (no cycle).
        Indexes written before these columns existed have neither: nothing to check."""
        parents: dict[str, dict[int, int | None]] = {}
        for row in rows:
            key, ann_id = row.get("key"), row.get("annotation_id")
            value = row.get("granularity")
            if value is not None and value not in GRANULARITIES:
                message = f"{value!r} is not one of {GRANULARITIES}"
                self.problem(shard, key, f"index.masks[id {ann_id}].granularity", message)
            parents.setdefault(key, {})[ann_id] = row.get("parent_id")
        for key, links in parents.items():
            for ann_id, parent in links.items():
                where = f"index.masks[id {ann_id}].parent_id"
                if parent is None:
                    continue
                if parent == ann_id:
                    self.problem(shard, key, where, "a mask is its own parent")
                elif parent not in links:
                    self.problem(shard, key, where, f"no mask {parent} in this image")
                elif _in_cycle(ann_id, links):
                    self.problem(shard, key, where, "parent links form a cycle")

    def orphan_index_files(self, directory: Path) -> None:
        """Index files next to ``directory``'s shards that name a shard not in it."""
        index = self.find_index(directory)
        if index is None:
            return
        shards = {p.name for p in directory.glob("*.tar")}
        for kind in (IMAGES_DIR, MASKS_DIR):
            for file in sorted((index / kind).glob("*.parquet")):
                try:
                    name = shard_of_index_file(file)
                except ValueError:
                    self.problem(str(file), None, "index", "unexpected file in the index")
                    continue
                if name not in shards:
                    self.problem(str(file), None, "index", f"index file for missing shard {name}")


def _in_cycle(start: int, parents: dict[int, int | None]) -> bool:
    """Whether following ``parents`` from ``start`` comes back to ``start``."""
    current, steps = parents.get(start), 0
    while current is not None and steps <= len(parents):
        if current == start:
            return True
        current, steps = parents.get(current), steps + 1
    return False


def validate_paths(
    paths: Sequence[str | Path],
    index_dir: str | Path | None = None,
    check_index: bool = True,
    decode_images: bool = False,
    progress: bool | None = None,
) -> ValidationReport:
    """Validate shards given as files, directories (their ``*.tar``) or globs.

    ``index_dir`` overrides where the index is looked for; ``decode_images`` decodes every
    JPEG fully instead of reading its header. ``progress``: a bar of shards checked (samples
    and problems so far) on stderr (``engine.progress``: None = ``$SA_ENGINE_PROGRESS`` or a
    terminal).
    """
    validator = _Validator(
        Path(index_dir) if index_dir is not None else None, check_index, decode_images
    )
    report = validator.report
    expanded: list[tuple[str | Path, list[Path] | ValueError]] = []
    for item in paths:  # first, so the bar knows how many shards there are
        try:
            expanded.append((item, expand_shard_paths([item])))
        except ValueError as exc:
            expanded.append((item, exc))
    total = sum(len(shards) for _, shards in expanded if isinstance(shards, list))
    with progress_bar(total, "validate", unit="shard", enabled=progress) as bar:
        for item, shards in expanded:
            if isinstance(shards, ValueError):
                validator.problem(str(item), None, "path", str(shards))
                continue
            if not shards:
                validator.problem(str(item), None, "path", "no *.tar shards in this directory")
            for shard in shards:
                validator.shard(shard)
                bar.set_postfix(
                    samples=report.samples, problems=len(report.problems), refresh=False
                )
                bar.update(1)
            if check_index and Path(item).is_dir():
                validator.orphan_index_files(Path(item))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sa-engine validate",
        description="Check SA-1B WebDataset shards and their Parquet index.",
    )
    parser.add_argument("paths", nargs="+", help="shard files, directories of shards or globs")
    parser.add_argument("--index", default=None, help="index directory (default: found beside)")
    parser.add_argument("--no-index", action="store_true", help="do not compare the index")
    parser.add_argument(
        "--decode-images", action="store_true", help="decode every JPEG fully (slower)"
    )
    args = parser.parse_args(argv)
    report = validate_paths(
        args.paths,
        index_dir=args.index,
        check_index=not args.no_index,
        decode_images=args.decode_images,
    )
    for problem in report.problems:
        print(problem)
    print(f"sa-engine validate: {report.summary()}")
    return 0 if report.ok else 1
