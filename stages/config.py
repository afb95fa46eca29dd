"""Structured configs: plain dataclasses mirroring the constructor arguments they feed.

Hydra composes them from ``configs/`` (``stages.hydra_app`` registers them so types and keys
are validated) and the CLI unpacks them into plain arguments: nothing below the CLI takes a
config object. Groups are shared by the jobs: ``model``, ``data``, ``cluster``, ``tracking``
(and ``train`` for ``sa-engine train``; ``TrainJobConfig`` is its primary config;
``ExportOnnxConfig`` is ``sa-engine export-onnx``'s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.data.concat import FirstEntries
from engine.data.sources import SOURCE_KINDS, ImageSource, open_source
from engine.train.loop import TrainOptions

MODEL_PRESETS = ("tiny", "mobile", "mobile_s8", "mobile_sam", "vit_b", "vit_l", "vit_h")


@dataclass
class ModelConfig:
    """``preset``: a name in ``engine.model.PRESETS``; ``checkpoint``: weights to start from
    (official ``sam_vit_*.pth`` or one of ours; empty = random init)."""

    preset: str = "tiny"
    checkpoint: str = ""


@dataclass
class DataConfig:
    """An image source (``engine.data.open_source``).

    ``kind``: synthetic | folder | coco | webdataset. ``path``: folder root, COCO images
    directory, or WebDataset/SA-1B shards (file, directory or glob). ``annotations``: COCO
    JSON. Synthetic scenes: ``split`` (public | train | heldout), ``offset`` seeds into the
    split, ``count`` scenes of ``height×width`` in ``style`` (studio | dusk). ``limit``: at
    most this many images of any kind (null = all). ``max_short_side``: decoded images are
    shrunk to it (null = as is).
    ``on_error`` (coco): a bad annotation fails the run before any work (``raise``) or
    quarantines its image (``skip``).
    """

    kind: str = "synthetic"
    path: str = ""
    annotations: str = ""
    split: str = "train"
    offset: int = 0
    count: int = 200
    height: int = 384
    width: int = 512
    style: str = "studio"
    limit: int | None = None
    max_short_side: int | None = 1500
    on_error: str = "raise"

    def source_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the source class for ``kind``; ValueError if incomplete."""
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"data.kind must be one of {SOURCE_KINDS}, got {self.kind!r}")
        if self.kind == "synthetic":
            from engine.data.synthetic import split_seeds

            seeds = split_seeds(self.split, self.count, self.offset)
            return {
                "seed_start": seeds.start,
                "count": self.count,
                "height": self.height,
                "width": self.width,
                "style": self.style,
            }
        if not self.path:
            raise ValueError(f"data.path is required for data.kind={self.kind!r}")
        common = {"max_short_side": self.max_short_side}
        if self.kind == "folder":
            return {"root": self.path, **common}
        if self.kind == "coco":
            if not self.annotations:
                raise ValueError("data.annotations (a COCO JSON file) is required for coco")
            return {
                "images_dir": self.path,
                "annotations": self.annotations,
                "on_error": self.on_error,
                **common,
            }
        return {"shards": self.path, **common}

    def open(self) -> ImageSource:
        """The configured source (its first ``limit`` entries when ``limit`` is set)."""
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or null, got {self.limit}")
        source = open_source(self.kind, **self.source_kwargs())
        return source if self.limit is None else FirstEntries(source, self.limit)


@dataclass
class TrainConfig:
    """Training hyper-parameters (``engine.train.loop.TrainOptions`` plus model/run knobs).

    ``workers``: Ray Train workers (0 = train in this process, without Ray).
    ``time_limit_s``: stop early after this many seconds of training steps (null = off).
    ``min_mask_area``: train only on masks of at least this many pixels in the model's input
    frame (1 = all; a small model from scratch learns faster without masks far below its
    low-res grid's resolution).
    """

    steps: int = 200
    lr: float = 8e-4
    warmup_steps: int = 250
    decay_steps: list[int] = field(default_factory=list)
    decay_factor: float = 0.1
    weight_decay: float = 0.1
    layer_decay: float = 0.8
    drop_path: float = 0.4
    grad_clip: float = 1.0
    images_per_step: int = 1
    masks_per_image: int = 64
    num_iterations: int = 11
    loss_at: str = "low_res"
    mask_loss: str = "focal"
    iou_target: str = "prompt"
    augment_flip: float = 0.0
    augment_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    augment_color: float = 0.0
    freeze_image_encoder: bool = False
    autocast: str = "auto"
    seed: int = 0
    checkpoint_every: int = 50
    workers: int = 2
    time_limit_s: float | None = None
    min_mask_area: int = 1

    def options(self) -> TrainOptions:
        """The loop's ``TrainOptions`` (ValueError on a bad value)."""
        if len(self.augment_scale) != 2:
            raise ValueError(f"augment_scale must be [low, high], got {list(self.augment_scale)}")
        return TrainOptions(
            steps=self.steps,
            lr=self.lr,
            warmup_steps=self.warmup_steps,
            decay_steps=tuple(self.decay_steps),
            decay_factor=self.decay_factor,
            weight_decay=self.weight_decay,
            layer_decay=self.layer_decay,
            grad_clip=self.grad_clip,
            images_per_step=self.images_per_step,
            masks_per_image=self.masks_per_image,
            num_iterations=self.num_iterations,
            loss_at=self.loss_at,
            mask_loss=self.mask_loss,
            iou_target=self.iou_target,
            augment_flip=self.augment_flip,
            augment_scale=(self.augment_scale[0], self.augment_scale[1]),
            augment_color=self.augment_color,
            freeze_image_encoder=self.freeze_image_encoder,
            autocast=self.autocast,
            seed=self.seed,
            checkpoint_every=self.checkpoint_every,
        )


@dataclass
class ClusterConfig:
    """Where Ray runs: ``address`` empty = start a local loopback-only cluster with
    ``num_cpus`` (null = all); ``workers``: pipeline actors; ``gpus_per_worker``: 0 or 1;
    ``cpus_per_worker``: CPU threads/reservation per worker. ``max_restarts``: restarts of a
    crashed pipeline actor; ``max_task_retries``: retries of the calls it had (-1: no limit)."""

    address: str = ""
    num_cpus: int | None = None
    workers: int = 2
    cpus_per_worker: int = 1
    gpus_per_worker: int = 0
    max_restarts: int = 3
    max_task_retries: int = 3


@dataclass
class TrackingConfig:
    """MLflow: ``uri`` empty = the local sqlite store under the runs root; ``register_model``
    = a registered-model name to add the checkpoint to as a new version (empty = do not)."""

    enabled: bool = True
    uri: str = ""
    experiment: str = "sa-engine"
    register_model: str = ""


@dataclass
class EvalConfig:
    """Interactive evaluation after training (``engine.train.evaluate``) on ``data``.

    ``images``: held-out images used; ``max_objects_per_image`` caps objects per image
    (null = all); ``before``: also evaluate the starting model.
    """

    enabled: bool = True
    data: DataConfig = field(
        default_factory=lambda: DataConfig(kind="synthetic", split="heldout", count=10)
    )
    images: int = 10
    max_clicks: int = 20
    max_objects_per_image: int | None = 30
    before: bool = False


@dataclass
class TrainJobConfig:
    """``sa-engine train``: train ``model`` on ``data`` into ``run_dir``.

    The run directory holds ``config.yaml``, ``checkpoints/train.pt`` (resumed from when the
    same command runs again), ``train_log.jsonl``, ``eval.json`` and ``state.json``.
    ``runs_root`` holds the local MLflow store shared by runs.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run_dir: str = "runs/train"
    runs_root: str = "runs"


@dataclass
class ExportOnnxConfig:
    """``sa-engine export-onnx``: the prompt encoder + mask decoder of ``model`` as ONNX.

    ``out``: the ``.onnx`` file to write; ``opset``: ONNX opset, 14 … 20;
    ``return_single_mask``: one mask per prompt instead of all four; ``verify``: run the file
    in onnxruntime against the PyTorch model after writing it (fails above ``tolerance``).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    out: str = "decoder.onnx"
    opset: int = 17
    return_single_mask: bool = False
    verify: bool = True
    tolerance: float = 1e-3
