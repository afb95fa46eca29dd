"""Masks → COCO polygons (engine.dataset.coco_polygons), rasterised back by pycocotools."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from scipy import ndimage

from engine.dataset.coco_polygons import mask_to_polygons


def rasterise(polygons: list[list[float]], shape: tuple[int, int]) -> np.ndarray:
    """pycocotools' own polygon → mask (the union of the polygons, as COCO reads them)."""
    if not polygons:
        return np.zeros(shape, dtype=bool)
    rle = coco_mask.merge(coco_mask.frPyObjects(polygons, *shape))
    return coco_mask.decode(rle).astype(bool)


def test_a_rectangle_is_its_four_pixel_corners_in_coco_coordinates():
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:4, 2:7] = True  # rows 1..3, columns 2..6
    (polygon,), holes = mask_to_polygons(mask)
    assert not holes
    xs, ys = polygon[0::2], polygon[1::2]
    assert (min(xs), max(xs), min(ys), max(ys)) == (2.0, 7.0, 1.0, 4.0)
    assert np.array_equal(rasterise([polygon], mask.shape), mask)


def _blob(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((30, 40)), 2)
    return ndimage.binary_opening(field > 0.5 + rng.uniform(-0.05, 0.05))


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((12, 15)) > 0.5


def _shapes() -> list[tuple[str, np.ndarray]]:
    disk = np.hypot(*np.mgrid[-10:11, -12:13]) < 8
    pixel = np.zeros((5, 5), dtype=bool)
    pixel[2, 3] = True
    diagonal = np.eye(6, dtype=bool)  # pixels touching at corners only
    border = np.zeros((6, 6), dtype=bool)
    border[0, :] = border[:, 5] = True  # along the image edge
    return [("disk", disk), ("pixel", pixel), ("diagonal", diagonal), ("border", border)]


CASES = _shapes() + [(f"blob{s}", _blob(s)) for s in range(12)]
CASES += [(f"noise{s}", _noise(s)) for s in range(6)]


@pytest.mark.parametrize("name, mask", CASES, ids=[c[0] for c in CASES])
def test_polygons_rasterise_back_exactly_or_with_holes_filled(name, mask):
    polygons, holes = mask_to_polygons(mask)
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
    back = rasterise(polygons, mask.shape)
    if holes:
        assert not (mask & ~back).any(), "a mask pixel is lost"
        assert (back & ~mask).any(), "holes were reported but nothing was filled"
    else:
        assert np.array_equal(back, mask)


def test_holes_are_reported_and_filled():
    ring = np.zeros((9, 9), dtype=bool)
    ring[1:8, 1:8] = True
    ring[3:6, 3:6] = False
    polygons, holes = mask_to_polygons(ring)
    assert holes and len(polygons) == 1
    filled = np.zeros_like(ring)
    filled[1:8, 1:8] = True
    assert np.array_equal(rasterise(polygons, ring.shape), filled)


def test_separate_parts_give_one_polygon_each():
    mask = np.zeros((10, 10), dtype=bool)
    mask[1:3, 1:3] = mask[6:9, 5:9] = True
    polygons, _ = mask_to_polygons(mask)
    assert len(polygons) == 2


def test_empty_mask_and_wrong_shape():
    assert mask_to_polygons(np.zeros((4, 4), dtype=bool)) == ([], False)
    with pytest.raises(ValueError, match="H×W"):
        mask_to_polygons(np.zeros((2, 4, 4), dtype=bool))
