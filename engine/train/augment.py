"""Training-time augmentation of one image and its masks, applied identically to both.

``Augmentation(flip=0.5, scale=(0.5, 1.5), color=0.2).apply(image, masks, generator)``:

- horizontal flip with probability ``flip``;
- scale/crop: the image and masks are resized by a factor drawn log-uniformly from ``scale``;
  a result larger than the input frame is cropped to a random window that fits in it (the
  longest side ≤ ``max_side``), a smaller one stays smaller (the model's padding fills the rest);
- colour: brightness, contrast and saturation each multiplied by a factor in
  ``[1 - color, 1 + color]`` (image only).

Masks are resized bilinearly and kept where coverage ≥ 0.5, the same rule as
``engine.train.data.resize_masks``. Every draw comes from ``generator``, so a step's
augmentation is a function of the step's seed (exact resume keeps working).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """Random flip, scale/crop and colour jitter (see the module doc); all off = identity."""

    flip: float = 0.5
    scale: tuple[float, float] = (0.5, 1.5)
    color: float = 0.2

    def __post_init__(self) -> None:
        low, high = (float(v) for v in self.scale)
        if not 0 < low <= high:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip must be a probability, got {self.flip}")
        if not 0 <= self.color < 1:
            raise ValueError(f"color must be in [0, 1), got {self.color}")
        object.__setattr__(self, "scale", (low, high))

    def apply(
        self,
        image: torch.Tensor,
        masks: torch.Tensor,
        max_side: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` 3×h×w float (0–255), ``masks`` M×h×w bool → the augmented pair (same M)."""
        if _uniform(generator) < self.flip:
            image, masks = image.flip(-1), masks.flip(-1)
        low, high = self.scale
        if (low, high) != (1.0, 1.0):
            factor = math.exp(
                math.log(low) + _uniform(generator) * (math.log(high) - math.log(low))
            )
            image, masks = _rescale(image, masks, factor)
            image, masks = _crop_to_fit(image, masks, max_side, generator)
        if self.color > 0:
            image = _jitter_colour(image, self.color, generator)
        return image, masks


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _rescale(
    image: torch.Tensor, masks: torch.Tensor, factor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = image.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    if size == (h, w):
        return image, masks
    image = F.interpolate(image[None], size, mode="bilinear", align_corners=False, antialias=True)
    if len(masks):
        soft = F.interpolate(
            masks[:, None].float(), size, mode="bilinear", align_corners=False, antialias=True
        )
        masks = soft[:, 0] >= 0.5
    else:
        masks = masks.new_zeros((0, *size))
    return image[0], masks


def _crop_to_fit(
    image: torch.Tensor, masks: torch.Tensor, max_side: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = image.shape[-2:]
    if max(h, w) <= max_side:
        return image, masks
    ch, cw = min(h, max_side), min(w, max_side)
    top = int(torch.randint(0, h - ch + 1, (), generator=generator))
    left = int(torch.randint(0, w - cw + 1, (), generator=generator))
    return image[:, top : top + ch, left : left + cw], masks[:, top : top + ch, left : left + cw]


def _jitter_colour(
    image: torch.Tensor, strength: float, generator: torch.Generator | None
) -> torch.Tensor:
    brightness, contrast, saturation = (
        1 + strength * (2 * torch.rand(3, generator=generator) - 1)
    ).tolist()
    image = image * brightness
    mean = image.mean()
    image = (image - mean) * contrast + mean
    grey = image.mean(0, keepdim=True)
    image = (image - grey) * saturation + grey
    return image.clamp(0, 255)
