"""The TinyViT presets: ``mobile_sam`` against MobileSAM's own code (same random weights), the
CPU-sized ``mobile`` preset's shapes, checkpoints, and the predictor and AMG on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mobilesam_peer import MobileSamPredictor, build_mobile_sam, mobile_sam_from_ours
from official_peer import scaled_random_weights_

from engine.amg import AutomaticMaskGenerator
from engine.model import PRESETS, SamPredictor, build_sam, matching_presets
from engine.model.checkpoint import load_checkpoint, save_checkpoint
from engine.model.presets import construct_sam, preset_from_model, resolve_preset
from engine.model.tiny_vit import TinyViT


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _randomise_(model: torch.nn.Module, seed: int) -> None:
    """Scaled random parameters and random batch-norm statistics (eval mode uses them)."""
    scaled_random_weights_(model, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.2 * torch.randn(buffer.shape, generator=g))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=g))


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.stack([xs * 255 / width, ys * 255 / height, (xs + ys) % 256], axis=-1)
    for _ in range(4):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        image[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.integers(0, 256, 3)
    return image.astype(np.uint8)


def test_mobile_sam_state_dict_equals_mobile_sams_own():
    with torch.device("meta"):
        ours = construct_sam(PRESETS["mobile_sam"])
    theirs = build_mobile_sam()
    assert _shapes(ours) == _shapes(theirs)
    assert matching_presets(_shapes(theirs)) == ["mobile_sam"]


@pytest.fixture(scope="module")
def mobile_sam_pair():
    torch.manual_seed(0)
    ours = build_sam("mobile_sam")
    _randomise_(ours, seed=3)
    theirs = mobile_sam_from_ours(ours)
    image = _image(450, 600)
    ours_pred, their_pred = SamPredictor(ours), MobileSamPredictor(theirs)
    ours_pred.set_image(image)
    their_pred.set_image(image)
    return ours_pred, their_pred


def test_mobile_sam_embedding_and_masks_equal_mobile_sams_own(mobile_sam_pair):
    ours, theirs = mobile_sam_pair
    ours_embedding, their_embedding = ours.get_image_embedding(), theirs.get_image_embedding()
    assert ours_embedding.shape == (1, 256, 64, 64)
    assert their_embedding.abs().mean() > 0.1  # random weights give a non-trivial embedding
    torch.testing.assert_close(ours_embedding, their_embedding, rtol=0, atol=1e-4)
    points, labels = np.array([[100.0, 120.0], [400.0, 300.0]]), np.array([1, 0])
    box = np.array([50, 60, 350, 300])
    for kwargs in (
        {"point_coords": points, "point_labels": labels, "multimask_output": True},
        {"box": box, "multimask_output": False},
    ):
        masks_a, iou_a, low_a = ours.predict(**kwargs, return_logits=True)
        masks_b, iou_b, low_b = theirs.predict(**kwargs, return_logits=True)
        assert np.abs(low_b).max() > 1.0  # logits of real magnitude, so the bound means something
        np.testing.assert_allclose(low_a, low_b, rtol=0, atol=1e-3)
        np.testing.assert_allclose(iou_a, iou_b, rtol=0, atol=1e-4)
        assert ((masks_a > 0) != (masks_b > 0)).mean() < 1e-3


def test_mobile_sam_checkpoint_in_mobile_sams_format_loads(tmp_path):
    """A bare state dict written by MobileSAM's model (``mobile_sam.pt``'s format)."""
    theirs = build_mobile_sam()
    path = tmp_path / "mobile_sam.pt"
    torch.save(theirs.state_dict(), path)
    ours = build_sam("mobile_sam", path)
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def test_mobile_preset_is_cpu_sized_with_a_16x16_grid():
    model = build_sam("mobile")
    assert isinstance(model.image_encoder, TinyViT)
    n_params = sum(p.numel() for p in model.parameters())
    assert 1e6 <= n_params <= 5e6, n_params
    assert model.image_encoder.img_size == 256
    assert model.prompt_encoder.image_embedding_size == (16, 16)
    with torch.no_grad():
        out = model.image_encoder(torch.randn(2, 3, 256, 256))
    assert out.shape == (2, 128, 16, 16)
    assert preset_from_model(model) == PRESETS["mobile"]


def test_tiny_vit_presets_are_checked():
    partial = {k: v for k, v in PRESETS["mobile"].items() if k != "encoder_depths"}
    with pytest.raises(ValueError, match="encoder_depths"):
        resolve_preset(partial)
    uneven = {**PRESETS["mobile"], "encoder_depths": (1, 1, 1)}
    with pytest.raises(ValueError, match="one entry per stage"):
        resolve_preset(uneven)
    with pytest.raises(ValueError, match="multiple of 16"):
        build_sam({**PRESETS["mobile"], "image_size": 250})
    with pytest.raises(ValueError, match="output_stride must be one of"):
        build_sam({**PRESETS["mobile"], "encoder_output_stride": 4})
    two_stages = {
        **PRESETS["mobile"],
        **{key: PRESETS["mobile"][key][:2] for key in ("encoder_embed_dims", "encoder_depths")},
        **{key: PRESETS["mobile"][key][:2] for key in ("encoder_num_heads",)},
        "encoder_window_sizes": (8, 8),
    }
    with pytest.raises(ValueError, match="cannot reach output stride 16"):
        build_sam(two_stages)


def test_mobile_s8_keeps_the_weights_of_mobile_at_twice_the_grid():
    """Output stride 8: the last two stages stay at 1/8 (no parameter changes shape), so the
    embedding is 32×32 and the low-res masks 128×128 at the same 256-px input."""
    model = build_sam("mobile_s8")
    assert _shapes(model) == _shapes(build_sam("mobile"))
    assert model.prompt_encoder.image_embedding_size == (32, 32)
    assert model.prompt_encoder.mask_input_size == (128, 128)
    with torch.no_grad():
        out = model.image_encoder(torch.randn(2, 3, 256, 256))
    assert out.shape == (2, 128, 32, 32)
    assert preset_from_model(model) == PRESETS["mobile_s8"]
    assert sorted(matching_presets(_shapes(model))) == ["mobile", "mobile_s8"]


def test_mobile_checkpoint_round_trip_and_a_wrong_preset_is_named(tmp_path):
    torch.manual_seed(0)
    model = build_sam("mobile")
    _randomise_(model, seed=4)
    path = save_checkpoint(model, tmp_path / "mobile.pt")
    again = build_sam("mobile", path)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(again.image_encoder(x), model.image_encoder(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="fit preset 'mobile'"):
        load_checkpoint(path, build_sam("tiny"))


def test_drop_path_in_tiny_vit_only_acts_in_training():
    plain = build_sam("mobile")
    dropped = build_sam("mobile", drop_path_rate=0.5)
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(dropped.image_encoder(x), plain.image_encoder(x))
        dropped.train()
        assert not torch.allclose(dropped.image_encoder(x), dropped.image_encoder(x))


@pytest.mark.parametrize(("name", "low_res_side"), [("mobile", 64), ("mobile_s8", 128)])
def test_predictor_and_amg_run_on_the_mobile_presets(name, low_res_side):
    torch.manual_seed(0)
    model = build_sam(name)
    _randomise_(model, seed=5)
    image = _image(192, 256, seed=1)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    masks, iou, low_res = predictor.predict(np.array([[60, 80]]), np.array([1]))
    assert masks.shape == (3, 192, 256) and iou.shape == (3,)
    assert low_res.shape == (3, low_res_side, low_res_side)
    again, _, _ = predictor.predict(np.array([[60, 80]]), np.array([1]), mask_input=low_res[:1])
    assert again.shape == (3, 192, 256)
    generator = AutomaticMaskGenerator(
        model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    records = generator.generate(image)
    assert records, "with no thresholds a 4×4 grid yields masks"
    for record in records:
        assert record["segmentation"]["size"] == [192, 256]
        assert 0 < record["area"] <= 192 * 256
