"""Object templates for synthetic scenes: wholes made of parts made of sub-parts.

Each template draws an object in a unit frame (about one unit from centre to rim, ``x`` right,
``y`` down) as a list of ``Prim`` in drawing order. ``part`` and ``sub`` say which reference
mask a primitive's visible pixels belong to: ``part=-1`` the whole only (an outline, a
single-shape object), ``sub=-1`` the part itself. ``make_object`` scales, rotates, mirrors and
places a template so that its nominal area matches a target.
"""

from __future__ import annotations

import bisect
import colorsys
import itertools
import math
from typing import NamedTuple

import numpy as np

from engine.data.synthetic_shapes import BLOB, ELLIPSE, POLY, RECT, RING, Fill, Shape

# Template → relative frequency. "simple" objects have no parts (like many SA-1B masks).
KINDS = {
    "simple": 0.30,
    "creature": 0.12,
    "box": 0.12,
    "face": 0.10,
    "tree": 0.10,
    "vehicle": 0.10,
    "house": 0.08,
    "flower": 0.08,
}
UPRIGHT = {"tree", "vehicle", "house", "face"}  # rotated by at most ±25°

Color = tuple[float, float, float]


def _cumulative(weights: dict[str, float]) -> tuple[list[str], list[float]]:
    total = sum(weights.values())
    return list(weights), list(itertools.accumulate(w / total for w in weights.values()))


_PATTERNS = _cumulative(
    {"flat": 0.34, "gradient": 0.14, "stripes": 0.1, "checker": 0.06, "dots": 0.08,
     "mottled": 0.16, "grain": 0.12}
)  # fmt: skip
_BG_LIKE_PATTERNS = _cumulative({"stripes": 0.3, "checker": 0.2, "dots": 0.2, "gradient": 0.3})
KIND_CHOICES = _cumulative(KINDS)


class Prim(NamedTuple):
    """One primitive of an object, in drawing order (later ones cover earlier ones)."""

    shape: Shape
    fill: Fill
    part: int = -1
    sub: int = -1


class SceneObject(NamedTuple):
    """A placed object: its primitives in pixels and the area it was sized for (px²)."""

    kind: str
    prims: tuple[Prim, ...]
    target_area: float


class Palette:
    """Colour choices for one scene: a few shared colours, some of them the background's."""

    def __init__(self, rng: np.random.Generator, background: list[Color], size: int) -> None:
        self.rng = rng
        self.background = background
        self.shared = [random_color(rng) for _ in range(size)]

    def body(self) -> tuple[Color, bool]:
        """A body colour and whether it was taken from the background."""
        roll = self.rng.random()
        if roll < 0.22:
            return jitter(
                self.rng, self.background[self.rng.integers(len(self.background))], 12
            ), True
        if roll < 0.55:
            return jitter(self.rng, self.shared[self.rng.integers(len(self.shared))], 18), False
        return random_color(self.rng), False

    def contrast(self, color: Color, minimum: float = 70.0) -> Color:
        """A colour at least ``minimum`` away from ``color`` (RGB distance), often shared."""
        start = int(self.rng.integers(len(self.shared)))
        for k in range(len(self.shared)):
            candidate = self.shared[(start + k) % len(self.shared)]
            if _distance(candidate, color) >= minimum:
                return candidate
        candidate = random_color(self.rng)
        if _distance(candidate, color) >= minimum:
            return candidate
        return shift(color, minimum * (1 if sum(color) < 380 else -1))

    def fill(self, color: Color, scale: float, background_like: bool = False) -> Fill:
        """A fill for ``color``: flat, gradient or a pattern whose period is ``scale`` units."""
        # Same colour as the background: make the texture differ from it.
        patterns = _BG_LIKE_PATTERNS if background_like else _PATTERNS
        pattern = patterns[0][pick(self.rng, patterns[1])]
        contrast, sign, period, amount, shade, light = self.rng.random(6).tolist()
        return Fill(
            color=color,
            color2=shift(color, (35 + 55 * contrast) * (1 if sign < 0.5 else -1)),
            pattern=pattern,
            scale=scale * (0.12 + 0.23 * period),
            amount=0.35 + 0.45 * amount,
            shade=0.0 if shade < 0.4 else 0.35 * shade,  # unshaded 40 % of the time
            light=2 * math.pi * light,
        )


def random_color(rng: np.random.Generator) -> Color:
    h, s, v = rng.random(3).tolist()
    r, g, b = colorsys.hsv_to_rgb(h, 0.15 + 0.75 * s, 0.2 + 0.75 * v)
    return (255 * r, 255 * g, 255 * b)


def jitter(rng: np.random.Generator, color: Color, amount: float) -> Color:
    dr, dg, db = rng.uniform(-amount, amount, 3).tolist()
    return (_clamp(color[0] + dr), _clamp(color[1] + dg), _clamp(color[2] + db))


def shift(color: Color, amount: float) -> Color:
    return (_clamp(color[0] + amount), _clamp(color[1] + amount), _clamp(color[2] + amount))


def _clamp(value: float) -> float:
    return 0.0 if value < 0 else 255.0 if value > 255 else float(value)


def pick(rng: np.random.Generator, cumulative: list[float]) -> int:
    """Index drawn with probabilities given as a cumulative list ending at 1."""
    return min(bisect.bisect_right(cumulative, rng.random()), len(cumulative) - 1)


def _distance(a: Color, b: Color) -> float:
    return math.dist(a, b)


def make_object(
    kind: str,
    rng: np.random.Generator,
    palette: Palette,
    cx: float,
    cy: float,
    target_area: float,
) -> SceneObject:
    """Build a template and place it at ``(cx, cy)`` (pixels) with about ``target_area`` px²."""
    prims = TEMPLATES[kind](rng, palette)
    unit_area = sum(p.shape.area() for p in prims if p.sub == -1 and p.part != -2)
    scale = math.sqrt(target_area / max(unit_area, 1e-6))
    limit = 25 if kind in UPRIGHT else 180
    angle = math.radians(float(rng.uniform(-limit, limit)))
    flip = bool(rng.random() < 0.5)
    placed = tuple(
        Prim(
            p.shape.moved(cx, cy, scale, angle, flip),
            _scaled(p.fill, scale),
            max(p.part, -1),
            p.sub,
        )
        for p in prims
    )
    return SceneObject(kind, placed, target_area)


def _scaled(fill: Fill, scale: float) -> Fill:
    f = fill
    return Fill(f.color, f.color2, f.pattern, f.scale * scale, f.amount, f.shade, f.light)


# -- templates (unit frame) --------------------------------------------------------------


def _outline(prims: list[Prim], shape: Shape, color: Color, rng: np.random.Generator) -> None:
    """Maybe add a dark rim drawn under ``shape`` (it belongs to the whole only)."""
    if rng.random() < 0.3:
        grow = float(rng.uniform(0.04, 0.08))
        rim = shape._replace(a=shape.a + grow, b=shape.b + grow)
        prims.append(Prim(rim, Fill(shift(color, -90)), part=-2))


def _simple(rng: np.random.Generator, pal: Palette) -> list[Prim]:
    color, bg_like = pal.body()
    fill = pal.fill(color, 1.0, bg_like)
    kind = rng.choice([ELLIPSE, RECT, BLOB, POLY, RING], p=[0.25, 0.2, 0.3, 0.15, 0.1])
    a = 1.0
    b = float(rng.uniform(0.45, 1.0))
    extra: tuple[float, ...] = ()
    if kind == RECT:
        extra = (float(rng.uniform(0, 0.5)),)
    elif kind == BLOB:
        harmonics = int(rng.integers(2, 5))
        extra = tuple(
            x
            for k in range(harmonics)
            for x in (float(rng.uniform(0.04, 0.22) / (1 + 0.5 * k)), float(rng.uniform(0, 6.3)))
        )
    elif kind == POLY:
        n = int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n)) if n > 3 else np.arange(3) * 2.09
        extra = tuple(x for t in angles for x in (math.cos(t), math.sin(t)))
    elif kind == RING:
        extra = (float(rng.uniform(0.35, 0.65)),)
    shape = Shape(str(kind), 0.0, 0.0, a, b, 0.0, extra)
    prims: list[Prim] = []
    _outline(prims, shape, color, rng)
    prims.append(Prim(shape, fill))
    return prims


def _creature(rng: np.random.Generator, pal: Palette) -> list[Prim]:
    color, bg_like = pal.body()
    body = Shape(ELLIPSE, 0.0, 0.0, 1.0, float(rng.uniform(0.5, 0.7)))
    head_r = float(rng.uniform(0.38, 0.52))
    head = Shape(ELLIPSE, 1.0, -0.45, head_r, head_r * float(rng.uniform(0.85, 1.0)))
    prims: list[Prim] = []
    legs = int(rng.choice([0, 2, 4], p=[0.2, 0.5, 0.3]))
    leg_fill = pal.fill(shift(color, -40), 1.0)
    for i in range(legs):
        x = -0.6 + 1.2 * i / max(legs - 1, 1)
        leg = Shape(RECT, x, body.b + 0.2, 0.11, 0.32, float(rng.uniform(-0.2, 0.2)), (0.4,))
        prims.append(Prim(leg, leg_fill, part=2 + i))
    if rng.random() < 0.6:
        tail = Shape(RECT, -1.15, -0.2, 0.35, 0.06, float(rng.uniform(-0.8, -0.3)), (0.5,))
        prims.append(Prim(tail, leg_fill, part=2 + legs))
    _outline(prims, body, color, rng)
    prims.append(Prim(body, pal.fill(color, 1.0, bg_like), part=0))
    head_color = pal.contrast(color, 45) if rng.random() < 0.6 else shift(color, 35)
    prims.append(Prim(head, pal.fill(head_color, 1.0), part=1))
    eye_color = (245.0, 245.0, 240.0) if rng.random() < 0.7 else pal.contrast(head_color)
    eye_r = head_r * float(rng.uniform(0.22, 0.3))
    for k, dx in enumerate((-0.35, 0.35) if rng.random() < 0.7 else (0.2,)):
        eye = Shape(ELLIPSE, head.cx + dx * head_r, head.cy - 0.15 * head_r, eye_r, eye_r)
        prims.append(Prim(eye, Fill(eye_color), part=1, sub=k))
        pupil = eye._replace(a=eye_r * 0.45, b=eye_r * 0.45)
        prims.append(Prim(pupil, Fill((25.0, 20.0, 20.0)), part=1, sub=k))
    return prims


def _box(rng: np.random.Generator, pal: Palette) -> list[Prim]:
    color, bg_like = pal.body()
    bb = float(rng.uniform(0.6, 0.85))
    body = Shape(RECT, 0.0, 0.12, 1.0, bb, 0.0, (float(rng.uniform(0, 0.15)),))
    lid_b = float(rng.uniform(0.1, 0.18))
    lid = Shape(RECT, 0.0, 0.12 - bb - lid_b * 0.9, 1.08, lid_b, 0.0, (0.2,))
    prims: list[Prim] = []
    _outline(prims, body, color, rng)
    prims.append(Prim(body, pal.fill(color, 1.0, bg_like), part=0))
    label = Shape(
        RECT, float(rng.uniform(-0.3, 0.3)), 0.12 + float(rng.uniform(-0.2, 0.2)),
        float(rng.uniform(0.3, 0.55)), float(rng.uniform(0.15, 0.3)), 0.0, (0.1,),
    )  # fmt: skip
    label_color = pal.contrast(color, 80)
    prims.append(Prim(label, pal.fill(label_color, 0.5), part=0, sub=0))
    if rng.random() < 0.5:
        tape = Shape(RECT, -0.75, 0.12, 0.07, bb, 0.0)
        prims.append(Prim(tape, Fill(pal.contrast(color, 60)), part=0, sub=1))
    lid_color = shift(color, float(rng.choice([-55, 55])))
    prims.append(Prim(lid, pal.fill(lid_color, 1.0), part=1))
    if rng.random() < 0.7:
        knob = Shape(RECT, 0.0, lid.cy - lid_b - 0.06, 0.22, 0.08, 0.0, (0.5,))
        prims.append(Prim(knob, Fill(pal.contrast(lid_color, 60)), part=1, sub=0))
    return prims


def _face(rng: np.random.Generator, pal: Palette) -> list[Prim]:
    skin, bg_like = pal.body()
    fa, fb = float(rng.uniform(0.75, 0.9)), float(rng.uniform(0.95, 1.1))
    prims: list[Prim] = []
    ears = Fill(shift(skin, -30))
    for k, dx in enumerate((-fa, fa)):
        prims.append(Prim(Shape(ELLIPSE, dx, 0.0, 0.18, 0.26), ears, part=2 + k))
    hair_color = pal.contrast(skin, 80)
    hair = Shape(ELLIPSE, 0.0, -0.3 * fb, fa * 1.06, fb * 0.78)
    prims.append(Prim(hair, pal.fill(hair_color, 0.6), part=1))
    face = Shape(ELLIPSE, 0.0, 0.12, fa, fb * 0.9)
    prims.append(Prim(face, pal.fill(skin, 1.0, bg_like), part=0))
    eye_color = pal.contrast(skin, 90)
    for k, dx in enumerate((-0.33, 0.33)):
        eye = Shape(ELLIPSE, dx * fa, -0.05, 0.17, 0.11)
        prims.append(Prim(eye, Fill((240.0, 240.0, 235.0)), part=0, sub=k))
        iris = Shape(ELLIPSE, dx * fa, -0.05, 0.08, 0.08)
        prims.append(Prim(iris, Fill(eye_color), part=0, sub=k))
    mouth = Shape(ELLIPSE, 0.0, 0.55, float(rng.uniform(0.2, 0.38)), float(rng.uniform(0.06, 0.12)))
    prims.append(Prim(mouth, Fill(pal.contrast(skin, 70)), part=0, sub=2))
    if rng.random() < 0.6:
        nose = Shape(ELLIPSE, 0.0, 0.22, 0.08, 0.12)
        prims.append(Prim(nose, Fill(shift(skin, -50)), part=0, sub=3))
    return prims


def _tree(rng: np.random.Generator, pal: Palette) -> list[Prim]:
    trunk_color = jitter(rng, (110.0, 80.0, 50.0), 30) if rng.random() < 0.7 else pal.body()[0]
    crown_color, bg_like = pal.body()
    prims = [Prim(Shape(RECT, 0.0, 0.55, 0.15, 0.55, 0.0), pal.fill(trunk_color, 0.5), part=0)]
    harmonics = tuple(x for k in range(3) for x in (float(rng.uniform(0.05, 0.15)), float(k * 2.1)))
    crown = Shape(BLOB, 0.0, -0.35, 0.95, float(rng.uniform(0.65, 0.85)), 0.0, harmonics)
    prims.append(Prim(crown, pal.fill(crown_color, 1.0, bg_like), part=1))
    fruit_color = pal.contrast(crown_color, 90)
    for k in range(int(rng.integers(0, 6))):
        t, r = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 0.55))
        fruit = Shape(ELLIPSE, r * math.cos(t), -0.35 + 0.7 * r * math.sin(t), 0.11, 0.11)
        prims.append(Prim(fruit, Fill(fruit_color, shade=0.3, light=1.0), part=1, sub=k))
    return prims


def _vehicle(rng: np.random.Generator, pal: Palette) -> list[Prim]:
    color, bg_like = pal.body()
    chassis = Shape(RECT, 0.0, 0.0, 1.2, 0.32, 0.0, (0.5,))
    cabin = Shape(POLY, -0.05, -0.3, 0.6, 0.45, 0.0, (-1.0, 0.0, 1.0, 0.0, 0.6, -1.0, -0.7, -1.0))
    cabin_color = shift(color, float(rng.choice([-35, 35])))
    prims = [Prim(cabin, pal.fill(cabin_color, 1.0), part=1)]
    glass = pal.contrast(cabin_color, 80)
    windows = 2 if rng.random() < 0.6 else 1
    for k in range(windows):
        x = -0.05 + (0.0 if windows == 1 else (-0.22 if k == 0 else 0.22))
        width = 0.35 if windows == 1 else 0.16
        prims.append(Prim(Shape(RECT, x, -0.5, width, 0.14, 0.0, (0.2,)), Fill(glass), 1, k))
    _outline(prims, chassis, color, rng)
    prims.append(Prim(chassis, pal.fill(color, 1.0, bg_like), part=0))
    if rng.random() < 0.5:
        stripe = Shape(RECT, 0.0, 0.02, 1.0, 0.05, 0.0)
        prims.append(Prim(stripe, Fill(pal.contrast(color, 70)), part=0, sub=0))
    wheel_r = float(rng.uniform(0.26, 0.32))
    for k, x in enumerate((-0.72, 0.72)):
        wheel = Shape(ELLIPSE, x, 0.32, wheel_r, wheel_r)
        prims.append(Prim(wheel, Fill((30.0, 30.0, 32.0), shade=0.2), part=2 + k))
        hub = wheel._replace(a=wheel_r * 0.45, b=wheel_r * 0.45)
        prims.append(Prim(hub, Fill((185.0, 185.0, 190.0)), part=2 + k, sub=0))
    return prims


def _house(rng: np.random.Generator, pal: Palette) -> list[Prim]:
    wall_color, bg_like = pal.body()
    roof_color = pal.contrast(wall_color, 80)
    prims: list[Prim] = []
    if rng.random() < 0.5:
        prims.append(Prim(Shape(RECT, 0.5, -0.75, 0.1, 0.3), Fill(shift(roof_color, -40)), 2))
    roof = Shape(POLY, 0.0, -0.2, 1.0, 0.75, 0.0, (-1.0, 0.0, 1.0, 0.0, 0.0, -1.0))
    prims.append(Prim(roof, pal.fill(roof_color, 0.6), part=1))
    wall = Shape(RECT, 0.0, 0.35, 0.8, 0.55)
    prims.append(Prim(wall, pal.fill(wall_color, 1.0, bg_like), part=0))
    door = Shape(RECT, float(rng.uniform(-0.4, 0.4)), 0.62, 0.14, 0.28)
    prims.append(Prim(door, Fill(pal.contrast(wall_color, 70)), part=0, sub=0))
    glass = pal.contrast(wall_color, 90)
    for k, x in enumerate((-0.5, 0.5)[: int(rng.integers(1, 3))]):
        if abs(x - door.cx) > 0.3:
            prims.append(Prim(Shape(RECT, x, 0.2, 0.14, 0.14), Fill(glass), part=0, sub=1 + k))
    return prims


def _flower(rng: np.random.Generator, pal: Palette) -> list[Prim]:
    petal_color, bg_like = pal.body()
    n = int(rng.integers(5, 8))
    prims = []
    if rng.random() < 0.5:
        stem = Shape(RECT, 0.0, 1.0, 0.06, 0.6)
        prims.append(Prim(stem, Fill(jitter(rng, (60.0, 140.0, 60.0), 25)), part=n + 1))
    petal_fill = pal.fill(petal_color, 0.5, bg_like)
    for k in range(n):
        t = 2 * math.pi * k / n
        petal = Shape(ELLIPSE, 0.55 * math.cos(t), 0.55 * math.sin(t), 0.45, 0.2, t)
        prims.append(Prim(petal, petal_fill, part=1 + k))
    center = Shape(ELLIPSE, 0.0, 0.0, 0.3, 0.3)
    prims.append(Prim(center, pal.fill(pal.contrast(petal_color, 90), 0.3), part=0))
    return prims


TEMPLATES = {
    "simple": _simple,
    "creature": _creature,
    "box": _box,
    "face": _face,
    "tree": _tree,
    "vehicle": _vehicle,
    "house": _house,
    "flower": _flower,
}
