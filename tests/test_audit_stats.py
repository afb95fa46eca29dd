"""Reference-free audit statistics on hand-made masks with known area, centre and concavity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from audit_support import disk, image_record, rect
from scipy.spatial import ConvexHull

from engine.audit.hist import Histogram, Histogram2D
from engine.audit.select import Selection, random_priority
from engine.audit.stats import (
    DatasetStats,
    concavity,
    coverage,
    mask_shapes,
    measure_image,
)
from engine.masks import mask_to_rle

# -- histograms ------------------------------------------------------------------------------


def test_histogram_counts_edges_and_overflow():
    h = Histogram.linear(0, 1, 4)  # bins [0, .25) [.25, .5) [.5, .75) [.75, 1]
    h.add([0.0, 0.25, 0.3, 0.75, 1.0, 1.5, -0.1, float("nan")])
    assert h.counts.tolist() == [1, 2, 0, 2]  # 1.0 lands in the closed last bin
    assert (h.underflow, h.overflow, h.count) == (1, 1, 7)
    assert h.min == -0.1 and h.max == 1.5
    assert h.mean == pytest.approx((0 + 0.25 + 0.3 + 0.75 + 1.0 + 1.5 - 0.1) / 7)
    assert h.share_at_least(0.75) == pytest.approx(3 / 7)  # 0.75, 1.0 and the overflow


def test_histogram_quantile_and_merge_and_json_round_trip():
    a, b = Histogram.linear(0, 10, 10), Histogram.linear(0, 10, 10)
    a.add(np.arange(0, 5) + 0.5)
    b.add(np.arange(5, 10) + 0.5)
    a.merge(b)
    assert a.count == 10
    assert a.quantile(0.5) == pytest.approx(5.0)
    assert a.quantile(0.0) == pytest.approx(0.5) and a.quantile(1.0) == pytest.approx(9.5)
    back = Histogram.from_json(a.to_json())
    assert back.counts.tolist() == a.counts.tolist()
    assert back.mean == pytest.approx(a.mean)
    with pytest.raises(ValueError, match="different edges"):
        a.merge(Histogram.linear(0, 1, 10))
    with pytest.raises(ValueError, match="edges"):
        Histogram([1.0, 0.5])


def test_histogram2d_clips_into_edge_bins():
    h = Histogram2D([0, 0.5, 1], [0, 0.5, 1])
    h.add([0.25, 0.75, 1.5, -1.0], [0.25, 0.25, 0.75, 0.75])
    assert h.counts.tolist() == [[1, 1], [1, 1]]


# -- concavity -------------------------------------------------------------------------------


def _l_shape() -> np.ndarray:
    mask = rect(12, 12, 1, 1, 11, 11)
    mask[1:6, 6:11] = False  # remove the top-right 5×5: area 75
    return mask


def _plus() -> np.ndarray:
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 1:4] = True
    mask[1:4, 2] = True
    return mask


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (rect(10, 10, 2, 3, 7, 9), 0.0),  # a filled rectangle: its own hull
        (rect(4, 4, 1, 1, 2, 2), 0.0),  # one pixel
        (rect(4, 9, 2, 0, 3, 9), 0.0),  # a one-pixel-high line
        # L: hull of the 10×10 square less the corner triangle (12.5) = 87.5
        (_l_shape(), 1 - 75 / 87.5),
        # plus of 5 pixels: the 3×3 square less four half-pixel corners = 7
        (_plus(), 1 - 5 / 7),
    ],
)
def test_concavity_of_hand_made_masks(mask, expected):
    assert concavity(mask) == pytest.approx(expected, abs=1e-12)


def _concavity_all_corners(mask: np.ndarray) -> float:
    """Independent: the hull of every corner of every pixel."""
    ys, xs = np.nonzero(mask)
    corners = np.concatenate(
        [np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)]
    ).astype(float)
    return 1 - mask.sum() / ConvexHull(corners).volume


@pytest.mark.parametrize("seed", range(6))
def test_concavity_matches_hull_of_all_pixel_corners(seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((20, 25)) < 0.3
    mask[10, 12] = True
    assert concavity(mask) == pytest.approx(_concavity_all_corners(mask), abs=1e-12)


def test_concavity_of_empty_mask_is_nan_and_shape_is_checked():
    assert math.isnan(concavity(np.zeros((4, 4), dtype=bool)))
    with pytest.raises(ValueError, match="H×W"):
        concavity(np.zeros((2, 4, 4), dtype=bool))


# -- areas, centres, coverage, overlap ---------------------------------------------------------


def test_mask_shapes_area_centre_concavity():
    h, w = 20, 40
    masks = [rect(h, w, 0, 0, 10, 20), _pad(_l_shape(), h, w), np.zeros((h, w), bool)]
    shapes = mask_shapes([mask_to_rle(m) for m in masks], h, w, chunk=2)
    assert shapes.area.tolist() == [200, 75, 0]
    # rectangle rows 0..9, cols 0..19: centre of mass (10, 5) in pixels
    assert shapes.centre_xy[0] == pytest.approx([10 / w, 5 / h])
    ys, xs = np.nonzero(masks[1])
    assert shapes.centre_xy[1] == pytest.approx([(xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h])
    assert np.isnan(shapes.centre_xy[2]).all()
    assert shapes.concavity[0] == pytest.approx(0.0)
    assert shapes.concavity[1] == pytest.approx(1 - 75 / 87.5)
    assert np.isnan(shapes.concavity[2])


def _pad(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    out = np.zeros((h, w), dtype=bool)
    out[: mask.shape[0], : mask.shape[1]] = mask
    return out


def test_mask_shapes_concavity_cap_leaves_the_rest_nan():
    masks = [rect(8, 8, 0, 0, i + 1, i + 1) for i in range(5)]
    shapes = mask_shapes([mask_to_rle(m) for m in masks], 8, 8, concavity_masks=2)
    assert (~np.isnan(shapes.concavity)).sum() == 2
    assert shapes.area.tolist() == [1, 4, 9, 16, 25]  # areas and centres stay complete


def test_coverage_counts_overlap_once():
    a, b = rect(10, 10, 0, 0, 5, 5), rect(10, 10, 3, 3, 8, 8)
    assert coverage([mask_to_rle(a), mask_to_rle(b)], 10, 10) == pytest.approx((a | b).sum() / 100)
    assert coverage([], 10, 10) == 0.0


def test_measure_image_overlap_pairs_and_duplicates():
    base = rect(20, 20, 2, 2, 12, 12)  # area 100
    near_duplicate = rect(20, 20, 2, 2, 12, 11)  # IoU 0.9 with base: not > 0.9
    overlapping = rect(20, 20, 2, 2, 12, 7)  # IoU 0.5 with base: not > 0.5; 5/9 with near-dup
    far = rect(20, 20, 15, 15, 20, 20)
    record = image_record([base, near_duplicate, overlapping, far])
    m = measure_image(record)
    assert m.pairs == 6
    assert m.pairs_above == {0.5: 2, 0.9: 0}  # (base, near-dup) 0.9; (near-dup, overlapping) 5/9
    assert m.nn_iou.tolist() == pytest.approx([0.9, 0.9, 5 / 9, 0.0])


def test_measure_image_rejects_masks_of_another_size():
    record = image_record([rect(10, 10, 0, 0, 5, 5)])
    record.width = 12
    with pytest.raises(ValueError, match="RLE size"):
        measure_image(record)


def test_dataset_stats_accumulate_and_merge():
    s1, s2 = DatasetStats(), DatasetStats()
    s1.add(measure_image(image_record([rect(10, 20, 0, 0, 10, 10)])))  # half the image
    s2.add(measure_image(image_record([disk(10, 20, 5, 5, 3), rect(10, 20, 0, 10, 10, 20)])))
    s1.merge(s2)
    out = s1.to_json()
    assert out["images"] == 2 and out["masks"] == 3
    assert out["masks_per_image"] == pytest.approx(1.5)
    assert out["histograms"]["coverage"]["count"] == 2
    assert out["histograms"]["relative_area"]["max"] == pytest.approx(0.5)
    assert sum(map(sum, out["centre_heatmap"]["counts"])) == 3
    assert out["histograms"]["image_width"]["mean"] == 20


# -- bounded selections ----------------------------------------------------------------------


def test_selection_keeps_k_smallest_whatever_the_order():
    items = [(random_priority(7, f"k{i}"), f"k{i}") for i in range(50)]
    forward, merged, part = Selection(5), Selection(5), Selection(5)
    for p, k in items:
        forward.offer(p, k, k)
    for p, k in items[::-1][:25]:
        merged.offer(p, k, k)
    for p, k in items[::-1][25:]:
        part.offer(p, k, k)
    merged.merge(part)
    expected = sorted(items)[:5]
    assert [(p, k) for p, k, _ in forward.items()] == expected
    assert [(p, k) for p, k, _ in merged.items()] == expected
    assert random_priority(7, "k1") == random_priority(7, "k1") != random_priority(8, "k1")


# -- batched RLE check -----------------------------------------------------------------------


def _strict_total(counts: bytes) -> int | None:
    from engine.rle_codec import RLEError, decode_counts

    try:
        return int(decode_counts(counts).sum())
    except RLEError:
        return None


def test_check_counts_agrees_with_the_strict_codec_on_valid_and_corrupted_strings():
    from engine.audit.rle_check import check_counts

    rng = np.random.default_rng(0)
    counts, pixels = [], []
    for i in range(400):
        h, w = int(rng.integers(1, 16)), int(rng.integers(1, 16))
        c = mask_to_rle(rng.random((h, w)) < rng.uniform(0, 1))["counts"].encode()
        kind = i % 6
        if kind == 1 and len(c) > 1:
            c = c[:-1]  # cut short
        elif kind == 2:
            c = c + bytes([int(rng.integers(0, 130))])  # a stray character
        elif kind == 3:
            b = bytearray(c)
            b[int(rng.integers(0, len(b)))] = int(rng.integers(40, 120))
            c = bytes(b)
        elif kind == 4:
            c = b""
        counts.append(c)
        pixels.append(h * w + (i % 11 == 0))  # some declared sizes do not match
    expected = [_strict_total(c) == p for c, p in zip(counts, pixels)]
    assert check_counts(counts, pixels).tolist() == expected
    assert 0.2 < np.mean(expected) < 0.8  # both kinds are really exercised
    assert check_counts([b"", b"0"], [0, 0]).tolist() == [True, True]


def test_measure_image_rejects_runs_that_fall_short_of_the_image():
    record = image_record([rect(10, 10, 0, 0, 5, 5), rect(10, 10, 0, 0, 2, 2)])
    record.annotations[1].segmentation["counts"] = mask_to_rle(rect(3, 3, 0, 0, 1, 1))["counts"]
    with pytest.raises(ValueError, match=r"masks \[1\].*10x10"):
        measure_image(record)
