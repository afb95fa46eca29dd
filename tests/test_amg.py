"""engine.amg: arguments, presets, output records, batching, the windowed upsampler and the
shared-image decoder path (the comparison with the official generator is in
test_amg_agreement.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from amg_peer import planted_pair, shapes_image

from engine import masks as mask_ops
from engine.amg import PRESETS, AutomaticMaskGenerator, to_mask_records
from engine.amg_decode import decode_points
from engine.amg_upsample import UpsamplePlan
from engine.model import SamPredictor
from engine.sa1b import ImageRecord, Provenance, validate

LOW = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.8, "points_per_side": 6}


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    return planted_pair(seed=1)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return shapes_image(192, 256, seed=0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"points_per_side": 0}, ValueError, "points_per_side must be >= 1, got 0"),
        ({"points_per_side": 2.5}, TypeError, "points_per_side must be an int, got 2.5"),
        ({"points_per_batch": 0}, ValueError, "points_per_batch must be >= 1, got 0"),
        ({"pred_iou_thresh": float("nan")}, ValueError, "pred_iou_thresh must be a finite"),
        ({"stability_score_thresh": 1.5}, ValueError, "stability_score_thresh .* got 1.5"),
        ({"box_nms_thresh": -0.1}, ValueError, "box_nms_thresh .* got -0.1"),
        ({"crop_nms_thresh": "0.7"}, TypeError, "crop_nms_thresh must be a number, got '0.7'"),
        ({"crop_n_layers": -1}, ValueError, "crop_n_layers must be >= 0, got -1"),
        ({"crop_overlap_ratio": 2.0}, ValueError, "crop_overlap_ratio .* got 2.0"),
        ({"crop_n_points_downscale_factor": 0}, ValueError, "downscale_factor must be >= 1"),
        ({"min_mask_region_area": -5}, ValueError, "min_mask_region_area must be >= 0, got -5"),
        ({"max_mask_fraction": 0.0}, ValueError, "max_mask_fraction must be in \\(0, 1\\]"),
        ({"stability_score_offset": 0.0}, ValueError, "stability_score_offset must be > 0"),
        ({"max_mask_fraction": 1.2}, ValueError, "max_mask_fraction .* got 1.2"),
        ({"encoder_batch_size": 0}, ValueError, "encoder_batch_size must be >= 1, got 0"),
        ({"point_grids": [np.zeros((4, 2))]}, ValueError, "exactly one of points_per_side"),
        ({"points_per_side": None}, ValueError, "exactly one of points_per_side"),
        (
            {"points_per_side": None, "point_grids": [np.zeros((4, 3))]},
            ValueError,
            r"point_grids\[0\] must be N×2",
        ),
        (
            {"points_per_side": None, "point_grids": [np.full((4, 2), 1.5)]},
            ValueError,
            "normalised to",
        ),
        (
            {"points_per_side": None, "point_grids": [np.zeros((4, 2))], "crop_n_layers": 1},
            ValueError,
            "crop_n_layers \\+ 1 = 2 arrays",
        ),
        (
            {"points_per_side": 3, "crop_n_layers": 2, "crop_n_points_downscale_factor": 2},
            ValueError,
            "leaves no points in crop layer 2",
        ),
    ],
)
def test_bad_arguments(models, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        AutomaticMaskGenerator(models[0], **kwargs)


def test_model_type_and_image_checks(models) -> None:
    with pytest.raises(TypeError, match="has no 'image_encoder'"):
        AutomaticMaskGenerator(torch.nn.Linear(2, 2))
    generator = AutomaticMaskGenerator(models[0], **LOW)
    with pytest.raises(ValueError, match=r"images\[0\] must be H×W×3 uint8 RGB, got float32"):
        generator.generate(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"got uint8 \(8, 8\)"):
        generator.generate(np.zeros((8, 8), np.uint8))
    with pytest.raises(TypeError, match="must be a numpy array, got list"):
        generator.generate_batch([[[0, 0, 0]]])


def test_presets(models) -> None:
    sa1b = AutomaticMaskGenerator.from_preset("sa1b", models[0])
    assert PRESETS["sa1b"]["crop_n_layers"] == 2
    assert [len(g) for g in sa1b.point_grids] == [32 * 32, 16 * 16, 8 * 8]
    assert sa1b.filters.pred_iou_thresh == 0.88 and sa1b.filters.stability_score_thresh == 0.95
    assert sa1b.filters.max_mask_fraction == 0.95 and sa1b.min_mask_region_area == 100
    assert sa1b.box_nms_thresh == sa1b.crop_nms_thresh == 0.7
    default = AutomaticMaskGenerator.from_preset("official", models[0])
    assert [len(g) for g in default.point_grids] == [32 * 32]
    assert default.filters.max_mask_fraction == 1.0 and default.min_mask_region_area == 0
    tuned = AutomaticMaskGenerator.from_preset("sa1b", models[0], min_mask_region_area=0)
    assert tuned.min_mask_region_area == 0 and tuned.crop_n_layers == 2
    with pytest.raises(ValueError, match="unknown preset 'sa2b'"):
        AutomaticMaskGenerator.from_preset("sa2b", models[0])


def test_records_are_sa1b(models, image: np.ndarray) -> None:
    anns = AutomaticMaskGenerator(models[0], **LOW).generate(image)
    assert len(anns) >= 3
    keys = ["id", "segmentation", "bbox", "area", "predicted_iou", "stability_score",
            "crop_box", "point_coords", "granularity"]  # fmt: skip
    for i, ann in enumerate(anns):
        assert list(ann) == keys and ann["id"] == i
        assert ann["segmentation"]["size"] == [192, 256]
        assert isinstance(ann["segmentation"]["counts"], str)
        assert all(isinstance(v, int) for v in ann["bbox"] + ann["crop_box"] + [ann["area"]])
        assert isinstance(ann["predicted_iou"], float) and 0.8 <= ann["stability_score"] <= 1
        assert ann["crop_box"] == [0, 0, 256, 192]
        ((x, y),) = ann["point_coords"]
        assert 0 <= x < 256 and 0 <= y < 192
    records = to_mask_records(anns, Provenance(stage="stage3", round=1))
    assert records[0].provenance is not records[1].provenance
    assert records[0].provenance.stage == "stage3"
    assert [r.provenance.granularity for r in records] == [a["granularity"] for a in anns]
    record = ImageRecord(image_id=9, width=256, height=192, file_name="a.jpg", annotations=records)
    assert validate(record) == []


def test_empty_masks_are_not_records() -> None:
    """With no stability threshold the generator returns empty masks (stability 0/0 = NaN, as
    in the official code); they never become mask records."""
    empty = mask_ops.mask_to_rle(np.zeros((4, 6), dtype=bool))
    one = mask_ops.mask_to_rle(np.pad(np.ones((1, 1), dtype=bool), ((1, 2), (2, 3))))
    common = {"predicted_iou": 0.5, "crop_box": [0, 0, 6, 4], "point_coords": [[2.0, 1.0]]}
    anns = [
        {"id": 0, "segmentation": empty, "bbox": [0, 0, 0, 0], "area": 0,
         "stability_score": float("nan"), **common},
        {"id": 1, "segmentation": one, "bbox": [2, 1, 1, 1], "area": 1,
         "stability_score": 1.0, **common},
    ]  # fmt: skip
    records = to_mask_records(anns)
    assert [r.area for r in records] == [1]


def test_batch_equals_single_images(models) -> None:
    images = [shapes_image(192, 256, seed=0), shapes_image(150, 200, seed=2)]
    params = {**LOW, "crop_n_layers": 1, "crop_n_points_downscale_factor": 2}
    single = [AutomaticMaskGenerator(models[0], **params).generate(im) for im in images]
    batched = AutomaticMaskGenerator(models[0], encoder_batch_size=4, **params).generate_batch(
        images
    )
    assert len(batched) == 2
    for one, many in zip(single, batched):
        assert len(one) == len(many) and len(one) > 0
        for a, b in zip(one, many):
            assert a["segmentation"] == b["segmentation"] and a["bbox"] == b["bbox"]
            assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-5)


def test_predictor_is_accepted(models, image: np.ndarray) -> None:
    from_model = AutomaticMaskGenerator(models[0], **LOW).generate(image)
    from_predictor = AutomaticMaskGenerator(SamPredictor(models[0]), **LOW).generate(image)
    assert [a["segmentation"] for a in from_model] == [a["segmentation"] for a in from_predictor]


def test_max_mask_fraction(models, image: np.ndarray) -> None:
    params = {**LOW, "box_nms_thresh": 1.0}  # keep every mask so large ones are present
    everything = AutomaticMaskGenerator(models[0], **params).generate(image)
    areas = sorted(a["area"] / (192 * 256) for a in everything)
    cut = areas[len(areas) // 2]
    kept = AutomaticMaskGenerator(models[0], max_mask_fraction=cut, **params).generate(image)
    assert kept and all(a["area"] < cut * 192 * 256 for a in kept)
    assert len(kept) == sum(a < cut for a in areas)


def test_nothing_passes(models, image: np.ndarray) -> None:
    strict = {**LOW, "pred_iou_thresh": 50.0}
    assert AutomaticMaskGenerator(models[0], **strict).generate(image) == []
    small = image[:64, :80]
    assert AutomaticMaskGenerator(models[0], min_mask_region_area=10, **strict).generate_batch(
        [small, small]
    ) == [[], []]


@pytest.mark.parametrize(
    "low, square, input_hw, out_hw",
    [
        ((64, 64), 256, (192, 256), (192, 256)),  # crop already at input size: copy
        ((64, 64), 256, (256, 171), (750, 500)),  # portrait, enlarged
        ((256, 256), 1024, (683, 1024), (1500, 2250)),  # vit_b geometry on a large photo
        ((64, 64), 256, (200, 256), (100, 128)),  # shrunk
    ],
)
def test_windowed_upsampling_matches_postprocess(low, square, input_hw, out_hw) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, *low, generator=gen) * 3 - 4
    logits[0] = -9.0  # no support at all
    logits[1, 10:14, 20:30] = 5.0  # one small blob
    full = F.interpolate(logits[:, None], (square, square), mode="bilinear", align_corners=False)
    full = F.interpolate(
        full[..., : input_hw[0], : input_hw[1]], out_hw, mode="bilinear", align_corners=False
    )[:, 0]
    plan = UpsamplePlan(low, square, input_hw, out_hw, max_group_pixels=1 << 20)
    windows = plan.windows(logits, -1.0)
    assert windows[0].tolist()[2:] == [0, 0]
    covered = 0
    for group in plan.groups(windows):
        up, origin = plan.upsample(logits[group], windows[group])
        valid = np.isfinite(up)
        for k, i in enumerate(group):
            r, c = np.nonzero(valid[k])
            rows, cols = r + origin[k, 0], c + origin[k, 1]
            inside = np.zeros(out_hw, bool)
            inside[rows, cols] = True
            y0, x0, h, w = windows[i].tolist()
            assert inside[y0 : y0 + h, x0 : x0 + w].all()  # the window is covered
            expected = full[i].numpy()[rows, cols]
            np.testing.assert_allclose(up[k][valid[k]], expected, atol=2e-5, rtol=1e-5)
            assert (full[i].numpy()[~inside] <= -1.0).all()  # nothing above -1 is missed
            covered += 1
    assert covered == 6


def test_shared_decoder_equals_module(models) -> None:
    for model in models:  # ours and the official twin
        features = model.image_encoder(
            model.preprocess(torch.randint(0, 256, (1, 3, 256, 256)).float())
        )
        coords = np.random.default_rng(0).random((9, 2)) * 256
        with torch.no_grad():
            masks, ious = decode_points(model, features, coords, shared=False)
            shared_masks, shared_ious = decode_points(model, features, coords, shared=True)
        assert masks.shape == shared_masks.shape == (9, 3, 64, 64)
        torch.testing.assert_close(shared_masks, masks, atol=1e-3, rtol=1e-5)
        torch.testing.assert_close(shared_ious, ious, atol=1e-5, rtol=1e-5)
