"""Synthetic scenes with reference masks at three levels: the embedded dataset and benchmark.

``render_scene(seed, height, width)`` is a pure function of its arguments. A scene is a
textured, gradient, noisy background and 5–40 objects of ~0.1 % to ~30 % of the image, drawn
back to front with occlusion. Most objects have parts and sub-parts (a creature with a head,
eyes and legs; a box with a lid, a knob and a label; a vehicle with wheels and hubs…), so a
click is ambiguous between sub-part, part and whole. Reference masks are the *visible*
pixels of each whole, part and sub-part after occlusion: ``level`` is ``LEVEL_WHOLE``,
``LEVEL_PART`` or ``LEVEL_SUBPART``; ``object_id`` groups an object's masks and
``parent_index`` points at the enclosing mask. Tiny masks are dropped, and so is a part that
covers (almost) all of its parent. See docs/data.md.

Splits are disjoint seed ranges: ``public`` (pre-training the first model), ``train`` (the
data the engine annotates) and ``heldout`` (the audit).

Styles are two photographic conditions of the same scenes (same objects and masks):
``studio`` (even light) and ``dusk`` (a spotlight falling off into the dark, a colour cast, a
lower contrast and more sensor noise). The default run pre-trains on ``studio`` public scenes
and annotates ``dusk`` ones: the domain gap that retraining closes (docs/data.md).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.data.decode import DecodeError
from engine.data.sources import SourceEntry
from engine.data.synthetic_masks import labels_of, reference_masks, union
from engine.data.synthetic_objects import (
    KIND_CHOICES,
    Palette,
    SceneObject,
    make_object,
    pick,
    random_color,
)
from engine.data.synthetic_shapes import (
    bounding_box,
    is_uniform,
    noise_field,
    paint,
    rasterize,
)
from engine.records import ImageItem, ReferenceMask

SPLIT_PUBLIC = "public"
SPLIT_TRAIN = "train"
SPLIT_HELDOUT = "heldout"
SPLITS = {
    SPLIT_PUBLIC: range(0, 1_000_000),
    SPLIT_TRAIN: range(1_000_000, 2_000_000),
    SPLIT_HELDOUT: range(2_000_000, 3_000_000),
}
MIN_OBJECTS, MAX_OBJECTS = 5, 40
MIN_AREA_FRAC, MAX_AREA_FRAC = 0.001, 0.30
DEFAULT_MIN_MASK_FRAC = 3e-4  # masks under this fraction of the image are dropped
MIN_PRIM_AREA = 10.0  # px²: smaller primitives (a far-away eye) are not drawn
GRAIN_MARGIN = 64  # the noise tile is this much larger than the image, for random windows
STYLES = ("studio", "dusk")


def split_seeds(split: str, count: int, offset: int = 0) -> range:
    """``count`` seeds of a split starting ``offset`` seeds into it."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
    seeds = SPLITS[split]
    if count < 0 or offset < 0 or offset + count > len(seeds):
        raise ValueError(
            f"count {count} at offset {offset} does not fit split {split!r} of {len(seeds)} seeds"
        )
    return seeds[offset : offset + count]


def split_of(seed: int) -> str:
    """The split a seed belongs to."""
    for name, seeds in SPLITS.items():
        if seed in seeds:
            return name
    raise ValueError(f"seed {seed} is in no split")


@dataclass(frozen=True)
class ScenePlan:
    """What a seed draws: background parameters and objects in back-to-front order."""

    height: int
    width: int
    objects: tuple[SceneObject, ...]
    background: tuple[tuple[float, float, float], tuple[float, float, float]]
    background_angle: float
    background_texture: float  # amplitude of the smooth noise on the background
    background_pattern: tuple[str, float, float]  # (stripes|checker|none, period px, amount)
    noise_sigma: float
    blur: bool


def plan_scene(seed: int, height: int = 384, width: int = 512) -> ScenePlan:
    """Draw a scene's layout from ``seed`` (deterministic; pixels are rendered separately)."""
    _check_args(seed, height, width)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    image_area = float(height * width)
    c0 = random_color(rng)
    c1 = random_color(rng) if rng.random() < 0.5 else _near(rng, c0)
    palette = Palette(rng, [c0, c1], size=int(rng.integers(3, 7)))
    count = int(round(math.exp(rng.uniform(math.log(MIN_OBJECTS), math.log(MAX_OBJECTS)))))
    fracs = np.exp(rng.uniform(math.log(MIN_AREA_FRAC), math.log(MAX_AREA_FRAC), count))
    budget = float(rng.uniform(0.5, 1.1))
    if fracs.sum() > budget:  # keep the image from being buried, sizes stay in range
        fracs = np.maximum(fracs * (budget / fracs.sum()), MIN_AREA_FRAC)
    objects = []
    for frac in fracs:
        kind = KIND_CHOICES[0][pick(rng, KIND_CHOICES[1])]
        cx, cy = rng.uniform(0.03, 0.97) * width, rng.uniform(0.03, 0.97) * height
        objects.append(make_object(kind, rng, palette, cx, cy, float(frac) * image_area))
    # Back to front: mostly large behind small, with enough noise for small-behind-large.
    depth = -np.log(fracs) + rng.normal(0.0, 1.0, count)
    order = np.argsort(depth, kind="stable")
    pattern = str(rng.choice(["none", "stripes", "checker"], p=[0.6, 0.25, 0.15]))
    return ScenePlan(
        height=height,
        width=width,
        objects=tuple(objects[i] for i in order),
        background=(c0, c1),
        background_angle=float(rng.uniform(0, 2 * math.pi)),
        background_texture=float(rng.uniform(5, 35)),
        background_pattern=(pattern, float(rng.uniform(8, 40)), float(rng.uniform(0.1, 0.35))),
        noise_sigma=float(rng.uniform(1.5, 7.0)),
        blur=bool(rng.random() < 0.5),
    )


def render_scene(
    seed: int,
    height: int = 384,
    width: int = 512,
    min_mask_area: int | None = None,
    style: str = "studio",
) -> tuple[np.ndarray, list[ReferenceMask]]:
    """Render a scene: ``(H×W×3 uint8 image, reference masks)`` (see the module docstring).

    ``min_mask_area`` (pixels) drops smaller visible masks; by default 0.03 % of the image.
    ``style`` (:data:`STYLES`) changes the light, never the masks.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
    plan = plan_scene(seed, height, width)
    if min_mask_area is None:
        min_mask_area = max(16, round(DEFAULT_MIN_MASK_FRAC * height * width))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    smooth = noise_field(rng, height, width, cell=float(rng.uniform(16, 48)))
    grain = _grain(rng, height, width)
    image = _background(plan, smooth)  # 3×H×W float32 (planar: per-channel work is fast)
    channels = image.reshape(3, -1)
    smooth_flat, grain_flat = smooth.ravel(), np.ascontiguousarray(grain).ravel()
    owner = np.zeros(height * width, dtype=np.int32)  # 1 + index into `prims`; 0 = background
    prims: list[tuple[int, int, int]] = []  # (object index, part, sub) per painted primitive
    boxes: dict[tuple[int, ...], tuple[int, int, int, int]] = {}  # label → box it spans
    for obj_index, obj in enumerate(plan.objects):
        for prim in obj.prims:
            box = bounding_box(prim.shape, height, width)
            if box is None or prim.shape.area() < MIN_PRIM_AREA:
                continue
            uniform = is_uniform(prim.fill)
            index, u, v = rasterize(prim.shape, box, coordinates=not uniform)
            if index.size == 0:
                continue
            x0, y0, x1, y1 = box
            span = x1 - x0  # box-row-major index → image-row-major index
            flat = index + (index // span) * (width - span) + (y0 * width + x0)
            if uniform:
                colors = prim.fill.color
            else:
                colors = paint(
                    prim.fill,
                    u,
                    v,
                    lambda f=flat: np.take(smooth_flat, f),
                    lambda f=flat: np.take(grain_flat, f),
                    2.0 * max(prim.shape.a, prim.shape.b),
                )
            for channel, values in zip(channels, colors):
                channel[flat] = values
            prims.append((obj_index, prim.part, prim.sub))
            owner[flat] = len(prims)
            for label in labels_of(obj_index, prim.part, prim.sub):
                old = boxes.get(label)
                boxes[label] = box if old is None else union(old, box)
    if style == "dusk":
        _dusk(image, np.random.default_rng(np.random.SeedSequence([seed, 3])))
    pixels = _finish(image, grain, plan, noise_gain=2.0 if style == "dusk" else 1.0)
    # Column-major owner map: every mask crop taken from it is already in RLE order.
    owner_t = np.ascontiguousarray(owner.reshape(height, width).T)
    refs = reference_masks(owner_t, prims, boxes, min_mask_area)
    return pixels, refs


def _background(plan: ScenePlan, smooth: np.ndarray) -> np.ndarray:
    """``3×H×W`` float32: a two-colour linear gradient, smooth noise and maybe a pattern."""
    h, w = plan.height, plan.width
    c, s = math.cos(plan.background_angle), math.sin(plan.background_angle)
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    extent = abs(c) * w + abs(s) * h + 1e-3
    t = ys[:, None] * np.float32(s / extent) + xs[None, :] * np.float32(c / extent)
    t += np.float32(0.5 - (c * w + s * h) / (2 * extent))  # 0…1 across the image
    kind, period, amount = plan.background_pattern
    if kind != "none":
        # Stripe index = floor(u / period); the offset keeps u positive so int() floors.
        offset = 2.0 + (w + h) / period
        u = (xs * (c / period) + offset)[None, :] - (ys * (s / period))[:, None]
        cells = u.astype(np.int32)
        if kind == "checker":
            v = (xs * (s / period) + offset)[None, :] + (ys * (c / period))[:, None]
            cells += v.astype(np.int32)
        cells &= 1
        t += cells.astype(np.float32) * amount
    image = np.empty((3, h, w), dtype=np.float32)
    texture = smooth * np.float32(plan.background_texture)
    for k, (a, b) in enumerate(zip(*plan.background)):
        np.multiply(t, np.float32(b - a), out=image[k])
        image[k] += texture
        image[k] += np.float32(a)
    return image


@functools.lru_cache(maxsize=4)
def _grain_tile(height: int, width: int) -> np.ndarray:
    """A fixed field of uniform noise (unit variance) a little larger than the image."""
    rng = np.random.default_rng(0x5A1B)
    tile = rng.random((height + GRAIN_MARGIN, width + GRAIN_MARGIN), dtype=np.float32)
    tile -= np.float32(0.5)
    tile *= np.float32(math.sqrt(12.0))
    tile.flags.writeable = False
    return tile


def _grain(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Per-pixel noise for a scene: a seeded window of the fixed tile (``H×W``, read-only).

    Cutting a window is ~50× cheaper than drawing ``H×W`` fresh numbers per image, and the
    noise still differs between scenes (and is the same for the same seed).
    """
    dy, dx = (int(v) for v in rng.integers(0, GRAIN_MARGIN, 2))
    return _grain_tile(height, width)[dy : dy + height, dx : dx + width]


def _dusk(image: np.ndarray, rng: np.random.Generator) -> None:
    """In place on planar ``3×H×W``: a spotlight (light ∝ a Gaussian fall-off from a random
    centre, down to 25 %), a warm or cold colour cast and contrast pulled towards grey."""
    _, h, w = image.shape
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    radius = rng.uniform(0.35, 0.7) * max(h, w)
    ys = ((np.arange(h, dtype=np.float32) - cy) / radius) ** 2
    xs = ((np.arange(w, dtype=np.float32) - cx) / radius) ** 2
    light = np.float32(0.25) + np.float32(0.75) * np.exp(-(ys[:, None] + xs[None, :]))
    cast = (1.05, 0.85, 0.6) if rng.random() < 0.5 else (0.6, 0.8, 1.05)
    contrast = np.float32(rng.uniform(0.55, 0.75))
    for channel, gain in zip(image, cast):
        channel -= np.float32(128)
        channel *= contrast
        channel += np.float32(128)
        channel *= light
        channel *= np.float32(gain)


def _finish(
    image: np.ndarray, grain: np.ndarray, plan: ScenePlan, noise_gain: float = 1.0
) -> np.ndarray:
    """Soften edges a little (3-tap blur), add sensor noise, round: planar → ``H×W×3`` uint8."""
    # Sensor noise: the grain field read backwards (so it does not line up with textures).
    noise = grain[::-1, ::-1] * np.float32(plan.noise_sigma * noise_gain) + np.float32(0.5)
    out = np.empty((plan.height, plan.width, 3), dtype=np.uint8)
    for k, channel in enumerate(image):
        if plan.blur:
            channel[1:-1] = (channel[:-2] + channel[2:]) * np.float32(0.25) + channel[1:-1] * 0.5
            channel[:, 1:-1] = (channel[:, :-2] + channel[:, 2:]) * np.float32(0.25) + channel[
                :, 1:-1
            ] * 0.5
        channel += noise
        np.clip(channel, 0, 255, out=channel)
        out[:, :, k] = channel
    return out


def _near(rng: np.random.Generator, color: tuple[float, float, float]) -> tuple:
    return tuple(float(np.clip(c + rng.uniform(-50, 50), 0, 255)) for c in color)


def _check_args(seed: int, height: int, width: int) -> None:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 32:
            raise ValueError(f"{name} must be an int >= 32, got {value!r}")


class SyntheticSource:
    """``count`` synthetic scenes with seeds ``seed_start …``; keys ``syn-<seed:06d>``."""

    def __init__(
        self,
        seed_start: int = 0,
        count: int = 100,
        height: int = 384,
        width: int = 512,
        min_mask_area: int | None = None,
        style: str = "studio",
    ) -> None:
        _check_args(seed_start, height, width)
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; expected one of {STYLES}")
        self.style = style
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"count must be a non-negative int, got {count!r}")
        self.seed_start, self.count = int(seed_start), count
        self.height, self.width = height, width
        self.min_mask_area = min_mask_area
        suffix = "" if style == "studio" else f":{style}"
        self.name = f"synthetic:{seed_start}+{count}@{height}x{width}{suffix}"

    @classmethod
    def from_split(cls, split: str, count: int, offset: int = 0, **kwargs: Any) -> SyntheticSource:
        """Scenes from one split (``public``, ``train`` or ``heldout``)."""
        seeds = split_seeds(split, count, offset)
        return cls(seed_start=seeds.start, count=count, **kwargs)

    def entries(self) -> Iterator[SourceEntry]:
        for index in range(self.count):
            seed = self.seed_start + index
            yield SourceEntry(
                key=f"syn-{seed:06d}", path=f"synthetic:{seed}", index=index, image_id=seed
            )

    def load(self, entry: SourceEntry) -> ImageItem:
        if not entry.path.startswith("synthetic:"):
            raise DecodeError(f"not a synthetic entry: {entry.path!r}")
        seed = int(entry.path.split(":", 1)[1])
        image, refs = render_scene(seed, self.height, self.width, self.min_mask_area, self.style)
        return ImageItem(
            key=entry.key,
            image=image,
            file_name=f"{entry.key}.jpg",
            image_id=seed,
            references=refs,
        )
