"""The standard simulated user's click placement on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from engine.clicks import (
    Click,
    farthest_interior_point,
    first_click,
    largest_error_region,
    mask_iou,
    next_click,
)


def box_mask(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """H×W mask with rows y0..y1-1 and columns x0..x1-1 set."""
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.mark.parametrize(
    ("rect", "expected"),
    [
        ((1, 1, 6, 6), (3, 3)),  # 5×5 square: its centre pixel
        ((0, 0, 3, 9), (1, 1)),  # 3-row bar on the top edge: middle row, first of the ties
        ((2, 4, 5, 7), (5, 3)),  # 3×3 square at rows 2-4, cols 4-6: centre (x=5, y=3)
    ],
)
def test_first_click_is_most_interior_pixel(rect, expected):
    gt = box_mask(9, 9, *rect)
    click = first_click(gt)
    assert (click.x, click.y) == expected
    assert click.positive and click.label == 1


def test_image_border_counts_as_boundary():
    # the whole 5×5 image is the object: the padded distance transform peaks at the centre
    x, y, distance = farthest_interior_point(np.ones((5, 5), dtype=bool))
    assert (x, y) == (2, 2)
    assert distance == pytest.approx(3.0)


def test_distance_is_euclidean_to_nearest_background():
    ring = np.ones((7, 7), dtype=bool)
    ring[3, 3] = False  # a hole in the middle: (1, 1)-like corners are farther than the centre
    x, y, distance = farthest_interior_point(ring)
    assert not (x == 3 and y == 3)
    assert distance == pytest.approx(2.0)  # e.g. (1, 1): 2 px from the border, ~2.8 from hole


def test_empty_region_raises():
    with pytest.raises(ValueError, match="empty"):
        farthest_interior_point(np.zeros((4, 4), dtype=bool))


def test_missed_region_gives_positive_click_inside_it():
    gt = box_mask(10, 10, 0, 0, 10, 5)  # left half
    pred = box_mask(10, 10, 0, 0, 10, 2)  # only the two left columns found
    click = next_click(gt, pred)
    # the missed strip is columns 2-4: column 3 is 2 px from its edges on rows 1-8 (ties go to
    # the first pixel in row-major order)
    assert click == Click(x=3, y=1, positive=True)
    assert gt[click.y, click.x] and not pred[click.y, click.x]


def test_false_region_gives_negative_click_inside_it():
    gt = box_mask(10, 10, 4, 4, 6, 6)
    pred = gt | box_mask(10, 10, 0, 0, 3, 3)  # a false 3×3 blob in the corner
    click = next_click(gt, pred)
    assert click == Click(x=1, y=1, positive=False)
    assert click.label == 0


def test_largest_error_region_wins_by_area():
    gt = box_mask(12, 12, 0, 0, 12, 6)
    # missed: a 2×6 strip (12 px); false: a 4×4 square outside gt (16 px)
    pred = gt & ~box_mask(12, 12, 0, 0, 2, 6)
    pred |= box_mask(12, 12, 8, 8, 12, 12)
    region, positive = largest_error_region(gt, pred)
    assert not positive
    assert region.sum() == 16
    click = next_click(gt, pred)
    assert not click.positive and region[click.y, click.x]


def test_separate_components_are_separate_regions():
    gt = np.zeros((10, 10), dtype=bool)
    gt[0:2, 0:2] = True  # missed 4 px
    gt[5:9, 5:9] = True  # missed 16 px
    region, positive = largest_error_region(gt, np.zeros_like(gt))
    assert positive and region.sum() == 16
    assert not region[0, 0]


def test_perfect_prediction_has_no_click():
    gt = box_mask(6, 6, 1, 1, 4, 4)
    assert largest_error_region(gt, gt.copy()) is None
    assert next_click(gt, gt.copy()) is None


def test_no_prediction_gives_first_click():
    gt = box_mask(7, 7, 1, 1, 6, 6)
    assert next_click(gt, None) == first_click(gt)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (box_mask(4, 4, 0, 0, 2, 2), box_mask(4, 4, 0, 0, 2, 2), 1.0),
        (box_mask(4, 4, 0, 0, 2, 2), box_mask(4, 4, 0, 0, 2, 4), 0.5),
        (box_mask(4, 4, 0, 0, 1, 1), box_mask(4, 4, 3, 3, 4, 4), 0.0),
        (np.zeros((4, 4), bool), np.zeros((4, 4), bool), 1.0),
    ],
)
def test_mask_iou(a, b, expected):
    assert mask_iou(a, b) == pytest.approx(expected)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same H×W"):
        next_click(np.ones((3, 3), bool), np.ones((3, 4), bool))


@pytest.mark.parametrize("seed", range(5))
def test_cropped_distance_equals_full_frame_distance(seed):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    region = ndimage.binary_opening(rng.random((40, 50)) < 0.6)
    full = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    x, y, distance = farthest_interior_point(region)
    assert distance == pytest.approx(full.max())
    assert full[y, x] == pytest.approx(full.max())
    assert (y, x) == np.unravel_index(np.argmax(full), full.shape)
