"""The training loop: a plain function, usable alone or inside a Ray Train worker.

``train(model, dataset, TrainOptions(...), on_step=..., checkpoint_path=..., resume=...)``
trains a ``Sam`` module in place with the interactive recipe (``engine.train.step``). When
``torch.distributed`` is initialised (a Ray Train worker), the step module is wrapped in
``DistributedDataParallel`` and each rank trains on the images ``rank, rank + world, …`` of
the dataset: the global batch is ``images_per_step × world_size`` images.

Reproducibility: the data order is a function of ``(seed, epoch)`` and every step reseeds its
random generators from ``(seed, rank, step)``, so a run resumed from a checkpoint follows the
same trajectory as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.progress import progress_bar
from engine.train.augment import Augmentation
from engine.train.checkpoint import (
    load_checkpoint,
    model_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
)
from engine.train.data import TrainDataset, collate
from engine.train.losses import MASK_LOSSES
from engine.train.schedule import lr_at, param_groups, set_lr
from engine.train.step import IOU_TARGETS, InteractiveStep

AUTOCAST = ("auto", "bf16", "off")
STAT_NAMES = ("loss", "focal", "dice", "iou_mse", "iou_first", "iou_last", "masks")


@dataclass
class TrainOptions:
    """Hyper-parameters of ``train`` (paper values in FACTS.md; defaults sized for CPU runs).

    ``decay_steps``: optimizer steps at which the lr is multiplied by ``decay_factor``.
    ``mask_loss``: "focal" (the paper's 20·focal + dice) or "bce" (BCE + dice).
    ``iou_target``: what the IoU head learns a first click's outputs against: "prompt" (the
    paper: the clicked mask) or "containing" (the best of the masks holding the click;
    ``engine.train.step``).
    ``augment_*``: flip probability, scale range and colour strength (``engine.train.augment``;
    the defaults are off).
    ``grad_clip``: max global gradient norm (0 = off). ``autocast``: "auto" = bf16 on CUDA,
    float32 on CPU; "bf16" = bf16 on any device; "off". ``checkpoint_every``: save every so
    many steps (0 = only at the end). ``schedule_start``: the optimizer step where the lr
    schedule begins — warm-up and ``decay_steps`` count from it (a retraining segment that
    continues a finished run from step S to S + n sets it to S; 0 otherwise).
    """

    steps: int = 1000
    lr: float = 8e-4
    warmup_steps: int = 250
    decay_steps: tuple[int, ...] = ()
    decay_factor: float = 0.1
    weight_decay: float = 0.1
    layer_decay: float = 0.8
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    images_per_step: int = 1
    masks_per_image: int = 64
    num_iterations: int = 11
    loss_at: str = "low_res"
    mask_loss: str = "focal"
    iou_target: str = "prompt"
    augment_flip: float = 0.0
    augment_scale: tuple[float, float] = (1.0, 1.0)
    augment_color: float = 0.0
    freeze_image_encoder: bool = False
    autocast: str = "auto"
    seed: int = 0
    checkpoint_every: int = 0
    checkpoint_every_s: float = 0.0
    schedule_start: int = 0

    def __post_init__(self) -> None:
        self.decay_steps = tuple(int(s) for s in self.decay_steps)
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        self.augment_scale = (float(self.augment_scale[0]), float(self.augment_scale[1]))
        if self.mask_loss not in MASK_LOSSES:
            raise ValueError(
                f"mask_loss must be one of {tuple(MASK_LOSSES)}, got {self.mask_loss!r}"
            )
        if self.iou_target not in IOU_TARGETS:
            raise ValueError(f"iou_target must be one of {IOU_TARGETS}, got {self.iou_target!r}")
        self.augmentation()  # validates the augmentation numbers
        for name in ("steps", "images_per_step", "masks_per_image", "num_iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= int(self.schedule_start) < int(self.steps):
            raise ValueError(
                f"schedule_start must be in [0, steps), got {self.schedule_start} "
                f"(steps={self.steps})"
            )
        if self.autocast not in AUTOCAST:
            raise ValueError(f"autocast must be one of {AUTOCAST}, got {self.autocast!r}")

    def augmentation(self) -> Augmentation | None:
        """The step's augmentation, or None when every part of it is off."""
        augmentation = Augmentation(self.augment_flip, self.augment_scale, self.augment_color)
        return None if augmentation == Augmentation(0.0, (1.0, 1.0), 0.0) else augmentation


@dataclass
class StepRecord:
    """What one optimizer step did (stats are means over the global batch)."""

    step: int  # 1-based: optimizer steps done after this one
    lr: float
    stats: dict[str, float]
    grad_norm: float
    seconds: float
    images: int  # images in the global batch
    rank: int = 0


@dataclass
class TrainResult:
    step: int
    history: list[StepRecord] = field(default_factory=list)
    checkpoint: Path | None = None
    seconds: float = 0.0


def _mix(*values: int) -> int:
    """A 63-bit seed from a few integers (distinct streams per seed/rank/step)."""
    out = 0x9E3779B97F4A7C15
    for value in values:
        out = ((out ^ (int(value) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
        out ^= out >> 31
    return out & (2**63 - 1)


class _Order:
    """Image order of one rank's shard: a fresh permutation per epoch, seeded by (seed, epoch)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def take(self, step: int, count: int) -> list[int]:
        out = []
        for position in range(step * count, (step + 1) * count):
            epoch, offset = divmod(position, self.size)
            if epoch != self._epoch:
                generator = torch.Generator().manual_seed(_mix(self.seed, epoch))
                self._epoch, self._perm = epoch, torch.randperm(self.size, generator=generator)
            out.append(int(self._perm[offset]))
        return out


def _distributed() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _autocast(device: torch.device, mode: str) -> contextlib.AbstractContextManager:
    enabled = mode == "bf16" or (mode == "auto" and device.type == "cuda")
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _mean_across_ranks(values: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        torch.distributed.all_reduce(values)
        values = values / world_size
    return values


def train(
    model: nn.Module,
    dataset: TrainDataset,
    options: TrainOptions,
    on_step: Callable[[StepRecord], None] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    config: dict[str, Any] | None = None,
    time_limit_s: float | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train ``model`` (a ``Sam``) in place for ``options.steps`` optimizer steps.

    ``on_step`` is called on every rank after each step. ``checkpoint_path``: where rank 0
    writes the checkpoint (every ``options.checkpoint_every`` steps and at the end);
    ``resume=True`` continues from it when it exists. ``config`` (the resolved job config)
    is stored in the checkpoint. ``time_limit_s`` stops training early once the steps
    themselves (not ``on_step``) have taken that long; ranks agree on when to stop.
    ``on_checkpoint(step, path)`` is called on rank 0 after each checkpoint is written.
    ``progress``: a step bar with the loss on stderr, rank 0 only (``engine.progress``: None =
    ``$SA_ENGINE_PROGRESS`` or a terminal; a Ray Train worker passes False).
    """
    rank, world_size = _distributed()
    shard = dataset.shard(rank, world_size)
    if len(shard) == 0:
        raise ValueError(f"rank {rank} of {world_size} has no training image")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    if options.freeze_image_encoder:
        model.image_encoder.requires_grad_(False)
    step_module = InteractiveStep(
        model,
        options.num_iterations,
        loss_at=options.loss_at,
        mask_loss=options.mask_loss,
        iou_target=options.iou_target,
    )
    augmentation = options.augmentation()
    runner: nn.Module = step_module
    if world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index or 0] if device.type == "cuda" else None
        runner = DistributedDataParallel(
            step_module, device_ids=device_ids, find_unused_parameters=True
        )
    optimizer = torch.optim.AdamW(
        param_groups(model, options.weight_decay, options.layer_decay),
        lr=options.lr,
        betas=options.betas,
    )
    start = 0
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, map_location=device)
        model.load_state_dict(model_state(state))
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start = int(state["step"])

    def save(step: int) -> None:
        nonlocal last_save_s
        last_save_s = training_seconds
        if rank != 0 or checkpoint_path is None:
            return
        save_checkpoint(
            checkpoint_path,
            {
                "model": unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {
                    "kind": "warmup_step_decay",
                    "base_lr": options.lr,
                    "warmup_steps": options.warmup_steps,
                    "decay_steps": list(options.decay_steps),
                    "decay_factor": options.decay_factor,
                    "start": options.schedule_start,
                    "step": step,
                },
                "step": step,
                "rng": rng_state(),
                "options": asdict(options),
                "config": dict(config or {}),
            },
        )
        if on_checkpoint is not None:
            on_checkpoint(step, checkpoint_path)

    order = _Order(len(shard), _mix(options.seed, 1))
    data_generator = torch.Generator()
    prompt_generator = torch.Generator(device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    result = TrainResult(step=start, checkpoint=checkpoint_path)
    training_seconds = last_save_s = 0.0
    bar = progress_bar(
        options.steps, "train", unit="step", initial=start, enabled=progress if rank == 0 else False
    )
    for step in range(start, options.steps):
        tic = time.perf_counter()
        lr = lr_at(
            max(step - options.schedule_start, 0),
            options.lr,
            options.warmup_steps,
            options.decay_steps,
            options.decay_factor,
        )
        set_lr(optimizer, lr)
        data_generator.manual_seed(_mix(options.seed, 2, rank, step))
        prompt_generator.manual_seed(_mix(options.seed, 3, rank, step))
        torch.manual_seed(_mix(options.seed, 4, rank, step))  # drop-path draws
        samples = [shard[i] for i in order.take(step, options.images_per_step)]
        images, targets = collate(
            samples, step_module.img_size, options.masks_per_image, data_generator, augmentation
        )
        images = [image.to(device) for image in images]
        model.train()
        if options.freeze_image_encoder:
            model.image_encoder.eval()
        with _autocast(device, options.autocast):
            loss, stats = runner(images, targets, prompt_generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = 0.0
        if options.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, options.grad_clip))
        optimizer.step()
        seconds = time.perf_counter() - tic
        training_seconds += seconds
        values = [stats[name] for name in STAT_NAMES] + [training_seconds]
        reduced = (
            _mean_across_ranks(torch.tensor(values, dtype=torch.float64, device=device), world_size)
            .cpu()
            .tolist()
        )
        record = StepRecord(
            step=step + 1,
            lr=lr,
            stats=dict(zip(STAT_NAMES, reduced)),
            grad_norm=grad_norm,
            seconds=seconds,
            images=len(samples) * world_size,
            rank=rank,
        )
        result.history.append(record)
        result.step = step + 1
        bar.set_postfix(loss=f"{record.stats['loss']:.4f}", lr=f"{lr:.2e}", refresh=False)
        bar.update(1)
        if on_step is not None:
            on_step(record)
        training_seconds = reduced[-1]  # the ranks' mean: every rank takes the same decisions
        stop = time_limit_s is not None and training_seconds >= time_limit_s
        every_step = options.checkpoint_every and (step + 1) % options.checkpoint_every == 0
        every_s = options.checkpoint_every_s and (
            training_seconds - last_save_s >= options.checkpoint_every_s
        )
        if (every_step or every_s) and not stop:
            save(step + 1)
        if stop:
            break
    bar.close()
    if result.step > start or not (checkpoint_path and checkpoint_path.exists()):
        save(result.step)
    result.seconds = training_seconds
    return result
