"""Structured config of ``sa-engine run`` (plain dataclasses; Hydra validates against them).

The shared groups (``model``, ``data``, ``train``, ``cluster``, ``tracking``) come from
``stages.config``; this file adds the ``stages`` group and the primary ``RunConfig``.
Nothing below the CLI reads these objects: ``stages.run_cmd`` unpacks them into plain
arguments of the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stages.config import ClusterConfig, DataConfig, ModelConfig, TrackingConfig, TrainConfig

ANNOTATORS = ("simulated", "coco", "human")


@dataclass
class StageConfig:
    """One stage: ``rounds`` of ``images_per_round`` images, retraining after each round."""

    rounds: int = 1
    images_per_round: int = 4
    retrain: bool = True


@dataclass
class CostConfig:
    """The simulated annotator's time model (``engine.annotators.simulated.CostModel``)."""

    seconds_per_mask: float = 5.0
    seconds_per_click: float = 2.0
    seconds_per_fixed_pixel: float = 0.01
    max_seconds_per_mask: float = 30.0
    seconds_per_image: float = 300.0


@dataclass
class PrefillConfig:
    """Stage 2's confident pre-fill: AMG with strict thresholds, or a detector's boxes.

    ``detections``: a COCO-results JSON (image_id and/or file_name, bbox, score) of an
    external detector; empty = AMG pre-fill. A box scoring at least ``detection_score_thresh``
    is prompted; its mask is kept when the model's predicted IoU is at least
    ``detection_pred_iou_thresh``. ``covered_iou``: a reference counts as pre-filled at this IoU.
    """

    points_per_side: int = 16
    pred_iou_thresh: float = 0.92
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 25
    covered_iou: float = 0.75
    seconds_per_prefilled: float = 1.0
    detections: str = ""
    detection_score_thresh: float = 0.5
    detection_pred_iou_thresh: float = 0.88


@dataclass
class AutomaticConfig:
    """Stage 3: AMG ``preset`` with overrides; ``images`` null = the rest of the pool."""

    preset: str = "sa1b"
    images: int | None = None
    points_per_side: int = 32
    points_per_batch: int = 256
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 2
    min_mask_region_area: int = 100


@dataclass
class StagesConfig:
    """The three stages and the annotator of the first two.

    ``annotator``: simulated | coco (``annotations``: a COCO JSON of corrected masks for the
    round's images) | human (the web tool; the round waits for ``target_images``).
    """

    assisted_manual: StageConfig = field(
        default_factory=lambda: StageConfig(rounds=3, images_per_round=4)
    )
    semi_automatic: StageConfig = field(
        default_factory=lambda: StageConfig(rounds=2, images_per_round=4)
    )
    fully_automatic: AutomaticConfig = field(default_factory=AutomaticConfig)
    annotator: str = "simulated"
    annotations: str = ""
    accept_iou: float = 0.9
    max_clicks: int = 10
    min_area: int = 16
    cost: CostConfig = field(default_factory=CostConfig)
    prefill: PrefillConfig = field(default_factory=PrefillConfig)
    human_poll_s: float = 5.0


@dataclass
class InitialConfig:
    """The first model, trained on a "public" split before stage 1 (as in the paper).

    Skipped when ``model.checkpoint`` is set. ``cache``: reuse an identical earlier
    pre-training from ``<runs_root>/cache`` (same preset, data, steps and seed).
    ``num_iterations``: prompt iterations per mask for this pre-training (null: ``train``'s);
    1 (first prompt only) gives the most steps per second to a model learning from scratch.
    ``rehearsal_images``: the first N images of ``data`` are mixed into every retraining
    between rounds (rehearsal), so a round with few masks does not make the model forget what
    it knew; 0 retrains on the rounds' masks only. Used also when the initial model is skipped.
    """

    enabled: bool = True
    steps: int = 300
    num_iterations: int | None = None
    rehearsal_images: int = 0
    data: DataConfig = field(
        default_factory=lambda: DataConfig(kind="synthetic", split="public", count=64)
    )
    cache: bool = True


@dataclass
class RunEvalConfig:
    """Interactive evaluation after every retraining (held-out ``data``)."""

    enabled: bool = True
    data: DataConfig = field(
        default_factory=lambda: DataConfig(kind="synthetic", split="heldout", count=3)
    )
    images: int = 3
    max_clicks: int = 20
    max_objects_per_image: int | None = 16


@dataclass
class OutputConfig:
    """Shards: ``maxcount`` images per tar, JPEG ``jpeg_quality``; ``audit`` at the end."""

    maxcount: int = 1000
    maxsize: float = 3e9
    jpeg_quality: int = 90
    audit: bool = True


@dataclass
class PrivacyConfig:
    """Blur faces and licence plates in the images written to shards (``engine.privacy``).

    ``faces``/``plates``: which of OpenCV's Haar cascades run; ``min_size``: smallest box side
    (pixels); ``min_neighbors``: hits a box needs (higher = fewer false positives);
    ``scale_factor``: pyramid step (> 1); ``blur_strength``: Gaussian sigma as a share of the
    padded box's shorter side; ``padding``: each box grows by this share of its size per side.
    """

    enabled: bool = True
    faces: bool = True
    plates: bool = True
    min_size: int = 24
    min_neighbors: int = 8
    scale_factor: float = 1.1
    blur_strength: float = 0.25
    padding: float = 0.1


@dataclass
class RunConfig:
    """``sa-engine run``: the three-stage data engine over ``data`` into ``run_dir``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    stages: StagesConfig = field(default_factory=StagesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    initial: InitialConfig = field(default_factory=InitialConfig)
    eval: RunEvalConfig = field(default_factory=RunEvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    name: str = "default"
    run_dir: str = "runs/default"
    runs_root: str = "runs"
    seed: int = 0
