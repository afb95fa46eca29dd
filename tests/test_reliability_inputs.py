"""Bad inputs through ``sa-engine run``: broken and odd images in a folder, bad COCO annotations,
bad SA-1B JSON and unsafe tar member names in WebDataset shards. The run completes (or fails
before any work with one message naming file and field); every bad input is in
quarantine.jsonl once, with its reason; the good ones are processed normally.
(The decoder's own corpus is unit-tested in tests/test_decode.py.)"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_support import AUTOMATIC_ONLY, output, run_args, sa_engine

from engine.dataset.quarantine import read_quarantine
from engine.dataset.reader import ShardReader
from engine.masks import mask_to_rle
from engine.sa1b import ImageRecord, MaskRecord

RNG = np.random.default_rng(7)
PHOTO = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 100-byte PNG declaring ``width×height`` RGB pixels (30 GB if decoded)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def png_with_bad_crc() -> bytes:
    data = bytearray(encode(Image.fromarray(PHOTO), "PNG"))
    idat = data.find(b"IDAT")
    (length,) = struct.unpack(">I", data[idat - 4 : idat])
    data[idat + 4 + length] ^= 0xFF
    return bytes(data)


def two_tone(height: int = 40, width: int = 60) -> np.ndarray:
    """Left half red, right half blue: where the red half ends up shows the rotation."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 2, 0] = 255
    image[:, width // 2 :, 2] = 255
    return image


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40×60 (H×W); shown turned 90° clockwise: 60×40
    return encode(Image.fromarray(two_tone()), "JPEG", quality=95, exif=exif.tobytes())


def palette_png_with_transparency() -> bytes:
    image = Image.fromarray(PHOTO).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(image, "PNG", transparency=0)


def animated_gif() -> bytes:
    frames = [Image.fromarray(PHOTO).convert("P"), Image.fromarray(255 - PHOTO).convert("P")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


# name → bytes; the good ones must be processed
GOOD = {
    "plain.jpg": encode(Image.fromarray(PHOTO), "JPEG"),
    "sixteen_bit.png": encode(Image.fromarray(np.full((48, 64), 40000, np.uint16)), "PNG"),
    "cmyk.jpg": encode(Image.fromarray(PHOTO).convert("CMYK"), "JPEG"),
    "palette_alpha.png": palette_png_with_transparency(),
    "exif_rotated.jpg": exif_rotated_jpeg(),
    "animated.gif": animated_gif(),
}
# name → (bytes, reason fragment in quarantine.jsonl)
BAD = {
    "empty.jpg": (b"", "empty file"),
    "truncated.jpg": (GOOD["plain.jpg"][: len(GOOD["plain.jpg"]) // 2], "truncated"),
    "bad_crc.png": (png_with_bad_crc(), "CRC mismatch"),
    "text.jpg": (b"this is a text file, not a picture\n", "not a recognised image"),
    "one_pixel.png": (encode(Image.new("RGB", (1, 1)), "PNG"), "too small"),
    "bomb.png": (bomb_png(), "too large"),
}


def test_folder_of_bad_images_completes_with_each_bad_one_quarantined(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, data in GOOD.items():
        (folder / name).write_bytes(data)
    for name, (data, _) in BAD.items():
        (folder / name).write_bytes(data)
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")  # ELOOP on open
    (folder / "sub").mkdir()
    (folder / "sub" / "back").symlink_to(folder)  # a directory cycle
    result = sa_engine(
        *run_args(tmp_path, "folder", "data=folder", f"data.path={folder}", base=AUTOMATIC_ONLY)
    )
    assert result.returncode == 0, output(result)
    run_dir = tmp_path / "folder"

    reasons = {
        r.path.removeprefix(f"{folder}/"): r.reason
        for r in read_quarantine(run_dir / "quarantine.jsonl")
    }
    expected = {name: reason for name, (_, reason) in BAD.items()}
    expected |= {"loop.jpg": "symlink loop", "sub/back": "symlink loop"}
    assert sorted(reasons) == sorted(expected)
    for name, fragment in expected.items():
        assert fragment in reasons[name], (name, reasons[name])

    written = {}
    for _key, image, record in ShardReader(run_dir / "shards"):
        assert record.file_name not in written, f"{record.file_name} written twice"
        written[record.file_name] = image
    assert sorted(written) == sorted(GOOD)
    upright = written["exif_rotated.jpg"]
    assert upright.shape == (60, 40, 3)  # stored 40×60, EXIF orientation 6 applied
    top, bottom = upright[:25].astype(float), upright[35:].astype(float)
    assert top[..., 0].mean() > 200 > top[..., 2].mean()  # the red half is on top now
    assert bottom[..., 2].mean() > 200 > bottom[..., 0].mean()
    assert "quarantined:   8 image(s)" in result.stdout


# -- COCO annotations ---------------------------------------------------------------------------


def _square_polygon(x: int, y: int, side: int) -> list[list[float]]:
    return [[x, y, x + side, y, x + side, y + side, x, y + side]]


def _coco(images: list[dict], annotations: list[dict]) -> dict:
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "o"}]}


def _image(image_id: int, name: str, height: int = 48, width: int = 64) -> dict:
    return {"id": image_id, "file_name": name, "height": height, "width": width}


def _ann(ann_id: int, image_id: int, **fields: object) -> dict:
    base = {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0}
    base["segmentation"] = _square_polygon(8, 8, 16)
    return {**base, **fields}


@pytest.fixture
def coco_images(tmp_path) -> Path:
    folder = tmp_path / "coco"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "d.jpg"):
        (folder / name).write_bytes(GOOD["plain.jpg"])
    return folder


def test_bad_coco_annotations_fail_before_any_work_naming_file_and_field(tmp_path, coco_images):
    small_rle = mask_to_rle(np.ones((10, 10), dtype=bool))  # valid, but the image is 48×64
    cases = {
        "malformed.json": ('{"images": [{"id": 1, ', "not valid JSON"),
        "orphan.json": (
            _coco([_image(1, "a.jpg")], [_ann(1, 1), _ann(2, 99)]),
            "annotations[1].image_id 99 names no image",
        ),
        "rle_size.json": (
            _coco([_image(1, "a.jpg")], [_ann(1, 1, segmentation=small_rle)]),
            "annotations[0].segmentation.size [10, 10] != image height/width [48, 64]",
        ),
        "no_file_name.json": (
            _coco([{"id": 1, "height": 48, "width": 64}], []),
            "images[0].file_name is missing",
        ),
        "no_ann_id.json": (
            _coco([_image(1, "a.jpg")], [{"image_id": 1, "segmentation": []}]),
            "annotations[0].id is missing",
        ),
    }
    for name, (content, _) in cases.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (tmp_path / name).write_text(text)
    sweep = ",".join(str(tmp_path / name) for name in cases)  # one process, one job per file
    result = sa_engine(
        "-m",
        *run_args(tmp_path, "coco", "data=coco", f"data.path={coco_images}", base=AUTOMATIC_ONLY),
        f"data.annotations={sweep}",
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "config error" in line]
    assert len(errors) == len(cases), output(result)
    for name, (_, fragment) in cases.items():
        assert any(str(tmp_path / name) in e and fragment in e for e in errors), (name, errors)
    jobs = tmp_path / "multirun" / "coco"
    assert not list(jobs.rglob("state.json")) and not list(jobs.rglob("*.tar"))


def test_bad_coco_annotations_are_quarantined_with_skip(tmp_path, coco_images):
    instances = _coco(
        [
            _image(1, "a.jpg"),
            _image(2, "b.jpg", height=30, width=30),  # the file is 48×64
            _image(3, "c.jpg"),  # no such file
            _image(4, "d.jpg"),
        ],
        [
            _ann(1, 1),
            _ann(2, 2, segmentation=_square_polygon(2, 2, 8)),
            _ann(3, 4, segmentation=[[1, 2, 3]]),  # odd number of coordinates
            _ann(4, 99),  # names no image
        ],
    )
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    result = sa_engine(
        *run_args(
            tmp_path,
            "coco",
            "data=coco",
            f"data.path={coco_images}",
            f"data.annotations={tmp_path / 'instances.json'}",
            "data.on_error=skip",
            base=AUTOMATIC_ONLY,
        )
    )
    assert result.returncode == 0, output(result)
    run_dir = tmp_path / "coco"
    reasons = {r.key: r.reason for r in read_quarantine(run_dir / "quarantine.jsonl")}
    assert "height/width 30×30 disagree with the image file (48×64)" in reasons["b_jpg"]
    assert "file not found" in reasons["c_jpg"]
    assert "annotations[2].segmentation[0] has an odd number" in reasons["d_jpg"]
    assert "annotations[3].image_id 99 names no image" in reasons["coco-annotation-3"]
    assert len(reasons) == 4
    assert [key for key, _, _ in ShardReader(run_dir / "shards", decode_images=False)] == ["a_jpg"]


# -- WebDataset shards --------------------------------------------------------------------------


def _sa1b_json(height: int = 48, width: int = 64, mask_hw: tuple[int, int] | None = None) -> dict:
    mask = np.zeros(mask_hw or (height, width), dtype=bool)
    mask[4:20, 6:30] = True
    rle = mask_to_rle(mask)
    ann = MaskRecord(
        id=0,
        segmentation=rle,
        bbox=[6.0, 4.0, 24.0, 16.0],
        area=int(mask.sum()),
        predicted_iou=0.9,
        stability_score=0.95,
        point_coords=[[10.0, 10.0]],
        crop_box=[0.0, 0.0, float(width), float(height)],
    )
    return ImageRecord(0, width, height, "x.jpg", [ann]).to_json()


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_run_quarantines_bad_json_and_never_uses_unsafe_member_names(tmp_path):
    jpeg = GOOD["plain.jpg"]
    no_bbox = _sa1b_json()
    del no_bbox["annotations"][0]["bbox"]
    no_width = _sa1b_json()
    del no_width["image"]["width"]
    token = tmp_path.name
    escape = f"../../escape-{token}.jpg"
    absolute = str(tmp_path / f"abs-{token}" / "pwn.jpg")
    members = [
        ("good0.jpg", jpeg),
        ("good0.json", json.dumps(_sa1b_json()).encode()),
        ("nobbox.jpg", jpeg),
        ("nobbox.json", json.dumps(no_bbox).encode()),
        ("nowidth.jpg", jpeg),
        ("nowidth.json", json.dumps(no_width).encode()),
        ("badsize.jpg", jpeg),
        ("badsize.json", json.dumps(_sa1b_json(mask_hw=(10, 10))).encode()),
        (escape, jpeg),
        (absolute, jpeg),
        ("good1.jpg", jpeg),
        ("good1.json", json.dumps(_sa1b_json()).encode()),
    ]
    shard_dir = tmp_path / "in" / "shards"
    shard_dir.mkdir(parents=True)
    _tar(shard_dir / "input-000000.tar", members)
    result = sa_engine(
        *run_args(tmp_path, "wds", "data=webdataset", f"data.path={shard_dir}", base=AUTOMATIC_ONLY)
    )
    assert result.returncode == 0, output(result)
    run_dir = tmp_path / "wds"
    records = read_quarantine(run_dir / "quarantine.jsonl")
    reasons = {r.path.rpartition("#")[2]: r.reason for r in records}
    assert "annotations[0].bbox is missing" in reasons["nobbox"]
    assert "image.width is missing" in reasons["nowidth"]
    assert "RLE size [10, 10]" in reasons["badsize"]
    assert "unsafe tar member name" in reasons[escape]
    assert "unsafe tar member name" in reasons[absolute]
    assert len(records) == 5
    keys = [key for key, _, _ in ShardReader(run_dir / "shards", decode_images=False)]
    assert keys == ["good0", "good1"]
    # nothing was ever written where the unsafe names point
    for base in (shard_dir, run_dir / "shards", run_dir, Path.cwd()):
        assert not (base / escape).resolve().exists()
    assert not Path(absolute).exists() and not Path(absolute).parent.exists()
    assert not [p for p in tmp_path.parent.rglob(f"*{token}*") if "escape" in p.name]
