"""Synthetic scenes: determinism, levels and nesting, sizes and counts, splits, the source."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from engine.data import iter_items, open_source
from engine.data.synthetic import (
    MAX_AREA_FRAC,
    MAX_OBJECTS,
    MIN_AREA_FRAC,
    MIN_OBJECTS,
    SPLIT_HELDOUT,
    SPLIT_PUBLIC,
    SPLIT_TRAIN,
    SPLITS,
    SyntheticSource,
    plan_scene,
    render_scene,
    split_of,
    split_seeds,
)
from engine.data.synthetic_masks import SAME_AS_PARENT, columns_to_rles, crop_to_rle
from engine.data.synthetic_objects import KINDS
from engine.data.synthetic_shapes import BLOB, ELLIPSE, POLY, RECT, RING, Shape, rasterize
from engine.masks import mask_to_rle, rle_to_mask
from engine.records import LEVEL_PART, LEVEL_SUBPART, LEVEL_WHOLE

SEEDS = range(12)
H, W = 192, 256  # smaller than the default to keep the tests quick


@pytest.fixture(scope="module")
def scenes() -> dict[int, tuple[np.ndarray, list]]:
    return {seed: render_scene(seed, H, W) for seed in SEEDS}


def test_same_seed_gives_identical_bytes() -> None:
    image_a, refs_a = render_scene(7, H, W)
    image_b, refs_b = render_scene(7, H, W)
    assert image_a.tobytes() == image_b.tobytes()
    assert [r.rle for r in refs_a] == [r.rle for r in refs_b]
    assert [(r.level, r.object_id, r.parent_index) for r in refs_a] == [
        (r.level, r.object_id, r.parent_index) for r in refs_b
    ]
    other, _ = render_scene(8, H, W)
    assert other.tobytes() != image_a.tobytes()


def test_image_format(scenes: dict) -> None:
    for image, refs in scenes.values():
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        assert image.std() > 10  # not a flat picture
        for ref in refs:
            assert ref.rle["size"] == [H, W] and isinstance(ref.rle["counts"], str)


def test_every_level_is_present(scenes: dict) -> None:
    levels = [r.level for _, refs in scenes.values() for r in refs]
    counts = {level: levels.count(level) for level in (LEVEL_WHOLE, LEVEL_PART, LEVEL_SUBPART)}
    assert all(n > 0 for n in counts.values()), counts
    assert counts[LEVEL_PART] >= counts[LEVEL_WHOLE] / 2  # most objects have parts
    for _, refs in scenes.values():
        assert any(r.level == LEVEL_SUBPART for r in refs) or len(refs) < 10


def test_levels_nest_after_occlusion(scenes: dict) -> None:
    """Sub-part ⊂ part ⊂ whole, pixel for pixel, with parent links and object ids agreeing."""
    for _, refs in scenes.values():
        masks = [rle_to_mask(r.rle) for r in refs]
        for i, ref in enumerate(refs):
            if ref.level == LEVEL_WHOLE:
                assert ref.parent_index is None
                continue
            parent = refs[ref.parent_index]
            assert ref.parent_index < i and parent.object_id == ref.object_id
            assert parent.level < ref.level
            assert not (masks[i] & ~masks[ref.parent_index]).any()  # inside its parent
            # a child that is (almost) its parent has been dropped
            assert masks[i].sum() < SAME_AS_PARENT * masks[ref.parent_index].sum()


def test_wholes_are_disjoint_visible_regions(scenes: dict) -> None:
    """Occlusion: every pixel belongs to at most one visible whole."""
    for _, refs in scenes.values():
        wholes = np.stack([rle_to_mask(r.rle) for r in refs if r.level == LEVEL_WHOLE])
        assert wholes.sum(axis=0).max() <= 1
        objects = [r.object_id for r in refs if r.level == LEVEL_WHOLE]
        assert len(set(objects)) == len(objects)


def test_parts_of_one_object_do_not_overlap(scenes: dict) -> None:
    for _, refs in scenes.values():
        by_object: dict[int, list[np.ndarray]] = {}
        for r in refs:
            if r.level == LEVEL_PART:
                by_object.setdefault(r.object_id, []).append(rle_to_mask(r.rle))
        for parts in by_object.values():
            assert np.stack(parts).sum(axis=0).max() <= 1


def test_tiny_masks_are_dropped(scenes: dict) -> None:
    minimum = max(16, round(3e-4 * H * W))
    for _, refs in scenes.values():
        assert all(rle_to_mask(r.rle).sum() >= minimum for r in refs)
    _, strict = render_scene(3, H, W, min_mask_area=400)
    assert all(rle_to_mask(r.rle).sum() >= 400 for r in strict)
    assert len(strict) < len(render_scene(3, H, W)[1])


def test_object_counts_and_sizes_cover_the_ranges() -> None:
    plans = [plan_scene(seed, 384, 512) for seed in range(150)]
    counts = [len(p.objects) for p in plans]
    assert min(counts) >= MIN_OBJECTS and max(counts) <= MAX_OBJECTS
    assert min(counts) <= 7 and max(counts) >= 30  # the range is used, not just allowed
    fracs = [o.target_area / (384 * 512) for p in plans for o in p.objects]
    assert min(fracs) >= MIN_AREA_FRAC - 1e-12 and max(fracs) <= MAX_AREA_FRAC + 1e-12
    assert min(fracs) < 0.002 and max(fracs) > 0.1
    kinds = {o.kind for p in plans for o in p.objects}
    assert kinds == set(KINDS)


def test_visible_wholes_stay_below_a_third_of_the_image(scenes: dict) -> None:
    largest = max(
        rle_to_mask(r.rle).sum() / (H * W)
        for _, refs in scenes.values()
        for r in refs
        if r.level == LEVEL_WHOLE
    )
    assert 0.05 < largest <= 0.36  # 30 % target, a little more from the template spread


def test_splits_are_disjoint_and_cover_their_ranges() -> None:
    ranges = [SPLITS[name] for name in (SPLIT_PUBLIC, SPLIT_TRAIN, SPLIT_HELDOUT)]
    for a in range(3):
        for b in range(a + 1, 3):
            assert ranges[a].stop <= ranges[b].start or ranges[b].stop <= ranges[a].start
    assert split_seeds(SPLIT_TRAIN, 3, offset=5) == range(1_000_005, 1_000_008)
    assert split_of(2_000_001) == SPLIT_HELDOUT and split_of(0) == SPLIT_PUBLIC
    with pytest.raises(ValueError, match="does not fit split"):
        split_seeds(SPLIT_HELDOUT, len(SPLITS[SPLIT_HELDOUT]) + 1)
    with pytest.raises(ValueError, match="unknown split"):
        split_seeds("test", 1)


def test_source_entries_keys_and_items() -> None:
    source = SyntheticSource.from_split(SPLIT_HELDOUT, count=3, offset=10, height=H, width=W)
    entries = list(source.entries())
    assert [e.key for e in entries] == ["syn-2000010", "syn-2000011", "syn-2000012"]
    assert [e.path for e in entries] == [f"synthetic:{s}" for s in range(2000010, 2000013)]
    assert [e.image_id for e in entries] == [2000010, 2000011, 2000012]
    item = source.load(pickle.loads(pickle.dumps(entries[1])))
    image, refs = render_scene(2000011, H, W)
    assert item.key == "syn-2000011" and item.file_name == "syn-2000011.jpg"
    assert item.image.tobytes() == image.tobytes() and len(item.references) == len(refs)
    assert [e.key for e in SyntheticSource(123, 2).entries()] == ["syn-000123", "syn-000124"]
    clone = pickle.loads(pickle.dumps(source))
    assert len(pickle.dumps(source)) < 500
    assert [i.key for i in iter_items(clone, limit=2)] == ["syn-2000010", "syn-2000011"]
    assert isinstance(open_source("synthetic", seed_start=5, count=1), SyntheticSource)


@pytest.mark.parametrize(
    "kwargs", [{"seed_start": -1}, {"count": -2}, {"height": 8}, {"width": 10.5}]
)
def test_source_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs)).split("_")[0]):
        SyntheticSource(**kwargs)


def test_crop_to_rle_matches_pycocotools() -> None:
    rng = np.random.default_rng(0)
    for trial in range(400):
        height, width = (int(v) for v in rng.integers(1, 12, 2))
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        ch = height if trial % 3 == 0 else int(rng.integers(1, height - y0 + 1))
        y0 = 0 if trial % 3 == 0 else y0
        cw = int(rng.integers(1, width - x0 + 1))
        crop = rng.random((ch, cw)) < rng.random()
        full = np.zeros((height, width), dtype=bool)
        full[y0 : y0 + ch, x0 : x0 + cw] = crop
        assert crop_to_rle(crop, x0, y0, height, width) == mask_to_rle(full), trial


def test_columns_to_rles_batches_many_crops_including_empty_ones() -> None:
    rng = np.random.default_rng(1)
    height, width = 9, 13
    crops, origins, expected = [], [], []
    for k in range(40):
        x0, y0 = int(rng.integers(0, width)), 0 if k % 4 == 0 else int(rng.integers(0, height))
        ch = height - y0 if k % 4 == 0 else int(rng.integers(1, height - y0 + 1))
        cw = int(rng.integers(1, width - x0 + 1))
        crop = rng.random((ch, cw)) < (0.0 if k % 7 == 0 else rng.random())  # some empty
        full = np.zeros((height, width), dtype=bool)
        full[y0 : y0 + ch, x0 : x0 + cw] = crop
        crops.append(np.ascontiguousarray(crop.T))
        origins.append((x0, y0))
        expected.append(mask_to_rle(full))
    assert columns_to_rles(crops, origins, height, width) == expected
    assert columns_to_rles([], [], height, width) == []


def _rasterized(shape: Shape, height: int = 80, width: int = 80) -> np.ndarray:
    mask = np.zeros(height * width, dtype=bool)
    index, _, _ = rasterize(shape, (0, 0, width, height))
    mask[index] = True
    return mask.reshape(height, width)


@pytest.mark.parametrize(
    ("kind", "extra", "area"),
    [
        (ELLIPSE, (), math.pi * 30 * 15),
        (RECT, (), 4 * 30 * 15),
        (RECT, (0.5,), 4 * 30 * 15 - (4 - math.pi) * 7.5**2),
        (RING, (0.5,), math.pi * 30 * 15 * 0.75),
        (POLY, (-1.0, 1.0, 1.0, 1.0, 0.0, -1.0), 2 * 30 * 15),  # triangle
        (BLOB, (0.1, 0.3, 0.05, 1.0), math.pi * 30 * 15 * (1 + 0.5 * (0.01 + 0.0025))),
    ],
)
def test_shapes_rasterize_to_their_area(kind: str, extra: tuple, area: float) -> None:
    for angle in (0.0, 0.7):
        shape = Shape(kind, 40.0, 40.0, 30.0, 15.0, angle, extra)
        mask = _rasterized(shape)
        assert mask.sum() == pytest.approx(area, rel=0.04)  # edge pixels at 60×30 px
        assert shape.area() == pytest.approx(area, rel=1e-9)
        x0, y0, x1, y1 = shape.bounds()  # the box contains every pixel centre drawn
        ys, xs = np.nonzero(mask)
        assert xs.min() + 0.5 >= x0 and xs.max() + 0.5 <= x1
        assert ys.min() + 0.5 >= y0 and ys.max() + 0.5 <= y1


@pytest.mark.parametrize("kind", [POLY, BLOB])
def test_mirrored_shapes_are_mirror_images(kind: str) -> None:
    extra = (-1.0, 1.0, 1.0, 0.6, 0.2, -1.0) if kind == POLY else (0.15, 0.4, 0.08, 2.0)
    local = Shape(kind, 0.2, 0.1, 1.0, 0.6, 0.3, extra)
    plain = _rasterized(local.moved(40.0, 40.0, 25.0, 0.0, flip=False))
    mirrored = _rasterized(local.moved(40.0, 40.0, 25.0, 0.0, flip=True))
    # Mirroring about the vertical line x = 40 maps pixel column c to 79 - c.
    assert (plain != mirrored[:, ::-1]).sum() <= 0.01 * plain.sum()


def test_dusk_style_relights_the_same_scene_and_keeps_its_masks():
    studio, studio_refs = render_scene(2_000_003, 96, 128)
    dusk, dusk_refs = render_scene(2_000_003, 96, 128, style="dusk")
    assert [r.rle for r in dusk_refs] == [r.rle for r in studio_refs]
    assert dusk.shape == studio.shape and dusk.dtype == np.uint8
    assert dusk.mean() < studio.mean() and dusk.std() < studio.std()  # darker, flatter
    again, _ = render_scene(2_000_003, 96, 128, style="dusk")
    assert np.array_equal(dusk, again)
    with pytest.raises(ValueError, match="style"):
        render_scene(1, 96, 128, style="noon")
    source = SyntheticSource.from_split("heldout", 1, style="dusk")
    item = source.load(next(source.entries()))
    assert item.key == "syn-2000000" and source.name.endswith(":dusk")
