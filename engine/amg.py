"""Fully automatic mask generation: the official algorithm, leaner and faster.

``AutomaticMaskGenerator(model_or_predictor, ...)`` takes the official
``SamAutomaticMaskGenerator`` parameters (same names and defaults) plus ``max_mask_fraction``;
``generate(image)`` returns SA-1B annotation dicts for one ``H×W×3`` uint8 RGB image, each
with a ``granularity`` (whole / part / subpart, from its multimask output index:
``engine.amg_masks.multimask_levels``), and ``generate_batch(images)`` does several, sending
crops of all of them through the image encoder together (``encoder_batch_size`` at a time; by
default 4 for encoders of at most 512 px, else 1). Decoder calls take ``points_per_batch``
prompts, fewer when their activations would pass ``decoder_memory_bytes``.

Per crop, as the official generator: embed the crop, prompt the decoder with every grid point
(3 masks each), drop masks under ``pred_iou_thresh`` or ``stability_score_thresh`` or touching
an inner crop edge, NMS by predicted IoU within the crop; then NMS across crops preferring
smaller crops, optional small-region clean-up with a last NMS. ``max_mask_fraction`` (ours;
the paper dropped masks covering ≥ 95% of the image) drops a mask whose area reaches that share
of the image, both with the other per-mask filters (before NMS, so a dropped mask suppresses
nothing) and after the clean-up (which can fill holes).

What differs from the official code is how: the predicted-IoU filter runs before any
upsampling, logits are upsampled only inside each mask's window (or as whole frames when that
is cheaper), survivors become RLE at once, several per C call (``engine.amg_masks``,
``engine.amg_upsample``), and the decoder shares its image-side work across prompts
(``engine.amg_decode``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from engine import masks as mask_ops
from engine.amg_decode import decode_points
from engine.amg_masks import CropMasks, FilterSettings, filter_decoded
from engine.amg_upsample import UpsamplePlan
from engine.records import LEVEL_NAMES
from engine.sa1b import MaskRecord, Provenance

PRESETS: dict[str, dict] = {
    # The official package's defaults.
    "official": {},
    # SA-1B's fully automatic stage (paper §4 and appendix B): a 32×32 grid on the image, 2×2
    # and 4×4 crops with 16×16 and 8×8 grids, holes/islands under 100 px cleaned, masks
    # covering 95% of the image or more dropped.
    "sa1b": {
        "points_per_side": 32,
        "crop_n_layers": 2,
        "crop_n_points_downscale_factor": 2,
        "pred_iou_thresh": 0.88,
        "stability_score_thresh": 0.95,
        "box_nms_thresh": 0.7,
        "crop_nms_thresh": 0.7,
        "min_mask_region_area": 100,
        "max_mask_fraction": 0.95,
    },
}


class AutomaticMaskGenerator:
    """Grid-prompted mask generation over an image and its crops (official semantics).

    ``model`` is a ``Sam`` (ours or the official one) or a predictor holding one in
    ``.model``. Boxes in the output are XYWH with ``w = x1 - x0`` from inclusive ends, as the
    official generator writes them.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        max_mask_fraction: float = 1.0,
        encoder_batch_size: int | None = None,
        decoder_memory_bytes: int = 1 << 29,
        shared_decoder: bool = True,
    ) -> None:
        self.model = _unwrap(model)
        _check_int("points_per_batch", points_per_batch, 1)
        _check_int("crop_n_layers", crop_n_layers, 0)
        _check_int("crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1)
        _check_int("min_mask_region_area", min_mask_region_area, 0)
        if encoder_batch_size is None:  # small encoders gain from batching; big ones bloat
            encoder_batch_size = 4 if self.model.image_encoder.img_size <= 512 else 1
        _check_int("encoder_batch_size", encoder_batch_size, 1)
        _check_int("decoder_memory_bytes", decoder_memory_bytes, 1)
        for name, value in [
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_offset", stability_score_offset),
        ]:
            _check_float(name, value)
        if not stability_score_offset > 0.0:  # IoU(logits > +o, logits > -o): o > 0 or no band
            raise ValueError(f"stability_score_offset must be > 0, got {stability_score_offset!r}")
        for name, value in [
            ("stability_score_thresh", stability_score_thresh),
            ("box_nms_thresh", box_nms_thresh),
            ("crop_nms_thresh", crop_nms_thresh),
        ]:
            _check_float(name, value, 0.0, 1.0)
        _check_float("crop_overlap_ratio", crop_overlap_ratio, 0.0, 1.0)
        _check_float("max_mask_fraction", max_mask_fraction, 0.0, 1.0)
        if max_mask_fraction <= 0.0:
            raise ValueError(f"max_mask_fraction must be in (0, 1], got {max_mask_fraction!r}")
        if (points_per_side is None) == (point_grids is None):
            raise ValueError(
                "give exactly one of points_per_side and point_grids, got "
                f"points_per_side={points_per_side!r}, point_grids={type(point_grids).__name__}"
            )
        if points_per_side is not None:
            _check_int("points_per_side", points_per_side, 1)
            smallest = int(points_per_side / crop_n_points_downscale_factor**crop_n_layers)
            if smallest < 1:
                raise ValueError(
                    f"points_per_side={points_per_side} leaves no points in crop layer "
                    f"{crop_n_layers} with crop_n_points_downscale_factor="
                    f"{crop_n_points_downscale_factor}"
                )
            self.point_grids = mask_ops.build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            self.point_grids = _checked_grids(point_grids, crop_n_layers)
        self.points_per_batch = points_per_batch
        self.box_nms_thresh = float(box_nms_thresh)
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = float(crop_nms_thresh)
        self.crop_overlap_ratio = float(crop_overlap_ratio)
        self.min_mask_region_area = min_mask_region_area
        self.encoder_batch_size = encoder_batch_size
        self.decoder_memory_bytes = decoder_memory_bytes
        self.shared_decoder = bool(shared_decoder)
        self.filters = FilterSettings(
            pred_iou_thresh=float(pred_iou_thresh),
            stability_score_thresh=float(stability_score_thresh),
            stability_score_offset=float(stability_score_offset),
            mask_threshold=float(getattr(self.model, "mask_threshold", 0.0)),
            max_mask_fraction=float(max_mask_fraction),
        )

    @classmethod
    def from_preset(cls, name: str, model: torch.nn.Module, **overrides) -> AutomaticMaskGenerator:
        """A generator with a named parameter set (``PRESETS``), overridable by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
        return cls(model, **{**PRESETS[name], **overrides})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> int:
        """The encoder's square input size ``S`` (longest side after resizing)."""
        return int(self.model.image_encoder.img_size)

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> list[dict]:
        """SA-1B annotation dicts for one ``H×W×3`` uint8 RGB image (ids from 0)."""
        return self.generate_batch([image])[0]

    @torch.no_grad()
    def generate_batch(self, images: Sequence[np.ndarray]) -> list[list[dict]]:
        """``generate`` for several images; their crops share batched encoder calls."""
        for i, image in enumerate(images):
            _check_image(image, f"images[{i}]")
        jobs = []  # (image index, crop box XYXY, layer)
        for i, image in enumerate(images):
            boxes, layers = mask_ops.generate_crop_boxes(
                image.shape[:2], self.crop_n_layers, self.crop_overlap_ratio
            )
            jobs.extend((i, box, layer) for box, layer in zip(boxes, layers))
        per_image: list[list[CropMasks]] = [[] for _ in images]
        for start in range(0, len(jobs), self.encoder_batch_size):
            chunk = jobs[start : start + self.encoder_batch_size]
            crops = [_crop(images[i], box) for i, box, _ in chunk]
            features, input_sizes = self._embed(crops)
            for j, (i, box, layer) in enumerate(chunk):
                result = self._process_crop(
                    features[j : j + 1],
                    input_sizes[j],
                    crops[j].shape[:2],
                    box,
                    layer,
                    images[i].shape[:2],
                )
                per_image[i].append(result)
            del features
        return [self._finish(parts, image.shape[:2]) for parts, image in zip(per_image, images)]

    def _embed(self, crops: list[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Resize (longest side ``S``, PIL bilinear as ``ResizeLongestSide``), normalise, pad
        and encode a batch of crops; returns ``B×C×h×w`` features and each resized size."""
        inputs, sizes = [], []
        for crop in crops:
            resized = _resize_longest_side(crop, self.image_size)
            tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None]
            inputs.append(self.model.preprocess(tensor))
            sizes.append(resized.shape[:2])
        return self.model.image_encoder(torch.cat(inputs)), sizes

    def _process_crop(
        self,
        features: torch.Tensor,
        input_size: tuple[int, int],
        crop_size: tuple[int, int],
        crop_box: list[int],
        layer: int,
        image_hw: tuple[int, int],
    ) -> CropMasks:
        crop_h, crop_w = crop_size
        points = self.point_grids[layer] * np.array([[crop_w, crop_h]])
        scale = np.array([[input_size[1] / crop_w, input_size[0] / crop_h]])
        plan = None
        parts = []
        step = self._decoder_batch(features)
        for start in range(0, len(points), step):
            batch = points[start : start + step]
            low_res, iou_preds = decode_points(
                self.model, features, batch * scale, shared=self.shared_decoder
            )
            if plan is None:
                low_size = tuple(low_res.shape[-2:])
                plan = UpsamplePlan(low_size, self.image_size, input_size, crop_size)
            parts.append(
                filter_decoded(low_res, iou_preds, batch, plan, crop_box, image_hw, self.filters)
            )
            del low_res
        data = CropMasks.cat(parts)
        keep = mask_ops.batched_nms(
            data.boxes.float(), data.iou_preds, torch.zeros(len(data)), self.box_nms_thresh
        )
        data = data.select(keep)
        x0, y0 = crop_box[0], crop_box[1]
        data.boxes = data.boxes + torch.tensor([[x0, y0, x0, y0]])
        data.points = data.points + np.array([[x0, y0]])
        data.crop_boxes = torch.tensor([crop_box] * len(data), dtype=torch.int64).reshape(-1, 4)
        return data

    def _decoder_batch(self, features: torch.Tensor) -> int:
        """Prompts per decoder call: ``points_per_batch``, fewer if the decoder's activations
        (about 80 bytes per image token and channel per prompt) would pass
        ``decoder_memory_bytes``."""
        _, c, h, w = features.shape
        per_prompt = 80 * h * w * c
        return max(1, min(self.points_per_batch, self.decoder_memory_bytes // per_prompt))

    def _finish(self, parts: list[CropMasks], image_hw: tuple[int, int]) -> list[dict]:
        data = CropMasks.cat(parts)
        if len(parts) > 1 and len(data):
            crop_area = (data.crop_boxes[:, 2] - data.crop_boxes[:, 0]) * (
                data.crop_boxes[:, 3] - data.crop_boxes[:, 1]
            )
            keep = mask_ops.batched_nms(
                data.boxes.float(), 1 / crop_area, torch.zeros(len(data)), self.crop_nms_thresh
            )
            data = data.select(keep)
        if self.min_mask_region_area > 0 and len(data):
            data = self._remove_small_regions(data)
        fraction = self.filters.max_mask_fraction
        if fraction < 1.0 and len(data):
            data = data.select(data.areas < fraction * image_hw[0] * image_hw[1])
        return _annotations(data)

    def _remove_small_regions(self, data: CropMasks) -> CropMasks:
        """Fill small holes, drop small islands, then NMS preferring unchanged masks."""
        min_area = self.min_mask_region_area
        boxes, unchanged, new_masks = [], [], {}
        for i, rle in enumerate(data.rles):
            mask = mask_ops.rle_to_mask(rle)
            mask, holes_changed = mask_ops.remove_small_regions(mask, min_area, "holes")
            mask, islands_changed = mask_ops.remove_small_regions(mask, min_area, "islands")
            changed = holes_changed or islands_changed
            unchanged.append(0.0 if changed else 1.0)
            if changed:
                new_masks[i] = mask_ops.mask_to_rle(mask), int(mask.sum())
                x, y, w, h = mask_ops.mask_bbox_xywh(mask)  # inclusive ends below
                box = [x, y, x + w - 1, y + h - 1] if w else [0, 0, 0, 0]
                boxes.append(torch.tensor(box, dtype=torch.int64))
            else:
                boxes.append(data.boxes[i])
        new_boxes = torch.stack(boxes)
        keep = mask_ops.batched_nms(
            new_boxes.float(),
            torch.tensor(unchanged),
            torch.zeros(len(data)),
            max(self.box_nms_thresh, self.crop_nms_thresh),
        )
        for i in keep.tolist():
            if i in new_masks:
                data.rles[i], data.areas[i] = new_masks[i]
                data.boxes[i] = new_boxes[i]
        return data.select(keep)


def to_mask_records(
    annotations: list[dict], provenance: Provenance | None = None
) -> list[MaskRecord]:
    """``MaskRecord``s for generator output (each gets its own copy of ``provenance``, with
    the annotation's ``granularity`` when it has one).

    Empty masks are dropped: with ``stability_score_thresh=0`` and no region filter the
    generator (like the official one) returns them, and their stability is 0/0.
    """
    base = vars(provenance or Provenance())
    return [
        MaskRecord.from_json(
            ann, provenance=Provenance(**{**base, "granularity": ann.get("granularity", "whole")})
        )
        for ann in annotations
        if ann["area"] > 0
    ]


def _annotations(data: CropMasks) -> list[dict]:
    boxes = mask_ops.box_xyxy_to_xywh(data.boxes).tolist()
    crops = mask_ops.box_xyxy_to_xywh(data.crop_boxes).tolist()
    ious = data.iou_preds.tolist()
    stabilities = data.stability.tolist()
    points = data.points.tolist()
    levels = data.levels.tolist()
    return [
        {
            "id": i,
            "segmentation": data.rles[i],
            "bbox": boxes[i],
            "area": int(data.areas[i]),
            "predicted_iou": ious[i],
            "stability_score": stabilities[i],
            "crop_box": crops[i],
            "point_coords": [points[i]],
            "granularity": LEVEL_NAMES[levels[i]],
        }
        for i in range(len(data))
    ]


def _unwrap(model: object) -> torch.nn.Module:
    inner = getattr(model, "model", None)
    candidate = inner if isinstance(inner, torch.nn.Module) else model
    for part in ("image_encoder", "prompt_encoder", "mask_decoder", "preprocess"):
        if not hasattr(candidate, part):
            raise TypeError(
                f"model must be a Sam model or a predictor holding one; "
                f"{type(model).__name__} has no {part!r}"
            )
    return candidate


def _resize_longest_side(image: np.ndarray, target: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = target / max(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    if (new_h, new_w) == (h, w):
        return np.array(image)
    return np.array(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def _crop(image: np.ndarray, box: list[int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1, :]


def _check_image(image: object, name: str) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be H×W×3 uint8 RGB, got {image.dtype} {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {image.shape}")


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _check_float(name: str, value: object, low: float = -math.inf, high: float = math.inf) -> None:
    if not isinstance(value, (int, float, np.floating)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(float(value)) or not low <= float(value) <= high:
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")


def _checked_grids(grids: object, crop_n_layers: int) -> list[np.ndarray]:
    if not isinstance(grids, (list, tuple)) or len(grids) != crop_n_layers + 1:
        raise ValueError(
            f"point_grids must be a list of crop_n_layers + 1 = {crop_n_layers + 1} arrays, "
            f"got {grids!r:.80}"
        )
    out = []
    for i, grid in enumerate(grids):
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim != 2 or grid.shape[1] != 2 or len(grid) == 0:
            raise ValueError(f"point_grids[{i}] must be N×2 (x, y), got shape {grid.shape}")
        if not np.all((grid >= 0) & (grid <= 1)):
            raise ValueError(f"point_grids[{i}] must hold points normalised to [0, 1]")
        out.append(grid)
    return out
