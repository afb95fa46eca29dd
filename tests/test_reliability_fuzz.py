"""Fuzzing untrusted inputs: RLE decoding, SA-1B JSON parsing and tar reading fail only with the
project's documented exceptions (``RLEError``; ``SA1BFormatError`` / a list of problems;
``DatasetReadError`` or skip-and-count; ``DecodeError``) — never with anything else, however
the input is mangled. Examples are bounded so the file runs in seconds."""

from __future__ import annotations

import copy
import io
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.data.decode import DecodeError
from engine.data.webdataset_source import WebDatasetSource
from engine.dataset.reader import DatasetReadError, ShardReader
from engine.masks import RLEError, mask_to_rle, rle_area, rle_to_mask
from engine.sa1b import ImageRecord, MaskRecord, SA1BFormatError, validate

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON-like values, with the awkward ones: huge ints, floats beyond range, nesting, bytes
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([10**400, -(10**400), 2**32, 2**64])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)

# -- RLE ------------------------------------------------------------------------------------------

SIZES = (
    st.lists(st.integers(0, 12), min_size=2, max_size=2)
    | st.lists(st.integers(-(2**66), 2**66), min_size=0, max_size=3)
    | JSON
)
COUNTS = (
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=130), max_size=20)
    | st.binary(max_size=20)
    | st.lists(st.integers(-3, 2**40), max_size=6)
    | JSON
)
RLES = st.fixed_dictionaries({"size": SIZES, "counts": COUNTS}) | JSON


@FUZZ
@given(RLES)
@example({"size": [2**33, 1], "counts": [2**33]})  # beyond pycocotools' 32-bit runs
@example({"size": [70_000, 70_000], "counts": [0, 70_000 * 70_000]})
@example({"size": [2**64, 1], "counts": [2**64]})
@example({"size": [2**31, 2], "counts": "0"})
def test_rle_decoding_raises_only_rle_error(rle: object) -> None:
    try:
        mask = rle_to_mask(rle)
        area = rle_area(rle)
    except RLEError:
        return
    assert mask.dtype == bool and list(mask.shape) == list(rle["size"])
    assert area == int(mask.sum())


# -- SA-1B JSON -----------------------------------------------------------------------------------


def _valid_record() -> dict:
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:4, 2:6] = True
    ann = MaskRecord(0, mask_to_rle(mask), [2, 1, 4, 3], 12, 0.9, 0.95, [[3.0, 2.0]], [0, 0, 8, 6])
    return ImageRecord(7, 8, 6, "sa_7.jpg", [ann]).to_json()


VALID = _valid_record()


def _paths(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path inside a JSON value."""
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.extend(_paths(item, (*prefix, index)))
    return out


PATHS = _paths(VALID)[1:]


@st.composite
def mangled_records(draw) -> object:
    """The valid record with up to three fields replaced by random JSON or removed."""
    data = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        parent = data
        try:
            for step in path[:-1]:
                parent = parent[step]
            if draw(st.booleans()):
                parent[path[-1]] = draw(JSON)
            elif isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        except (KeyError, IndexError, TypeError, AttributeError):
            continue  # an earlier change removed that path
    return data


@FUZZ
@given(mangled_records() | JSON)
@example({**VALID, "annotations": [{**VALID["annotations"][0], "predicted_iou": 10**400}]})
@example({**VALID, "image": {**VALID["image"], "height": 2**40, "width": 2**40}})
def test_sa1b_parsing_raises_only_sa1b_format_error(data: object) -> None:
    problems = validate(data)
    assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
    try:
        record = ImageRecord.from_json(data)
    except SA1BFormatError as exc:
        assert str(exc)
        return
    assert isinstance(record, ImageRecord)
    json.dumps(record.to_json(), allow_nan=False)  # what parsed can be written back


# -- tar shards -----------------------------------------------------------------------------------


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 8, 3), 90, np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _shard_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key in ("sa_1", "sa_2"):
            for ext, data in (("jpg", _jpeg()), ("json", json.dumps(VALID).encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


SHARD = _shard_bytes()


@st.composite
def mangled_shards(draw) -> bytes:
    """The valid two-sample shard with bytes flipped, cut, inserted — or random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=4096))
    data = bytearray(SHARD)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert", "zero"]))
        if action == "flip":
            data[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[position:]
            if not data:
                break
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        else:
            data[position : position + 512] = bytes(len(data[position : position + 512]))
    return bytes(data)


# Members no mutation finds by chance: deep JSON nesting, an int too long to parse, a JSON
# bomb of a size, an xz-looking header.
def _tar_with(json_member: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("a.jpg", _jpeg()), ("a.json", json_member)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


SPECIAL_SHARDS = [
    _tar_with(b"[" * 200_000),
    _tar_with(b'{"image": ' + b"1" * 5000 + b"}"),
    _tar_with(json.dumps({**VALID, "image": {**VALID["image"], "width": 10**400}}).encode()),
    b"\xfd7zXZ\x00" + bytes(600),
    b"\x1f\x8b" + bytes(600),
    b"BZh9" + bytes(600),
]


def _read_everything(shard: Path) -> None:
    try:
        list(ShardReader(shard, on_error="raise"))
    except DatasetReadError as exc:
        assert str(exc)
    skipping = ShardReader(shard, on_error="skip")
    samples = list(skipping)  # never raises; what it skips it counts
    assert skipping.stats.samples == len(samples)
    source = WebDatasetSource(str(shard))
    for entry in source.entries():  # listing never raises: problems become entries
        try:
            item = source.load(entry)
        except DecodeError as exc:
            assert exc.reason
            continue
        assert item.image.dtype == np.uint8 and item.image.ndim == 3


@FUZZ
@given(mangled_shards())
def test_tar_reading_raises_only_documented_errors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        shard = Path(folder) / "fuzz-000000.tar"
        shard.write_bytes(data)
        _read_everything(shard)


@pytest.mark.parametrize("index", range(len(SPECIAL_SHARDS)))
def test_crafted_shards_raise_only_documented_errors(tmp_path, index: int) -> None:
    shard = tmp_path / "crafted-000000.tar"
    shard.write_bytes(SPECIAL_SHARDS[index])
    _read_everything(shard)
