"""engine.train.step: the first prompt's kind, and what the IoU head learns a first click's
three outputs against."""

from __future__ import annotations

import pytest
import torch

from engine.train import step as step_module
from engine.train.data import collate
from engine.train.loop import TrainOptions
from engine.train.step import InteractiveStep, best_containing_iou
from tests.test_train_loop import dataset, micro_sam, one_thread  # noqa: F401 (fixtures)

REAL_SAM_LOSS = step_module.sam_loss


def _square(size: int, top: int, left: int, side: int) -> torch.Tensor:
    mask = torch.zeros((size, size), dtype=torch.bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_best_containing_iou_takes_the_best_mask_that_holds_the_click():
    whole, part = _square(16, 0, 0, 8), _square(16, 0, 0, 4)
    elsewhere = _square(16, 8, 8, 8)
    image_gt = torch.stack([whole, part, elsewhere])
    predicted = torch.stack([whole, part, elsewhere])[None]  # one click, 3 outputs
    # the click (1, 1) lies in the whole and the part, not in the mask elsewhere
    containing = torch.tensor([[True, True, False]])
    iou = best_containing_iou(predicted, image_gt, containing)
    assert iou.shape == (1, 3)
    assert iou[0, 0] == 1.0 and iou[0, 1] == 1.0  # a perfect whole and a perfect part
    assert iou[0, 2] == 0.0  # a perfect mask of an object the click is not on scores nothing


def _head_targets(
    model,
    dataset,  # noqa: F811
    iou_target: str,
    monkeypatch,
    box_probability: float = 0.0,
) -> list[torch.Tensor]:
    seen = []

    def spy(logits, iou_pred, targets, true_iou, **kw):
        seen.append(true_iou.clone())
        return REAL_SAM_LOSS(logits, iou_pred, targets, true_iou, **kw)

    monkeypatch.setattr(step_module, "sam_loss", spy)
    generator = torch.Generator().manual_seed(5)
    images, targets = collate([dataset[0], dataset[1]], 64, 16, generator)
    run = InteractiveStep(
        model, num_iterations=2, box_probability=box_probability, iou_target=iou_target
    )
    with torch.no_grad():
        run(images, targets, generator)
    return seen


def test_containing_target_raises_only_the_first_clicks_outputs(dataset, monkeypatch):  # noqa: F811
    model = micro_sam()
    prompt = _head_targets(model, dataset, "prompt", monkeypatch)
    containing = _head_targets(model, dataset, "containing", monkeypatch)
    assert len(prompt) == len(containing) == 4  # 2 images × 2 iterations, all clicks
    firsts = [0, 2]
    for i, (p, c) in enumerate(zip(prompt, containing, strict=True)):
        if i in firsts:
            assert p.shape[1] == 3 and (c >= p - 1e-6).all()
        else:  # later iterations keep the prompt's own mask
            assert torch.equal(p, c)
    assert any((containing[i] > prompt[i] + 1e-6).any() for i in firsts)


@pytest.mark.parametrize(("box_probability", "outputs"), [(0.0, 3), (1.0, 1)])
def test_box_probability_sets_every_first_prompt(dataset, monkeypatch, box_probability, outputs):  # noqa: F811
    # all clicks: 3 outputs (the ambiguous case); all boxes: 1 output
    seen = _head_targets(micro_sam(), dataset, "prompt", monkeypatch, box_probability)
    assert [t.shape[1] for t in seen[::2]] == [outputs, outputs]


def test_an_unknown_iou_target_is_refused():
    with pytest.raises(ValueError, match="iou_target"):
        InteractiveStep(micro_sam(), iou_target="best")
    with pytest.raises(ValueError, match="iou_target"):
        TrainOptions(iou_target="best")
