"""The official ``segment-anything`` package as a test peer, built from our preset numbers.

``build_official(name_or_preset)`` builds the official ``Sam`` from the same numbers as our
``build_sam`` (the official builder hard-codes most of them, so this uses its classes
directly); ``official_from_ours(model)`` builds the twin of one of our models and loads our
state dict into it strictly. Imports ``conftest`` so torchvision stand-ins are in place also
outside pytest (benchmarks).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import conftest  # noqa: F401  (installs the torchvision stand-ins the official package needs)
import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from engine.model.presets import preset_from_model, resolve_preset


def build_official(name_or_preset: str | Mapping[str, Any]) -> Sam:
    """The official ``Sam`` for a preset name or dict (random init, eval mode)."""
    p = resolve_preset(name_or_preset)
    grid = p["image_size"] // p["patch_size"]
    dim = p["prompt_embed_dim"]
    model = Sam(
        image_encoder=ImageEncoderViT(
            depth=p["encoder_depth"],
            embed_dim=p["encoder_embed_dim"],
            img_size=p["image_size"],
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=p["encoder_num_heads"],
            patch_size=p["patch_size"],
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(p["encoder_global_attn_indexes"]),
            window_size=p["window_size"],
            out_chans=dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(p["image_size"], p["image_size"]),
            mask_in_chans=p["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=p["decoder_depth"],
                embedding_dim=dim,
                mlp_dim=p["decoder_mlp_dim"],
                num_heads=p["decoder_num_heads"],
            ),
            transformer_dim=dim,
            iou_head_depth=p["iou_head_depth"],
            iou_head_hidden_dim=p["iou_head_hidden_dim"],
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return model.eval()


def official_from_ours(model: torch.nn.Module) -> Sam:
    """The official twin of one of our models, holding a copy of its weights (strict load).

    Built on the meta device and filled by ``load_state_dict(assign=True)``: no random init.
    """
    with torch.device("meta"):
        twin = build_official(preset_from_model(model))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    twin.load_state_dict(state, strict=True, assign=True)
    return twin.to(model.device).eval()


def scaled_random_weights_(model: torch.nn.Module, seed: int = 0, gain: float = 1.5) -> None:
    """Overwrite every parameter with seeded random values, in place.

    Default init gives logits of ~0.1; with these weights logits are O(1–10), so a 1e-4
    comparison means something. Weight matrices get N(0, gain²/fan_in); norms 1 + N(0, 0.2²);
    biases N(0, 0.2²); embeddings, tokens and (relative) position tables N(0, 0.5²) so that
    the zero-initialised ones take part too.
    """
    g = torch.Generator().manual_seed(seed)
    tables = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g).to(p.device)
            is_table = name in tables or name.endswith(("pos_embed", "rel_pos_h", "rel_pos_w"))
            if p.ndim >= 2 and not is_table:
                transposed = "output_upscaling" in name  # ConvTranspose2d: in_chans first
                fan_in = p.shape[0] if transposed else p[0].numel()
                p.copy_(noise * gain / fan_in**0.5)
            elif name.endswith("bias"):
                p.copy_(0.2 * noise)
            elif p.ndim == 1:
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.5 * noise)
