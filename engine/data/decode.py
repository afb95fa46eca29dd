"""Decode image bytes into RGB ``H×W×3`` uint8 arrays, or fail with a human reason.

Rules (see docs/data.md):
- only JPEG (and MPO), PNG, WebP, BMP, TIFF and GIF are opened (PIL's other plug-ins, e.g. EPS
  through Ghostscript, never run on untrusted input);
- the declared size is checked against ``max_pixels`` and ``min_side`` *before* any pixel is
  decoded, so a decompression bomb is never allocated; PNG chunk CRCs are verified (PIL skips
  the CRC of image data);
- EXIF orientation is applied (the same transposition as ``PIL.ImageOps.exif_transpose``);
- every mode becomes RGB: alpha (RGBA, LA, P/L/RGB with a transparent colour) is composited
  over white; 16-bit (``I;16``), 32-bit integer (``I``) and float (``F``) greyscale are scaled
  to 0–255; CMYK, YCbCr, ``1`` and palettes go through PIL's conversion; GIF → first frame;
- optionally the shorter side is reduced to ``max_short_side`` (SA-1B uses 1500); reference
  masks follow the same orientation and a nearest-neighbour resize (``fit_references``).

Every failure raises ``DecodeError`` whose ``reason`` is a short sentence for the quarantine log.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from engine.masks import masks_to_rles, rle_to_mask
from engine.records import ImageItem, ReferenceMask

DEFAULT_MAX_SHORT_SIDE = 1500
DEFAULT_MAX_PIXELS = 100_000_000  # declared width × height; PIL itself refuses > 2 × 89.5 M
DEFAULT_MIN_SIDE = 8
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")  # JPEG covers MPO
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}

# EXIF orientation → PIL transposition, as in PIL.ImageOps.exif_transpose.
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class DecodeError(Exception):
    """An input that cannot become an image item; ``reason`` says why in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class DecodeOptions:
    """Limits applied while decoding. ``max_short_side=None`` keeps the original size."""

    max_short_side: int | None = DEFAULT_MAX_SHORT_SIDE
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int = DEFAULT_MIN_SIDE

    def __post_init__(self) -> None:
        if self.max_short_side is not None and (
            not isinstance(self.max_short_side, int) or self.max_short_side < 1
        ):
            raise ValueError(
                f"max_short_side must be a positive int or None, got {self.max_short_side!r}"
            )
        if not isinstance(self.max_pixels, int) or self.max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive int, got {self.max_pixels!r}")
        if not isinstance(self.min_side, int) or self.min_side < 1:
            raise ValueError(f"min_side must be a positive int, got {self.min_side!r}")


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image and the geometry needed to bring reference masks along.

    ``stored_hw`` is (H, W) as stored in the file, ``oriented_hw`` after the EXIF orientation
    and before any resize; ``image`` is the final ``H×W×3`` uint8 RGB array.
    """

    image: np.ndarray
    stored_hw: tuple[int, int]
    oriented_hw: tuple[int, int]
    orientation: int


def output_size(height: int, width: int, max_short_side: int | None) -> tuple[int, int]:
    """(H, W) after shrinking so that ``min(H, W) <= max_short_side`` (never enlarges)."""
    short = min(height, width)
    if max_short_side is None or short <= max_short_side:
        return height, width
    scale = max_short_side / short
    if height <= width:
        return max_short_side, max(1, round(width * scale))
    return max(1, round(height * scale)), max_short_side


def decode_image(data: bytes, options: DecodeOptions | None = None) -> DecodedImage:
    """Decode image file bytes (see the module docstring); raises ``DecodeError``."""
    options = options or DecodeOptions()
    if len(data) == 0:
        raise DecodeError("empty file (0 bytes)")
    if data.startswith(_PNG_SIGNATURE):
        _check_png_chunks(data)
    # PIL reports oddities (bomb sizes, odd EXIF, palette transparency) as warnings; the
    # outcome here is either an image or a DecodeError, so none of them may leak.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.DecompressionBombError as exc:
            raise DecodeError(f"image too large (decompression bomb?): {exc}") from None
        except Image.UnidentifiedImageError:
            raise DecodeError(
                "not a recognised image (expected JPEG, PNG, WebP, BMP, TIFF or GIF)"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any parser failure is a bad input
            raise DecodeError(f"cannot read image header: {_describe(exc)}") from None
        with img:
            return _decode_opened(img, options)


def _decode_opened(img: Image.Image, options: DecodeOptions) -> DecodedImage:
    width, height = img.size
    if width * height > options.max_pixels:
        raise DecodeError(
            f"image too large: declared {width}×{height} = {width * height} pixels exceeds "
            f"max_pixels {options.max_pixels} (decompression bomb?)"
        )
    if min(width, height) < options.min_side:
        raise DecodeError(
            f"image too small: {width}×{height}, shorter side under min_side {options.min_side}"
        )
    orientation = _exif_orientation(img)
    swap = orientation in (5, 6, 7, 8)
    oriented_hw = (width, height) if swap else (height, width)
    out_h, out_w = output_size(*oriented_hw, options.max_short_side)
    try:
        if img.format in ("JPEG", "MPO") and (out_h, out_w) != oriented_hw:
            # DCT-domain downscale by 1/2, 1/4 or 1/8 while staying >= the target size.
            img.draft(None, (out_h, out_w) if swap else (out_w, out_h))
        img.seek(0)  # animated GIF / multi-page TIFF / MPO: the first frame
        img.load()
        if orientation in EXIF_TRANSPOSE:
            img = img.transpose(EXIF_TRANSPOSE[orientation])
        rgb = _to_rgb(img)
    except DecodeError:
        raise
    except OSError as exc:
        message = str(exc)
        if "truncated" in message:
            raise DecodeError(f"truncated image data: {message}") from None
        raise DecodeError(f"cannot decode image: {_describe(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - decoder failures come in many types
        raise DecodeError(f"cannot decode image: {_describe(exc)}") from None
    if rgb.shape[:2] != (out_h, out_w):
        pil = Image.fromarray(rgb)
        rgb = np.asarray(pil.resize((out_w, out_h), Image.Resampling.BILINEAR))
    return DecodedImage(
        image=np.ascontiguousarray(rgb),
        stored_hw=(height, width),
        oriented_hw=oriented_hw,
        orientation=orientation,
    )


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode → ``H×W×3`` uint8 RGB (alpha composited over white)."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return np.asarray(img)
    if mode.startswith("I") or mode == "F":
        grey = _scale_to_uint8(np.asarray(img), mode)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA")).astype(np.uint16)
        alpha = rgba[:, :, 3:4]
        rgb = (rgba[:, :, :3] * alpha + 255 * (255 - alpha) + 127) // 255
        return rgb.astype(np.uint8)
    return np.asarray(img.convert("RGB"))


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Greyscale of more than 8 bits → uint8.

    ``I;16*`` spans 0–65535. ``I`` is taken as 8-bit if it fits 0–255, as 16-bit if it fits
    0–65535, else stretched min–max. ``F`` is taken as 0–1 or 0–255 when it fits, else
    stretched; NaN becomes 0.
    """
    values = values.astype(np.float64)
    values[~np.isfinite(values)] = 0.0
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and 255 < hi <= 65535):
        scaled = values / 257.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = values * 255.0
    elif lo >= 0 and hi <= 255:
        scaled = values
    else:
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _exif_orientation(img: Image.Image) -> int:
    """EXIF orientation 1–8 (1 when absent or unreadable: a broken EXIF block is not fatal)."""
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - malformed EXIF: keep the stored orientation
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _check_png_chunks(data: bytes) -> None:
    """Verify the length and CRC of every PNG chunk up to IEND (PIL skips IDAT CRCs)."""
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise DecodeError("truncated PNG: ends before the IEND chunk")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            name = kind.decode("latin-1")
            raise DecodeError(f"truncated PNG: chunk {name!r} runs past the end of the file")
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) & 0xFFFFFFFF != crc:
            raise DecodeError(f"corrupt PNG: CRC mismatch in chunk {kind.decode('latin-1')!r}")
        if kind == b"IEND":
            return
        pos = end


def _describe(exc: BaseException) -> str:
    message = str(exc).strip() or "no details"
    return f"{type(exc).__name__}: {message}"


class ReferenceSizeError(DecodeError):
    """A reference mask whose RLE size fits neither the stored nor the oriented image."""


def decode_item(
    data: bytes,
    key: str,
    file_name: str,
    image_id: int = 0,
    references: list[ReferenceMask] | None = None,
    options: DecodeOptions | None = None,
) -> ImageItem:
    """Decode bytes into an ``ImageItem`` whose reference masks match the final image."""
    decoded = decode_image(data, options)
    refs = fit_references(references or [], decoded)
    return ImageItem(
        key=key, image=decoded.image, file_name=file_name, image_id=image_id, references=refs
    )


def fit_references(
    references: list[ReferenceMask], decoded: DecodedImage, chunk: int = 16
) -> list[ReferenceMask]:
    """Bring reference masks into the frame of ``decoded.image``.

    A mask sized like the image after EXIF orientation is kept as is; one sized like the
    stored pixels is transposed like the image (when both fit — a flip-only orientation or a
    square image — the stored frame is assumed, as in COCO). Then masks are resized with
    nearest neighbour to the final size and re-encoded. Raises ``ReferenceSizeError``.
    """
    final_hw = decoded.image.shape[:2]
    plans = []
    for i, ref in enumerate(references):
        size = tuple(ref.rle.get("size", ())) if isinstance(ref.rle, dict) else ()
        stored = decoded.orientation != 1 and size == decoded.stored_hw
        if not stored and size != decoded.oriented_hw:
            raise ReferenceSizeError(
                f"reference mask {i} has RLE size {list(size)} but the image is "
                f"{decoded.stored_hw[0]}×{decoded.stored_hw[1]} (H×W) as stored and "
                f"{decoded.oriented_hw[0]}×{decoded.oriented_hw[1]} after EXIF orientation"
            )
        plans.append(stored)
    if not any(plans) and final_hw == decoded.oriented_hw:
        return list(references)
    out = list(references)
    todo = [i for i, stored in enumerate(plans) if stored or final_hw != decoded.oriented_hw]
    for start in range(0, len(todo), chunk):
        idx = todo[start : start + chunk]
        masks = []
        for i in idx:
            mask = rle_to_mask(references[i].rle)
            if plans[i]:
                mask = orient_mask(mask, decoded.orientation)
            masks.append(mask)
        resized = resize_masks_nearest(np.stack(masks), *final_hw)
        for i, rle in zip(idx, masks_to_rles(resized)):
            ref = references[i]
            out[i] = ReferenceMask(
                rle=rle,
                level=ref.level,
                object_id=ref.object_id,
                parent_index=ref.parent_index,
                iscrowd=ref.iscrowd,
            )
    return out


def orient_mask(mask: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF orientation 1–8 to an ``H×W`` array, exactly as PIL transposes the image."""
    if orientation == 2:
        return mask[:, ::-1]
    if orientation == 3:
        return mask[::-1, ::-1]
    if orientation == 4:
        return mask[::-1, :]
    if orientation == 5:
        return mask.T
    if orientation == 6:
        return np.rot90(mask, -1)
    if orientation == 7:
        return mask[::-1, ::-1].T
    if orientation == 8:
        return np.rot90(mask, 1)
    return mask


def resize_masks_nearest(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an ``N×H×W`` stack to ``N×height×width`` (pixel centres)."""
    _, src_h, src_w = masks.shape
    if (src_h, src_w) == (height, width):
        return masks
    rows = np.minimum(((np.arange(height) + 0.5) * (src_h / height)).astype(np.int64), src_h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (src_w / width)).astype(np.int64), src_w - 1)
    return masks[:, rows[:, None], cols[None, :]]
