"""MobileSAM's own code (the ``mobilesam-mirror`` package, no weights) as a test peer.

Its TinyViT imports three helpers from ``timm``, whose wheels need torchvision (which does not
import beside the CPU torch build here). When ``timm`` cannot be imported, small independent
stand-ins are installed under ``sys.modules["timm…"]`` — in tests only.
"""

from __future__ import annotations

import sys
import types

import conftest  # noqa: F401  (torchvision stand-ins: mobile_sam's AMG imports torchvision)
import torch


def _install_timm_stand_ins() -> None:
    try:
        import timm.models.layers  # noqa: F401

        return
    except Exception:  # noqa: BLE001 - any import failure: use the stand-ins
        pass

    class DropPath(torch.nn.Module):
        def __init__(self, drop_prob: float | None = None) -> None:
            super().__init__()
            self.drop_prob = drop_prob or 0.0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training or self.drop_prob == 0.0:
                return x
            keep = 1 - self.drop_prob
            return x * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep) / keep

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath
    layers.to_2tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn
    models = types.ModuleType("timm.models")
    models.layers, models.registry = layers, registry
    timm = types.ModuleType("timm")
    timm.models = models
    sys.modules.update(
        {
            "timm": timm,
            "timm.models": models,
            "timm.models.layers": layers,
            "timm.models.registry": registry,
        }
    )


_install_timm_stand_ins()

from mobile_sam import SamPredictor as MobileSamPredictor  # noqa: E402
from mobile_sam import build_sam_vit_t  # noqa: E402

__all__ = ["MobileSamPredictor", "build_mobile_sam", "mobile_sam_from_ours"]


def build_mobile_sam() -> torch.nn.Module:
    """MobileSAM's own ``build_sam_vit_t()`` (random init, eval mode)."""
    return build_sam_vit_t()


def mobile_sam_from_ours(model: torch.nn.Module) -> torch.nn.Module:
    """MobileSAM's model holding a copy of our ``mobile_sam`` model's weights (strict load)."""
    twin = build_mobile_sam()
    twin.load_state_dict({k: v.detach().clone() for k, v in model.state_dict().items()})
    return twin.eval()
