"""Decoding: modes, EXIF orientation, resizing with reference masks, and the quarantine corpus."""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from engine.data import DecodeError, DecodeOptions, decode_image, decode_item, iter_items
from engine.data.decode import (
    EXIF_TRANSPOSE,
    ReferenceSizeError,
    fit_references,
    orient_mask,
    output_size,
    resize_masks_nearest,
)
from engine.data.folder import FolderSource
from engine.masks import mask_to_rle, rle_to_mask
from engine.records import LEVEL_WHOLE, ReferenceMask

RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width×height`` RGB (a decompression bomb)."""
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
    data[idat + 4 + length] ^= 0xFF  # first byte of the IDAT CRC
    return bytes(data)


def jpeg_with_orientation(array: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(array), "JPEG", quality=95, exif=exif.tobytes())


def two_tone(height: int = 40, width: int = 60) -> np.ndarray:
    """Left half red, right half blue: where the red half ends up shows the rotation."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 2, 0] = 255
    image[:, width // 2 :, 2] = 255
    return image


# -- modes -----------------------------------------------------------------------------------


def test_rgb_png_round_trips_exactly() -> None:
    decoded = decode_image(encode(Image.fromarray(PHOTO), "PNG"))
    assert decoded.image.dtype == np.uint8 and decoded.image.shape == (40, 60, 3)
    np.testing.assert_array_equal(decoded.image, PHOTO)
    assert decoded.stored_hw == decoded.oriented_hw == (40, 60) and decoded.orientation == 1


def test_16_bit_png_is_scaled_to_8_bits() -> None:
    values = np.array([[0, 257, 32896, 65535] * 4] * 16, dtype=np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    image = decode_image(data).image
    np.testing.assert_array_equal(image[0, :4, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])  # grey


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I", np.array([[0, 100, 255, 7]] * 8, dtype=np.int32), [0, 100, 255, 7]),  # 8-bit range
        ("I", np.array([[0, 257, 65535, 514]] * 8, dtype=np.int32), [0, 1, 255, 2]),  # 16-bit
        ("I", np.array([[-10, 0, 10, 0]] * 8, dtype=np.int32), [0, 128, 255, 128]),  # stretched
        ("F", np.array([[0.0, 0.5, 1.0, 0.25]] * 8, dtype=np.float32), [0, 128, 255, 64]),
        ("F", np.array([[0.0, 100.0, 200.0, 255.0]] * 8, dtype=np.float32), [0, 100, 200, 255]),
    ],
)
def test_wide_greyscale_modes(mode: str, values: np.ndarray, expected: list[int]) -> None:
    image = Image.fromarray(np.tile(values, (1, 2)), mode=mode)
    assert image.mode == mode
    decoded = decode_image(encode(image, "TIFF"), DecodeOptions(min_side=1)).image
    np.testing.assert_array_equal(decoded[0, :4, 1], expected)


def test_cmyk_jpeg_becomes_rgb_like_pil() -> None:
    cmyk = Image.fromarray(PHOTO).convert("CMYK")
    data = encode(cmyk, "JPEG", quality=95)
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == "CMYK"
    image = decode_image(data).image
    np.testing.assert_array_equal(image, np.asarray(opened.convert("RGB")))


def test_palette_png_with_transparency_is_composited_over_white() -> None:
    palette_image = Image.new("P", (16, 16), 0)
    palette_image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette_image.paste(1, (0, 0, 8, 16))  # left half: colour 1, right half: colour 0
    data = encode(palette_image, "PNG", transparency=0)
    image = decode_image(data).image
    np.testing.assert_array_equal(image[0, 0], [200, 100, 50])
    np.testing.assert_array_equal(image[0, 15], [255, 255, 255])  # transparent → white


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_over_white(mode: str) -> None:
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., :3] = 100
    rgba[:, :8, 3] = 255  # opaque left half
    rgba[:, 8:, 3] = 0  # transparent right half
    image = Image.fromarray(rgba, "RGBA").convert(mode)
    decoded = decode_image(encode(image, "PNG")).image
    np.testing.assert_array_equal(decoded[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(decoded[0, 15], [255, 255, 255])


@pytest.mark.parametrize("mode", ["1", "L", "P", "YCbCr", "LAB"])
def test_other_modes_become_rgb(mode: str) -> None:
    source = Image.fromarray(PHOTO).convert(mode)
    fmt = {"YCbCr": "JPEG", "1": "TIFF", "LAB": "TIFF"}.get(mode, "PNG")
    data = encode(source, fmt)
    image = decode_image(data).image
    assert image.shape == (40, 60, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert getattr(Image.open(io.BytesIO(buffer.getvalue())), "n_frames", 1) == 2
    image = decode_image(buffer.getvalue()).image
    np.testing.assert_array_equal(image[8, 8], [255, 0, 0])


# -- EXIF orientation --------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil_exif_transpose(orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(PHOTO), "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    decoded = decode_image(data)
    np.testing.assert_array_equal(decoded.image, expected)
    assert decoded.orientation == orientation
    swapped = orientation in (5, 6, 7, 8)
    assert decoded.oriented_hw == ((60, 40) if swapped else (40, 60))


def test_exif_rotated_jpeg_is_turned_upright() -> None:
    # Orientation 6: the stored pixels must be turned 90° clockwise to display.
    image = decode_image(jpeg_with_orientation(two_tone(), 6)).image
    assert image.shape == (60, 40, 3)
    top, bottom = image[5, 20].astype(int), image[55, 20].astype(int)
    assert top[0] > 200 and top[2] < 60  # the stored left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_mask_matches_pil_transpose(orientation: int) -> None:
    mask = RNG.random((5, 7)) > 0.5
    pil = Image.fromarray(mask.astype(np.uint8) * 255)
    if orientation in EXIF_TRANSPOSE:
        pil = pil.transpose(EXIF_TRANSPOSE[orientation])
    np.testing.assert_array_equal(orient_mask(mask, orientation), np.asarray(pil) > 0)


# -- resizing and reference masks --------------------------------------------------------------


@pytest.mark.parametrize(
    ("hw", "limit", "expected"),
    [((1000, 1501), 1500, (1000, 1501)), ((3000, 4000), 1500, (1500, 2000)),
     ((4000, 3000), 1500, (2000, 1500)), ((40, 60), None, (40, 60)), ((41, 60), 20, (20, 29))],
)  # fmt: skip
def test_output_size_caps_the_shorter_side(hw: tuple, limit: int | None, expected: tuple) -> None:
    assert output_size(*hw, limit) == expected


def test_nearest_mask_resize_matches_pil() -> None:
    masks = RNG.random((3, 37, 53)) > 0.5
    for height, width in [(10, 20), (80, 100), (5, 90)]:
        resized = resize_masks_nearest(masks, height, width)
        for mask, got in zip(masks, resized):
            pil = Image.fromarray(mask.astype(np.uint8)).resize((width, height), Image.NEAREST)
            np.testing.assert_array_equal(got, np.asarray(pil).astype(bool))


def test_resize_brings_reference_masks_along() -> None:
    mask = np.zeros((40, 60), dtype=bool)
    mask[10:30, 5:25] = True
    ref = ReferenceMask(rle=mask_to_rle(mask), level=LEVEL_WHOLE, object_id=7, iscrowd=True)
    data = encode(Image.fromarray(PHOTO), "PNG")
    item = decode_item(data, "k", "k.png", 3, [ref], DecodeOptions(max_short_side=20))
    assert item.image.shape == (20, 30, 3)
    (out,) = item.references
    assert (out.level, out.object_id, out.iscrowd) == (LEVEL_WHOLE, 7, True)
    expected = Image.fromarray(mask.astype(np.uint8)).resize((30, 20), Image.NEAREST)
    np.testing.assert_array_equal(rle_to_mask(out.rle), np.asarray(expected).astype(bool))
    expected_image = Image.fromarray(PHOTO).resize((30, 20), Image.BILINEAR)
    np.testing.assert_array_equal(item.image, np.asarray(expected_image))


@pytest.mark.parametrize("limit", [250, 300, 750])
def test_large_jpeg_is_drafted_then_resized_to_the_exact_size(limit: int) -> None:
    yy, xx = np.mgrid[0:1000, 0:1500]
    smooth = np.stack([xx * 255 // 1500, yy * 255 // 1000, (xx + yy) * 255 // 2500], axis=-1)
    data = encode(Image.fromarray(smooth.astype(np.uint8)), "JPEG", quality=90)
    decoded = decode_image(data, DecodeOptions(max_short_side=limit))
    assert decoded.image.shape == (limit, limit * 3 // 2, 3)
    assert decoded.stored_hw == decoded.oriented_hw == (1000, 1500)
    full = Image.open(io.BytesIO(data)).convert("RGB")
    expected = np.asarray(full.resize((limit * 3 // 2, limit), Image.BILINEAR))
    assert np.abs(decoded.image.astype(int) - expected).mean() < 2.0


def test_masks_in_the_stored_frame_follow_the_exif_rotation() -> None:
    stored = np.zeros((40, 60), dtype=bool)
    stored[:, :30] = True  # the red half, as stored
    ref = ReferenceMask(rle=mask_to_rle(stored), level=LEVEL_WHOLE)
    item = decode_item(jpeg_with_orientation(two_tone(), 6), "k", "k.jpg", references=[ref])
    mask = rle_to_mask(item.references[0].rle)
    assert mask.shape == (60, 40)
    np.testing.assert_array_equal(mask, orient_mask(stored, 6))
    red = item.image[..., 0] > 128
    assert (mask == red).mean() > 0.97


def test_masks_already_upright_are_kept() -> None:
    upright = np.zeros((60, 40), dtype=bool)
    upright[:30] = True
    ref = ReferenceMask(rle=mask_to_rle(upright))
    item = decode_item(jpeg_with_orientation(two_tone(), 6), "k", "k.jpg", references=[ref])
    assert item.references[0] is ref


def test_reference_of_the_wrong_size_is_refused() -> None:
    ref = ReferenceMask(rle=mask_to_rle(np.zeros((10, 10), dtype=bool)))
    decoded = decode_image(encode(Image.fromarray(PHOTO), "PNG"))
    with pytest.raises(ReferenceSizeError, match=r"RLE size \[10, 10\]"):
        fit_references([ref], decoded)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_short_side": 0}, {"max_short_side": 1.5}, {"max_pixels": 0}, {"min_side": -1}],
)
def test_decode_options_reject_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DecodeOptions(**kwargs)


# -- failures ---------------------------------------------------------------------------------


def test_decompression_bomb_is_refused_before_any_allocation() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="too large"):
            decode_image(png_declaring(100_000, 100_000))  # 10^10 pixels, ~30 GB decoded
        with pytest.raises(DecodeError, match=r"max_pixels 1000000"):
            decode_image(png_declaring(5_000, 5_000), DecodeOptions(max_pixels=1_000_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20


def test_pil_warnings_do_not_leak() -> None:
    # 10^8 declared pixels: PIL warns (DecompressionBombWarning) while opening; we refuse.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DecodeError, match="too large"):
            decode_image(png_declaring(10_000, 10_000), DecodeOptions(max_pixels=50_000_000))


def test_formats_outside_the_list_are_not_opened() -> None:
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(DecodeError, match="not a recognised image"):
        decode_image(eps)


def truncated_jpeg() -> bytes:
    data = encode(Image.fromarray(PHOTO), "JPEG")
    return data[: len(data) // 2]


# name → (file bytes, expected reason fragment or None when it must decode)
CORPUS = {
    "empty.jpg": (b"", "empty file"),
    "truncated.jpg": (truncated_jpeg(), "truncated"),
    "bad_crc.png": (png_with_bad_crc(), "CRC mismatch in chunk 'IDAT'"),
    "text.jpg": (b"this is not an image at all\n", "not a recognised image"),
    "bomb.png": (png_declaring(100_000, 100_000), "too large"),
    "one_pixel.png": (encode(Image.new("RGB", (1, 1)), "PNG"), "too small"),
    "thin.png": (encode(Image.new("RGB", (200, 4)), "PNG"), "too small"),
    "truncated.png": (encode(Image.fromarray(PHOTO), "PNG")[:-30], "truncated PNG"),
    "cmyk.jpg": (encode(Image.fromarray(PHOTO).convert("CMYK"), "JPEG"), None),
    "sixteen.png": (encode(Image.fromarray(np.full((16, 16), 40000, np.uint16)), "PNG"), None),
    "rotated.jpg": (jpeg_with_orientation(two_tone(), 6), None),
    "fine.png": (encode(Image.fromarray(PHOTO), "PNG"), None),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_each_corpus_file_decodes_or_fails_with_its_reason(name: str) -> None:
    data, reason = CORPUS[name]
    if reason is None:
        assert decode_image(data).image.dtype == np.uint8
    else:
        with pytest.raises(DecodeError, match=reason):
            decode_image(data)


def test_iter_items_quarantines_the_corpus_and_keeps_going(tmp_path: Path) -> None:
    for name, (data, _) in CORPUS.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "loop").symlink_to(tmp_path / "loop")  # a symlink to itself
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "back").symlink_to(tmp_path)  # a directory loop
    records = []
    items = list(iter_items(FolderSource(str(tmp_path)), records.append))
    good = sorted(n for n, (_, reason) in CORPUS.items() if reason is None)
    assert sorted(item.file_name for item in items) == good
    reasons = {record.path.split("/")[-1]: record.reason for record in records}
    for name, (_, reason) in CORPUS.items():
        if reason is not None:
            assert reason in reasons[name]
    assert "symlink loop" in reasons["loop"] and "symlink loop" in reasons["back"]
    assert len(records) + len(items) == len(CORPUS) + 2
    rotated = next(item for item in items if item.file_name == "rotated.jpg")
    assert rotated.image.shape == (60, 40, 3)
