"""Safe, strict checkpoint loading and saving in the official SAM format.

A checkpoint is a bare state dict (``image_encoder.*``, ``prompt_encoder.*``,
``mask_decoder.*`` → tensors), or a dict holding one under ``"model"`` (training
checkpoints). Files are read with ``torch.load(weights_only=True)``: a pickle that would
build any other object is refused without running its code.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from engine.model.presets import matching_presets, preset_from_model, preset_name

_SHOW = 6  # keys listed per category in error messages


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely and return its state dict (on the CPU).

    Raises ValueError when the file holds a non-tensor pickle, or no ``str → Tensor``
    mapping (either at the top level or under ``"model"``).
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: refused to load — the file is not a plain tensor checkpoint "
            f"(weights_only load failed: {_unpickling_detail(err)})"
        ) from err
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict, found {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"{path}: state dict entries that are not tensors: {_listing(bad)}")
    return dict(obj)


def load_checkpoint(path: str | Path, model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Read ``path`` safely; if ``model`` is given, load it strictly into the model.

    Strict means identical key sets and shapes. A mismatch raises ValueError naming the
    missing, unexpected and mis-shaped keys, the model's preset, and the preset(s) whose
    shapes would fit the checkpoint. Returns the state dict.
    """
    state = read_state_dict(path)
    if model is not None:
        check_state_dict(model, state, source=str(path))
        model.load_state_dict(state, strict=True)
    return state


def check_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "state dict"
) -> None:
    """Raise ValueError unless ``state`` has exactly the model's keys and shapes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(expected.keys() - given.keys())
    unexpected = sorted(given.keys() - expected.keys())
    mismatched = sorted(k for k in expected.keys() & given.keys() if expected[k] != given[k])
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if missing:
        problems.append(f"missing keys {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_listing(unexpected)}")
    if mismatched:
        shapes = [
            f"{k}: checkpoint {list(given[k])} vs model {list(expected[k])}" for k in mismatched
        ]
        problems.append(f"shape mismatches {_listing(shapes)}")
    raise ValueError(
        f"{source} does not fit the model ({_describe(model)}): "
        + "; ".join(problems)
        + f". {_fits(given)}"
    )


def save_checkpoint(
    model_or_state: nn.Module | Mapping[str, torch.Tensor], path: str | Path
) -> Path:
    """Write a bare state dict (the official format) atomically; returns the path.

    A failed write (full or read-only disk) raises ``OSError`` naming ``path`` and leaves
    neither the file nor its temporary copy behind.
    """
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports ENOSPC as RuntimeError
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(f"cannot write checkpoint {path}: {exc}") from exc
    return path


def _unpickling_detail(err: Exception) -> str:
    """The line of torch's weights-only error that names the refused global (no ANSI codes)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(err).splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return repr(err)
    return next((line for line in lines if "WeightsUnpickler error" in line), lines[0])


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return f"[{shown}]{more}"


def _describe(model: nn.Module) -> str:
    try:
        name = preset_name(model)  # type: ignore[arg-type]
    except AttributeError:
        return type(model).__name__
    if name is not None:
        return f"preset {name!r}"
    return f"custom preset {preset_from_model(model)}"  # type: ignore[arg-type]


def _fits(shapes: Mapping[str, tuple[int, ...]]) -> str:
    names = matching_presets(shapes)
    if names:
        return f"The checkpoint's shapes fit preset {' / '.join(repr(n) for n in names)}."
    return "No preset in engine.model.PRESETS fits the checkpoint's shapes."
