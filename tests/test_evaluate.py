"""Interactive evaluation (engine.train.evaluate) with hand-made oracle predictors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.masks import mask_to_rle
from engine.records import ImageItem, ReferenceMask
from engine.train.evaluate import batch_iou, clicks_to_reach, evaluate_interactive


class _Identity:
    """The predictor's coordinate transform when the image is already at model size."""

    def apply_coords_torch(self, coords, original_size):
        return coords

    def apply_boxes_torch(self, boxes, original_size):
        return boxes


class OraclePredictor:
    """A ``SamPredictor`` stand-in that knows the references of the current image.

    It finds the object a prompt is about (the reference under the first point, or the one
    whose tight box is the prompt box) and answers with ``answer(gt, clicks)``. Multimask
    output: [empty mask (pred IoU 0.5), answer (0.9), full image (0.2)], so a user keeping
    the highest predicted IoU gets the answer. Records every call.
    """

    def __init__(self, items: list[ImageItem], answer=None) -> None:
        self.refs = {item.key: item for item in items}
        self.answer = answer or (lambda gt, clicks: gt)
        self.transform = _Identity()
        self.device = torch.device("cpu")
        self.calls: list[dict] = []
        self._gts: np.ndarray | None = None

    def set_image(self, image: np.ndarray) -> None:
        item = next(i for i in self.refs.values() if i.image is image)
        from engine.masks import rle_to_mask

        self._gts = np.stack([rle_to_mask(r.rle) for r in item.references])
        self.original_size = image.shape[:2]

    def _object(self, coords, box) -> np.ndarray:
        if box is not None:
            for gt in self._gts:
                ys, xs = np.nonzero(gt)
                if [xs.min(), ys.min(), xs.max(), ys.max()] == [int(v) for v in box]:
                    return gt
            raise AssertionError(f"box {box} matches no reference")
        x, y = (int(v) for v in coords[0])
        return next(gt for gt in self._gts if gt[y, x])

    def predict_torch(self, point_coords, point_labels, boxes, mask_input, multimask_output):
        n = len(point_coords) if point_coords is not None else len(boxes)
        self.calls.append(
            {
                "n": n,
                "points": None if point_coords is None else point_coords.shape[1],
                "mask_input": mask_input is not None,
                "multimask": multimask_output,
            }
        )
        h, w = self.original_size
        outs, ious = [], []
        for i in range(n):
            coords = None if point_coords is None else point_coords[i].numpy()
            box = None if boxes is None else boxes[i].numpy()
            gt = self._object(coords, box)
            clicks = (
                None if coords is None else list(zip(coords.tolist(), point_labels[i].tolist()))
            )
            pred = self.answer(gt, clicks) if clicks is not None else gt
            if multimask_output:
                outs.append(np.stack([np.zeros((h, w), bool), pred, np.ones((h, w), bool)]))
                ious.append([0.5, 0.9, 0.2])
            else:
                outs.append(pred[None])
                ious.append([0.9])
        masks = torch.from_numpy(np.stack(outs))
        low_res = masks.float()[..., ::2, ::2] * 2 - 1
        return masks, torch.tensor(ious), low_res


def scene(key: str) -> ImageItem:
    """A 24×32 image with three disjoint objects: a 6×6 square, a 4×10 bar, a 8×8 square."""
    image = np.zeros((24, 32, 3), dtype=np.uint8)
    masks = np.zeros((3, 24, 32), dtype=bool)
    masks[0, 2:8, 2:8] = True
    masks[1, 12:16, 4:14] = True
    masks[2, 10:18, 20:28] = True
    refs = [ReferenceMask(rle=mask_to_rle(m)) for m in masks]
    return ImageItem(key=key, image=image, file_name=f"{key}.png", references=refs)


def test_perfect_oracle_scores_one_click_everywhere():
    items = [scene("a"), scene("b")]
    oracle = OraclePredictor(items)
    metrics = evaluate_interactive(oracle, items)
    assert metrics.objects == 6 and metrics.images == 2
    assert metrics.miou_at == {1: 1.0, 3: 1.0, 5: 1.0}
    assert metrics.noc == {0.85: 1.0, 0.90: 1.0}
    assert metrics.box_miou == 1.0
    flat = metrics.as_dict()
    assert flat["miou_1click"] == 1.0 and flat["noc_90"] == 1.0 and flat["box_miou"] == 1.0
    # every object is under 32² pixels: all in COCO's "small" bucket
    assert metrics.objects_by_size == {"small": 6}
    assert flat["miou_1click_small"] == 1.0 and "miou_1click_large" not in flat
    # per image: one box call (3 objects), one multimask first click for all 3 objects at
    # once; after that nothing is left to correct, so no more calls
    assert [c["n"] for c in oracle.calls] == [3, 3, 3, 3]
    assert [c["multimask"] for c in oracle.calls] == [False, True, False, True]


def _half_then_full(gt: np.ndarray, clicks) -> np.ndarray:
    """First click: only the top half of the object; from the second click on: all of it."""
    if len(clicks) >= 2:
        return gt
    ys = np.nonzero(gt)[0]
    top = gt.copy()
    top[(ys.min() + ys.max() + 1) // 2 :] = False
    return top


def test_oracle_needing_two_clicks():
    items = [scene("a")]
    oracle = OraclePredictor(items, answer=_half_then_full)
    metrics = evaluate_interactive(oracle, items)
    assert metrics.miou_at[1] == pytest.approx(0.5)
    assert metrics.miou_at[3] == 1.0 and metrics.miou_at[5] == 1.0
    assert metrics.noc == {0.85: 2.0, 0.90: 2.0}
    # the second click is positive (the missed bottom half) and comes with the mask prompt
    second = oracle.calls[2]
    assert second == {"n": 3, "points": 2, "mask_input": True, "multimask": False}


def test_never_reaching_the_threshold_counts_max_clicks():
    items = [scene("a")]

    def eighty_percent(gt, clicks):  # drops 20% of the object's rows, whatever the clicks
        rows = np.flatnonzero(gt.any(1))
        out = gt.copy()
        out[rows[: max(1, len(rows) // 5)]] = False
        return out

    metrics = evaluate_interactive(OraclePredictor(items, answer=eighty_percent), items)
    assert metrics.noc[0.90] == 20.0
    assert all(len(row) == 20 for row in metrics.per_object_ious)
    assert metrics.miou_at[5] == pytest.approx(metrics.miou_at[1])


def test_clicks_to_reach():
    assert clicks_to_reach([0.5, 0.86, 0.95], 0.85, 20) == 2
    assert clicks_to_reach([0.5, 0.86, 0.95], 0.90, 20) == 3
    assert clicks_to_reach([0.5] * 20, 0.90, 20) == 20


def test_batch_iou():
    a = np.zeros((2, 2, 2), bool)
    b = np.zeros((2, 2, 2), bool)
    a[0, 0] = True
    b[0, :, 0] = True
    assert batch_iou(a, b).tolist() == [pytest.approx(1 / 3), 1.0]


def test_items_without_references_are_an_error():
    item = ImageItem(key="x", image=np.zeros((4, 4, 3), np.uint8), file_name="x.png")
    with pytest.raises(ValueError, match="no usable references"):
        evaluate_interactive(OraclePredictor([item]), [item])


def test_one_click_miou_by_coco_size_bucket():
    image = np.zeros((120, 240, 3), dtype=np.uint8)
    masks = np.zeros((3, 120, 240), dtype=bool)
    masks[0, 2:7, 2:7] = True  # 25 px: small
    masks[1, 10:50, 10:50] = True  # 1600 px: medium
    masks[2, 10:110, 120:220] = True  # 10000 px: large
    item = ImageItem("s", image, "s.png", references=[ReferenceMask(mask_to_rle(m)) for m in masks])

    def half_if_big(gt, clicks):
        return gt if gt.sum() < 32**2 else _half_then_full(gt, [])

    metrics = evaluate_interactive(OraclePredictor([item], answer=half_if_big), [item])
    assert metrics.objects_by_size == {"small": 1, "medium": 1, "large": 1}
    assert metrics.miou_1click_by_size == {
        "small": 1.0,
        "medium": pytest.approx(0.5),
        "large": pytest.approx(0.5),
    }
