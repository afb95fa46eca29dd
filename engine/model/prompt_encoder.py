"""Prompt encoder: points, boxes and low-res masks → sparse and dense prompt embeddings.

Coordinates are ``(x, y)`` pixels in the model's input frame (after ``ResizeLongestSide``);
boxes are XYXY. Point labels: 1 foreground, 0 background, -1 padding ("not a point").
"""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.model.layers import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier positional encoding: ``[sin(2π·v·G), cos(2π·v·G)]`` with ``v ∈ [-1, 1]²``.

    ``G`` is a fixed ``2×num_pos_feats`` Gaussian matrix, stored in the state dict.
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None) -> None:
        super().__init__()
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats))
        )

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """``…×2`` coordinates in ``[0, 1]`` → ``…×(2·num_pos_feats)`` (always float32).

        Kept out of bf16 autocast: phases reach ~±20 rad, too coarse in bfloat16.
        """
        with torch.autocast(coords.device.type, enabled=False):
            gaussian = self.positional_encoding_gaussian_matrix.float()
            proj = 2 * math.pi * ((2 * coords.float() - 1) @ gaussian)
            return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of the centres of an ``h×w`` grid → ``C×h×w``."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack(
            [xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1
        )  # h×w×(x, y)
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(
        self, coords_input: torch.Tensor, image_size: tuple[int, int]
    ) -> torch.Tensor:
        """``B×N×2`` pixel coordinates ``(x, y)`` in an image of size ``(H, W)`` → ``B×N×C``."""
        h, w = image_size
        coords = torch.stack([coords_input[..., 0] / w, coords_input[..., 1] / h], dim=-1)
        return self._pe_encoding(coords.to(torch.float))


class PromptEncoder(nn.Module):
    """Embeds prompts for the mask decoder.

    Args:
        embed_dim: prompt embedding width (the decoder's transformer width).
        image_embedding_size: ``(h, w)`` of the image embedding grid.
        input_image_size: ``(H, W)`` of the padded model input.
        mask_in_chans: hidden channels of the mask-downscaling path.
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right
        self.num_point_embeddings = 4
        self.point_embeddings = nn.ModuleList(
            nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)
        )
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        h, w = self.image_embedding_size
        self.mask_input_size = (4 * h, 4 * w)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Positional encoding of the image-embedding grid, ``1×embed_dim×h×w``."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # pixel centres
        if pad:  # without a box, a "not a point" token stands in for the missing corners
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), -1)], dim=1)
        pe = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        pe = pe + (labels == 0) * self.point_embeddings[0].weight
        pe = pe + (labels == 1) * self.point_embeddings[1].weight
        return torch.where(labels == -1, self.not_a_point_embed.weight.to(pe.dtype), pe)

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes + 0.5).reshape(-1, 2, 2)  # B×(top-left, bottom-right)×(x, y)
        pe = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_embed = torch.cat(
            [self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0
        )
        return pe + corner_embed

    def _get_batch_size(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def _get_device(self) -> torch.device:
        return self.point_embeddings[0].weight.device

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts.

        Args:
            points: ``(coords B×N×2, labels B×N)`` or None.
            boxes: ``B×4`` XYXY or None.
            masks: ``B×1×4h×4w`` low-res mask logits or None.

        Returns:
            sparse ``B×T×embed_dim`` (T = points (+1 pad) + 2 per box) and dense
            ``B×embed_dim×h×w``.
        """
        bs = self._get_batch_size(points, boxes, masks)
        parts = []
        if points is not None:
            coords, labels = points
            parts.append(self._embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes))
        if parts:
            sparse = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        else:
            sparse = torch.empty((bs, 0, self.embed_dim), device=self._get_device())
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense
