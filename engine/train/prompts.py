"""Simulated interactive prompts for training (FACTS.md, "Training recipe").

All tensors live in the model's input frame (the image resized so its longest side is the
model's ``img_size``, zero-padded bottom/right): masks are ``M×H×W`` bool, points are ``(x, y)``
pixel coordinates as floats, boxes are XYXY. Random draws take an explicit
``torch.Generator`` so a run is reproducible and resumable.

- first prompt: a point sampled uniformly inside the mask, or a noisy box, with equal
  probability (``first_prompt_is_box``);
- box noise: each coordinate moves by a normal offset with σ = 10% of the box side (width for
  x, height for y), clamped to ±``max_offset`` pixels — SAM's "to a maximum of 20 pixels" at
  its 1024-px input (``box_noise_cap(img_size)`` scales the 20 px to other input sizes);
- later prompts: a point sampled uniformly from the error region of the previous prediction
  (false negative → positive label 1, false positive → negative label 0); when there is no
  error the point is a padding point (label -1, SAM's "not a point");
- ``iteration_plan``: 11 iterations, the first with the initial prompt, then one new point per
  iteration except one random middle iteration and the last, which add none.
"""

from __future__ import annotations

import torch

BOX_NOISE_FRACTION = 0.1
BOX_NOISE_MAX_PX = 20.0  # at SAM's 1024-px input
REFERENCE_IMG_SIZE = 1024
PAD_LABEL = -1


def _device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    """Draws happen on the generator's device (a CUDA generator cannot fill a CPU tensor)."""
    return generator.device if generator is not None else fallback


def _check_masks(masks: torch.Tensor, name: str = "masks") -> torch.Tensor:
    if masks.ndim != 3:
        raise ValueError(f"{name} must be M×H×W, got shape {tuple(masks.shape)}")
    return masks.bool()


def sample_points_in_masks(
    masks: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One point drawn uniformly from each mask's pixels.

    Returns ``(points M×2 float (x, y), found M bool)``; for an empty mask the point is
    ``(0, 0)`` and ``found`` is False.
    """
    masks = _check_masks(masks)
    m, h, w = masks.shape
    flat = masks.reshape(m, h * w)
    # the argmax of i.i.d. uniform scores over the allowed pixels is a uniform draw among them
    device = _device(generator, masks.device)
    scores = torch.rand((m, h * w), generator=generator, device=device).to(masks.device)
    scores = torch.where(flat, scores, torch.full_like(scores, -1.0))
    index = scores.argmax(dim=1)
    found = flat.any(dim=1)
    points = torch.stack([index % w, index // w], dim=1).float()
    points = torch.where(found[:, None], points, torch.zeros_like(points))
    return points, found


def mask_boxes_xyxy(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes ``M×4`` (inclusive pixel indices) of ``M×H×W`` masks; zeros if empty."""
    masks = _check_masks(masks)
    m, h, w = masks.shape
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    big = max(h, w)
    x0 = torch.where(cols, xs, big).min(dim=1).values
    x1 = torch.where(cols, xs, -1).max(dim=1).values
    y0 = torch.where(rows, ys, big).min(dim=1).values
    y1 = torch.where(rows, ys, -1).max(dim=1).values
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    empty = ~rows.any(dim=1)
    return torch.where(empty[:, None], torch.zeros_like(boxes), boxes)


def box_noise_cap(img_size: int) -> float:
    """The 20-px cap of SAM's 1024-px input, scaled to an ``img_size`` input."""
    return BOX_NOISE_MAX_PX * img_size / REFERENCE_IMG_SIZE


def noisy_boxes(
    masks: torch.Tensor,
    generator: torch.Generator | None = None,
    noise_fraction: float = BOX_NOISE_FRACTION,
    max_offset: float = BOX_NOISE_MAX_PX,
) -> torch.Tensor:
    """Tight XYXY boxes of ``M×H×W`` masks with normal noise on each coordinate.

    Offsets have σ = ``noise_fraction`` × the box side (width for x, height for y) and are
    clamped to ±``max_offset`` pixels; the result is clipped to the frame and kept ordered
    (x0 ≤ x1, y0 ≤ y1). Returns ``M×4`` float.
    """
    masks = _check_masks(masks)
    _, h, w = masks.shape
    boxes = mask_boxes_xyxy(masks)
    side_w = boxes[:, 2] - boxes[:, 0] + 1
    side_h = boxes[:, 3] - boxes[:, 1] + 1
    sigma = noise_fraction * torch.stack([side_w, side_h, side_w, side_h], dim=1)
    device = _device(generator, masks.device)
    noise = torch.randn(boxes.shape, generator=generator, device=device).to(masks.device) * sigma
    noisy = boxes + noise.clamp(-max_offset, max_offset)
    limit = torch.tensor([w - 1, h - 1, w - 1, h - 1], device=masks.device, dtype=noisy.dtype)
    noisy = torch.minimum(noisy.clamp(min=0), limit)
    x0 = torch.minimum(noisy[:, 0], noisy[:, 2])
    x1 = torch.maximum(noisy[:, 0], noisy[:, 2])
    y0 = torch.minimum(noisy[:, 1], noisy[:, 3])
    y1 = torch.maximum(noisy[:, 1], noisy[:, 3])
    return torch.stack([x0, y0, x1, y1], dim=1)


def first_prompt_is_box(
    count: int, generator: torch.Generator | None = None, box_probability: float = 0.5
) -> torch.Tensor:
    """``count`` bools: True → start from a noisy box, False → from a point in the mask."""
    device = _device(generator, torch.device("cpu"))
    return torch.rand(count, generator=generator, device=device) < box_probability


def sample_error_points(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective point per mask, uniform over the error region of ``pred`` vs ``gt``.

    ``pred``, ``gt``: ``M×H×W`` bool; ``valid``: ``H×W`` bool of real (unpadded) pixels.
    Returns ``(points M×2 float (x, y), labels M long)``: label 1 for a false-negative pixel
    (add it), 0 for a false-positive one (remove it), -1 with point (0, 0) when ``pred`` has
    no error.
    """
    pred = _check_masks(pred, "pred")
    gt = _check_masks(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
    errors = pred ^ gt
    if valid is not None:
        errors = errors & valid.bool()[None]
    points, found = sample_points_in_masks(errors, generator)
    xs = points[:, 0].long()
    ys = points[:, 1].long()
    rows = torch.arange(len(gt), device=gt.device)
    labels = gt[rows, ys, xs].long()  # inside gt → missed pixel → positive click
    labels = torch.where(found, labels, torch.full_like(labels, PAD_LABEL))
    return points, labels


def iteration_plan(
    num_iterations: int = 11,
    generator: torch.Generator | None = None,
    num_without_point: int = 2,
) -> list[bool]:
    """Which iterations add a new point: ``plan[i]`` is False for the first (initial prompt)
    and for the iterations that only refine the mask prompt.

    With the defaults: iteration 0 is the initial prompt, the last and one random iteration
    in between add no point, the other 8 add one sampled point each. A shorter simulation
    keeps at least one new point: with 2 iterations the second adds one, with 3 only the
    last goes without (so 3 iterations = 1 correction click + 1 mask-only refinement).
    """
    if num_iterations < 1:
        raise ValueError(f"num_iterations must be >= 1, got {num_iterations}")
    if num_without_point not in (0, 1, 2):
        raise ValueError(f"num_without_point must be 0, 1 or 2, got {num_without_point}")
    plan = [i > 0 for i in range(num_iterations)]
    without = min(num_without_point, max(num_iterations - 2, 0))
    if without >= 1:
        plan[-1] = False
    if without == 2:
        device = _device(generator, torch.device("cpu"))
        draw = torch.randint(num_iterations - 2, (1,), generator=generator, device=device)
        middle = 1 + int(draw)
        plan[middle] = False
    return plan
