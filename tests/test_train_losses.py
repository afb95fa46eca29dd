"""engine.train.losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from engine.train.losses import dice_loss, mask_iou, sam_loss, sigmoid_focal_loss


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def hand_focal(logit: float, target: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = sigmoid(logit)
    ce = -math.log(p) if target == 1 else -math.log(1 - p)
    p_t = p if target == 1 else 1 - p
    a_t = alpha if target == 1 else 1 - alpha
    return a_t * (1 - p_t) ** gamma * ce


def test_focal_loss_two_pixels_by_hand():
    logits = torch.tensor([[[0.0, 2.0]]])  # 1×1×2 (one mask of 1×2 pixels)
    targets = torch.tensor([[[1.0, 0.0]]])
    expected = (hand_focal(0.0, 1) + hand_focal(2.0, 0)) / 2
    # written out: (0.25·0.25·ln 2 + 0.75·(1-σ(-2))²·ln(1+e²)) / 2
    assert expected == pytest.approx((0.25 * 0.25 * math.log(2) + 1.2375574) / 2, rel=1e-6)
    out = sigmoid_focal_loss(logits, targets)
    assert out.shape == (1,)
    assert float(out) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("logit", [-3.0, -0.5, 0.0, 1.5, 4.0])
@pytest.mark.parametrize("target", [0.0, 1.0])
def test_focal_loss_matches_formula_pointwise(logit, target):
    out = sigmoid_focal_loss(torch.tensor([[[logit]]]), torch.tensor([[[target]]]))
    assert float(out) == pytest.approx(hand_focal(logit, target), rel=1e-5)


def test_focal_loss_without_alpha_is_modulated_bce():
    logits, targets = torch.tensor([[[1.0]]]), torch.tensor([[[1.0]]])
    p = sigmoid(1.0)
    assert float(sigmoid_focal_loss(logits, targets, alpha=-1)) == pytest.approx(
        (1 - p) ** 2 * -math.log(p), rel=1e-6
    )


def test_dice_loss_by_hand():
    logits = torch.tensor([[[0.0, 2.0]]])
    targets = torch.tensor([[[1.0, 0.0]]])
    p0, p1 = 0.5, sigmoid(2.0)
    expected = 1 - (2 * p0 * 1 + 1) / (p0 + p1 + 1 + 1)
    assert float(dice_loss(logits, targets)) == pytest.approx(expected, rel=1e-6)


def test_dice_loss_near_zero_for_confident_correct_mask():
    targets = torch.zeros(1, 4, 4)
    targets[0, 1:3, 1:3] = 1
    logits = (targets * 2 - 1) * 30
    assert float(dice_loss(logits, targets)) < 1e-6


def test_mask_iou_by_hand():
    pred = torch.tensor([[[1, 1, 0, 0]], [[0, 0, 0, 0]]], dtype=torch.bool)
    gt = torch.tensor([[[1, 0, 0, 0]], [[0, 0, 0, 0]]], dtype=torch.bool)
    assert mask_iou(pred, gt).tolist() == [0.5, 1.0]


def test_sam_loss_picks_lowest_loss_output_and_learns_every_iou():
    targets = torch.zeros(2, 4, 4)
    targets[:, :2, :2] = 1
    good = (targets * 2 - 1) * 10  # near-perfect logits
    bad = -good
    # prompt 0: the good mask is output 2; prompt 1: output 0
    logits = torch.stack(
        [torch.stack([bad[0], bad[0], good[0]]), torch.stack([good[1], bad[1], bad[1]])]
    )
    logits.requires_grad_(True)
    iou_pred = torch.full((2, 3), 0.5, requires_grad=True)
    true_iou = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    out = sam_loss(logits, iou_pred, targets, true_iou)
    assert out.chosen.tolist() == [2, 0]
    per = 20 * sigmoid_focal_loss(good, targets) + dice_loss(good, targets)
    iou_mse = 0.25  # every prediction is 0.5 off
    assert out.total.item() == pytest.approx(per.mean().item() + iou_mse, rel=1e-5)
    out.total.backward()
    grad_per_output = logits.grad.abs().sum(dim=(2, 3))
    # only the chosen outputs receive a mask gradient ...
    assert (grad_per_output[0, :2] == 0).all() and grad_per_output[0, 2] > 0
    assert (grad_per_output[1, 1:] == 0).all() and grad_per_output[1, 0] > 0
    # ... while the IoU head gets a gradient for all three: d/dx mean((x - t)²)/2 prompts
    expected = 2 * (0.5 - true_iou) / 3 / 2
    assert torch.allclose(iou_pred.grad, expected)


def test_sam_loss_weights_are_20_to_1_plus_iou():
    logits = torch.tensor([[[[0.3, -1.2], [2.0, 0.1]]]])  # 1×1×2×2
    targets = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    iou_pred = torch.tensor([[0.7]])
    true_iou = torch.tensor([[0.4]])
    out = sam_loss(logits, iou_pred, targets, true_iou)
    focal = float(sigmoid_focal_loss(logits[:, 0], targets))
    dice = float(dice_loss(logits[:, 0], targets))
    assert float(out.total) == pytest.approx(20 * focal + dice + 0.3**2, rel=1e-6)


def test_sam_loss_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="H×W"):
        sam_loss(
            torch.zeros(1, 1, 4, 4), torch.zeros(1, 1), torch.zeros(1, 8, 8), torch.zeros(1, 1)
        )


def test_bce_mask_loss_is_cross_entropy_plus_dice_one_to_one():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 16, 16, generator=gen) * 3
    targets = (torch.rand(4, 16, 16, generator=gen) > 0.6).float()
    iou_pred, true_iou = torch.rand(4, 3, generator=gen), torch.rand(4, 3, generator=gen)
    out = sam_loss(logits, iou_pred, targets, true_iou, pixel_loss="bce")
    expanded = targets[:, None].expand_as(logits)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, expanded, reduction="none"
    ).mean((-2, -1))
    per_output = bce + dice_loss(logits, expanded)
    chosen = per_output.argmin(1)
    assert torch.equal(out.chosen, chosen)
    mask_term = per_output[torch.arange(4), chosen]
    iou_term = ((iou_pred - true_iou) ** 2).mean(1)
    torch.testing.assert_close(out.total, (mask_term + iou_term).mean())
    with pytest.raises(ValueError, match="pixel_loss"):
        sam_loss(logits, iou_pred, targets, true_iou, pixel_loss="l2")
