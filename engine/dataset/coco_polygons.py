"""Binary masks as COCO polygons (``[[x0, y0, x1, y1, ...], ...]``), traced with contourpy.

The outline is the 0.5 level of the mask seen as a grid of pixel centres, shifted to COCO's
pixel-corner coordinates (pixel ``(x, y)`` spans ``[x, x + 1] × [y, y + 1]``), so pycocotools'
``frPyObjects`` rasterises it back to the same pixels on smooth shapes. COCO polygons have no
holes (a segmentation's polygons are merged as a union): each connected part keeps its outer
ring and loses its holes — ``mask_to_polygons`` says whether it dropped any.
"""

from __future__ import annotations

import contourpy
import numpy as np


def mask_to_polygons(mask: np.ndarray) -> tuple[list[list[float]], bool]:
    """``(polygons, holes_dropped)`` of an ``H×W`` boolean mask.

    ``polygons``: one flat ``[x0, y0, x1, y1, ...]`` list (at least 3 points) per connected
    part, in COCO pixel-corner coordinates; empty for an empty mask. ``holes_dropped``: the
    mask had holes, which COCO polygons cannot carry (they come back filled).
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {mask.shape}")
    if not mask.any():
        return [], False
    # A zero border closes every outline; the border shifts coordinates by one pixel.
    padded = np.pad(mask.astype(np.float64), 1)
    generator = contourpy.contour_generator(
        z=padded, fill_type=contourpy.FillType.OuterOffset, corner_mask=True
    )
    points, offsets = generator.filled(0.5, 2.0)
    polygons: list[list[float]] = []
    holes = False
    for part_points, part_offsets in zip(points, offsets):
        holes = holes or len(part_offsets) > 2  # rings after the first are holes
        outer = part_points[part_offsets[0] : part_offsets[1]][:-1]  # closed: drop the repeat
        if len(outer) < 3:
            continue
        polygons.append([round(float(v), 2) for v in (outer - 0.5).ravel()])
    return polygons, holes
