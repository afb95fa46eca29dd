"""The SAM wrapper: image encoder + prompt encoder + mask decoder, with pre/post-processing."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.model.image_encoder import ImageEncoderViT
from engine.model.mask_decoder import MaskDecoder
from engine.model.prompt_encoder import PromptEncoder

PIXEL_MEAN = (123.675, 116.28, 103.53)  # RGB, 0–255
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """Segment Anything: predicts object masks from an image and prompts.

    ``pixel_mean``/``pixel_std`` are non-persistent buffers (official checkpoints do not hold
    them), so the state dict has exactly the ``image_encoder.``, ``prompt_encoder.`` and
    ``mask_decoder.`` keys of the official model.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: ImageEncoderViT,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
        pixel_std: tuple[float, float, float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``(…)×3×h×w`` pixels (0–255) and zero-pad bottom/right to ``S×S``."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        size = self.image_encoder.img_size
        if h > size or w > size:
            raise ValueError(f"image of size {(h, w)} exceeds the model input size {size}")
        return F.pad(x, (0, size - w, 0, size - h))

    def postprocess_masks(
        self,
        masks: torch.Tensor,
        input_size: tuple[int, ...],
        original_size: tuple[int, ...],
    ) -> torch.Tensor:
        """Low-res logits ``B×C×L×L`` → ``B×C×H×W`` at the original image size.

        Upsamples to the padded input size, crops the padding (``input_size`` is the resized
        image's ``(h, w)``) and resizes to ``original_size`` ``(H, W)``, bilinearly both times.
        """
        size = self.image_encoder.img_size
        masks = F.interpolate(masks, (size, size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    @torch.no_grad()
    def forward(
        self, batched_input: list[dict[str, Any]], multimask_output: bool
    ) -> list[dict[str, torch.Tensor]]:
        """End-to-end prediction with the official ``Sam.forward`` contract.

        Each input dict holds ``image`` (3×h×w, already resized), ``original_size`` (H, W)
        and optionally ``point_coords`` B×N×2, ``point_labels`` B×N, ``boxes`` B×4 (XYXY)
        and ``mask_inputs`` B×1×L×L, all in the resized frame. Returns per image ``masks``
        (bool B×C×H×W), ``iou_predictions`` (B×C) and ``low_res_logits`` (B×C×L×L).
        """
        images = torch.stack([self.preprocess(x["image"]) for x in batched_input], dim=0)
        embeddings = self.image_encoder(images)
        image_pe = self.prompt_encoder.get_dense_pe()
        outputs = []
        for record, embedding in zip(batched_input, embeddings):
            points = None
            if "point_coords" in record:
                points = (record["point_coords"], record["point_labels"])
            sparse, dense = self.prompt_encoder(
                points=points, boxes=record.get("boxes"), masks=record.get("mask_inputs")
            )
            low_res, iou = self.mask_decoder(
                image_embeddings=embedding[None],
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
            masks = self.postprocess_masks(
                low_res, record["image"].shape[-2:], record["original_size"]
            )
            outputs.append(
                {
                    "masks": masks > self.mask_threshold,
                    "iou_predictions": iou,
                    "low_res_logits": low_res,
                }
            )
        return outputs
