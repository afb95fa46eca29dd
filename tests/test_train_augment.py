"""engine.train.augment: image and masks move together; colour touches the image only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.masks import masks_to_rles
from engine.train.augment import Augmentation
from engine.train.data import TrainSample, collate


def _coded(height: int = 96, width: int = 128, seed: int = 0):
    """Three rectangles/ellipses as masks, and an image whose channel k is 255 inside mask k."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    masks = []
    for _ in range(3):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.1, 0.3) * height, rng.uniform(0.1, 0.3) * width
        masks.append(((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1)
    masks = np.stack(masks)
    image = masks.transpose(1, 2, 0).astype(np.uint8) * 255
    return image, masks


def _agreement(image: torch.Tensor, masks: torch.Tensor) -> float:
    """Share of (mask, pixel) pairs where the mask agrees with its channel of the image."""
    coded = image > 127.5
    return float((coded == masks).float().mean())


@pytest.mark.parametrize("seed", range(6))
def test_geometric_augmentation_keeps_masks_on_their_pixels(seed):
    image, masks = _coded(seed=seed)
    img, msk = torch.from_numpy(image).permute(2, 0, 1).float(), torch.from_numpy(masks)
    aug = Augmentation(flip=0.5, scale=(0.5, 1.8), color=0.0)
    out_image, out_masks = aug.apply(img, msk, 128, torch.Generator().manual_seed(seed))
    assert out_image.shape[-2:] == out_masks.shape[-2:]
    assert max(out_image.shape[-2:]) <= 128
    assert out_masks.dtype == torch.bool and len(out_masks) == 3
    assert _agreement(out_image, out_masks) > 0.99  # only resampled edges may differ


def test_flip_mirrors_image_and_masks_exactly():
    image, masks = _coded()
    img, msk = torch.from_numpy(image).permute(2, 0, 1).float(), torch.from_numpy(masks)
    out_image, out_masks = Augmentation(1.0, (1.0, 1.0), 0.0).apply(img, msk, 128)
    assert torch.equal(out_image, img.flip(-1)) and torch.equal(out_masks, msk.flip(-1))


def test_scale_up_crops_to_the_frame_and_scale_down_shrinks():
    image, masks = _coded(96, 128)
    img, msk = torch.from_numpy(image).permute(2, 0, 1).float(), torch.from_numpy(masks)
    big_image, big_masks = Augmentation(0.0, (2.0, 2.0), 0.0).apply(
        img, msk, 128, torch.Generator().manual_seed(1)
    )
    assert tuple(big_image.shape[-2:]) == (128, 128) == tuple(big_masks.shape[-2:])
    assert _agreement(big_image, big_masks) > 0.99
    small_image, small_masks = Augmentation(0.0, (0.5, 0.5), 0.0).apply(img, msk, 128)
    assert tuple(small_image.shape[-2:]) == (48, 64) == tuple(small_masks.shape[-2:])
    areas = small_masks.flatten(1).sum(1).float() / msk.flatten(1).sum(1).float()
    assert torch.allclose(areas, torch.full_like(areas, 0.25), atol=0.05)


def test_colour_jitter_changes_the_image_only_and_stays_in_range():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.integers(0, 256, (3, 40, 50))).float()
    msk = torch.from_numpy(rng.random((2, 40, 50)) > 0.5)
    out_image, out_masks = Augmentation(0.0, (1.0, 1.0), 0.4).apply(
        img, msk, 64, torch.Generator().manual_seed(3)
    )
    assert torch.equal(out_masks, msk)
    assert not torch.equal(out_image, img)
    assert out_image.min() >= 0 and out_image.max() <= 255


def test_augmentation_is_a_function_of_the_generator_seed():
    image, masks = _coded()
    img, msk = torch.from_numpy(image).permute(2, 0, 1).float(), torch.from_numpy(masks)
    aug = Augmentation()
    runs = [aug.apply(img, msk, 128, torch.Generator().manual_seed(s)) for s in (7, 7, 8)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not (runs[0][0].shape == runs[2][0].shape and torch.equal(runs[0][0], runs[2][0]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale": (0.0, 1.0)}, "scale"),
        ({"scale": (2.0, 1.0)}, "scale"),
        ({"flip": 1.5}, "flip"),
        ({"color": 1.0}, "color"),
    ],
)
def test_bad_augmentation_numbers_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Augmentation(**kwargs)


def test_collate_augments_images_and_targets_together():
    image, masks = _coded(96, 128, seed=4)
    sample = TrainSample("coded", image, masks_to_rles(masks))
    aug = Augmentation(flip=0.5, scale=(0.6, 2.0), color=0.0)
    for seed in range(5):
        images, targets = collate([sample], 128, 8, torch.Generator().manual_seed(seed), aug)
        h, w = targets[0].valid_hw
        assert tuple(images[0].shape[-2:]) == (h, w)
        real = targets[0].masks[:, :h, :w]
        assert not targets[0].masks[:, h:, :].any() and not targets[0].masks[:, :, w:].any()
        assert 1 <= len(real) <= 3  # masks the crop removed are dropped
        coded = images[0] > 127.5
        # each kept mask matches one of the image's channels (its own)
        for mask in real:
            best = max(float((coded[c] == mask).float().mean()) for c in range(3))
            assert best > 0.99
