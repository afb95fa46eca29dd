"""engine.masks: RLE by hand and against pycocotools, boxes, stability, NMS, grids, crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as mask_utils
from segment_anything.utils import amg as official

from engine import masks as M

# 4×4 masks whose compressed RLE was worked out by hand (column-major runs; from the fourth
# run on each value is stored minus the run two before; 5-bit groups as chr(48 + group),
# 0x20 = more groups follow, 0x10 in the last group = negative).
HAND_MASKS = [
    # runs [16] -> 16 has bit 0x10 set so it needs a second group: '`' (48+0x30), '0'
    (np.zeros((4, 4), bool), [16], "`0"),
    # runs [0, 16]
    (np.ones((4, 4), bool), [0, 16], "0`0"),
    # columns 0000|1100|1100|0001 -> runs [4, 2, 2, 2, 5, 1] -> values 4 2 2 0 3 -1
    (
        np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]], bool),
        [4, 2, 2, 2, 5, 1],
        "42203O",
    ),
    # a single pixel at row 1, column 2 (column-major index 2 * 4 + 1 = 9): runs [9, 1, 6]
    (np.arange(16).reshape(4, 4) == 6, [9, 1, 6], "916"),
]


@pytest.mark.parametrize("mask, runs, counts", HAND_MASKS)
def test_hand_written_rle(mask: np.ndarray, runs: list[int], counts: str) -> None:
    rle = M.mask_to_rle(mask)
    assert rle == {"size": [4, 4], "counts": counts}
    assert M.rle_to_mask(rle).tolist() == mask.tolist()
    assert M.rle_area(rle) == sum(runs[1::2])
    assert M.rle_to_mask({"size": [4, 4], "counts": runs}).tolist() == mask.tolist()


def test_hand_written_boxes() -> None:
    mask = HAND_MASKS[2][0]
    rle = M.mask_to_rle(mask)
    assert M.mask_bbox_xywh(mask) == [1, 0, 3, 4]
    assert M.rle_bbox_xywh(rle) == [1, 0, 3, 4]  # pycocotools: inclusive + 1
    box = M.batched_mask_to_box_xyxy(torch.as_tensor(mask)[None])
    assert box.tolist() == [[1, 0, 3, 3]]  # inclusive last column/row
    assert M.box_xyxy_to_xywh(box).tolist() == [[1, 0, 2, 3]]


mask_stacks = arrays(
    bool,
    st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 12)),
    elements=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(mask_stacks)
def test_rle_round_trip_matches_pycocotools(masks: np.ndarray) -> None:
    rles = M.masks_to_rles(masks)
    for mask, rle in zip(masks, rles):
        assert isinstance(rle["counts"], str)
        assert M.rle_to_mask(rle).tolist() == mask.tolist()
        assert M.rle_area(rle) == int(mask.sum())
        assert rle == M.mask_to_rle(mask)


@settings(max_examples=150, deadline=None)
@given(mask_stacks, st.data())
def test_windows_to_rles_equals_full_frames(windows: np.ndarray, data: st.DataObject) -> None:
    n, h, w = windows.shape
    frame_h = data.draw(st.integers(h, h + 6))
    frame_w = data.draw(st.integers(w, w + 6))
    offsets = np.array(
        [
            [data.draw(st.integers(0, frame_h - h)), data.draw(st.integers(0, frame_w - w))]
            for _ in range(n)
        ]
    )
    frames = np.zeros((n, frame_h, frame_w), bool)
    for i, (y0, x0) in enumerate(offsets):
        frames[i, y0 : y0 + h, x0 : x0 + w] = windows[i]
    assert M.windows_to_rles(windows, offsets, (frame_h, frame_w)) == M.masks_to_rles(frames)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=130), max_size=24),
    st.integers(0, 6),
    st.integers(0, 6),
)
def test_malformed_rle_raises_rle_error_never_crashes(counts: str, h: int, w: int) -> None:
    rle = {"size": [h, w], "counts": counts}
    try:
        mask = M.rle_to_mask(rle)
    except M.RLEError:
        return
    assert mask.shape == (h, w)  # it decoded: the runs must then really cover h*w pixels
    assert M.masks_to_rles(mask[None])[0]["size"] == [h, w]


@pytest.mark.parametrize(
    "rle, message",
    [
        ({"size": [2, 2], "counts": "5"}, "cover 5 pixels"),
        ({"size": [2, 2], "counts": "3"}, "cover 3 pixels"),
        ({"size": [2, 2], "counts": "`"}, "middle of a number"),
        ({"size": [2, 2], "counts": "4~"}, "outside the COCO alphabet"),
        ({"size": [2, 2], "counts": "13O"}, "negative run length"),
        ({"size": [2, 2], "counts": "```````0"}, "longer than 7"),
        ({"size": [2, -2], "counts": "4"}, "'size'"),
        ({"size": [2, 2], "counts": 4}, "'counts' must be"),
        ({"size": [2, 2], "counts": [1, 2]}, "sum to 3"),
        ({"counts": "4"}, "'size' and 'counts'"),
    ],
)
def test_bad_rle_messages(rle: dict, message: str) -> None:
    with pytest.raises(M.RLEError, match=message):
        M.rle_to_mask(rle)


def test_rle_iou_and_boxes_against_pycocotools() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((5, 9, 11)) < 0.4
    rles = M.masks_to_rles(masks)
    inter = (masks[:, None] & masks[None]).sum((2, 3))
    union = (masks[:, None] | masks[None]).sum((2, 3))
    np.testing.assert_allclose(M.rle_iou(rles, rles), inter / union)
    for mask, rle in zip(masks, rles):
        assert M.rle_bbox_xywh(rle) == M.mask_bbox_xywh(mask)
        assert (
            M.rle_bbox_xywh(rle)
            == mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))
            .astype(int)
            .tolist()
        )


@pytest.mark.parametrize("shape", [(7, 9, 13), (2, 3, 1, 8), (0, 5, 5), (4, 4)])
def test_batched_boxes_match_official(shape: tuple[int, ...]) -> None:
    masks = torch.rand(shape, generator=torch.Generator().manual_seed(1)) < 0.08
    if masks.ndim >= 3 and masks.shape[0] > 0:
        masks[0] = False  # an empty mask gives [0, 0, 0, 0]
    ours = M.batched_mask_to_box_xyxy(masks)
    assert ours.tolist() == official.batched_mask_to_box(masks).tolist()


def test_stability_score_matches_official() -> None:
    logits = torch.randn(6, 3, 20, 30, generator=torch.Generator().manual_seed(2)) * 3
    logits[0, 0] = -5.0  # nothing above t - offset: NaN in both
    ours = M.stability_score(logits, 0.0, 1.0)
    ref = official.calculate_stability_score(logits, 0.0, 1.0)
    torch.testing.assert_close(ours, ref, equal_nan=True)
    assert ours.dtype == torch.float32
    hand = torch.tensor([[[-2.0, -0.5], [0.5, 2.0]]])  # > 1: one pixel, > -1: three
    assert M.stability_score(hand, 0.0, 1.0).tolist() == [pytest.approx(1 / 3)]


def _brute_force_nms(boxes: list, scores: list, cats: list, thresh: float) -> list[int]:
    def iou(a: list, b: list) -> float:
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else float("nan")

    order = sorted(range(len(boxes)), key=lambda i: -scores[i])  # sorted() is stable
    keep: list[int] = []
    for i in order:
        if all(cats[k] != cats[i] or not iou(boxes[k], boxes[i]) > thresh for k in keep):
            keep.append(i)
    return keep


@settings(max_examples=120, deadline=None)
@given(
    st.integers(0, 40),
    st.integers(1, 3),
    st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]),
    st.integers(0, 2**31 - 1),
)
def test_batched_nms_matches_brute_force(n: int, n_cats: int, thresh: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    xy = rng.integers(0, 30, (n, 2))
    wh = rng.integers(0, 15, (n, 2))  # zero-size boxes included (IoU 0/0 never suppresses)
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.integers(0, 5, n).astype(np.float32)  # many ties: order must be stable
    cats = rng.integers(0, n_cats, n)
    keep = M.batched_nms(
        torch.as_tensor(boxes), torch.as_tensor(scores), torch.as_tensor(cats), thresh
    )
    assert keep.dtype == torch.int64
    expected = _brute_force_nms(boxes.tolist(), scores.tolist(), cats.tolist(), thresh)
    assert keep.tolist() == expected


def test_batched_nms_hand_example() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [20, 20, 30, 30]])
    scores = torch.tensor([0.5, 0.9, 0.8, 0.1])
    # IoU(0, 1) = 81/119 = 0.68: kept at 0.7; box 2 equals box 0 (IoU 1) and wins on score.
    assert M.batched_nms(boxes, scores, torch.zeros(4), 0.7).tolist() == [1, 2, 3]
    assert M.batched_nms(boxes, scores, torch.zeros(4), 0.6).tolist() == [1, 3]
    assert M.batched_nms(boxes, scores, torch.tensor([0, 1, 0, 0]), 0.6).tolist() == [1, 2, 3]


@pytest.mark.parametrize("n, layers, scale", [(32, 0, 1), (32, 2, 2), (16, 3, 2), (5, 1, 1)])
def test_point_grids_match_official(n: int, layers: int, scale: int) -> None:
    ours = M.build_all_layer_point_grids(n, layers, scale)
    ref = official.build_all_layer_point_grids(n, layers, scale)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)
    assert M.build_point_grid(2).tolist() == [
        [0.25, 0.25],
        [0.75, 0.25],
        [0.25, 0.75],
        [0.75, 0.75],
    ]


@pytest.mark.parametrize("size", [(1500, 2250), (171, 256), (600, 600), (37, 1000)])
@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_crop_boxes_match_official(size: tuple[int, int], layers: int) -> None:
    ours = M.generate_crop_boxes(size, layers, 512 / 1500)
    assert ours == official.generate_crop_boxes(size, layers, 512 / 1500)
    assert len(ours[0]) == sum(4**i for i in range(layers + 1))


def test_crop_boxes_by_hand() -> None:
    # 100×200 (H×W), one layer, overlap int(0.2 * 100 * 1) = 20: crop w = ceil((20 + 200) / 2)
    boxes, layers = M.generate_crop_boxes((100, 200), 1, 0.2)
    assert boxes == [
        [0, 0, 200, 100],
        [0, 0, 110, 60],
        [0, 40, 110, 100],
        [90, 0, 200, 60],
        [90, 40, 200, 100],
    ]
    assert layers == [0, 1, 1, 1, 1]


def test_near_crop_edge_matches_official() -> None:
    boxes = torch.tensor([[0, 0, 50, 50], [30, 30, 60, 60], [10, 45, 20, 95], [70, 70, 99, 99]])
    crop, image = [100, 100, 200, 200], [0, 0, 200, 200]
    ours = M.is_box_near_crop_edge(boxes, crop, image)
    assert ours.tolist() == official.is_box_near_crop_edge(boxes, crop, image).tolist()
    assert ours.tolist() == [True, False, True, False]  # box 3 touches only image edges


def test_remove_small_regions_by_hand() -> None:
    mask = np.zeros((8, 8), bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False  # a one-pixel hole
    mask[7, 7] = True  # a one-pixel island (8-connected to nothing)
    mask[6, 6] = True  # ...now 8-connected to the big square through the diagonal
    filled, changed = M.remove_small_regions(mask, 2, "holes")
    assert changed and filled[3, 3] and filled.sum() == mask.sum() + 1
    cleaned, changed = M.remove_small_regions(mask, 2, "islands")
    assert not changed and (cleaned == mask).all()  # the diagonal pair joins the square
    lone = np.zeros((5, 5), bool)
    lone[0, 0] = lone[4, 4] = lone[3, 4] = True
    kept, changed = M.remove_small_regions(lone, 10, "islands")  # all small: keep largest
    assert changed and kept.sum() == 2 and kept[4, 4] and not kept[0, 0]
    with pytest.raises(ValueError, match="'edges'"):
        M.remove_small_regions(lone, 10, "edges")


def test_windows_to_rles_hand_example() -> None:
    window = np.array([[[True, False], [True, True]]])
    # placed at rows 2-3, columns 3-4 of a 4×5 frame; the last column's run ends the frame
    rles = M.windows_to_rles(window, np.array([[2, 3]]), (4, 5))
    frame = np.zeros((4, 5), bool)
    frame[2:4, 3:5] = window[0]
    assert rles == [M.mask_to_rle(frame)]
    assert M.rle_to_mask(rles[0]).tolist() == frame.tolist()


@settings(max_examples=200, deadline=None)
@given(
    arrays(bool, st.tuples(st.integers(1, 24), st.integers(1, 24)), elements=st.booleans()),
    st.integers(0, 30),
    st.sampled_from(["holes", "islands"]),
    st.integers(0, 3),
)
def test_remove_small_regions_window_equals_whole_frame(
    mask: np.ndarray, area: int, mode: str, pad: int
) -> None:
    """The box-window shortcut gives the whole-frame (official) answer, borders included."""
    framed = np.zeros((mask.shape[0] + 2 * pad + 7, mask.shape[1] + pad), bool)
    framed[pad : pad + mask.shape[0], pad:] = mask
    for candidate in (mask, framed):
        got, changed = M.remove_small_regions(candidate, area, mode)
        want, want_changed = M._small_regions_full(candidate, area, mode)
        assert changed == want_changed
        assert got.tolist() == want.tolist()


def test_remove_small_regions_matches_official_with_cv2_stand_in() -> None:
    from amg_peer import install_cv2_stand_in

    install_cv2_stand_in()
    rng = np.random.default_rng(5)
    for _ in range(20):
        mask = ndimage_blobs(rng)
        for mode in ("holes", "islands"):
            ours = M.remove_small_regions(mask, 12, mode)
            ref = official.remove_small_regions(mask, 12, mode)
            assert ours[1] == ref[1] and ours[0].tolist() == ref[0].tolist()


def ndimage_blobs(rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.random((40, 50)), 1.5)
    return noise > np.quantile(noise, 0.6)


@pytest.mark.parametrize("frame", [(5, 6), (9, 7), (50, 60)])  # frame path / window path
@pytest.mark.parametrize("chunk", [1, 1 << 27])
def test_windows_to_rles_both_paths(frame: tuple[int, int], chunk: int, monkeypatch) -> None:
    monkeypatch.setattr(M, "FRAME_CHUNK_BYTES", chunk)
    rng = np.random.default_rng(3)
    windows = rng.random((4, 5, 6)) < 0.5
    offsets = np.array([[0, 0], [frame[0] - 5, frame[1] - 6], [0, frame[1] - 6], [frame[0] - 5, 0]])
    frames = np.zeros((4, *frame), bool)
    for i, (y0, x0) in enumerate(offsets):
        frames[i, y0 : y0 + 5, x0 : x0 + 6] = windows[i]
    assert M.windows_to_rles(windows, offsets, frame) == M.masks_to_rles(frames)
