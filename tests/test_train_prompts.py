"""Prompt simulation properties (engine.train.prompts) and the lr schedule / param groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.train.prompts import (
    PAD_LABEL,
    box_noise_cap,
    first_prompt_is_box,
    iteration_plan,
    mask_boxes_xyxy,
    noisy_boxes,
    sample_error_points,
    sample_points_in_masks,
)
from engine.train.schedule import encoder_layer_id, lr_at, param_groups, set_lr


def random_masks(count: int, size: int, seed: int) -> torch.Tensor:
    """``count`` random rectangles in a size×size frame (never empty)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros((count, size, size), dtype=torch.bool)
    for i in range(count):
        x0, y0 = torch.randint(0, size - 2, (2,), generator=g).tolist()
        x1 = x0 + 1 + int(torch.randint(0, size - x0 - 1, (1,), generator=g))
        y1 = y0 + 1 + int(torch.randint(0, size - y0 - 1, (1,), generator=g))
        masks[i, y0:y1, x0:x1] = True
    return masks


def test_points_are_inside_their_masks():
    masks = random_masks(50, 32, seed=0)
    points, found = sample_points_in_masks(masks, torch.Generator().manual_seed(1))
    assert found.all()
    xs, ys = points[:, 0].long(), points[:, 1].long()
    assert masks[torch.arange(50), ys, xs].all()


def test_point_sampling_is_uniform_over_the_mask():
    mask = torch.zeros((1, 4, 4), dtype=torch.bool)
    mask[0, 1, 1] = mask[0, 2, 3] = True
    g = torch.Generator().manual_seed(0)
    hits = [tuple(sample_points_in_masks(mask, g)[0][0].tolist()) for _ in range(400)]
    share = hits.count((1.0, 1.0)) / len(hits)
    assert set(hits) == {(1.0, 1.0), (3.0, 2.0)}
    assert 0.4 < share < 0.6


def test_empty_mask_gives_no_point():
    points, found = sample_points_in_masks(torch.zeros((2, 5, 5), dtype=torch.bool))
    assert not found.any() and (points == 0).all()


def test_tight_boxes_xyxy_inclusive():
    masks = torch.zeros((2, 8, 8), dtype=torch.bool)
    masks[0, 2:5, 1:7] = True  # rows 2-4, cols 1-6
    assert mask_boxes_xyxy(masks).tolist() == [[1.0, 2.0, 6.0, 4.0], [0.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize("max_offset", [20.0, 3.0])
def test_box_noise_is_bounded_and_scaled_to_the_side(max_offset):
    masks = random_masks(300, 64, seed=2)
    tight = mask_boxes_xyxy(masks)
    noisy = noisy_boxes(masks, torch.Generator().manual_seed(3), max_offset=max_offset)
    # ordered and inside the frame
    assert (noisy[:, 0] <= noisy[:, 2]).all() and (noisy[:, 1] <= noisy[:, 3]).all()
    assert (noisy >= 0).all() and (noisy <= 63).all()
    side = torch.stack([tight[:, 2] - tight[:, 0] + 1, tight[:, 3] - tight[:, 1] + 1], 1)
    side = side.repeat(1, 2)
    offset = (noisy - tight).abs()
    # each coordinate moves at most the cap (clipping to the frame only shrinks a move); with
    # σ = 10% of the side, a move beyond 5σ is a < 1e-6 event
    assert (offset <= max_offset + 1e-5).all()
    assert (offset <= 0.5 * side + 1e-5).all()
    assert (noisy != tight).any()


def test_box_noise_spread_is_ten_percent_of_the_side():
    masks = torch.zeros((2000, 170, 170), dtype=torch.bool)
    masks[:, 35:135, 60:110] = True  # 50 wide, 100 tall: σx = 5, σy = 10 (35 px margins)
    noisy = noisy_boxes(masks, torch.Generator().manual_seed(0), max_offset=1000)
    offset = noisy - mask_boxes_xyxy(masks)
    std = offset.std(dim=0)
    assert std[0] == pytest.approx(5.0, rel=0.08) and std[2] == pytest.approx(5.0, rel=0.08)
    assert std[1] == pytest.approx(10.0, rel=0.08) and std[3] == pytest.approx(10.0, rel=0.08)


def test_box_noise_cap_scales_with_input_size():
    assert box_noise_cap(1024) == 20.0
    assert box_noise_cap(256) == 5.0


def test_first_prompt_kind_is_a_fair_coin():
    kinds = first_prompt_is_box(4000, torch.Generator().manual_seed(0))
    assert 0.46 < kinds.float().mean() < 0.54


def test_error_points_lie_in_error_regions_with_the_right_label():
    gt = random_masks(200, 32, seed=4)
    pred = random_masks(200, 32, seed=5)
    pred[:20] = gt[:20]  # a few exact predictions
    valid = torch.zeros((32, 32), dtype=torch.bool)
    valid[:, :28] = True
    points, labels = sample_error_points(pred, gt, valid, torch.Generator().manual_seed(6))
    xs, ys = points[:, 0].long(), points[:, 1].long()
    rows = torch.arange(200)
    errors = (pred ^ gt) & valid
    has_error = errors.flatten(1).any(1)
    assert (labels[~has_error] == PAD_LABEL).all()
    idx = rows[has_error]
    assert errors[idx, ys[idx], xs[idx]].all()  # inside the error region, inside valid
    fn = gt[idx, ys[idx], xs[idx]] & ~pred[idx, ys[idx], xs[idx]]
    assert (labels[idx] == fn.long()).all()  # missed pixel → 1, false pixel → 0
    assert (labels[idx] == 1).any() and (labels[idx] == 0).any()


def test_iteration_plan_has_eight_new_points_in_eleven():
    for seed in range(20):
        plan = iteration_plan(11, torch.Generator().manual_seed(seed))
        assert len(plan) == 11 and sum(plan) == 8
        assert not plan[0] and not plan[-1]
        assert plan.count(False) == 3  # the initial prompt + 2 without a new point
    middles = {
        iteration_plan(11, torch.Generator().manual_seed(s)).index(False, 1) for s in range(60)
    }
    assert middles <= set(range(1, 10)) and len(middles) > 3


@pytest.mark.parametrize(
    ("iterations", "expected"),
    [(1, [[False]]), (2, [[False, True]]), (3, [[False, True, False]])],
)
def test_a_short_plan_keeps_a_correction_click(iterations, expected):
    plans = {tuple(iteration_plan(iterations, torch.Generator().manual_seed(s))) for s in range(20)}
    assert plans == {tuple(p) for p in expected}


def test_four_and_five_iterations_keep_two_without_a_point():
    for iterations in (4, 5):
        for seed in range(20):
            plan = iteration_plan(iterations, torch.Generator().manual_seed(seed))
            assert plan.count(False) == 3 and not plan[0] and not plan[-1]


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.25), (1, 0.5), (3, 1.0), (4, 1.0), (9, 1.0), (10, 0.1), (19, 0.1), (20, 0.01)],
)
def test_lr_warmup_then_step_decay(step, expected):
    assert lr_at(step, 1.0, warmup_steps=4, decay_steps=(10, 20)) == pytest.approx(expected)


def test_lr_without_warmup():
    assert lr_at(0, 8e-4, warmup_steps=0) == 8e-4


class _Encoder(nn.Module):
    def __init__(self, depth: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 2, 2, 4))
        self.patch_embed = nn.Linear(4, 4)
        self.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(depth))
        self.neck = nn.Linear(4, 4)


class _Sam(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = _Encoder(depth=3)
        self.mask_decoder = nn.Linear(4, 4)


def test_encoder_layer_ids():
    assert encoder_layer_id("patch_embed.proj.weight", 12) == 0
    assert encoder_layer_id("pos_embed", 12) == 0
    assert encoder_layer_id("blocks.0.attn.qkv.weight", 12) == 1
    assert encoder_layer_id("blocks.11.mlp.lin1.bias", 12) == 12
    assert encoder_layer_id("neck.0.weight", 12) == 13


def test_param_groups_layer_decay_and_no_weight_decay():
    model = _Sam()
    groups = param_groups(model, weight_decay=0.1, layer_decay=0.5)
    scale_of = {}
    decay_of = {}
    for group in groups:
        for p in group["params"]:
            scale_of[id(p)] = group["lr_scale"]
            decay_of[id(p)] = group["weight_decay"]
    enc = model.image_encoder
    assert scale_of[id(enc.patch_embed.weight)] == 0.5**4
    assert scale_of[id(enc.pos_embed)] == 0.5**4 and decay_of[id(enc.pos_embed)] == 0.0
    assert scale_of[id(enc.blocks[0].weight)] == 0.5**3
    assert scale_of[id(enc.blocks[2].weight)] == 0.5
    assert scale_of[id(enc.neck.weight)] == 1.0
    assert scale_of[id(model.mask_decoder.weight)] == 1.0
    assert decay_of[id(model.mask_decoder.weight)] == 0.1
    assert decay_of[id(model.mask_decoder.bias)] == 0.0
    assert len(scale_of) == len(list(model.parameters()))
    optimizer = torch.optim.AdamW(groups, lr=1.0)
    set_lr(optimizer, 2.0)
    assert sorted({g["lr"] for g in optimizer.param_groups}) == [0.125, 0.25, 0.5, 1.0, 2.0]


def test_param_groups_skip_frozen_parameters():
    model = _Sam()
    model.image_encoder.requires_grad_(False)
    groups = param_groups(model, weight_decay=0.1, layer_decay=0.8)
    count = sum(len(g["params"]) for g in groups)
    assert count == 2 and all(g["lr_scale"] == 1.0 for g in groups)
