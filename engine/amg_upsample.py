"""Upsampling low-res mask logits only where a mask can be, for the automatic generator.

``Sam.postprocess_masks`` upsamples ``S/4 × S/4`` decoder logits bilinearly to ``S × S``
(``S`` = the encoder's input size), crops the un-padded ``h × w`` part and upsamples that to
the crop's size ``H × W``. Every output pixel is a convex combination of a few low-res pixels,
so it can exceed a threshold only where some low-res pixel in its source neighbourhood does.
``UpsamplePlan`` therefore upsamples each mask inside a window around its low-res support
(the box of low-res pixels above the lowest threshold in use, widened by one pixel). Stage 1
is ``F.interpolate`` on that low-res sub-window (the scale is an exact integer, so indices and
weights are those of the full upsampling); stage 2 is a gather-and-blend with the source
indices and weights ``upsample_bilinear2d`` uses (float32, ``align_corners=False``, width then
height), or a plain copy when the crop was not resized. Values agree with the full
``postprocess_masks`` to a few float32 ulps (the kernel's vectorised fused multiply-adds are
not reproduced bit for bit). Outside the window every logit is at or below the threshold, so
the stability score and the binary mask computed in the window are those of the full
upsampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# How far below the lowest threshold a low-res logit still counts as support. A bilinear
# value exceeds the largest of its sources only by float32 rounding (~1e-7 relative).
SUPPORT_MARGIN = 1e-3


def _linear_table(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``(i0, i1)`` and weight ``λ1`` per output index, as ATen computes them."""
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float32)
    # ATen's kernel computes ``scale * (dst + 0.5) - 0.5`` as one fused multiply-add.
    exact = np.float64(scale) * (dst + np.float32(0.5)).astype(np.float64) - 0.5
    src = exact.astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = i0 + (i0 < in_size - 1)
    lam1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, i1, lam1


@dataclass
class Axis:
    """Both bilinear stages along one axis: low-res → ``S`` (cropped to ``n_mid``) → ``n_out``."""

    factor: int  # S / low-res size (4 for SAM)
    n_low: int
    b0: np.ndarray  # stage 2: mid source index per output index (length n_out)
    b1: np.ndarray
    b_lam: np.ndarray
    identity: bool  # stage 2 is a copy (n_mid == n_out)
    n_out: int
    lo_min: np.ndarray  # lowest / highest low-res index feeding each output index
    lo_max: np.ndarray

    @classmethod
    def build(cls, n_low: int, n_square: int, n_mid: int, n_out: int) -> Axis:
        if n_square % n_low:
            raise ValueError(f"encoder size {n_square} is not a multiple of logit size {n_low}")
        a0, a1, _ = _linear_table(n_low, n_square)
        b0, b1, b_lam = _linear_table(n_mid, n_out)
        a0, a1 = a0[:n_mid], a1[:n_mid]
        identity = n_mid == n_out
        return cls(n_square // n_low, n_low, b0, b1, b_lam, identity, n_out, a0[b0], a1[b1])

    def window(self, first_low: np.ndarray, last_low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Output ranges ``[start, stop)`` whose sources meet low-res ranges [first, last]."""
        start = np.searchsorted(self.lo_max, first_low, side="left")
        stop = np.searchsorted(self.lo_min, last_low, side="right")
        return start, np.maximum(stop, start)

    def low_range(
        self, out_start: np.ndarray, out_size: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Low-res index range ``[first, last]`` feeding outputs ``start .. start + size - 1``,
        widened by one low-res pixel each side so that the stage-1 upsampling of the sub-range
        treats the needed rows like the full upsampling does (no edge clamping)."""
        last_out = np.maximum(out_start + out_size - 1, out_start)
        first = np.maximum(self.lo_min[out_start] - 1, 0)
        last = np.minimum(self.lo_max[last_out] + 1, self.n_low - 1)
        return first, last


class UpsamplePlan:
    """Windowed two-stage bilinear upsampling for one crop.

    ``low_size`` is the decoder's logit size (``S/4``), ``square`` the encoder input size
    ``S``, ``input_hw`` the resized crop inside the ``S × S`` input and ``out_hw`` the crop's
    size in the image.
    """

    def __init__(
        self,
        low_size: tuple[int, int],
        square: int,
        input_hw: tuple[int, int],
        out_hw: tuple[int, int],
        max_group_pixels: int = 1 << 24,
    ) -> None:
        self.rows = Axis.build(low_size[0], square, input_hw[0], out_hw[0])
        self.cols = Axis.build(low_size[1], square, input_hw[1], out_hw[1])
        self.square = square
        self.input_hw = input_hw
        self.out_hw = out_hw
        self.max_group_pixels = max_group_pixels

    def low_valid_size(self) -> tuple[int, int]:
        """``(h, w)`` of the low-res grid cells that cover the resized crop (not padding)."""
        low_h, low_w = self.rows.n_low, self.cols.n_low
        return (
            -(-self.input_hw[0] * low_h // self.square),
            -(-self.input_hw[1] * low_w // self.square),
        )

    def prefer_full(self, windows: np.ndarray) -> bool:
        """Whether upsampling whole frames (``postprocess_masks`` itself) is cheaper than
        windows for these masks: estimated pixel work, a gather-and-blend pixel costing about
        four ``F.interpolate`` pixels."""
        h = windows[:, 2] + 2 * self.rows.factor
        w = windows[:, 3] + 2 * self.cols.factor
        second = 0 if self.rows.identity and self.cols.identity else 4
        windowed = float(((1 + second) * h * w).sum())
        full = len(windows) * (self.square**2 + self.out_hw[0] * self.out_hw[1])
        return full <= windowed

    def full_groups(self, n: int) -> list[np.ndarray]:
        """Index chunks for ``upsample_full`` within ``max_group_pixels``."""
        per = self.square**2 + self.out_hw[0] * self.out_hw[1]
        step = max(1, self.max_group_pixels // per)
        return [np.arange(i, min(i + step, n)) for i in range(0, n, step)]

    def upsample_full(self, low_logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Whole-frame logits ``N×H×W`` exactly as ``Sam.postprocess_masks`` computes them,
        and zero origins (same return form as ``upsample``)."""
        x = F.interpolate(
            low_logits.to(torch.float32)[:, None],
            (self.square, self.square),
            mode="bilinear",
            align_corners=False,
        )
        x = x[..., : self.input_hw[0], : self.input_hw[1]]
        x = F.interpolate(x, self.out_hw, mode="bilinear", align_corners=False)[:, 0]
        return x.numpy(), np.zeros((len(x), 2), dtype=np.int64)

    def windows(self, low_logits: torch.Tensor, threshold: float) -> np.ndarray:
        """``N×4`` output windows ``(y0, x0, h, w)`` holding every pixel that can exceed
        ``threshold``; ``h = w = 0`` for a mask with no support."""
        low = low_logits.numpy() if isinstance(low_logits, torch.Tensor) else low_logits
        support = low > (threshold - SUPPORT_MARGIN * max(1.0, abs(threshold)))
        rows = support.any(axis=2)
        cols = support.any(axis=1)
        has = rows.any(axis=1)
        first_r = np.argmax(rows, axis=1)
        last_r = rows.shape[1] - 1 - np.argmax(rows[:, ::-1], axis=1)
        first_c = np.argmax(cols, axis=1)
        last_c = cols.shape[1] - 1 - np.argmax(cols[:, ::-1], axis=1)
        y0, y1 = self.rows.window(first_r, last_r)
        x0, x1 = self.cols.window(first_c, last_c)
        out = np.stack([y0, x0, y1 - y0, x1 - x0], axis=1)
        out[~has] = 0
        return out.astype(np.int64)

    def groups(self, windows: np.ndarray) -> list[np.ndarray]:
        """Indices of masks grouped so that padding each group to its largest window height
        and width stays under ``max_group_pixels``; large windows first."""
        h = np.maximum(windows[:, 2], 1)
        w = np.maximum(windows[:, 3], 1)
        order = np.argsort(-(h * w), kind="stable")
        groups, current, gh, gw = [], [], 0, 0
        for i in order.tolist():
            nh, nw = max(gh, int(h[i])), max(gw, int(w[i]))
            if current and (len(current) + 1) * nh * nw > self.max_group_pixels:
                groups.append(np.asarray(current))
                current, nh, nw = [], int(h[i]), int(w[i])
            current.append(i)
            gh, gw = nh, nw
        if current:
            groups.append(np.asarray(current))
        return groups

    def upsample(
        self, low_logits: torch.Tensor, windows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits of ``N`` masks around their windows, padded to the group's largest one.

        ``low_logits`` is ``N×h×w``, ``windows`` the ``N×4`` rows from ``windows`` for these
        masks. Returns ``(logits N×Hp×Wp float32, origin N×2)``: cell ``[i, r, c]`` is output
        pixel ``origin[i] + (r, c)`` (row, column); padding cells hold ``-inf``.
        Along an axis that needs no second stage the arrays hold the whole stage-1 sub-window
        (a few pixels more than the window; those are below every threshold too).
        """
        # Stage 1 on the low-res sub-window each mask needs (F.interpolate, exact scale).
        r0, r1 = self.rows.low_range(windows[:, 0], windows[:, 2])
        c0, c1 = self.cols.low_range(windows[:, 1], windows[:, 3])
        kp, lp = int((r1 - r0).max()) + 1, int((c1 - c0).max()) + 1
        low_rows = np.minimum(r0[:, None] + np.arange(kp)[None, :], self.rows.n_low - 1)
        low_cols = np.minimum(c0[:, None] + np.arange(lp)[None, :], self.cols.n_low - 1)
        m = torch.arange(low_logits.shape[0])[:, None, None]
        sub = low_logits.to(torch.float32)[
            m, torch.as_tensor(low_rows)[:, :, None], torch.as_tensor(low_cols)[:, None, :]
        ]
        fr, fc = self.rows.factor, self.cols.factor
        mid = F.interpolate(sub[:, None], (fr * kp, fc * lp), mode="bilinear", align_corners=False)
        # Stage 2 (or none): mid -> output, per axis.
        has = (windows[:, 2] > 0) & (windows[:, 3] > 0)
        out, col_origin, col_valid = _second_stage(
            mid[:, 0], self.cols, windows[:, 1], windows[:, 3], fc * c0, fc * (c1 - c0 + 1), 2
        )
        out, row_origin, row_valid = _second_stage(
            out, self.rows, windows[:, 0], windows[:, 2], fr * r0, fr * (r1 - r0 + 1), 1
        )
        logits = out.numpy()
        # Cells outside a mask's window (group padding) become -inf: below every threshold.
        logits[~(row_valid & has[:, None])] = -np.inf
        logits.transpose(0, 2, 1)[~col_valid] = -np.inf
        return logits, np.stack([row_origin, col_origin], axis=1)


def _second_stage(
    x: torch.Tensor,
    axis: Axis,
    start: np.ndarray,
    size: np.ndarray,
    mid_start: np.ndarray,
    mid_size: np.ndarray,
    dim: int,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Stage 2 along ``dim``: returns the values, each mask's output origin and validity."""
    if axis.identity:  # output index == mid index: keep the stage-1 sub-window as it is
        steps = np.arange(x.shape[dim])[None, :]
        valid = (steps < mid_size[:, None]) & (mid_start[:, None] + steps < axis.n_out)
        return x, mid_start, valid
    pad = max(int(size.max()), 1)
    out_idx, valid = _positions(start, size, pad, axis.n_out)
    limit = x.shape[dim] - 1
    # padding positions (past a mask's window) are clamped into range; masked out by valid
    i0 = np.clip(axis.b0[out_idx] - mid_start[:, None], 0, limit)
    i1 = np.clip(axis.b1[out_idx] - mid_start[:, None], 0, limit)
    return _lerp(x, i0, i1, axis.b_lam[out_idx], dim), start, valid


def _positions(
    start: np.ndarray, size: np.ndarray, pad: int, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-mask output indices ``start + 0..pad-1`` (clamped into range) and which are real."""
    steps = np.arange(pad)[None, :]
    idx = np.minimum(start[:, None] + steps, limit - 1)
    return idx, steps < size[:, None]


def _lerp(
    x: torch.Tensor, i0: np.ndarray, i1: np.ndarray, lam1: np.ndarray, dim: int
) -> torch.Tensor:
    """``x[i0] * (1 - λ1) + x[i1] * λ1`` along ``dim`` (1 or 2) with per-mask index rows."""
    n = x.shape[0]
    lam1_t = torch.as_tensor(lam1)
    if dim == 1:  # whole rows: copy them with advanced indexing, weights per row
        m = torch.arange(n)[:, None]
        first = x[m, torch.as_tensor(i0)] * (1 - lam1_t)[:, :, None]
        return first.add_(x[m, torch.as_tensor(i1)] * lam1_t[:, :, None])
    shape = (n, x.shape[1], i0.shape[1])
    first = torch.gather(x, 2, torch.as_tensor(i0)[:, None, :].expand(shape))
    first = first * (1 - lam1_t)[:, None, :]
    idx1 = torch.as_tensor(i1)[:, None, :].expand(shape)
    return first.add_(torch.gather(x, 2, idx1) * lam1_t[:, None, :])
