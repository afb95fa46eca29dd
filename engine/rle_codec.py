"""COCO compressed-RLE ``counts`` strings, coded and checked with numpy (no per-run loops).

The format (``rleToString``/``rleFrString`` in pycocotools' ``maskApi.c``): run lengths of a
column-major binary mask, starting with a background run; from the fourth run on, each value
is stored as the difference to the run two places before; each value is written as 5-bit
groups, least significant first, in characters ``48 + group`` with bit ``0x20`` set when more
groups follow, and bit ``0x10`` of the last group giving the sign.

``engine.masks`` is the public face of these helpers.
"""

from __future__ import annotations

import numpy as np

# A run length fits in 32 bits, so a delta needs 33 bits plus sign: at most 7 groups of 5.
MAX_GROUPS = 7


class RLEError(ValueError):
    """An RLE dict that is malformed or does not decode."""


def decode_counts(counts: bytes) -> np.ndarray:
    """Run lengths (``int64``) of a compressed counts string; ``RLEError`` on any defect.

    Strict where pycocotools is not: characters outside ``'0'..'o'``, a number cut off at the
    end, a number longer than 7 characters and negative runs all raise.
    """
    codes = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    if codes.min() < 0 or codes.max() > 63:
        raise RLEError("RLE 'counts' holds characters outside the COCO alphabet")
    more = (codes & 0x20) != 0
    if more[-1]:
        raise RLEError("RLE 'counts' ends in the middle of a number")
    ends = np.flatnonzero(~more)  # index of the last character of each number
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > MAX_GROUPS:
        raise RLEError(f"RLE 'counts' holds a number longer than {MAX_GROUPS} characters")
    number = np.repeat(np.arange(ends.size), lengths)
    position = np.arange(codes.size) - starts[number]
    values = np.add.reduceat((codes & 0x1F) << (5 * position), starts)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.left_shift(np.int64(1), 5 * lengths[negative])
    runs = values.copy()
    # rleFrString: for index m > 2, x += cnts[m - 2]; i.e. running sums over odd indices
    # from 1 and over even indices from 2.
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    if runs.min() < 0:
        raise RLEError("RLE 'counts' decodes to a negative run length")
    return runs


def encode_counts(runs: np.ndarray) -> bytes:
    """Compressed counts string of one sequence of run lengths (as pycocotools writes it)."""
    return encode_counts_batch(np.asarray(runs, dtype=np.int64), np.array([len(runs)]))[0]


def encode_counts_batch(runs: np.ndarray, lengths: np.ndarray) -> list[bytes]:
    """Counts strings for several run sequences laid end to end in ``runs``.

    ``lengths[i]`` is how many runs belong to sequence ``i``. One vectorised pass for all.
    """
    runs = np.asarray(runs, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if runs.size == 0:
        return [b"" for _ in lengths]
    seq_start = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    index_in_seq = np.arange(runs.size) - np.repeat(seq_start, lengths)
    deltas = runs.copy()
    later = index_in_seq > 2
    deltas[later] -= runs[np.flatnonzero(later) - 2]
    # groups[j] = 5-bit group j of every value; more[j] = whether group j + 1 is written.
    shifted = deltas[:, None] >> (5 * np.arange(MAX_GROUPS + 1))[None, :]
    groups = shifted[:, :MAX_GROUPS] & 0x1F
    rest = shifted[:, 1:]
    more = np.where((groups & 0x10) != 0, rest != -1, rest != 0)
    n_chars = np.argmin(more, axis=1) + 1  # first group with nothing more to write
    if more.all(axis=1).any():
        raise ValueError("a run length does not fit in 32 bits")
    chars = (groups | (more << 5)) + 48
    keep = np.arange(MAX_GROUPS)[None, :] < n_chars[:, None]
    flat = chars[keep].astype(np.uint8).tobytes()
    char_bounds = np.concatenate(([0], np.cumsum(n_chars)))
    first, last = char_bounds[seq_start], char_bounds[seq_start + lengths]
    return [flat[a:b] for a, b in zip(first.tolist(), last.tolist())]


def window_runs(
    windows: np.ndarray, offsets_yx: np.ndarray, frame_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Column-major run lengths of binary ``N×h×w`` windows placed in an ``H×W`` frame.

    Window ``i`` covers rows ``y0 .. y0 + h`` and columns ``x0 .. x0 + w`` of the frame
    (``offsets_yx[i] = (y0, x0)``; window cells that would fall outside the frame must be
    ``False``); everything outside the window is background. Returns ``(runs, lengths)`` in
    the layout of ``encode_counts_batch``, identical to what pycocotools' ``encode`` counts.
    """
    n, h, w = windows.shape
    height, width = frame_hw
    total = height * width
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # Column-major cells with one background cell closing each column and one opening all.
    padded = np.zeros((n, w, h + 1), dtype=bool)
    padded[:, :, :h] = windows.transpose(0, 2, 1)
    flat = padded.reshape(n, -1)
    change = np.empty_like(flat)
    change[:, 0] = flat[:, 0]
    np.not_equal(flat[:, 1:], flat[:, :-1], out=change[:, 1:])
    which, pos = np.nonzero(change)
    col, row = np.divmod(pos, h + 1)
    offsets = np.asarray(offsets_yx, dtype=np.int64)
    frame_pos = (offsets[which, 1] + col) * height + offsets[which, 0] + row
    # A run ending at the bottom of a frame column and one starting at the top of the next
    # are one run: drop the (end, start) pair that meet at the same frame position.
    parity = np.arange(which.size) - np.repeat(
        np.concatenate(([0], np.cumsum(np.bincount(which, minlength=n))[:-1])),
        np.bincount(which, minlength=n),
    )
    is_end = (parity % 2) == 1
    joined = np.zeros(which.size, dtype=bool)
    meet = is_end[:-1] & (frame_pos[1:] == frame_pos[:-1]) & (which[1:] == which[:-1])
    joined[:-1] |= meet
    joined[1:] |= meet
    which, frame_pos = which[~joined], frame_pos[~joined]
    per_mask = np.bincount(which, minlength=n)
    # Runs of mask i: diff of [0, transitions..., total]; a trailing zero run is not written.
    marks_len = per_mask + 2
    mark_start = np.concatenate(([0], np.cumsum(marks_len)[:-1]))
    marks = np.empty(int(marks_len.sum()), dtype=np.int64)
    marks[mark_start] = 0
    marks[mark_start + marks_len - 1] = total
    inner = np.ones(marks.size, dtype=bool)
    inner[mark_start] = False
    inner[mark_start + marks_len - 1] = False
    marks[inner] = frame_pos
    diffs = np.diff(marks)
    last_of_mask = mark_start + marks_len - 1  # boundary positions are not runs
    valid = np.ones(diffs.size, dtype=bool)
    valid[last_of_mask[:-1]] = False
    runs = diffs[valid]
    lengths = marks_len - 1
    run_start = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    trailing_zero = (runs[run_start + lengths - 1] == 0) & (lengths > 1)
    drop = np.zeros(runs.size, dtype=bool)
    drop[(run_start + lengths - 1)[trailing_zero]] = True
    return runs[~drop], lengths - trailing_zero
