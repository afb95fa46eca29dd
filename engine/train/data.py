"""Training data: images resized into the model's input frame, masks kept as RLE.

``prepare_item`` turns an ``ImageItem`` (any source: synthetic, folder, COCO, SA-1B shards)
into a ``TrainSample``: the image resized so its longest side is ``img_size`` (``h×w×3``
uint8, not padded) and its reference masks resized to ``h×w`` and stored as COCO RLE (masks
covering more than ``max_area_fraction`` of the image, 90% in the paper, and masks that vanish
at the new size — or, with ``min_area``, cover fewer input-frame pixels than that — are
dropped). ``TrainDataset`` is a list of them; ``collate`` builds a step's
batch (padded ``B×3×S×S`` float images and ``M×S×S`` bool masks per image, at most
``max_masks`` per image, drawn at random).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from engine.data import DecodeError, ImageSource
from engine.masks import masks_to_rles, rle_area, rle_to_mask
from engine.model.transforms import ResizeLongestSide
from engine.records import ImageItem
from engine.train.augment import Augmentation

logger = logging.getLogger(__name__)

MAX_AREA_FRACTION = 0.9


@dataclass
class TrainSample:
    """One image in the model's input frame: ``image`` h×w×3 uint8 (longest side = img_size),
    ``masks`` COCO RLE dicts of size ``[h, w]``."""

    key: str
    image: np.ndarray
    masks: list[dict]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass
class ImageTargets:
    """The masks of one image in a batch: ``masks`` M×S×S bool in the padded input frame,
    ``valid_hw`` the (h, w) of the real image inside it."""

    masks: torch.Tensor
    valid_hw: tuple[int, int]


def resize_image(image: np.ndarray, img_size: int) -> np.ndarray:
    """H×W×3 uint8 → h×w×3 uint8 with the longest side ``img_size``, exactly as the
    predictor resizes it (``ResizeLongestSide``: PIL bilinear)."""
    return ResizeLongestSide(img_size).apply_image(np.ascontiguousarray(image))


def resize_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """N×H×W bool → N×height×width bool (area-weighted, kept where coverage ≥ 0.5)."""
    if masks.shape[0] == 0:
        return np.zeros((0, height, width), dtype=bool)
    tensor = torch.from_numpy(np.ascontiguousarray(masks)).float()[:, None]
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", antialias=True)
    return (resized[:, 0] >= 0.5).numpy()


def prepare_item(
    item: ImageItem,
    img_size: int,
    max_area_fraction: float = MAX_AREA_FRACTION,
    min_area: int = 1,
) -> TrainSample:
    """Resize one item into the input frame; drop too-large masks and masks left with fewer
    than ``min_area`` pixels at the new size (a small model learns little from masks below
    its low-res grid's resolution; 1 keeps every mask that does not vanish)."""
    image_area = item.height * item.width
    kept = [
        ref.rle
        for ref in item.references
        if 0 < rle_area(ref.rle) <= max_area_fraction * image_area and not ref.iscrowd
    ]
    image = resize_image(item.image, img_size)
    h, w = image.shape[:2]
    if kept:
        masks = resize_masks(np.stack([rle_to_mask(r) for r in kept]), h, w)
        masks = masks[masks.reshape(len(masks), -1).sum(axis=1) >= max(min_area, 1)]
    else:
        masks = np.zeros((0, h, w), dtype=bool)
    return TrainSample(key=item.key, image=image, masks=masks_to_rles(masks))


class TrainDataset:
    """A list of ``TrainSample`` (random access, ``len``, sharding by index).

    ``sharded_for`` is ``(rank, world_size)`` when the list is already one rank's share.
    """

    def __init__(
        self, samples: Sequence[TrainSample], sharded_for: tuple[int, int] | None = None
    ) -> None:
        self.samples = list(samples)
        self.sharded_for = sharded_for

    @classmethod
    def from_items(
        cls,
        items: Iterable[ImageItem],
        img_size: int,
        max_area_fraction: float = MAX_AREA_FRACTION,
        min_area: int = 1,
    ) -> TrainDataset:
        """Prepare every item; images left with no usable mask are skipped."""
        samples = [prepare_item(item, img_size, max_area_fraction, min_area) for item in items]
        return cls([s for s in samples if s.masks])

    @classmethod
    def from_source(
        cls,
        source: ImageSource,
        img_size: int,
        limit: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        max_area_fraction: float = MAX_AREA_FRACTION,
        min_area: int = 1,
    ) -> TrainDataset:
        """Load the first ``limit`` entries of a source (``engine.data``), or only this rank's
        share of them (entries ``rank, rank + world_size, …``) — nothing else is decoded.
        Unreadable entries are quarantined (logged) and left out."""
        _check_rank(rank, world_size)
        entries = list(itertools.islice(source.entries(), limit))
        samples = []
        for entry in entries[rank::world_size]:
            if entry.error is not None:
                logger.warning("skipping %s: %s", entry.key, entry.error)
                continue
            try:
                item = source.load(entry)
            except DecodeError as exc:
                logger.warning("skipping %s: %s", entry.key, exc.reason)
                continue
            sample = prepare_item(item, img_size, max_area_fraction, min_area)
            if sample.masks:
                samples.append(sample)
        return cls(samples, sharded_for=(rank, world_size) if world_size > 1 else None)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> TrainSample:
        return self.samples[index]

    def shard(self, rank: int, world_size: int) -> TrainDataset:
        """The images ``rank, rank + world_size, …`` (data parallelism by image index).

        A dataset already sharded for ``(rank, world_size)`` is returned as it is.
        """
        _check_rank(rank, world_size)
        if self.sharded_for == (rank, world_size) or world_size == 1:
            return self
        if self.sharded_for is not None:
            raise ValueError(
                f"dataset is sharded for (rank, world) = {self.sharded_for}, "
                f"not {(rank, world_size)}"
            )
        return TrainDataset(self.samples[rank::world_size], sharded_for=(rank, world_size))


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, {world_size=}")


def image_tensor(sample: TrainSample) -> torch.Tensor:
    """3×h×w float (0–255) of a sample, ready for ``Sam.preprocess``."""
    return torch.from_numpy(np.array(sample.image)).permute(2, 0, 1).float()


def collate(
    samples: Sequence[TrainSample],
    img_size: int,
    max_masks: int,
    generator: torch.Generator | None = None,
    augmentation: Augmentation | None = None,
) -> tuple[list[torch.Tensor], list[ImageTargets]]:
    """A step's batch: per image the 3×h×w float image and ``ImageTargets`` with at most
    ``max_masks`` masks (a random subset when there are more), padded to S×S.

    With ``augmentation``, each image and its masks are augmented together; masks the crop
    removes are dropped (and the image kept as it was if none is left)."""
    images: list[torch.Tensor] = []
    targets: list[ImageTargets] = []
    for sample in samples:
        rles = sample.masks
        if len(rles) > max_masks:
            order = torch.randperm(len(rles), generator=generator)[:max_masks]
            rles = [rles[int(i)] for i in order.sort().values]
        image = image_tensor(sample)
        h, w = sample.size
        masks = torch.zeros((len(rles), h, w), dtype=torch.bool)
        if rles:
            masks = torch.from_numpy(np.stack([rle_to_mask(r) for r in rles]))
        if augmentation is not None:
            new_image, new_masks = augmentation.apply(image, masks, img_size, generator)
            kept = new_masks.flatten(1).any(1)
            if kept.any() or not len(masks):
                image, masks = new_image, new_masks[kept]
        h, w = image.shape[-2:]
        padded = torch.zeros((len(masks), img_size, img_size), dtype=torch.bool)
        padded[:, :h, :w] = masks
        images.append(image)
        targets.append(ImageTargets(masks=padded, valid_hw=(h, w)))
    return images, targets
