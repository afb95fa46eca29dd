"""Presets, state-dict compatibility with the official package, stochastic depth, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from official_peer import build_official, official_from_ours, scaled_random_weights_
from segment_anything import sam_model_registry

from engine.model import (
    PRESETS,
    SamPredictor,
    build_sam,
    matching_presets,
    preset_from_model,
    preset_name,
)
from engine.model.presets import VIT_PRESETS, construct_sam, preset_shapes


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", sorted(VIT_PRESETS))
def test_state_dict_keys_and_shapes_equal_official(name):
    with torch.device("meta"):  # no memory, no init: vit_h is cheap here
        ours = construct_sam(PRESETS[name])
        theirs = build_official(name)
    assert _shapes(ours) == _shapes(theirs)
    assert not any(k.startswith("pixel_") for k in ours.state_dict())  # not in checkpoints
    assert {k.split(".")[0] for k in ours.state_dict()} == {
        "image_encoder",
        "prompt_encoder",
        "mask_decoder",
    }


@pytest.mark.parametrize("name", ["vit_h", "vit_l", "vit_b"])
def test_official_presets_equal_the_official_builder(name):
    """Our vit_* numbers against the official builder itself (not our rebuild of it)."""
    with torch.device("meta"):
        ours = construct_sam(PRESETS[name])
        theirs = sam_model_registry[name]()
    assert _shapes(ours) == _shapes(theirs)
    assert preset_shapes(name) == _shapes(theirs)
    assert matching_presets(_shapes(theirs)) == [name]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_numbers_read_back_from_the_model(name):
    with torch.device("meta"):
        model = construct_sam(PRESETS[name])
    assert preset_from_model(model) == PRESETS[name]
    assert preset_name(model) == name


def test_tiny_preset_is_cpu_sized():
    model = build_sam("tiny")
    n_params = sum(p.numel() for p in model.parameters())
    assert 3e6 <= n_params <= 6e6, n_params
    assert model.image_encoder.img_size == 256
    assert model.prompt_encoder.image_embedding_size == (16, 16)
    assert model.prompt_encoder.mask_input_size == (64, 64)
    assert not model.training  # build_sam returns eval mode, as the official builder does


def test_build_sam_rejects_unknown_names_and_incomplete_presets():
    with pytest.raises(ValueError, match="vit_x"):
        build_sam("vit_x")
    partial = {k: v for k, v in PRESETS["tiny"].items() if k != "window_size"}
    with pytest.raises(ValueError, match="window_size"):
        build_sam(partial)
    with pytest.raises(TypeError):
        build_sam(42)


def test_drop_path_adds_no_parameters_and_only_acts_in_training():
    torch.manual_seed(0)
    plain = build_sam("tiny")
    dropped = build_sam("tiny", drop_path_rate=0.5)
    assert _shapes(plain) == _shapes(dropped)
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(dropped.image_encoder(x), plain.image_encoder(x))  # eval
        dropped.train()
        a, b = dropped.image_encoder(x), dropped.image_encoder(x)
    assert not torch.allclose(a, b)  # stochastic in training
    rates = [blk.drop_path.p for blk in dropped.image_encoder.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.5)
    assert rates == sorted(rates)


def _decoder_loss(model, image, coords, labels, weights):
    embedding = model.image_encoder(model.preprocess(image))
    sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    low_res, iou = model.mask_decoder(
        image_embeddings=embedding,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
    )
    return (low_res * weights).mean() + iou.square().mean()


def test_modules_train_with_gradients_equal_to_official():
    """Outside inference mode the modules are differentiable; gradients match the official."""
    torch.manual_seed(0)
    ours = build_sam("tiny")
    scaled_random_weights_(ours, seed=5)
    theirs = official_from_ours(ours).train()
    # inference first (as between training rounds): nothing it caches may break training
    predictor = SamPredictor(ours)
    predictor.set_image(np.zeros((50, 60, 3), np.uint8))
    predictor.predict(np.array([[10, 10]]), np.array([1]))
    ours.train()
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 200, 256, generator=gen) * 255
    coords = torch.rand(2, 3, 2, generator=gen) * 200
    labels = torch.tensor([[1, 0, 1], [1, 1, 0]])
    weights = torch.randn(2, 3, 64, 64, generator=gen)
    _decoder_loss(ours, image, coords, labels, weights).backward()
    _decoder_loss(theirs, image, coords, labels, weights).backward()
    their_grads = {n: p.grad for n, p in theirs.named_parameters() if p.grad is not None}
    unused = {n for n, _ in theirs.named_parameters()} - set(their_grads)
    # box-corner embeddings and the mask path take no part in a points-only prompt
    assert all(
        "point_embeddings.2" in n or "point_embeddings.3" in n or "mask_downscaling" in n
        for n in unused
    )
    # k_proj biases get a zero gradient in exact arithmetic (softmax ignores a constant
    # shift), so compare against a model-wide scale rather than each tensor's own.
    scale = max(g.abs().max().item() for g in their_grads.values())
    worst = {}
    for name, p in ours.named_parameters():
        if name in unused:
            assert p.grad is None or not p.grad.any(), name
            continue
        assert p.grad is not None, name
        worst[name] = (p.grad - their_grads[name]).abs().max().item() / scale
    assert max(worst.values()) < 1e-4, sorted(worst.items(), key=lambda kv: -kv[1])[:5]
    assert ours.image_encoder.blocks[0].attn.rel_pos_h.grad.abs().sum() > 0


@pytest.mark.parametrize("multimask", [True, False])
def test_mask_decoder_outputs_do_not_depend_on_autograd(multimask):
    """Without autograd the decoder skips unwanted mask heads; results must not change."""
    torch.manual_seed(0)
    model = build_sam("tiny")
    scaled_random_weights_(model, seed=6)
    pe = model.prompt_encoder
    coords, labels = torch.rand(3, 2, 2) * 256, torch.tensor([[1, 0], [1, 1], [0, 1]])
    embedding = torch.randn(1, 128, 16, 16)
    sparse, dense = pe(points=(coords, labels), boxes=None, masks=None)
    args = (embedding, pe.get_dense_pe(), sparse, dense, multimask)
    with torch.enable_grad():
        with_grad = model.mask_decoder(*args)
    with torch.no_grad():
        without = model.mask_decoder(*args)
    n = 3 if multimask else 1
    for a, b in zip(with_grad, without):
        assert a.shape[:2] == (3, n)
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=1e-5)
