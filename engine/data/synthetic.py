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
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from engine.data.decode import DecodeError
from engine.data.sources import SourceEntry
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
from engine.records import LEVEL_PART, LEVEL_SUBPART, LEVEL_WHOLE, ImageItem, ReferenceMask
from engine.rle_codec import encode_counts_batch

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
SAME_AS_PARENT = 0.95  # a part covering >= this fraction of its parent's area is dropped
MIN_PRIM_AREA = 10.0  # px²: smaller primitives (a far-away eye) are not drawn
GRAIN_MARGIN = 64  # the noise tile is this much larger than the image, for random windows


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
) -> tuple[np.ndarray, list[ReferenceMask]]:
    """Render a scene: ``(H×W×3 uint8 image, reference masks)`` (see the module docstring).

    ``min_mask_area`` (pixels) drops smaller visible masks; by default 0.03 % of the image.
    """
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
            for label in _labels(obj_index, prim.part, prim.sub):
                old = boxes.get(label)
                boxes[label] = box if old is None else _union(old, box)
    pixels = _finish(image, grain, plan)
    # Column-major owner map: every mask crop taken from it is already in RLE order.
    owner_t = np.ascontiguousarray(owner.reshape(height, width).T)
    refs = _reference_masks(owner_t, prims, boxes, min_mask_area)
    return pixels, refs


def _labels(obj: int, part: int, sub: int) -> list[tuple[int, ...]]:
    """The masks a primitive's pixels count towards: (obj,), (obj, part), (obj, part, sub)."""
    if part < 0:
        return [(obj,)]
    if sub < 0:
        return [(obj,), (obj, part)]
    return [(obj,), (obj, part), (obj, part, sub)]


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, ...]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _reference_masks(
    owner_t: np.ndarray,
    prims: list[tuple[int, int, int]],
    boxes: dict[tuple[int, ...], tuple[int, int, int, int]],
    min_area: int,
) -> list[ReferenceMask]:
    """Visible masks per whole / part / sub-part from the owner map (``1 + prim`` per pixel,
    transposed: ``W×H``).

    ``boxes`` maps each label — ``(obj,)``, ``(obj, part)``, ``(obj, part, sub)`` — to the box
    its primitives span. A label's primitives are numbered consecutively (objects, parts and
    sub-parts are drawn in one go), so its mask in a box is a range test on the owner map.
    """
    width, height = owner_t.shape
    members: dict[tuple[int, ...], list[int]] = {}  # label → its primitive numbers (1-based)
    for number, prim in enumerate(prims, start=1):
        for label in _labels(*prim):
            members.setdefault(label, []).append(number)
    prim_area = np.bincount(owner_t.ravel(), minlength=len(prims) + 1).tolist()

    def visible(label: tuple[int, ...]) -> int:
        return sum(prim_area[n] for n in members[label])

    refs: list[ReferenceMask] = []
    labels: list[tuple[int, ...]] = []  # per reference

    def add(label: tuple[int, ...], level: int, parent: int | None) -> int:
        labels.append(label)
        refs.append(ReferenceMask(rle={}, level=level, object_id=label[0], parent_index=parent))
        return len(refs) - 1

    children: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for label in members:
        if len(label) > 1:
            children.setdefault(label[:-1], []).append(label)
    for obj_label in sorted(label for label in members if len(label) == 1):
        whole_area = visible(obj_label)
        if whole_area < min_area:
            continue
        whole_index = add(obj_label, LEVEL_WHOLE, None)
        for part_label in sorted(children.get(obj_label, [])):
            area = visible(part_label)
            if area < min_area:
                continue
            parent = whole_index
            if area < SAME_AS_PARENT * whole_area:
                parent = add(part_label, LEVEL_PART, whole_index)
            for sub_label in sorted(children.get(part_label, [])):
                sub_area = visible(sub_label)
                if min_area <= sub_area < SAME_AS_PARENT * area:
                    add(sub_label, LEVEL_SUBPART, parent)
    columns, origins = [], []
    for label in labels:
        x0, y0, x1, y1 = boxes[label]
        crop = owner_t[x0:x1, y0:y1]
        numbers = members[label]
        lo, hi = numbers[0], numbers[-1]
        if hi - lo + 1 == len(numbers):
            columns.append((crop >= lo) & (crop <= hi))
        else:  # not drawn in one go (no template does this today)
            columns.append(np.isin(crop, numbers))
        origins.append((x0, y0))
    for ref, rle in zip(refs, columns_to_rles(columns, origins, height, width)):
        ref.rle = rle
    return refs


def crop_to_rle(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> dict:
    """COCO compressed RLE of an ``height×width`` mask that is zero outside ``crop`` (``h×w``
    bool), whose top-left pixel is ``(x0, y0)``; never builds the full-size mask."""
    return columns_to_rles([np.ascontiguousarray(crop.T)], [(x0, y0)], height, width)[0]


def columns_to_rles(
    crops_t: list[np.ndarray], origins: list[tuple[int, int]], height: int, width: int
) -> list[dict]:
    """RLEs of many ``height×width`` masks, each zero outside its crop, in one vectorised pass.

    ``crops_t[i]`` is crop ``i`` transposed (``w×h`` bool: one row per image column, i.e.
    already in RLE's column-major order) and ``origins[i]`` its top-left pixel ``(x0, y0)``.
    """
    if not crops_t:
        return []
    total = height * width
    # Lay every crop column out between zero cells, all crops end to end: a change between
    # two neighbouring cells is a run boundary, and never crosses a column or a crop.
    strides = np.array([c.shape[1] + 2 for c in crops_t], dtype=np.int64)
    sizes = np.array([c.shape[0] for c in crops_t], dtype=np.int64) * strides
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    cells = np.zeros(int(sizes.sum()), dtype=bool)
    for crop, start, stride in zip(crops_t, starts.tolist(), strides.tolist()):
        cells[start : start + crop.size + 2 * crop.shape[0]].reshape(-1, stride)[:, 1:-1] = crop
    change = np.flatnonzero(cells[1:] != cells[:-1])
    owner = np.searchsorted(starts, change, side="right") - 1
    column, row = np.divmod(change - starts[owner], strides[owner])
    origin = np.asarray(origins, dtype=np.int64)
    bounds = (column + origin[owner, 0]) * height + (row + origin[owner, 1])
    # A run reaching the bottom of a full-height column goes on at the top of the next one.
    joined = (bounds[1:] == bounds[:-1]) & (owner[1:] == owner[:-1])
    if joined.any():
        keep = np.ones(bounds.size, dtype=bool)
        keep[:-1] &= ~joined
        keep[1:] &= ~joined
        bounds, owner = bounds[keep], owner[keep]
    counts = np.bincount(owner, minlength=len(crops_t))  # boundaries per mask
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    previous = np.empty_like(bounds)
    previous[1:] = bounds[:-1]
    previous[first[counts > 0]] = 0
    # Runs of mask i: its boundary gaps, then what is left to the end (dropped when 0).
    runs = np.empty(bounds.size + len(crops_t), dtype=np.int64)
    slots = np.arange(bounds.size) + owner  # one extra slot per earlier mask (its tail)
    runs[slots] = bounds - previous
    tails = np.cumsum(counts + 1) - 1
    last = np.append(bounds, 0)[np.where(counts > 0, first + counts - 1, bounds.size)]
    runs[tails] = total - last
    lengths = counts + 1
    empty_tail = (runs[tails] == 0) & (counts > 0)
    if empty_tail.any():
        runs = np.delete(runs, tails[empty_tail])
        lengths = lengths - empty_tail
    strings = encode_counts_batch(runs, lengths)
    return [{"size": [height, width], "counts": c.decode("ascii")} for c in strings]


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


def _finish(image: np.ndarray, grain: np.ndarray, plan: ScenePlan) -> np.ndarray:
    """Soften edges a little (3-tap blur), add sensor noise, round: planar → ``H×W×3`` uint8."""
    # Sensor noise: the grain field read backwards (so it does not line up with textures).
    noise = grain[::-1, ::-1] * np.float32(plan.noise_sigma) + np.float32(0.5)
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
    ) -> None:
        _check_args(seed_start, height, width)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"count must be a non-negative int, got {count!r}")
        self.seed_start, self.count = int(seed_start), count
        self.height, self.width = height, width
        self.min_mask_area = min_mask_area
        self.name = f"synthetic:{seed_start}+{count}@{height}x{width}"

    @classmethod
    def from_split(cls, split: str, count: int, offset: int = 0, **kwargs: int) -> SyntheticSource:
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
        image, refs = render_scene(seed, self.height, self.width, self.min_mask_area)
        return ImageItem(
            key=entry.key,
            image=image,
            file_name=f"{entry.key}.jpg",
            image_id=seed,
            references=refs,
        )
