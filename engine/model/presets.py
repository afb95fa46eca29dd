"""Model sizes as a table of plain numbers, and the one function that builds a SAM from them.

Two encoder families share the prompt encoder and mask decoder:

- ViT presets (``vit_h/l/b``, ``tiny``): keys use the official builder's names
  (``encoder_embed_dim``, ``encoder_depth``, ``encoder_num_heads``,
  ``encoder_global_attn_indexes``) plus the numbers the official builder hard-codes; every one
  builds with the official ``segment-anything`` classes too.
- TinyViT presets (``"encoder": "tiny_vit"``; ``mobile_sam``, ``mobile``): per-stage lists
  (``encoder_embed_dims``, ``encoder_depths``, ``encoder_num_heads``,
  ``encoder_window_sizes``). ``mobile_sam`` is MobileSAM's TinyViT-5M at 1024 px (its
  checkpoints load); ``mobile`` is the CPU-sized one this project trains from scratch.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import torch
from torch import nn

from engine.model.image_encoder import ImageEncoderViT
from engine.model.mask_decoder import MaskDecoder
from engine.model.prompt_encoder import PromptEncoder
from engine.model.sam import Sam
from engine.model.tiny_vit import TinyViT
from engine.model.transformer import TwoWayTransformer

_OFFICIAL_COMMON = {
    "image_size": 1024,
    "patch_size": 16,
    "window_size": 14,
    "prompt_embed_dim": 256,
    "mask_in_chans": 16,
    "decoder_depth": 2,
    "decoder_mlp_dim": 2048,
    "decoder_num_heads": 8,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 256,
}

PRESETS: dict[str, dict[str, Any]] = {
    "vit_h": {
        "encoder_embed_dim": 1280,
        "encoder_depth": 32,
        "encoder_num_heads": 16,
        "encoder_global_attn_indexes": (7, 15, 23, 31),
        **_OFFICIAL_COMMON,
    },
    "vit_l": {
        "encoder_embed_dim": 1024,
        "encoder_depth": 24,
        "encoder_num_heads": 16,
        "encoder_global_attn_indexes": (5, 11, 17, 23),
        **_OFFICIAL_COMMON,
    },
    "vit_b": {
        "encoder_embed_dim": 768,
        "encoder_depth": 12,
        "encoder_num_heads": 12,
        "encoder_global_attn_indexes": (2, 5, 8, 11),
        **_OFFICIAL_COMMON,
    },
    # CPU-sized: 256-px input → 16×16 embedding grid, 64×64 low-res masks, ~4 M parameters.
    "tiny": {
        "encoder_embed_dim": 192,
        "encoder_depth": 6,
        "encoder_num_heads": 3,
        "encoder_global_attn_indexes": (2, 5),
        "image_size": 256,
        "patch_size": 16,
        "window_size": 8,
        "prompt_embed_dim": 128,
        "mask_in_chans": 16,
        "decoder_depth": 2,
        "decoder_mlp_dim": 1024,
        "decoder_num_heads": 4,
        "iou_head_depth": 3,
        "iou_head_hidden_dim": 128,
    },
}

VIT_PRESETS = tuple(PRESETS)
PRESET_KEYS = tuple(PRESETS["vit_b"])

_MOBILE_SAM_DECODER = {
    k: v for k, v in _OFFICIAL_COMMON.items() if k not in ("patch_size", "window_size")
}

PRESETS.update(
    {
        # MobileSAM (Zhang et al. 2023): TinyViT-5M distilled from ViT-H, official decoder.
        "mobile_sam": {
            "encoder": "tiny_vit",
            "encoder_embed_dims": (64, 128, 160, 320),
            "encoder_depths": (2, 2, 6, 2),
            "encoder_num_heads": (2, 4, 5, 10),
            "encoder_window_sizes": (7, 7, 14, 7),
            "encoder_num_classes": 1000,
            "encoder_output_stride": 16,
            **_MOBILE_SAM_DECODER,
        },
        # CPU-sized TinyViT: see docs/training.md for the measured choice of sizes.
        "mobile": {
            "encoder": "tiny_vit",
            "encoder_embed_dims": (32, 64, 128, 160),
            "encoder_depths": (1, 1, 2, 1),
            "encoder_num_heads": (1, 2, 4, 5),
            "encoder_window_sizes": (8, 8, 8, 8),
            "encoder_num_classes": 0,
            "encoder_output_stride": 16,
            "image_size": 256,
            "prompt_embed_dim": 128,
            "mask_in_chans": 16,
            "decoder_depth": 2,
            "decoder_mlp_dim": 1024,
            "decoder_num_heads": 4,
            "iou_head_depth": 3,
            "iou_head_hidden_dim": 128,
        },
    }
)
# ``mobile`` at output stride 8: a 32×32 embedding and 128×128 low-res masks at the same input
PRESETS["mobile_s8"] = {**PRESETS["mobile"], "encoder_output_stride": 8}
TINY_VIT_KEYS = tuple(PRESETS["mobile_sam"])
_LIST_KEYS = ("encoder_embed_dims", "encoder_depths", "encoder_num_heads", "encoder_window_sizes")


def is_tiny_vit(preset: Mapping[str, Any]) -> bool:
    """Whether a preset dict describes a TinyViT encoder (else a ViT)."""
    return preset.get("encoder") == "tiny_vit"


def resolve_preset(name_or_preset: str | Mapping[str, Any]) -> dict[str, Any]:
    """A preset name from :data:`PRESETS`, or a dict with exactly :data:`PRESET_KEYS` (ViT)
    or :data:`TINY_VIT_KEYS` (``"encoder": "tiny_vit"``)."""
    if isinstance(name_or_preset, str):
        if name_or_preset not in PRESETS:
            raise ValueError(f"unknown preset {name_or_preset!r}; choose from {sorted(PRESETS)}")
        return dict(PRESETS[name_or_preset])
    if not isinstance(name_or_preset, Mapping):
        raise TypeError(f"expected a preset name or dict, got {type(name_or_preset).__name__}")
    preset = dict(name_or_preset)
    keys = TINY_VIT_KEYS if is_tiny_vit(preset) else PRESET_KEYS
    missing = sorted(set(keys) - set(preset))
    unknown = sorted(set(preset) - set(keys))
    if missing or unknown:
        raise ValueError(f"preset dict: missing keys {missing}, unknown keys {unknown}")
    if is_tiny_vit(preset):
        for key in _LIST_KEYS:
            preset[key] = tuple(int(v) for v in preset[key])
        if len({len(preset[key]) for key in _LIST_KEYS}) != 1:
            raise ValueError(f"preset dict: {', '.join(_LIST_KEYS)} need one entry per stage")
    else:
        preset["encoder_global_attn_indexes"] = tuple(preset["encoder_global_attn_indexes"])
    return preset


def _image_encoder(p: Mapping[str, Any], drop_path_rate: float) -> nn.Module:
    if is_tiny_vit(p):
        return TinyViT(
            img_size=p["image_size"],
            embed_dims=p["encoder_embed_dims"],
            depths=p["encoder_depths"],
            num_heads=p["encoder_num_heads"],
            window_sizes=p["encoder_window_sizes"],
            out_chans=p["prompt_embed_dim"],
            num_classes=p["encoder_num_classes"],
            drop_path_rate=drop_path_rate,
            output_stride=p["encoder_output_stride"],
        )
    return ImageEncoderViT(
        img_size=p["image_size"],
        patch_size=p["patch_size"],
        embed_dim=p["encoder_embed_dim"],
        depth=p["encoder_depth"],
        num_heads=p["encoder_num_heads"],
        mlp_ratio=4.0,
        out_chans=p["prompt_embed_dim"],
        qkv_bias=True,
        layer_norm_eps=1e-6,
        use_rel_pos=True,
        window_size=p["window_size"],
        global_attn_indexes=p["encoder_global_attn_indexes"],
        drop_path_rate=drop_path_rate,
    )


def construct_sam(preset: Mapping[str, Any], drop_path_rate: float = 0.0) -> Sam:
    """A randomly initialised :class:`Sam` from a resolved preset dict (train mode)."""
    p = resolve_preset(preset)
    stride = p["encoder_output_stride"] if is_tiny_vit(p) else p["patch_size"]
    grid = p["image_size"] // stride
    dim = p["prompt_embed_dim"]
    return Sam(
        image_encoder=_image_encoder(p, drop_path_rate),
        prompt_encoder=PromptEncoder(
            embed_dim=dim,
            image_embedding_size=(grid, grid),
            input_image_size=(p["image_size"], p["image_size"]),
            mask_in_chans=p["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=dim,
            transformer=TwoWayTransformer(
                depth=p["decoder_depth"],
                embedding_dim=dim,
                num_heads=p["decoder_num_heads"],
                mlp_dim=p["decoder_mlp_dim"],
            ),
            num_multimask_outputs=3,
            iou_head_depth=p["iou_head_depth"],
            iou_head_hidden_dim=p["iou_head_hidden_dim"],
        ),
    )


def preset_from_model(model: Sam) -> dict[str, Any]:
    """Read the preset numbers back from a built model's modules."""
    enc = model.image_encoder
    dec = model.mask_decoder
    common = {
        "image_size": enc.img_size,
        "prompt_embed_dim": model.prompt_encoder.embed_dim,
        "mask_in_chans": model.prompt_encoder.mask_downscaling[3].out_channels,
        "decoder_depth": dec.transformer.depth,
        "decoder_mlp_dim": dec.transformer.mlp_dim,
        "decoder_num_heads": dec.transformer.num_heads,
        "iou_head_depth": dec.iou_prediction_head.num_layers,
        "iou_head_hidden_dim": dec.iou_prediction_head.layers[0].out_features,
    }
    if isinstance(enc, TinyViT):
        return {
            "encoder": "tiny_vit",
            "encoder_embed_dims": enc.embed_dims,
            "encoder_depths": tuple(len(layer.blocks) for layer in enc.layers),
            "encoder_num_heads": enc.num_heads,
            "encoder_window_sizes": enc.window_sizes,
            "encoder_num_classes": enc.head.out_features if isinstance(enc.head, nn.Linear) else 0,
            "encoder_output_stride": enc.output_stride,
            **common,
        }
    blocks = list(enc.blocks)
    return {
        "encoder_embed_dim": enc.patch_embed.proj.out_channels,
        "encoder_depth": len(blocks),
        "encoder_num_heads": blocks[0].attn.num_heads,
        "encoder_global_attn_indexes": tuple(i for i, b in enumerate(blocks) if b.window_size == 0),
        "image_size": enc.img_size,
        "patch_size": enc.patch_embed.proj.kernel_size[0],
        "window_size": max(b.window_size for b in blocks),
        **{k: v for k, v in common.items() if k != "image_size"},
    }


def preset_name(model: Sam) -> str | None:
    """The :data:`PRESETS` name whose numbers built ``model``, or None for a custom model."""
    numbers = preset_from_model(model)
    return next((name for name, p in PRESETS.items() if p == numbers), None)


@cache
def preset_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """State-dict key → shape for a preset (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        model = construct_sam(PRESETS[name])
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def matching_presets(shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Names of the presets whose state-dict keys and shapes equal ``shapes`` exactly."""
    shapes = {k: tuple(v) for k, v in shapes.items()}
    return [name for name in PRESETS if preset_shapes(name) == shapes]
