"""The simulated annotator: labels an image's reference objects the way people do in SAM's tool.

Per reference object, largest first: the first click goes at the object's interior point
farthest from its boundary; each next click goes in the largest error region of the current
mask (positive if missed, negative if spurious) — the standard protocol of ``engine.clicks``.
After the first click the annotator picks, among the model's 3 ambiguity masks, the one that
best matches what it wants (highest IoU with its reference); later clicks ask for one mask
and feed the previous low-res logits back as the mask prompt. It accepts once the mask
reaches ``accept_iou``; after ``max_clicks`` it finishes the mask by hand (brush/eraser: the
final mask is the reference).

Simulated time comes from ``CostModel``: a fixed cost per mask, a cost per click and a cost per
hand-fixed pixel. Like the paper's annotators it moves on to the next image once a mask took
longer than ``max_seconds_per_mask``, and it stops an image when ``seconds_per_image`` is spent.

All objects of a chunk are clicked in lock step — at iteration k every active object has
exactly k clicks — so one batched decoder call serves them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from engine import clicks as click_rules
from engine.masks import mask_to_rle, rle_area, rle_to_mask, stability_score
from engine.model import SamPredictor
from engine.records import ReferenceMask


@dataclass(frozen=True)
class CostModel:
    """Simulated annotation time, in seconds (defaults give the paper's ~34 s → ~14 s range)."""

    seconds_per_mask: float = 5.0  # find the object, look, accept
    seconds_per_click: float = 2.0
    seconds_per_fixed_pixel: float = 0.01  # brush/eraser over pixels the clicks left wrong
    max_seconds_per_mask: float = 30.0  # after a mask this slow, move on to the next image
    seconds_per_image: float = 600.0  # stop labelling an image after this much time

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value >= 0:
                raise ValueError(f"CostModel.{name} must be >= 0, got {value!r}")


@dataclass
class AnnotatedMask:
    """One mask the annotator accepted, with what it cost."""

    mask: np.ndarray  # H×W bool, the final mask
    reference_index: int  # index into the item's references
    clicks: list[click_rules.Click]
    model_iou: float  # IoU of the model's mask with the reference before any hand fix
    predicted_iou: float  # the model's own IoU estimate for its mask
    stability_score: float
    hand_fixed: bool
    seconds: float
    level: int | None = None

    @property
    def rle(self) -> dict:
        return mask_to_rle(self.mask)


@dataclass
class _Track:
    """The state of one object being clicked."""

    index: int
    gt: np.ndarray  # H×W bool
    clicks: list[click_rules.Click] = field(default_factory=list)
    mask: np.ndarray | None = None
    logits: np.ndarray | None = None  # 1×L×L low-res logits of the chosen mask
    iou: float = 0.0
    predicted_iou: float = 0.0
    stability: float = 0.0
    done: bool = False


class SimulatedAnnotator:
    """Labels reference objects interactively with a predictor (see module docstring).

    Args:
        accept_iou: accept the model's mask once its IoU with the reference reaches this.
        max_clicks: clicks before finishing by hand.
        cost: the simulated-time model.
        min_area: references smaller than this (pixels) are not labelled.
        chunk_size: objects clicked together in one batched decoder call.
    """

    def __init__(
        self,
        accept_iou: float = 0.9,
        max_clicks: int = 10,
        cost: CostModel | None = None,
        min_area: int = 16,
        chunk_size: int = 16,
    ) -> None:
        if not 0.0 < accept_iou <= 1.0:
            raise ValueError(f"accept_iou must be in (0, 1], got {accept_iou!r}")
        if max_clicks < 1:
            raise ValueError(f"max_clicks must be >= 1, got {max_clicks!r}")
        if min_area < 1 or chunk_size < 1:
            raise ValueError(f"min_area and chunk_size must be >= 1, got {min_area}, {chunk_size}")
        self.accept_iou = accept_iou
        self.max_clicks = max_clicks
        self.cost = cost or CostModel()
        self.min_area = min_area
        self.chunk_size = chunk_size

    def annotate(
        self,
        predictor: SamPredictor,
        references: list[ReferenceMask],
        skip: set[int] | None = None,
        seconds_spent: float = 0.0,
    ) -> list[AnnotatedMask]:
        """Label ``references`` (largest first) on the predictor's current image.

        ``skip`` holds reference indices already covered (e.g. pre-filled masks);
        ``seconds_spent`` is time already used on this image. Returns the accepted masks.
        """
        if not predictor.is_image_set:
            raise RuntimeError("call predictor.set_image(...) before annotate(...)")
        order = self._order(references, skip or set())
        accepted: list[AnnotatedMask] = []
        elapsed = seconds_spent
        for start in range(0, len(order), self.chunk_size):
            if elapsed >= self.cost.seconds_per_image:
                break
            indices = order[start : start + self.chunk_size]
            chunk = [_Track(i, rle_to_mask(references[i].rle)) for i in indices]
            self._click_all(predictor, chunk)
            for track in chunk:
                if elapsed >= self.cost.seconds_per_image:
                    return accepted
                result = self._finish(track, references[track.index].level)
                accepted.append(result)
                elapsed += result.seconds
                if result.seconds > self.cost.max_seconds_per_mask:
                    return accepted  # this mask was too slow: move on to the next image
        return accepted

    def _order(self, references: list[ReferenceMask], skip: set[int]) -> list[int]:
        """Indices of references to label, largest first (ties: source order)."""
        areas = [(rle_area(ref.rle), i) for i, ref in enumerate(references) if i not in skip]
        ranked = sorted(areas, key=lambda t: (-t[0], t[1]))
        return [i for area, i in ranked if area >= self.min_area]

    def _click_all(self, predictor: SamPredictor, tracks: list[_Track]) -> None:
        """Click every track until it is accepted or out of clicks (lock step, batched)."""
        threshold = predictor.model.mask_threshold
        for k in range(self.max_clicks):
            active = [t for t in tracks if not t.done]
            if not active:
                return
            for track in active:
                click = _next_click(track.gt, track.mask)
                if click is None:  # the mask is already exact
                    track.done = True
                    continue
                track.clicks.append(click)
            active = [t for t in active if not t.done]
            if not active:
                return
            coords = np.array([[[c.x, c.y] for c in t.clicks] for t in active], dtype=np.float32)
            labels = np.array([[c.label for c in t.clicks] for t in active], dtype=np.int64)
            coords_t = torch.as_tensor(
                predictor.transform.apply_coords(coords, predictor.original_size),
                device=predictor.device,
            )
            labels_t = torch.as_tensor(labels, device=predictor.device)
            mask_input = None
            if k > 0:
                mask_input = torch.as_tensor(
                    np.stack([t.logits for t in active]), device=predictor.device
                )
            low_res, iou_pred = _decode(predictor, coords_t, labels_t, mask_input, k == 0)
            gts = torch.as_tensor(np.stack([t.gt for t in active]), device=predictor.device)
            if k == 0:  # pick among the 3 ambiguity masks on the low-res grid: cheap
                choice = _best_low_res(predictor, low_res, gts)
            else:
                choice = torch.zeros(len(active), dtype=torch.long, device=low_res.device)
            rows = torch.arange(len(active), device=low_res.device)
            chosen = low_res[rows, choice][:, None]
            with torch.inference_mode():
                logits = predictor.model.postprocess_masks(
                    chosen, predictor.input_size, predictor.original_size
                )[:, 0]
                masks_t = logits > threshold
                stability = stability_score(logits, threshold, 1.0).cpu().numpy()
                inter = torch.count_nonzero((masks_t & gts).flatten(1), dim=1)
                union = torch.count_nonzero((masks_t | gts).flatten(1), dim=1).clamp(min=1)
                ious = (inter / union).cpu().numpy()
            masks = masks_t.cpu().numpy()
            chosen_np = chosen.cpu().numpy()
            predicted = iou_pred[rows, choice].cpu().numpy()
            for b, track in enumerate(active):
                track.mask = masks[b]
                track.logits = chosen_np[b]
                track.iou = float(ious[b])
                track.predicted_iou = float(predicted[b])
                track.stability = float(stability[b])
                if track.iou >= self.accept_iou:
                    track.done = True

    def _finish(self, track: _Track, level: int | None) -> AnnotatedMask:
        """Accept a track's mask, hand-fixing it if needed, and price it."""
        cost = self.cost
        hand_fixed = track.iou < self.accept_iou
        seconds = cost.seconds_per_mask + cost.seconds_per_click * len(track.clicks)
        final = track.mask if track.mask is not None else track.gt
        if hand_fixed:
            wrong = int(np.logical_xor(final, track.gt).sum())
            seconds += cost.seconds_per_fixed_pixel * wrong
            final = track.gt
        return AnnotatedMask(
            mask=final,
            reference_index=track.index,
            clicks=list(track.clicks),
            model_iou=track.iou,
            predicted_iou=track.predicted_iou,
            stability_score=track.stability,
            hand_fixed=hand_fixed,
            seconds=seconds,
            level=level,
        )


def _next_click(gt: np.ndarray, pred: np.ndarray | None) -> click_rules.Click | None:
    """``engine.clicks.next_click`` computed on the tight window around ``gt | pred``.

    The window keeps a one-pixel margin (clipped at the image border, which counts as a
    boundary anyway), so distances and row-major tie-breaks equal the full-image result.
    """
    union = gt if pred is None else (gt | pred)
    rows = np.flatnonzero(union.any(axis=1))
    cols = np.flatnonzero(union.any(axis=0))
    if rows.size == 0:
        return None
    y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, gt.shape[0])
    x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, gt.shape[1])
    window_pred = None if pred is None else pred[y0:y1, x0:x1]
    click = click_rules.next_click(gt[y0:y1, x0:x1], window_pred)
    if click is None:
        return None
    return click_rules.Click(click.x + x0, click.y + y0, click.positive)


def _decode(
    predictor: SamPredictor,
    coords: torch.Tensor,
    labels: torch.Tensor,
    mask_input: torch.Tensor | None,
    multimask: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-res logits ``B×C×L×L`` and predicted IoU ``B×C`` (no upsampling yet)."""
    model = predictor.model
    with torch.inference_mode():
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=mask_input)
        low_res, iou = model.mask_decoder(
            image_embeddings=predictor.features,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
    return low_res.float(), iou.float()


def _best_low_res(
    predictor: SamPredictor, low_res: torch.Tensor, gts: torch.Tensor
) -> torch.Tensor:
    """Index of the mask (of ``C``) that best matches each reference, on the low-res grid.

    References ``B×H×W`` are taken to the model frame (resize to the input size, pad) and
    area-pooled to ``L×L``; IoU there ranks the candidates.
    """
    model = predictor.model
    side = model.image_encoder.img_size
    h, w = predictor.input_size
    with torch.inference_mode():
        ref = torch.nn.functional.interpolate(gts[:, None].float(), (h, w), mode="bilinear")
        ref = torch.nn.functional.pad(ref, (0, side - w, 0, side - h))
        ref = torch.nn.functional.adaptive_avg_pool2d(ref, low_res.shape[-2:]) > 0.5
        pred = low_res > model.mask_threshold
        inter = (pred & ref).flatten(2).sum(2)
        union = (pred | ref).flatten(2).sum(2).clamp(min=1)
        return (inter / union).argmax(1)
