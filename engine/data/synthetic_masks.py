"""Reference masks of a synthetic scene, from its owner map, and their RLE.

The renderer (``engine.data.synthetic``) paints primitives back to front and records, per
pixel, ``1 +`` the number of the primitive that won it (the *owner map*). A primitive counts
towards up to three labels — ``(obj,)``, ``(obj, part)``, ``(obj, part, sub)`` — so each
whole, part and sub-part mask is the set of pixels its primitives own: the visible region
after occlusion, nested by construction.
"""

from __future__ import annotations

import numpy as np

from engine.records import LEVEL_PART, LEVEL_SUBPART, LEVEL_WHOLE, ReferenceMask
from engine.rle_codec import encode_counts_batch

SAME_AS_PARENT = 0.95  # a part covering >= this fraction of its parent's area is dropped


def labels_of(obj: int, part: int, sub: int) -> list[tuple[int, ...]]:
    """The masks a primitive's pixels count towards: (obj,), (obj, part), (obj, part, sub)."""
    if part < 0:
        return [(obj,)]
    if sub < 0:
        return [(obj,), (obj, part)]
    return [(obj,), (obj, part), (obj, part, sub)]


def union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, ...]:
    """The smallest ``(x0, y0, x1, y1)`` box holding both boxes."""
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def reference_masks(
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
        for label in labels_of(*prim):
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
