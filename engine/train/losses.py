"""SAM training losses as pure functions of mask logits.

Shapes: ``logits`` and ``targets`` are ``...×H×W`` (targets in [0, 1], soft targets allowed);
per-mask losses come back with the leading ``...`` shape (mean over the H×W pixels for focal,
one ratio per mask for dice). ``sam_loss`` combines them as the paper does: focal : dice =
20 : 1 on the mask, plus the MSE between the predicted IoU and the actual IoU of each output
mask (weight 1); with several outputs (an ambiguous prompt) only the lowest-loss mask is
back-propagated while the IoU head learns every output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

FOCAL_WEIGHT = 20.0
DICE_WEIGHT = 1.0
IOU_WEIGHT = 1.0
# Per-pixel term of the mask loss → its weight beside dice (weight 1): "focal" is the paper's
# 20·focal + dice; "bce" is binary cross-entropy + dice, 1 : 1 (measured in docs/training.md).
MASK_LOSSES = {"focal": FOCAL_WEIGHT, "bce": 1.0}


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Focal loss (Lin et al.) per mask, averaged over the last two (H×W) dims.

    ``FL = -α_t (1 - p_t)^γ log p_t`` with ``p_t = p`` on object pixels, ``1 - p`` elsewhere,
    ``α_t = α`` on object pixels and ``1 - α`` elsewhere (α < 0 turns the weighting off).
    """
    targets = targets.to(logits.dtype)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(dim=(-2, -1))


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft dice loss per mask: ``1 - (2·Σ p·t + s) / (Σ p + Σ t + s)`` over H×W."""
    targets = targets.to(logits.dtype)
    prob = logits.sigmoid().flatten(-2)
    flat_t = targets.flatten(-2)
    numerator = 2 * (prob * flat_t).sum(-1) + smooth
    denominator = prob.sum(-1) + flat_t.sum(-1) + smooth
    return 1 - numerator / denominator


def mask_iou(pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Hard IoU per mask of boolean ``...×H×W`` masks (1.0 when both are empty)."""
    pred = pred.bool().flatten(-2)
    targets = targets.bool().flatten(-2)
    intersection = (pred & targets).sum(-1).float()
    union = (pred | targets).sum(-1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


@dataclass
class LossOutput:
    """``total`` is the scalar to back-propagate; the parts are detached means for logging.

    ``chosen`` (M,) is the index of the back-propagated output of each prompt.
    """

    total: torch.Tensor
    focal: torch.Tensor
    dice: torch.Tensor
    iou: torch.Tensor
    chosen: torch.Tensor


def sam_loss(
    mask_logits: torch.Tensor,
    iou_pred: torch.Tensor,
    targets: torch.Tensor,
    true_iou: torch.Tensor,
    focal_weight: float | None = None,
    dice_weight: float = DICE_WEIGHT,
    iou_weight: float = IOU_WEIGHT,
    pixel_loss: str = "focal",
) -> LossOutput:
    """The SAM loss for ``M`` prompts with ``K`` outputs each, averaged over prompts.

    Args:
      mask_logits: ``M×K×H×W`` logits (``K`` = 3 for multimask output, 1 otherwise).
      iou_pred: ``M×K`` predicted IoUs.
      targets: ``M×H×W`` (or ``M×1×H×W``) ground truth in [0, 1] at the logits' resolution.
      true_iou: ``M×K`` actual IoU of each output mask (no gradient; computed by the caller at
        whatever resolution the masks are used).
      pixel_loss: "focal" (the paper) or "bce"; ``focal_weight`` (the pixel term's weight)
        defaults to that loss's entry in :data:`MASK_LOSSES`.
    """
    if pixel_loss not in MASK_LOSSES:
        raise ValueError(f"pixel_loss must be one of {tuple(MASK_LOSSES)}, got {pixel_loss!r}")
    if focal_weight is None:
        focal_weight = MASK_LOSSES[pixel_loss]
    if mask_logits.ndim != 4:
        raise ValueError(f"mask_logits must be M×K×H×W, got shape {tuple(mask_logits.shape)}")
    if targets.ndim == 3:
        targets = targets[:, None]
    if targets.shape[-2:] != mask_logits.shape[-2:]:
        raise ValueError(
            f"targets H×W {tuple(targets.shape[-2:])} != logits H×W {tuple(mask_logits.shape[-2:])}"
        )
    logits = mask_logits.float()
    targets = targets.expand_as(logits)
    if pixel_loss == "focal":
        focal = sigmoid_focal_loss(logits, targets)  # M×K
    else:
        focal = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean((-2, -1))
    dice = dice_loss(logits, targets)  # M×K
    per_output = focal_weight * focal + dice_weight * dice
    chosen = per_output.detach().argmin(dim=1)  # lowest-loss output of each prompt
    rows = torch.arange(len(chosen), device=chosen.device)
    mask_term = per_output[rows, chosen]
    iou_term = F.mse_loss(iou_pred.float(), true_iou.detach().float(), reduction="none").mean(1)
    total = (mask_term + iou_weight * iou_term).mean()
    return LossOutput(
        total=total,
        focal=focal[rows, chosen].detach().mean(),
        dice=dice[rows, chosen].detach().mean(),
        iou=iou_term.detach().mean(),
        chosen=chosen,
    )
