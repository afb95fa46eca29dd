"""The forward pass of one training step: interactive prompt simulation on a batch of images.

``InteractiveStep(sam)`` is an ``nn.Module`` (so ``DistributedDataParallel`` can wrap it):
``forward(images, targets, generator)`` embeds every image once (gradients flow through the
encoder once) and, for each image's masks, runs the 11-iteration simulation of
``engine.train.prompts`` on the prompt encoder and mask decoder:

- iteration 0: half the masks (at random) start from a point inside the mask and are decoded
  with multimask output (3 masks, the ambiguous case; only the lowest-loss one is
  back-propagated), the others start from a noisy box with a single output;
- later iterations: one point sampled from the error region of the previous best mask (by
  predicted IoU) is added, and that mask's low-res logits (detached) are the mask prompt;
  two iterations add no point.

Masks are compared in the padded input frame (S×S): low-res logits are upsampled bilinearly to
S×S, thresholded at 0 and cut to the real image (``valid_hw``); the actual IoU the IoU head
learns is measured there. ``iou_target`` says against what: "prompt" (the paper) — the mask the
prompt was drawn from; "containing" — for the 3 outputs of a single first click, the best IoU
with any of the image's masks (in the batch) that contain the click (the whole, part or
sub-part the point is ambiguous between), so a good mask of another level is not taught a low
score; every other iteration keeps the prompt's mask. The mask loss is computed on the low-res
logits against area-averaged (soft) targets (``loss_at="low_res"``, the default: 16× fewer
pixels) or on the upsampled logits against the S×S masks (``loss_at="input"``). The returned
loss is the mean over masks and iterations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.train.data import ImageTargets
from engine.train.losses import mask_iou, sam_loss
from engine.train.prompts import (
    box_noise_cap,
    first_prompt_is_box,
    iteration_plan,
    noisy_boxes,
    sample_error_points,
    sample_points_in_masks,
)

LOSS_AT = ("low_res", "input")
IOU_TARGETS = ("prompt", "containing")


class InteractiveStep(nn.Module):
    """Wraps a ``Sam`` module; ``forward`` returns ``(loss, stats)`` for one batch."""

    def __init__(
        self,
        sam: nn.Module,
        num_iterations: int = 11,
        num_without_point: int = 2,
        loss_at: str = "low_res",
        box_probability: float = 0.5,
        mask_loss: str = "focal",
        iou_target: str = "prompt",
    ) -> None:
        super().__init__()
        if loss_at not in LOSS_AT:
            raise ValueError(f"loss_at must be one of {LOSS_AT}, got {loss_at!r}")
        if iou_target not in IOU_TARGETS:
            raise ValueError(f"iou_target must be one of {IOU_TARGETS}, got {iou_target!r}")
        self.sam = sam
        self.num_iterations = num_iterations
        self.num_without_point = num_without_point
        self.loss_at = loss_at
        self.box_probability = box_probability
        self.mask_loss = mask_loss
        self.iou_target = iou_target

    @property
    def img_size(self) -> int:
        return int(self.sam.image_encoder.img_size)

    def forward(
        self,
        images: Sequence[torch.Tensor],
        targets: Sequence[ImageTargets],
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``images``: 3×h×w float (0–255, resized, not padded); ``targets`` per image."""
        if len(images) != len(targets) or not images:
            raise ValueError(f"need as many targets as images (> 0), got {len(images)}")
        batch = torch.stack([self.sam.preprocess(image) for image in images])
        embeddings = self.sam.image_encoder(batch)
        dense_pe = self.sam.prompt_encoder.get_dense_pe()
        plan = iteration_plan(self.num_iterations, generator, self.num_without_point)
        totals: dict[str, torch.Tensor] = {}
        count = 0
        for index, target in enumerate(targets):
            gt = target.masks.to(embeddings.device)
            if len(gt) == 0:
                continue
            valid = torch.zeros(gt.shape[-2:], dtype=torch.bool, device=gt.device)
            valid[: target.valid_hw[0], : target.valid_hw[1]] = True
            is_box = first_prompt_is_box(len(gt), generator, self.box_probability).to(gt.device)
            embedding = embeddings[index : index + 1]
            for group, with_box in ((is_box, True), (~is_box, False)):
                if group.any():
                    sums = self._simulate(
                        embedding, dense_pe, gt, group, with_box, valid, plan, generator
                    )
                    for name, value in sums.items():
                        totals[name] = totals.get(name, 0) + value
            count += len(gt)
        if count == 0:
            raise ValueError("the batch holds no mask: every image needs at least one")
        n = count * len(plan)
        loss = totals["loss"] / n
        stats = {name: float(value) / n for name, value in totals.items() if name != "loss"}
        stats["iou_first"] = float(totals["iou_first"]) / count
        stats["iou_last"] = float(totals["iou_last"]) / count
        stats["loss"] = float(loss.detach())
        stats["masks"] = float(count)
        return loss, stats

    def _simulate(
        self,
        embedding: torch.Tensor,
        dense_pe: torch.Tensor,
        image_gt: torch.Tensor,
        group: torch.Tensor,
        start_with_box: bool,
        valid: torch.Tensor,
        plan: list[bool],
        generator: torch.Generator | None,
    ) -> dict[str, torch.Tensor]:
        """Run the iterations for the masks ``image_gt[group]`` of one image, which share a
        first-prompt kind (a box or a point).

        Returns sums over masks and iterations (loss with gradient; the rest detached).
        """
        gt = image_gt[group]
        m, size = len(gt), gt.shape[-1]
        rows = torch.arange(m, device=gt.device)
        boxes = None
        coords = torch.zeros((m, 0, 2), device=gt.device)
        labels = torch.zeros((m, 0), dtype=torch.long, device=gt.device)
        if start_with_box:
            boxes = noisy_boxes(gt, generator, max_offset=box_noise_cap(size))
        else:
            first, _ = sample_points_in_masks(gt, generator)
            coords = first[:, None]
            labels = torch.ones((m, 1), dtype=torch.long, device=gt.device)
        containing = None
        if self.iou_target == "containing" and not start_with_box:
            x, y = coords[:, 0, 0].long(), coords[:, 0, 1].long()
            containing = image_gt[:, y, x].T  # M×N: mask n of the image holds click m
        gt_float = gt.float()
        low_targets = None
        mask_input = None
        previous = None
        sums: dict[str, torch.Tensor] = {}
        for iteration, add_point in enumerate(plan):
            if add_point:
                point, label = sample_error_points(previous, gt, valid, generator)
                coords = torch.cat([coords, point[:, None]], dim=1)
                labels = torch.cat([labels, label[:, None]], dim=1)
            points = (coords, labels) if coords.shape[1] else None
            sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
            low_res, iou_pred = self.sam.mask_decoder(
                image_embeddings=embedding,
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=iteration == 0 and not start_with_box,
            )
            upsampled = F.interpolate(
                low_res.float(), (size, size), mode="bilinear", align_corners=False
            )
            with torch.no_grad():
                predicted = (upsampled > 0) & valid
                true_iou = mask_iou(predicted, gt[:, None].expand_as(predicted))
                head_target = true_iou
                if iteration == 0 and containing is not None:
                    head_target = best_containing_iou(predicted, image_gt, containing)
            if self.loss_at == "input":
                out = sam_loss(
                    upsampled, iou_pred, gt_float, head_target, pixel_loss=self.mask_loss
                )
            else:
                if low_targets is None:
                    low_targets = F.adaptive_avg_pool2d(gt_float[:, None], low_res.shape[-2:])
                out = sam_loss(
                    low_res, iou_pred, low_targets, head_target, pixel_loss=self.mask_loss
                )
            best = iou_pred.detach().argmax(dim=1)
            mask_input = low_res[rows, best][:, None].detach()
            previous = predicted[rows, best]
            reached = true_iou[rows, best].sum()
            parts = {
                "loss": out.total * m,
                "focal": out.focal * m,
                "dice": out.dice * m,
                "iou_mse": out.iou * m,
            }
            if iteration == 0:
                parts["iou_first"] = reached
            if iteration == len(plan) - 1:
                parts["iou_last"] = reached
            for name, value in parts.items():
                sums[name] = sums.get(name, 0) + value
        return sums


def best_containing_iou(
    predicted: torch.Tensor, image_gt: torch.Tensor, containing: torch.Tensor
) -> torch.Tensor:
    """``M×K`` best IoU of each of ``M×K×H×W`` predicted masks with the masks of ``N×H×W``
    ``image_gt`` that ``containing`` (M×N bool) allows for its prompt (0 when none)."""
    flat = predicted.flatten(-2).float()  # M×K×P
    refs = image_gt.flatten(-2).float()  # N×P
    inter = flat @ refs.T  # M×K×N
    union = flat.sum(-1, keepdim=True) + refs.sum(-1)[None, None] - inter
    iou = inter / union.clamp(min=1)
    iou = torch.where(containing[:, None, :], iou, torch.zeros_like(iou))
    return iou.max(dim=-1).values
