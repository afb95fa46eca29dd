"""One decoder step for the annotation tool, and the short-lived store of its outputs.

A decode returns the model's masks (COCO RLE at the image size) with their predicted IoU, plus
a *handle*: the server keeps the low-res logits under it, so the next click can feed the
chosen mask back as the mask prompt without sending logits over the wire, and an accepted mask
can be compared with the model's proposal (``model_iou``). The stability score (a pass over
the full-resolution logits, the costliest part of a click at 1500×2250) is computed only for
the mask that is accepted, from the kept logits.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from engine.masks import mask_to_rle, stability_score
from engine.model import ImageEmbedding, Sam, SamPredictor


@dataclass
class Proposal:
    """The outputs of one decoder step on image ``key`` (``C`` = 3 or 1 masks)."""

    key: str
    low_res: np.ndarray  # C×L×L float32 logits
    rles: list[dict]  # C masks, COCO RLE at the image size
    scores: list[float]  # predicted IoU, C
    input_size: tuple[int, int]  # (h, w) of the resized image in the model input
    original_size: tuple[int, int]  # (H, W) of the image


def decode_prompts(
    model: Sam,
    embedding: ImageEmbedding,
    points_xy: np.ndarray | None,
    labels: np.ndarray | None,
    box_xyxy: np.ndarray | None,
    mask_logits: np.ndarray | None,
    multimask: bool,
) -> tuple[np.ndarray, list[float], np.ndarray]:
    """Run the prompt encoder + mask decoder on a cached embedding.

    Args: ``points_xy`` N×2 and ``labels`` N (1 positive, 0 negative) in original-image
    pixels; ``box_xyxy`` 4; ``mask_logits`` L×L low-res logits of an earlier step.
    Returns masks ``C×H×W`` bool, predicted IoU ``C``, low-res logits ``C×L×L``.
    """
    predictor = SamPredictor(model)  # per call: the shared model, no shared state
    predictor.set_image_embedding(embedding)
    size = predictor.original_size
    coords_t = labels_t = box_t = mask_t = None
    if points_xy is not None:
        coords = predictor.transform.apply_coords(points_xy[None].astype(np.float32), size)
        coords_t = torch.as_tensor(coords, dtype=torch.float, device=predictor.device)
        labels_t = torch.as_tensor(labels[None], dtype=torch.int, device=predictor.device)
    if box_xyxy is not None:
        box = predictor.transform.apply_boxes(box_xyxy[None].astype(np.float32), size)
        box_t = torch.as_tensor(box, dtype=torch.float, device=predictor.device)
    if mask_logits is not None:
        mask_t = torch.as_tensor(mask_logits, dtype=torch.float, device=predictor.device)[
            None, None
        ]
    logits, iou, low_res = predictor.predict_torch(
        coords_t, labels_t, box_t, mask_t, multimask_output=multimask, return_logits=True
    )
    with torch.inference_mode():
        masks = (logits[0] > model.mask_threshold).cpu().numpy()
    return masks, [float(s) for s in iou[0].tolist()], low_res[0].cpu().numpy()


def proposal_stability(model: Sam, proposal: Proposal, index: int) -> float:
    """Stability score (offset 1.0, as the automatic generator) of mask ``index``, from its
    low-res logits upsampled to the image size; 0.0 when undefined (no pixel above −1)."""
    low_res = torch.as_tensor(proposal.low_res[index], device=model.device)[None, None]
    with torch.inference_mode():
        logits = model.postprocess_masks(low_res, proposal.input_size, proposal.original_size)
        score = float(stability_score(logits[0, 0], model.mask_threshold, 1.0))
    return 0.0 if math.isnan(score) else score


def rles_of(masks: np.ndarray) -> list[dict]:
    """COCO RLE of each ``H×W`` mask of a ``C×H×W`` stack."""
    return [mask_to_rle(mask) for mask in masks]


class ProposalStore:
    """Recent proposals by handle (random, unguessable), least recently used dropped first."""

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Proposal] = OrderedDict()

    def put(self, proposal: Proposal) -> str:
        handle = secrets.token_hex(16)
        with self._lock:
            self._items[handle] = proposal
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return handle

    def get(self, handle: str, key: str) -> Proposal:
        """The proposal under ``handle`` made on image ``key``; ``KeyError`` if expired/unknown."""
        with self._lock:
            proposal = self._items.get(handle)
            if proposal is None or proposal.key != key:
                raise KeyError(handle)
            self._items.move_to_end(handle)
            return proposal
