"""Primitive shapes, their rasterisation and their fills, for the synthetic scene generator.

Coordinates are image pixels, ``x`` to the right and ``y`` down; a pixel's centre is at
``(x + 0.5, y + 0.5)``. A shape lives in its own frame ``(u, v)``: centred on ``(cx, cy)`` and
rotated by ``angle`` (radians), with half-extents ``a`` along ``u`` and ``b`` along ``v``.
Everything is vectorised over the shape's bounding box; nothing loops over pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

ELLIPSE = "ellipse"
RECT = "rect"  # ``extra = (corner radius as a fraction of min(a, b),)``
BLOB = "blob"  # ellipse with a wobbly rim: ``extra = (amp_1, phase_1, amp_2, phase_2, ...)``
POLY = "poly"  # convex polygon: ``extra = (u0, v0, u1, v1, ...)`` in units of (a, b)
RING = "ring"  # ellipse with an elliptical hole: ``extra = (inner fraction,)``

PATTERNS = ("flat", "gradient", "stripes", "checker", "dots", "mottled", "grain")


class Shape(NamedTuple):
    """One primitive in pixel coordinates (see the module docstring).

    (Named tuples rather than dataclasses: a scene builds hundreds of these per image.)
    """

    kind: str
    cx: float
    cy: float
    a: float
    b: float
    angle: float = 0.0
    extra: tuple[float, ...] = ()

    def bounds(self) -> tuple[float, float, float, float]:
        """Axis-aligned ``(x0, y0, x1, y1)`` in pixels containing the rotated shape."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        if self.kind == POLY:
            us = [u * self.a for u in self.extra[0::2]]
            vs = [v * self.b for v in self.extra[1::2]]
            xs = [u * c - v * s for u, v in zip(us, vs)]
            ys = [u * s + v * c for u, v in zip(us, vs)]
            return self.cx + min(xs), self.cy + min(ys), self.cx + max(xs), self.cy + max(ys)
        if self.kind == RECT:
            hx = self.a * abs(c) + self.b * abs(s)
            hy = self.a * abs(s) + self.b * abs(c)
        else:
            grow = 1.0 + sum(abs(x) for x in self.extra[0::2]) if self.kind == BLOB else 1.0
            hx = grow * math.hypot(self.a * c, self.b * s)
            hy = grow * math.hypot(self.a * s, self.b * c)
        return self.cx - hx, self.cy - hy, self.cx + hx, self.cy + hy

    def area(self) -> float:
        """Area in square pixels (analytic; the blob's to second order)."""
        if self.kind == ELLIPSE:
            return math.pi * self.a * self.b
        if self.kind == RECT:
            r = (self.extra[0] if self.extra else 0.0) * min(self.a, self.b)
            return 4 * self.a * self.b - (4 - math.pi) * r * r
        if self.kind == BLOB:
            return math.pi * self.a * self.b * (1 + 0.5 * sum(x * x for x in self.extra[0::2]))
        if self.kind == RING:
            return math.pi * self.a * self.b * (1 - self.extra[0] ** 2)
        us, vs = self.extra[0::2], self.extra[1::2]
        n = len(us)
        twice = sum(us[i] * vs[(i + 1) % n] - us[(i + 1) % n] * vs[i] for i in range(n))
        return abs(twice) / 2 * self.a * self.b

    def moved(self, cx: float, cy: float, scale: float, angle: float, flip: bool) -> Shape:
        """This shape given in an object's unit frame, placed at (cx, cy) scaled and rotated."""
        ux, uy = (-self.cx if flip else self.cx), self.cy
        c, s = math.cos(angle), math.sin(angle)
        own = -self.angle if flip else self.angle
        extra = self.extra
        if flip and self.kind == POLY:  # mirror u (rasterize fixes the vertex order)
            extra = tuple(-x if i % 2 == 0 else x for i, x in enumerate(extra))
        if flip and self.kind == BLOB:  # mirrored rim: cos(k(pi - t) + p) = cos(kt - p - k pi)
            extra = tuple(
                x
                for k, (amp, phase) in enumerate(zip(extra[0::2], extra[1::2]), start=2)
                for x in (amp, -phase - k * math.pi)
            )
        return Shape(
            self.kind,
            cx + scale * (ux * c - uy * s),
            cy + scale * (ux * s + uy * c),
            self.a * scale,
            self.b * scale,
            own + angle,
            extra,
        )


class Fill(NamedTuple):
    """How a shape is coloured: RGB in 0–255 plus a pattern in the shape's own frame.

    ``scale`` is the pattern period in pixels, ``shade`` the strength of a linear light
    gradient across the shape (0 = none), ``amount`` the pattern's contrast (0–1).
    """

    color: tuple[float, float, float]
    color2: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pattern: str = "flat"
    scale: float = 8.0
    amount: float = 0.5
    shade: float = 0.0
    light: float = 0.0  # direction of the light gradient (radians, in the shape frame)


def is_uniform(fill: Fill) -> bool:
    """Whether every pixel gets the same colour (no pattern, no light gradient)."""
    return fill.pattern == "flat" and not fill.shade


def bounding_box(shape: Shape, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Pixel box ``(x0, y0, x1, y1)`` (end-exclusive) clipped to the image; None if empty."""
    bx0, by0, bx1, by1 = shape.bounds()
    x0, x1 = max(0, int(math.floor(bx0))), min(width, int(math.ceil(bx1)) + 1)
    y0, y1 = max(0, int(math.floor(by0))), min(height, int(math.ceil(by1)) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def rasterize(
    shape: Shape, box: tuple[int, int, int, int], coordinates: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The pixels of ``box`` inside ``shape``: ``(index, u, v)``.

    ``index`` holds flat row-major positions within the box (int64); ``u, v`` are those
    pixels' centres in the shape frame (float32), all 1-D of the same length — or ``None``
    when ``coordinates`` is false (a uniform fill does not need them).
    (Python floats mixed with float32 arrays stay float32 under NumPy 2's promotion rules.)
    """
    x0, y0, x1, y1 = box
    xs = _centres(x0, x1) - shape.cx
    ys = _centres(y0, y1) - shape.cy
    c, s = math.cos(shape.angle), math.sin(shape.angle)
    a, b, kind = shape.a, shape.b, shape.kind
    if kind in (ELLIPSE, RING, BLOB):
        # Coordinates normalised by the half-axes: the ellipse is the unit disc.
        un = (xs * (c / a))[None, :] + (ys * (s / a))[:, None]
        vn = (ys * (c / b))[:, None] - (xs * (s / b))[None, :]
        r2 = un * un
        r2 += vn * vn
        if kind == ELLIPSE:
            index = np.flatnonzero(r2 <= 1.0)
        elif kind == RING:
            index = np.flatnonzero((r2 <= 1.0) & (r2 >= shape.extra[0] ** 2))
        else:  # the rim wobbles between 1 - sum|amp| and 1 + sum|amp|: test angles only there
            wobble = sum(abs(x) for x in shape.extra[0::2])
            sure = r2 <= max(1.0 - wobble, 0.0) ** 2
            maybe = np.flatnonzero((r2 <= (1.0 + wobble) ** 2) & ~sure)
            theta = np.arctan2(vn.ravel()[maybe], un.ravel()[maybe])
            rim = np.ones_like(theta)
            for k, (amp, phase) in enumerate(zip(shape.extra[0::2], shape.extra[1::2]), start=2):
                rim += amp * np.cos(theta * float(k) + phase)
            keep = maybe[r2.ravel()[maybe] <= rim * rim]
            index = np.concatenate([np.flatnonzero(sure), keep])
        if not coordinates:
            return index, None, None
        return index, un.ravel()[index] * a, vn.ravel()[index] * b
    u = (xs * c)[None, :] + (ys * s)[:, None]
    v = (ys * c)[:, None] - (xs * s)[None, :]
    if kind == RECT:
        index = np.flatnonzero((np.abs(u) <= a) & (np.abs(v) <= b))
        r = (shape.extra[0] if shape.extra else 0.0) * min(a, b)
        if r > 0:  # rounded corners: distance to the inner rectangle at most r
            du = np.maximum(np.abs(u.ravel()[index]) - (a - r), 0.0)
            dv = np.maximum(np.abs(v.ravel()[index]) - (b - r), 0.0)
            index = index[du * du + dv * dv <= r * r]
    elif kind == POLY:
        pts = [(pu * a, pv * b) for pu, pv in zip(shape.extra[0::2], shape.extra[1::2])]
        pairs = list(zip(pts, pts[1:] + pts[:1]))
        if sum(pu * qv - qu * pv for (pu, pv), (qu, qv) in pairs) < 0:
            pairs = [(q, p) for p, q in reversed(pairs)]  # inside = left of every edge
        inside = None
        for (pu, pv), (qu, qv) in pairs:
            # (q - p) × (x - p) >= 0, written as a linear function of (u, v)
            edge = u * (pv - qv) + v * (qu - pu) >= (qu - pu) * pv - (qv - pv) * pu
            inside = edge if inside is None else inside & edge
        index = np.flatnonzero(inside)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    if not coordinates:
        return index, None, None
    return index, u.ravel()[index], v.ravel()[index]


_CENTRES = np.arange(8192, dtype=np.float32) + np.float32(0.5)


def _centres(start: int, stop: int) -> np.ndarray:
    """Pixel-centre coordinates ``start + 0.5 … stop - 0.5`` (float32)."""
    if stop <= _CENTRES.size:
        return _CENTRES[start:stop]
    return np.arange(start, stop, dtype=np.float32) + np.float32(0.5)


def paint(
    fill: Fill,
    u: np.ndarray,
    v: np.ndarray,
    smooth: Callable[[], np.ndarray],
    grain: Callable[[], np.ndarray],
    size: float,
) -> list[np.ndarray | float]:
    """Colours of ``K`` pixels: three float32 arrays (R, G, B) of length ``K``, or plain
    floats when the colour is uniform.

    ``u, v`` are the pixels' shape-frame coordinates (1-D); ``smooth`` and ``grain`` return
    the scene's noise fields (−1…1) at those pixels and are only called when the pattern
    needs them; ``size`` is the shape's extent in pixels (for the gradients).
    """
    pattern = fill.pattern
    amount = fill.amount
    inv_period = 1.0 / max(fill.scale, 1.5)
    if pattern == "flat":
        t = None
    elif pattern == "gradient":
        t = np.clip(u * (0.5 / size) + 0.5, 0.0, 1.0) * amount
    elif pattern in ("stripes", "checker"):
        cells = np.floor(u * inv_period).astype(np.int32)
        if pattern == "checker":
            cells += np.floor(v * inv_period).astype(np.int32)
        t = (cells & 1).astype(np.float32) * amount
    elif pattern == "dots":
        du = u * inv_period
        du -= np.floor(du) + 0.5
        dv = v * inv_period
        dv -= np.floor(dv) + 0.5
        t = (du * du + dv * dv < 0.09).astype(np.float32) * amount
    elif pattern == "mottled":
        t = (smooth() * 0.5 + 0.5) * amount
    elif pattern == "grain":
        t = (grain() * 0.25 + 0.5) * amount
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    light = None
    if fill.shade:
        k = fill.shade / size
        light = u * (k * math.cos(fill.light)) + v * (k * math.sin(fill.light))
        light += 1.0
    channels: list[np.ndarray | float] = []
    for base, other in zip(fill.color, fill.color2):
        if t is None:
            channel = base if light is None else light * base
        else:
            channel = t * (other - base) + base
            if light is not None:
                channel *= light
        channels.append(channel)
    return channels


def noise_field(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth value noise in about −1…1: a random grid every ``cell`` pixels, bilinearly
    interpolated to ``height×width`` (two small matrix products)."""
    gh, gw = int(height / cell) + 2, int(width / cell) + 2
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    rows = _interp_matrix(height, gh, cell)
    cols = _interp_matrix(width, gw, cell)
    field = rows @ grid @ cols.T
    field *= 1.0 / max(float(np.abs(grid).max()), 1e-6)  # interpolation stays within the grid
    return field


def _interp_matrix(n: int, m: int, cell: float) -> np.ndarray:
    """``n×m`` linear-interpolation weights from ``m`` grid nodes spaced ``cell`` pixels."""
    pos = (np.arange(n, dtype=np.float32) + 0.5) / np.float32(cell)
    left = np.minimum(pos.astype(np.int64), m - 2)
    frac = pos - left
    weights = np.zeros((n, m), dtype=np.float32)
    weights[np.arange(n), left] = 1 - frac
    weights[np.arange(n), left + 1] = frac
    return weights
