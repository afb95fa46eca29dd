"""Training checkpoints: one plain dict, written atomically, loaded with ``weights_only=True``.

Keys: ``"model"`` (state dict in the official key format: ``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``), ``"optimizer"``, ``"scheduler"`` (the lr schedule's
arguments and its step), ``"step"`` (optimizer steps done), ``"rng"`` (torch RNG states),
``"options"`` (the ``TrainOptions`` as a dict) and ``"config"`` (the resolved job config, or
``{}``). ``engine.model``'s loader accepts such a dict (it reads ``"model"``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "sa-engine-train/1"


def unwrap(model: nn.Module) -> nn.Module:
    """The ``Sam`` inside DDP/``InteractiveStep`` wrappers (keys without ``module.``)."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "sam"):
            model = model.sam
        else:
            return model


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a training checkpoint safely; raises ``ValueError`` if it is not one."""
    state = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(f"{path} is not a training checkpoint (no 'model'/'step' entries)")
    return state


def model_state(state: dict) -> dict[str, torch.Tensor]:
    """The model weights of a checkpoint dict, or the dict itself if it is a bare state dict."""
    inner = state.get("model", state)
    if not isinstance(inner, dict):
        raise ValueError("checkpoint 'model' entry is not a state dict")
    return inner
