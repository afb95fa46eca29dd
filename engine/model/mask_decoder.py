"""Mask decoder: image embedding + prompt embeddings → mask logits and predicted IoU.

Output tokens are one IoU token and ``num_multimask_outputs + 1`` mask tokens. Token 0's
mask answers unambiguous prompts; tokens 1.. give the ambiguity masks (multimask output).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.model.layers import MLP, LayerNorm2d
from engine.model.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Two-way-transformer mask decoder with hypernetwork mask heads and an IoU head.

    Args:
        transformer_dim: token width C (equals the prompt embedding width).
        transformer: the :class:`TwoWayTransformer` to run.
        num_multimask_outputs: masks returned when ``multimask_output`` is True.
        activation: activation of the ×4 upscaling path.
        iou_head_depth, iou_head_hidden_dim: the IoU-prediction MLP.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        num_multimask_outputs: int = 3,
        activation: type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict masks for B prompts.

        Args:
            image_embeddings: ``1×C×h×w`` (shared by all prompts) or ``B×C×h×w`` (one per
                prompt).
            image_pe: ``1×C×h×w`` positional encoding of the grid.
            sparse_prompt_embeddings: ``B×T×C``.
            dense_prompt_embeddings: ``B×C×h×w``.
            multimask_output: return the ambiguity masks instead of the single mask.

        Returns:
            mask logits ``B×M×4h×4w`` and IoU predictions ``B×M`` (M = 3 or 1).
        """
        wanted = (
            slice(1, self.num_mask_tokens) if multimask_output else slice(0, 1)
        )  # which mask tokens to return
        return self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            wanted,
        )

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        wanted: slice = slice(None),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks and IoU for the mask tokens selected by ``wanted`` (all by default)."""
        b = sparse_prompt_embeddings.shape[0]
        if image_embeddings.shape[0] not in (1, b):
            raise ValueError(
                f"image_embeddings has batch {image_embeddings.shape[0]}; expected 1 or the "
                f"number of prompts ({b})"
            )
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.to(sparse_prompt_embeddings.dtype)
        tokens = torch.cat([output_tokens.expand(b, -1, -1), sparse_prompt_embeddings], dim=1)

        # broadcasting adds the per-prompt dense embedding without copying the image first
        src = (image_embeddings + dense_prompt_embeddings).expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        # Without autograd only the wanted masks are computed. With it, all are (and then
        # sliced), so every head gets a gradient — zero for unused ones, as in the official
        # model — which DDP and optimizers expect.
        computed, keep = range(self.num_mask_tokens), wanted
        if not torch.is_grad_enabled():
            computed, keep = computed[wanted], slice(None)
        hyper_in = torch.stack(
            [self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in computed], dim=1
        )  # B×M×(C/8)
        _, c8, h4, w4 = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c8, h4 * w4)).view(b, -1, h4, w4)
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks[:, keep], iou_pred[:, wanted]
