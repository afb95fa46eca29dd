"""Check that many COCO RLE ``counts`` strings are well formed and fill their masks, at once.

pycocotools decodes bad counts without a word when the runs fall *short* of ``h*w`` pixels
(the rest of the mask is whatever memory held), so every mask the audit decodes is checked
first. ``engine.rle_codec.decode_counts`` does the same check one string at a time
(~0.1 ms each); ``check_counts`` decodes the run lengths of all strings of an image in one
vectorised pass over their concatenation (the format is described in ``engine.rle_codec``;
the tests compare both on valid and corrupted strings).
"""

from __future__ import annotations

import numpy as np

MAX_GROUPS = 7  # as engine.rle_codec: a run length needs at most 7 characters


def _segmented_cumsum(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at each new value of ``group`` (``group`` sorted)."""
    total = np.cumsum(values)
    first = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    offset = np.repeat(total[first] - values[first], np.diff(np.r_[first, values.size]))
    return total - offset


def check_counts(counts: list[bytes], pixels: np.ndarray | list[int]) -> np.ndarray:
    """Per string: ``True`` when it decodes strictly and its runs cover exactly ``pixels[i]``.

    Strict as ``engine.rle_codec.decode_counts``: characters outside ``'0'..'o'``, a number cut
    off at the end of its string, a number longer than 7 characters and a negative run all
    make the string invalid.
    """
    n = len(counts)
    pixels = np.asarray(pixels, dtype=np.int64)
    if n == 0:
        return np.zeros(0, dtype=bool)
    sizes = np.array([len(c) for c in counts], dtype=np.int64)
    ok = np.ones(n, dtype=bool)
    codes = np.frombuffer(b"".join(counts), dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return pixels == 0
    owner = np.repeat(np.arange(n), sizes)  # string of each character
    bad_char = (codes < 0) | (codes > 63)
    ok &= np.bincount(owner, weights=bad_char, minlength=n) == 0
    codes = np.where(bad_char, 0, codes)
    more = (codes & 0x20) != 0
    last = np.cumsum(sizes) - 1
    nonempty = sizes > 0
    dangling = np.zeros(n, dtype=bool)
    dangling[nonempty] = more[last[nonempty]]
    ok &= ~dangling
    more[last[nonempty]] = False  # end every string's last number, so none spans two strings
    ends = np.flatnonzero(~more)
    starts = np.r_[0, ends[:-1] + 1]
    lengths = ends - starts + 1
    number_owner = owner[ends]
    ok &= np.bincount(number_owner, weights=lengths > MAX_GROUPS, minlength=n) == 0
    lengths = np.minimum(lengths, MAX_GROUPS)
    number = np.repeat(np.arange(ends.size), ends - starts + 1)
    position = np.minimum(np.arange(codes.size) - starts[number], MAX_GROUPS)
    values = np.add.reduceat((codes & 0x1F) << (5 * position), starts)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.left_shift(np.int64(1), 5 * lengths[negative])
    # index of each number within its string; from the 4th on, run = value + run two before
    first_number = np.searchsorted(number_owner, np.arange(n), side="left")
    m = np.arange(ends.size) - first_number[number_owner]
    parity = np.where(m == 0, 0, np.where(m % 2 == 1, 1, 2))
    order = np.lexsort((m, parity, number_owner))
    runs = np.empty_like(values)
    runs[order] = _segmented_cumsum(values[order], number_owner[order] * 3 + parity[order])
    ok &= np.bincount(number_owner, weights=runs < 0, minlength=n) == 0
    totals = np.bincount(number_owner, weights=runs, minlength=n)
    return ok & (totals == pixels)
