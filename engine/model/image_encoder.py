"""The ViT image encoder: patches → windowed/global attention blocks → neck.

Input ``B×3×S×S`` (normalised, padded; ``S = img_size``), output ``B×out_chans×g×g`` with
``g = S / patch_size``. Tokens travel channels-last (``B×g×g×C``) between blocks. Attention
goes through ``scaled_dot_product_attention`` with the decomposed relative-position bias
passed as ``attn_mask``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from engine.model.layers import DropPath, LayerNorm2d, MLPBlock

# Upper bound for one attention-mask chunk (bytes). Global attention at 64×64 tokens builds a
# 4096×4096 bias per head; queries are processed in row bands so the mask never exceeds this.
MASK_CHUNK_BYTES = 256 * 1024 * 1024


class PatchEmbed(nn.Module):
    """Non-overlapping patches → ``B×h×w×embed_dim`` (one strided convolution)."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One copy to channels-last memory here; otherwise every block below would run on a
        # channels-first layout and every linear layer would copy its input.
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


@functools.cache
def _rel_index(q_size: int, k_size: int) -> torch.Tensor:
    """``q_size×k_size`` indices into a relative-position table (the shorter axis stretched).

    Cached, so built as an ordinary tensor even when first asked for in inference mode
    (a cached inference tensor would break later training).
    """
    q_scale = max(k_size / q_size, 1.0)
    k_scale = max(q_size / k_size, 1.0)
    with torch.inference_mode(False):
        q_coords = torch.arange(q_size, device="cpu")[:, None] * q_scale
        k_coords = torch.arange(k_size, device="cpu")[None, :] * k_scale
        return (q_coords - k_coords + (k_size - 1) * k_scale).long()


def rel_pos_table(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative-position embeddings for every (query, key) pair along one axis.

    ``rel_pos`` is ``L×C`` (``L = 2·max(q, k) − 1``; linearly resampled if it is not);
    returns ``q_size×k_size×C``.
    """
    length = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != length:
        rel_pos = F.interpolate(rel_pos.T[None], size=length, mode="linear")[0].T
    return rel_pos[_rel_index(q_size, k_size).to(rel_pos.device)]


class Attention(nn.Module):
    """Multi-head self-attention over a ``B×H×W×C`` token grid, with optional rel-pos bias."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("input_size is required when use_rel_pos=True")
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
            if not rel_pos_zero_init:
                nn.init.trunc_normal_(self.rel_pos_h, std=0.02)
                nn.init.trunc_normal_(self.rel_pos_w, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        # B×N×3×heads×d → three B×heads×N×d views
        q, k, v = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            out = self._attend_with_rel_pos(q, k, v, (H, W))
        return self.proj(out.transpose(1, 2).reshape(B, H, W, C))

    def _attend_with_rel_pos(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int]
    ) -> torch.Tensor:
        """Attention with the decomposed bias ``q·R_h[i_h−j_h] + q·R_w[i_w−j_w]`` as the mask."""
        B, heads, N, d = q.shape
        H, W = grid
        table_h = rel_pos_table(H, H, self.rel_pos_h).to(q.dtype)  # H×H×d
        table_w = rel_pos_table(W, W, self.rel_pos_w).to(q.dtype)  # W×W×d
        q_grid = q.reshape(B, heads, H, W, d)
        bias_h = torch.einsum("bnhwc,hkc->bnhwk", q_grid, table_h)  # B×heads×H×W×Hk
        bias_w = torch.einsum("bnhwc,wkc->bnhwk", q_grid, table_w)  # B×heads×H×W×Wk
        # Query rows go in bands so the mask stays under MASK_CHUNK_BYTES. Without autograd
        # one buffer is reused and written in place (a fresh broadcast sum is laid out
        # differently and costs a second, reshaping copy).
        max_rows = max(1, MASK_CHUNK_BYTES // (B * heads * W * N * q.element_size()))
        n_bands = -(-H // max_rows)
        rows = -(-H // n_bands)
        in_place = not (torch.is_grad_enabled() and (bias_h.requires_grad or q.requires_grad))
        buffer = None
        outs = []
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            rel_h = bias_h[:, :, r0:r1, :, :, None]
            rel_w = bias_w[:, :, r0:r1, :, None, :]
            if not in_place:
                mask = (rel_h + rel_w).reshape(B, heads, (r1 - r0) * W, N)
            else:
                if buffer is None or buffer.shape[2] != r1 - r0:
                    buffer = q.new_empty((B, heads, r1 - r0, W, H, W))
                mask = torch.add(rel_h, rel_w, out=buffer).view(B, heads, (r1 - r0) * W, N)
            q_rows = q[:, :, r0 * W : r1 * W]
            outs.append(F.scaled_dot_product_attention(q_rows, k, v, mask, scale=self.scale))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``B×H×W×C`` → ``(B·nW)×ws×ws×C`` windows, zero-padding bottom/right; returns (Hp, Wp)."""
    B, H, W, C = x.shape
    pad_h = -H % window_size
    pad_w = -W % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, C)
    return windows, (Hp, Wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: windows → ``B×H×W×C`` with the padding removed."""
    Hp, Wp = pad_hw
    H, W = hw
    nh, nw = Hp // window_size, Wp // window_size
    B = windows.shape[0] // (nh * nw)
    x = windows.view(B, nh, nw, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :]
    return x


class Block(nn.Module):
    """Pre-norm transformer block; ``window_size == 0`` means global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        layer_norm_eps: float = 1e-6,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        input_size: tuple[int, int] | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.norm2 = nn.LayerNorm(dim, eps=layer_norm_eps)
        self.mlp = MLPBlock(embedding_dim=dim, mlp_dim=int(dim * mlp_ratio), act=nn.GELU)
        self.drop_path = DropPath(drop_path)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        if self.window_size > 0:
            H, W = h.shape[1], h.shape[2]
            h, pad_hw = window_partition(h, self.window_size)
            h = window_unpartition(self.attn(h), self.window_size, pad_hw, (H, W))
        else:
            h = self.attn(h)
        x = x + self.drop_path(h)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ImageEncoderViT(nn.Module):
    """SAM's ViT backbone (ViTDet-style): ``B×3×S×S`` → ``B×out_chans×(S/p)×(S/p)``.

    Blocks listed in ``global_attn_indexes`` attend globally; the others attend within
    ``window_size×window_size`` windows. ``drop_path_rate`` is the stochastic-depth rate of
    the last block, growing linearly from 0 at the first (training only).
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        layer_norm_eps: float = 1e-6,
        use_abs_pos: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        global_attn_indexes: tuple[int, ...] = (),
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"patch_size={patch_size} must divide img_size={img_size}")
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: nn.Parameter | None = None
        if use_abs_pos:
            self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                layer_norm_eps=layer_norm_eps,
                use_rel_pos=use_rel_pos,
                rel_pos_zero_init=rel_pos_zero_init,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
                drop_path=rates[i],
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2))
