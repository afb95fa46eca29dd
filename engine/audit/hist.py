"""Fixed-bin histograms that accumulate in bounded memory and merge across workers.

The audit never keeps a list of all masks: every distribution is a ``Histogram`` (1-D, fixed
edges, exact count / sum / min / max) or a ``Histogram2D`` (values clipped into the edge
bins). Both serialise to plain JSON dicts (``to_json``) and back (``from_json``).
"""

from __future__ import annotations

import math

import numpy as np


class Histogram:
    """Counts of values in fixed bins ``[e0, e1), [e1, e2), … [e_{n-1}, e_n]`` (last one closed).

    Values below ``e0`` go to ``underflow``, above ``e_n`` to ``overflow``; NaNs are ignored.
    ``count``/``sum``/``min``/``max`` are exact over every value added.
    """

    def __init__(self, edges: np.ndarray | list[float]) -> None:
        edges = np.asarray(edges, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"edges must be 1-D, increasing, at least 2 values; got {edges!r}")
        self.edges = edges
        self.counts = np.zeros(edges.size - 1, dtype=np.int64)
        self.underflow = 0
        self.overflow = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    @classmethod
    def linear(cls, lo: float, hi: float, bins: int) -> Histogram:
        return cls(np.linspace(lo, hi, bins + 1))

    @classmethod
    def log(cls, lo: float, hi: float, bins: int) -> Histogram:
        """Log-spaced bins from ``lo`` to ``hi`` (both > 0)."""
        if lo <= 0 or hi <= lo:
            raise ValueError(f"log bins need 0 < lo < hi, got lo={lo}, hi={hi}")
        return cls(np.geomspace(lo, hi, bins + 1))

    def add(self, values: np.ndarray | list[float] | float) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[~np.isnan(v)]
        if v.size == 0:
            return
        below = v < self.edges[0]
        above = v > self.edges[-1]
        self.underflow += int(below.sum())
        self.overflow += int(above.sum())
        inside = v[~(below | above)]
        idx = np.searchsorted(self.edges, inside, side="right") - 1
        idx = np.minimum(idx, self.counts.size - 1)  # the top edge belongs to the last bin
        self.counts += np.bincount(idx, minlength=self.counts.size)
        self.count += int(v.size)
        self.sum += float(v.sum())
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))

    def merge(self, other: Histogram) -> None:
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot merge histograms with different edges")
        self.counts += other.counts
        self.underflow += other.underflow
        self.overflow += other.overflow
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """Approximate quantile: linear inside the bin that holds it, clamped to [min, max]."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        if self.count == 0:
            return None
        target = q * self.count
        if target <= self.underflow:
            return self.min
        cumulative = self.underflow + np.cumsum(self.counts)
        i = int(np.searchsorted(cumulative, target, side="left"))
        if i >= self.counts.size:
            return self.max
        before = cumulative[i] - self.counts[i]
        frac = (target - before) / self.counts[i] if self.counts[i] else 0.0
        value = self.edges[i] + frac * (self.edges[i + 1] - self.edges[i])
        return float(min(max(value, self.min), self.max))

    def share_at_least(self, threshold: float) -> float | None:
        """Share of values ``>= threshold`` (exact when ``threshold`` is a bin edge)."""
        if self.count == 0:
            return None
        i = int(np.searchsorted(self.edges, threshold, side="left"))
        above = int(self.counts[i:].sum()) + self.overflow
        return above / self.count

    def to_json(self) -> dict:
        return {
            "edges": [float(e) for e in self.edges],
            "counts": [int(c) for c in self.counts],
            "underflow": self.underflow,
            "overflow": self.overflow,
            "count": self.count,
            "mean": self.mean,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "p50": self.quantile(0.5),
        }

    @classmethod
    def from_json(cls, data: dict) -> Histogram:
        hist = cls(data["edges"])
        hist.counts = np.asarray(data["counts"], dtype=np.int64)
        hist.underflow = int(data["underflow"])
        hist.overflow = int(data["overflow"])
        hist.count = int(data["count"])
        hist.sum = float(data["mean"] or 0.0) * hist.count
        hist.min = math.inf if data["min"] is None else float(data["min"])
        hist.max = -math.inf if data["max"] is None else float(data["max"])
        return hist


class Histogram2D:
    """Counts on a fixed ``len(y_edges)-1 × len(x_edges)-1`` grid; values outside are clipped."""

    def __init__(self, x_edges: np.ndarray | list[float], y_edges: np.ndarray | list[float]):
        self.x_edges = np.asarray(x_edges, dtype=np.float64)
        self.y_edges = np.asarray(y_edges, dtype=np.float64)
        for name, e in (("x_edges", self.x_edges), ("y_edges", self.y_edges)):
            if e.ndim != 1 or e.size < 2 or np.any(np.diff(e) <= 0):
                raise ValueError(f"{name} must be 1-D, increasing, at least 2 values")
        self.counts = np.zeros((self.y_edges.size - 1, self.x_edges.size - 1), dtype=np.int64)

    def add(self, x: np.ndarray | list[float], y: np.ndarray | list[float]) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        keep = ~(np.isnan(x) | np.isnan(y))
        x, y = x[keep], y[keep]
        xi = np.clip(
            np.searchsorted(self.x_edges, x, side="right") - 1, 0, self.counts.shape[1] - 1
        )
        yi = np.clip(
            np.searchsorted(self.y_edges, y, side="right") - 1, 0, self.counts.shape[0] - 1
        )
        np.add.at(self.counts, (yi, xi), 1)

    def merge(self, other: Histogram2D) -> None:
        if not (
            np.array_equal(self.x_edges, other.x_edges)
            and np.array_equal(self.y_edges, other.y_edges)
        ):
            raise ValueError("cannot merge 2-D histograms with different edges")
        self.counts += other.counts

    def to_json(self) -> dict:
        return {
            "x_edges": [float(e) for e in self.x_edges],
            "y_edges": [float(e) for e in self.y_edges],
            "counts": [[int(c) for c in row] for row in self.counts],
        }

    @classmethod
    def from_json(cls, data: dict) -> Histogram2D:
        hist = cls(data["x_edges"], data["y_edges"])
        hist.counts = np.asarray(data["counts"], dtype=np.int64)
        return hist
