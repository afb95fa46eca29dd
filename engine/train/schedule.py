"""Learning-rate schedule and optimizer parameter groups (FACTS.md, "Training recipe").

``lr_at`` is a pure function of the step: linear warm-up, then step decay (÷10 at each decay
step). ``param_groups`` gives AdamW groups with layer-wise lr decay for the image encoder
(block ``i`` of ``depth`` gets ``decay ** (depth + 1 - (i + 1))``; the patch embedding and
absolute position embedding get ``decay ** (depth + 1)``; the neck, prompt encoder and mask
decoder get 1) and no weight decay on biases, norms and position embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NO_DECAY_NAMES = ("pos_embed", "rel_pos", "attention_biases")


def lr_at(
    step: int,
    base_lr: float,
    warmup_steps: int,
    decay_steps: Sequence[int] = (),
    decay_factor: float = 0.1,
) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    Warm-up: ``base_lr · (step + 1) / warmup_steps`` for ``step < warmup_steps``; then
    ``base_lr · decay_factor ** (number of decay steps ≤ step)``.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decays = sum(1 for s in decay_steps if step >= s)
    return base_lr * decay_factor**decays


def encoder_layer_id(name: str, depth: int) -> int:
    """Layer index of an image-encoder parameter name (relative to ``image_encoder.``).

    ``patch_embed``/``pos_embed`` → 0, ``blocks.i`` → ``i + 1``, anything else (neck) →
    ``depth + 1``.
    """
    if name.startswith(("patch_embed", "pos_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float = 1.0,
) -> list[dict]:
    """AdamW parameter groups for a ``Sam`` module (official attribute names).

    Each group has ``params``, ``weight_decay`` and ``lr_scale`` (multiply the scheduled lr
    by it). Frozen parameters (``requires_grad=False``) are left out.
    """
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    encoder = getattr(model, "image_encoder", None)
    depth = len(encoder.blocks) if encoder is not None and hasattr(encoder, "blocks") else 0
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = 1.0
        if name.startswith("image_encoder."):
            layer = encoder_layer_id(name[len("image_encoder.") :], depth)
            scale = layer_decay ** (depth + 1 - layer)
        no_decay = param.ndim <= 1 or any(key in name for key in NO_DECAY_NAMES)
        decay = 0.0 if no_decay else weight_decay
        groups.setdefault((scale, decay), []).append(param)
    return [
        {"params": params, "weight_decay": decay, "lr_scale": scale}
        for (scale, decay), params in sorted(groups.items(), key=lambda kv: kv[0])
    ]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to ``lr × group["lr_scale"]``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
