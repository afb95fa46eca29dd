"""TinyViT image encoder (MobileSAM's ``image_encoder``): convolutional early stages, then
windowed attention, for CPUs.

The layout follows MobileSAM's TinyViT-5M so its checkpoints load with the same keys and
shapes: a stride-4 convolutional stem (``patch_embed``), stage 0 of MBConv blocks, stages 1–3
of TinyViT blocks (windowed attention with learned relative-offset biases, a depth-wise
convolution, an MLP), a ``PatchMerging`` between stages (stride 2 until ``output_stride`` is
reached, then 1: MobileSAM's stride 16 keeps its last stage at 1/16; stride 8 keeps the last
two stages at 1/8), an unused classification norm/head kept for the checkpoint's keys, and a
neck to ``out_chans`` channels. The output is ``B×out_chans×g×g`` with
``g = img_size / output_stride`` (16: the ViT encoder's).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.model.layers import LayerNorm2d

OUTPUT_STRIDES = (8, 16)


class ConvBN(nn.Sequential):
    """A bias-free convolution followed by batch norm (keys ``c.*``, ``bn.*``)."""

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel: int = 1,
        stride: int = 1,
        groups: int = 1,
        bn_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.add_module(
            "c",
            nn.Conv2d(in_chans, out_chans, kernel, stride, kernel // 2, groups=groups, bias=False),
        )
        self.add_module("bn", nn.BatchNorm2d(out_chans))
        nn.init.constant_(self.bn.weight, bn_weight)
        nn.init.zeros_(self.bn.bias)


class Stem(nn.Module):
    """Two stride-2 3×3 convolutions: image → ``dim`` channels at 1/4 resolution."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, dim // 2, 3, 2), nn.GELU(), ConvBN(dim // 2, dim, 3, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1×1 expand, 3×3 depth-wise, 1×1 project (zero-initialised BN)."""

    def __init__(self, dim: int, expand_ratio: float, drop_path: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.act1 = nn.GELU()
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.act2 = nn.GELU()
        self.conv3 = ConvBN(hidden, dim, bn_weight=0.0)
        self.act3 = nn.GELU()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return self.act3(x + self.drop_path(y))


class PatchMerging(nn.Module):
    """``dim`` → ``out_dim`` channels, resolution ÷ ``stride``; returns B×L×C tokens."""

    def __init__(self, resolution: tuple[int, int], dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.act = nn.GELU()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # tokens → B×C×H×W
            h, w = self.resolution
            x = x.view(len(x), h, w, -1).permute(0, 3, 1, 2)
        x = self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))
        return x.flatten(2).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or at rate 0)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class WindowAttention(nn.Module):
    """Multi-head attention inside a ``window``×``window`` window with a learned bias per
    head and per (|Δrow|, |Δcol|) offset (LeViT-style). Input B×N×C, N = window²."""

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        rows, cols = rows.flatten(), cols.flatten()
        offsets = (rows[:, None] - rows[None]).abs() * window + (cols[:, None] - cols[None]).abs()
        self.register_buffer("attention_bias_idxs", offsets, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.permute(0, 2, 1, 3).split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        attn = (q @ k.transpose(-2, -1)) * self.scale + bias
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class TinyViTBlock(nn.Module):
    """Windowed attention (zero-padded to whole windows), 3×3 depth-wise conv, MLP."""

    def __init__(
        self,
        dim: int,
        resolution: tuple[int, int],
        num_heads: int,
        window: int,
        mlp_ratio: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)
        self.mlp = nn.Sequential()
        self.mlp.add_module("norm", nn.LayerNorm(dim))
        self.mlp.add_module("fc1", nn.Linear(dim, int(dim * mlp_ratio)))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(int(dim * mlp_ratio), dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.resolution
        b, n, c = x.shape
        x = x + self.drop_path(self._windowed_attention(x.view(b, h, w, c)).reshape(b, n, c))
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, h, w)).view(b, c, n).transpose(1, 2)
        return x + self.drop_path(self.mlp(x))

    def _windowed_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = self.window
        pad_h, pad_w = (s - h % s) % s, (s - w % s) % s
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        ph, pw = h + pad_h, w + pad_w
        windows = x.view(b, ph // s, s, pw // s, s, c).transpose(2, 3).reshape(-1, s * s, c)
        out = self.attn(windows).view(b, ph // s, pw // s, s, s, c).transpose(2, 3)
        return out.reshape(b, ph, pw, c)[:, :h, :w]


class Stage(nn.Module):
    """A stage's blocks, then (except for the last stage) a merge into the next one."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class TinyViT(nn.Module):
    """The encoder. ``embed_dims``/``depths``/``num_heads``/``window_sizes``: one per stage
    (stage 0 is convolutional: its head count and window are unused)."""

    def __init__(
        self,
        img_size: int,
        embed_dims: Sequence[int],
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_sizes: Sequence[int],
        out_chans: int = 256,
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
        output_stride: int = 16,
    ) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
        if img_size % output_stride:
            raise ValueError(f"img_size must be a multiple of {output_stride}, got {img_size}")
        self.img_size = img_size
        self.output_stride = output_stride
        self.embed_dims, self.depths = tuple(embed_dims), tuple(depths)
        self.num_heads, self.window_sizes = tuple(num_heads), tuple(window_sizes)
        self.patch_embed = Stem(in_chans, embed_dims[0])
        count = sum(depths)
        rates = [drop_path_rate * i / max(count - 1, 1) for i in range(count)]  # linear rule
        side, reached = img_size // 4, 4  # the stem's stride
        last = len(embed_dims) - 1
        self.layers = nn.ModuleList()
        for stage in range(len(depths)):
            dim, resolution = embed_dims[stage], (side, side)
            stage_rates = rates[sum(depths[:stage]) : sum(depths[: stage + 1])]
            downsample = None
            if stage < last:
                # halve until the output stride is reached (MobileSAM: 1/16 before the last
                # stage, which merges at stride 1)
                stride = 2 if reached < output_stride else 1
                downsample = PatchMerging(resolution, dim, embed_dims[stage + 1], stride)
                next_side, reached = side // stride, reached * stride
            if stage == 0:
                blocks = [MBConv(dim, mbconv_expand_ratio, r) for r in stage_rates]
            else:
                heads, window = num_heads[stage], window_sizes[stage]
                blocks = [
                    TinyViTBlock(dim, resolution, heads, window, mlp_ratio, r) for r in stage_rates
                ]
            self.layers.append(Stage(blocks, downsample))
            if downsample is not None:
                side = next_side
        if reached != output_stride:
            raise ValueError(f"{len(depths)} stages cannot reach output stride {output_stride}")
        self.grid = side
        self.norm_head = nn.LayerNorm(embed_dims[-1])  # unused; kept for checkpoint keys
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers[0](self.patch_embed(x))
        for layer in self.layers[1:]:
            x = layer(x)
        b, _, c = x.shape
        x = x.view(b, self.grid, self.grid, c).permute(0, 3, 1, 2)
        return self.neck(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
