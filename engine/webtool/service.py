"""What the annotation API does, without HTTP: one round's queue, model, embeddings and store.

``AnnotationService(run_dir, prefix)`` reads ``queues/<prefix>.json``, builds the round's
model (``build_sam(preset, checkpoint)``; the checkpoint must lie inside ``run_dir``) and
serves decode / accept / delete / undo / finish on images named by key. Errors: an unknown
key raises ``UnknownImageError``; a bad prompt or mask raises ``ValueError``; an image held by
someone else raises ``ClaimError``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from engine import masks as mask_ops
from engine.annotators.human_store import HumanAnnotationStore, ImageWork
from engine.annotators.queue import RoundQueue, list_queues, read_queue
from engine.model import Sam, SamPredictor, build_sam
from engine.records import SOURCE_ANNOTATOR
from engine.sa1b import MaskRecord, Provenance
from engine.webtool import schemas
from engine.webtool.embeddings import EmbeddingCache
from engine.webtool.images import RoundImages
from engine.webtool.proposals import (
    Proposal,
    ProposalStore,
    decode_prompts,
    proposal_stability,
    rles_of,
)


def inside(run_dir: Path, relative: str) -> Path:
    """``run_dir / relative`` resolved, refusing anything that leaves ``run_dir``."""
    root = Path(run_dir).resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"path {relative!r} leaves the run directory {root}")
    return path


def load_round_model(run_dir: Path, queue: RoundQueue) -> Sam:
    """The round's model: ``queue.preset`` with ``queue.checkpoint`` (random init when null)."""
    checkpoint = None if queue.checkpoint is None else inside(run_dir, queue.checkpoint)
    return build_sam(queue.preset, checkpoint=checkpoint)


def open_prefix(run_dir: str | Path) -> str | None:
    """The newest queue (by prefix order) whose round still needs images, or None."""
    for prefix in reversed(list_queues(run_dir)):
        queue = read_queue(run_dir, prefix)
        done = HumanAnnotationStore(run_dir, prefix).done_keys()
        if len(done & set(queue.keys)) < queue.target_images:
            return prefix
    return None


class AnnotationService:
    """One round served to annotators (see the module docstring).

    Args:
        run_dir: the run directory; prefix: the round (``stage1-r00``).
        model: a ready model (tests); default builds it from the queue.
        embed_cache: embeddings kept; claim_seconds: idle time before a claim expires.
    """

    def __init__(
        self,
        run_dir: str | Path,
        prefix: str,
        model: Sam | None = None,
        embed_cache: int = 8,
        claim_seconds: float = 900.0,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.queue = read_queue(self.run_dir, prefix)
        self.store = HumanAnnotationStore(self.run_dir, prefix, claim_seconds=claim_seconds)
        self.model = model if model is not None else load_round_model(self.run_dir, self.queue)
        self.images = RoundImages(self.queue)
        self.embeddings = EmbeddingCache(SamPredictor(self.model), self.images.image, embed_cache)
        self.proposals = ProposalStore()

    def close(self) -> None:
        self.embeddings.close()

    # ---- reading ---------------------------------------------------------------------------

    def round_info(self) -> dict:
        done = self.store.done_keys()
        return {
            "prefix": self.queue.prefix,
            "stage": self.queue.stage,
            "round": self.queue.round,
            "preset": self.queue.preset,
            "images": len(self.queue.entries),
            "target_images": self.queue.target_images,
            "images_done": len(done & set(self.queue.keys)),
            "max_points": schemas.MAX_POINTS,
        }

    def state(self, key: str) -> dict:
        """What the page shows for ``key``: size, saved (or pre-filled) masks, done flag."""
        self.images.check(key)
        height, width = self.images.size(key)
        work = self.store.work(key)
        return {**work.to_json(), "width": width, "height": height}

    def claim(self, annotator: str) -> str | None:
        """Hand ``annotator`` an image and start computing its embedding."""
        key = self.store.claim(annotator)
        if key is not None:
            self.embeddings.prefetch(key)
        return key

    # ---- model -------------------------------------------------------------------------------

    def embed(self, key: str) -> dict:
        """Make sure ``key``'s embedding is cached; queue the next open image's."""
        self.images.check(key)
        cached = self.embeddings.is_cached(key)
        self.embeddings.get(key)
        following = self._next_open(key)
        if following is not None:
            self.embeddings.prefetch(following)
        return {"key": key, "cached": cached, "seconds": self.embeddings.seconds.get(key)}

    def decode(self, key: str, request: schemas.DecodeRequest) -> dict:
        """One decoder step; returns masks (RLE), predicted IoUs and a handle."""
        self.images.check(key)
        height, width = self.images.size(key)
        points = np.array(request.points, dtype=np.float32).reshape(-1, 2)
        _check_inside(points, width, height, "points")
        box = None
        if request.box is not None:
            box = np.array(request.box, dtype=np.float32)
            _check_inside(box.reshape(2, 2), width, height, "box")
        logits = None
        if request.mask_input is not None:
            previous = self.proposals.get(request.mask_input.handle, key)
            if request.mask_input.index >= len(previous.rles):
                raise ValueError(f"mask_input.index {request.mask_input.index} is out of range")
            logits = previous.low_res[request.mask_input.index]
        embedding = self.embeddings.get(key)
        start = time.perf_counter()
        masks, scores, low_res = decode_prompts(
            self.model,
            embedding,
            points if len(points) else None,
            np.array(request.labels, dtype=np.int64) if len(points) else None,
            box,
            logits,
            request.multimask,
        )
        decode_ms = (time.perf_counter() - start) * 1000.0
        rles = rles_of(masks)
        sizes = (embedding.input_size, embedding.original_size)
        handle = self.proposals.put(Proposal(key, low_res, rles, scores, *sizes))
        return {"handle": handle, "masks": rles, "scores": scores, "decode_ms": round(decode_ms, 2)}

    # ---- edits --------------------------------------------------------------------------------

    def accept(self, key: str, request: schemas.AcceptRequest) -> ImageWork:
        """Save an accepted mask at once (bbox and area computed here, never trusted)."""
        self.images.check(key)
        height, width = self.images.size(key)
        rle = {"size": list(request.mask.size), "counts": request.mask.counts}
        if rle["size"] != [height, width]:
            raise ValueError(f"mask size {rle['size']} != image [height, width] {[height, width]}")
        try:
            mask = mask_ops.rle_to_mask(rle)
        except mask_ops.RLEError as exc:
            raise ValueError(f"mask does not decode: {exc}") from exc
        if not mask.any():
            raise ValueError("the mask is empty")
        predicted_iou, stability, model_iou = 1.0, 1.0, None
        if request.proposal is not None:
            proposal = self.proposals.get(request.proposal.handle, key)
            index = request.proposal.index
            if index >= len(proposal.rles):
                raise ValueError(f"proposal.index {index} is out of range")
            predicted_iou = proposal.scores[index]
            stability = proposal_stability(self.model, proposal, index)
            model_iou = float(mask_ops.rle_iou([proposal.rles[index]], [rle])[0, 0])
        points = [[float(x), float(y)] for x, y in request.point_coords[:1]]
        _check_inside(np.array(points, dtype=np.float32).reshape(-1, 2), width, height, "points")
        canonical = mask_ops.mask_to_rle(mask)
        record = MaskRecord(
            id=0,
            segmentation=canonical,
            bbox=[float(v) for v in mask_ops.mask_bbox_xywh(mask)],
            area=int(mask.sum()),
            predicted_iou=float(predicted_iou),
            stability_score=float(stability),
            point_coords=points,
            crop_box=[0.0, 0.0, float(width), float(height)],
            provenance=Provenance(
                stage=self.queue.stage,
                round=self.queue.round,
                source=SOURCE_ANNOTATOR,
                clicks=request.clicks,
                seconds=round(request.seconds, 3),
                model_iou=None if model_iou is None else round(model_iou, 6),
                hand_fixed=request.brush_strokes > 0,
                level=None,
                granularity=request.granularity,
                parent_id=request.parent_id,
            ),
        )
        return self.store.accept(
            key, record, request.annotator, request.replaces, request.image_seconds
        )

    def _next_open(self, key: str) -> str | None:
        """The first image after ``key`` in queue order that is neither done nor held."""
        keys = self.queue.keys
        done = self.store.done_keys()
        start = keys.index(key) + 1
        for candidate in keys[start:] + keys[:start]:
            if candidate != key and candidate not in done and self.store.holder(candidate) is None:
                return candidate
        return None


def _check_inside(points_xy: np.ndarray, width: int, height: int, name: str) -> None:
    """Points ``N×2`` must lie on the image: ``0 <= x <= W``, ``0 <= y <= H``."""
    if len(points_xy) and not (
        (points_xy[:, 0] >= 0).all()
        and (points_xy[:, 0] <= width).all()
        and (points_xy[:, 1] >= 0).all()
        and (points_xy[:, 1] <= height).all()
    ):
        raise ValueError(f"{name} must lie inside the {width}x{height} image")
