"""The exported ONNX decoder (engine.model.onnx_export) in onnxruntime.

Against our PyTorch model through its ordinary API (``SamPredictor.predict`` on a synthetic
scene: tiny and mobile presets, several point counts, boxes, mask input, return_single_mask,
two image sizes through one file) and against the official
``segment_anything.utils.onnx.SamOnnxModel`` holding the same random ViT-B decoder weights.
Decoder weights are seeded random values scaled so that logits are O(1–10).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from official_peer import official_from_ours, scaled_random_weights_
from segment_anything.utils.onnx import SamOnnxModel as OfficialOnnxModel

from engine.data.synthetic import render_scene
from engine.model import PRESETS, SamPredictor, build_sam
from engine.model.onnx_export import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    decoder_inputs,
    export_decoder_onnx,
    verify_decoder_onnx,
)

LOW_RES_TOL = 1e-4  # low-res logits and IoU predictions
MASK_TOL = 1e-3  # logits upscaled to the original image size
IMAGE_SIZES = ((200, 300), (250, 170))  # (H, W): landscape and portrait through one file
PROMPTS = (
    "one_point",
    "two_points",
    "five_points",
    "box",
    "box_and_points",
    "point_and_mask",
)


def _session(path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), inputs)))


def _random_decoder(name_or_preset, seed: int = 1):
    """A model whose prompt encoder and mask decoder hold scaled random weights."""
    torch.manual_seed(0)
    model = build_sam(name_or_preset)
    scaled_random_weights_(model.prompt_encoder, seed=seed)
    scaled_random_weights_(model.mask_decoder, seed=seed + 1)
    return model


@pytest.fixture(scope="module", params=["tiny", "mobile"])
def exported(request, tmp_path_factory):
    """(model, {return_single_mask: onnxruntime session})."""
    model = _random_decoder(request.param)
    folder = tmp_path_factory.mktemp(f"onnx-{request.param}")
    sessions = {
        single: _session(
            export_decoder_onnx(model, folder / f"single-{single}.onnx", return_single_mask=single)
        )
        for single in (False, True)
    }
    return model, sessions


def _prompt(kind: str, height: int, width: int, predictor: SamPredictor) -> dict:
    """Prompts in original-image pixels, as ``SamPredictor.predict`` takes them."""
    pts = np.array([[0.5, 0.5], [0.2, 0.3], [0.8, 0.7], [0.3, 0.8], [0.7, 0.2]]) * [width, height]
    box = np.array([0.15 * width, 0.2 * height, 0.7 * width, 0.85 * height])
    if kind == "one_point":
        return {"point_coords": pts[:1], "point_labels": np.array([1])}
    if kind == "two_points":
        return {"point_coords": pts[:2], "point_labels": np.array([1, 0])}
    if kind == "five_points":
        return {"point_coords": pts, "point_labels": np.array([1, 0, 1, 0, 0])}
    if kind == "box":
        return {"box": box}
    if kind == "box_and_points":
        return {"box": box, "point_coords": pts[1:3], "point_labels": np.array([1, 0])}
    # a realistic mask prompt: the low-res logits of a previous one-point prediction
    _, _, previous = predictor.predict(pts[2:3], np.array([1]), multimask_output=False)
    return {"point_coords": pts[:1], "point_labels": np.array([1]), "mask_input": previous}


def _num_points(prompt: dict) -> int:
    """N of the graph: the points, plus the two box corners or one padding point."""
    points = 0 if "point_coords" not in prompt else len(prompt["point_coords"])
    return points + 2 if "box" in prompt else points + 1


def _check(got: dict[str, np.ndarray], masks, iou, low_res) -> None:
    np.testing.assert_allclose(got["low_res_masks"][0], low_res, atol=LOW_RES_TOL, rtol=0)
    np.testing.assert_allclose(got["iou_predictions"][0], iou, atol=LOW_RES_TOL, rtol=0)
    np.testing.assert_allclose(got["masks"][0], masks, atol=MASK_TOL, rtol=0)


@pytest.mark.parametrize("size", IMAGE_SIZES)
@pytest.mark.parametrize("kind", PROMPTS)
def test_all_masks_match_the_predictor(exported, kind, size):
    """M = 4: token 0 is ``multimask_output=False``, tokens 1–3 are ``multimask_output=True``."""
    model, sessions = exported
    height, width = size
    image, _ = render_scene(seed=3, height=height, width=width)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    prompt = _prompt(kind, height, width, predictor)
    inputs = decoder_inputs(predictor.get_embedding(), model.image_encoder.img_size, **prompt)
    assert inputs["point_coords"].shape == (1, _num_points(prompt), 2)
    got = _run(sessions[False], inputs)
    assert got["masks"].shape == (1, 4, height, width)
    single = predictor.predict(**prompt, multimask_output=False, return_logits=True)
    multi = predictor.predict(**prompt, multimask_output=True, return_logits=True)
    assert np.abs(multi[2]).max() > 1.0  # logits are large enough for the tolerance to bite
    _check({k: v[:, :1] for k, v in got.items()}, *single)
    _check({k: v[:, 1:] for k, v in got.items()}, *multi)


@pytest.mark.parametrize("kind", PROMPTS)
def test_return_single_mask_picks_like_the_predictor(exported, kind):
    """N ≤ 2 (one click, or a box alone): the best of the 3 ambiguity masks; else token 0."""
    model, sessions = exported
    height, width = IMAGE_SIZES[0]
    image, _ = render_scene(seed=4, height=height, width=width)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    prompt = _prompt(kind, height, width, predictor)
    inputs = decoder_inputs(predictor.get_embedding(), model.image_encoder.img_size, **prompt)
    got = _run(sessions[True], inputs)
    assert got["masks"].shape == (1, 1, height, width)
    multimask = _num_points(prompt) <= 2
    masks, iou, low_res = predictor.predict(
        **prompt, multimask_output=multimask, return_logits=True
    )
    best = int(np.argmax(iou))
    _check(got, masks[best : best + 1], iou[best : best + 1], low_res[best : best + 1])


def test_mask_input_is_ignored_without_has_mask_input(exported):
    model, sessions = exported
    image, _ = render_scene(seed=5, height=200, width=300)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    point = {"point_coords": np.array([[120.0, 90.0]]), "point_labels": np.array([1])}
    embedding = predictor.get_embedding()
    side = model.prompt_encoder.mask_input_size
    without = _run(
        sessions[False], decoder_inputs(embedding, model.image_encoder.img_size, **point)
    )
    noise = decoder_inputs(embedding, model.image_encoder.img_size, **point)
    noise["mask_input"] = np.random.default_rng(0).normal(0, 5, (1, 1, *side)).astype(np.float32)
    with_noise = _run(sessions[False], noise)
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(with_noise[name], without[name], atol=1e-6, rtol=0)
    noise["has_mask_input"][:] = 1.0  # and it is used when flagged
    assert (
        np.abs(_run(sessions[False], noise)["low_res_masks"] - without["low_res_masks"]).max() > 0.1
    )


@pytest.mark.parametrize("opset", [14, 20])
def test_file_declares_opset_names_and_a_dynamic_point_axis(tmp_path, opset):
    model = build_sam("tiny")
    path = export_decoder_onnx(model, tmp_path / "decoder.onnx", opset=opset)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}[""] == opset
    assert [i.name for i in proto.graph.input] == list(INPUT_NAMES)
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    coords = next(i for i in proto.graph.input if i.name == "point_coords")
    assert [d.dim_param or d.dim_value for d in coords.type.tensor_type.shape.dim] == [
        1,
        "num_points",
        2,
    ]
    errors = verify_decoder_onnx(model, path)
    assert set(errors) == set(OUTPUT_NAMES) and max(errors.values()) < LOW_RES_TOL


def test_verify_reports_a_file_of_another_model(tmp_path):
    path = export_decoder_onnx(_random_decoder("tiny", seed=1), tmp_path / "a.onnx")
    errors = verify_decoder_onnx(_random_decoder("tiny", seed=7), path)
    assert errors["low_res_masks"] > 0.1


@pytest.mark.parametrize("opset", [13, 21, 17.0, True])
def test_bad_opset_is_refused(tmp_path, opset):
    with pytest.raises(ValueError, match="opset"):
        export_decoder_onnx(build_sam("tiny"), tmp_path / "d.onnx", opset=opset)
    assert not (tmp_path / "d.onnx").exists()


def test_decoder_inputs_needs_labels_with_points():
    model = build_sam("tiny")
    predictor = SamPredictor(model)
    predictor.set_image(render_scene(seed=1, height=64, width=64)[0])
    with pytest.raises(ValueError, match="together"):
        decoder_inputs(predictor.get_embedding(), 256, point_coords=np.array([[1.0, 2.0]]))


# ---- against the official SamOnnxModel ---------------------------------------------------


@pytest.fixture(scope="module")
def vit_b_pair(tmp_path_factory):
    """(official SamOnnxModel by return_single_mask, our sessions by the same, embed dim).

    ViT-B numbers (256-wide decoder, 64×64 grid, 1024 px); one encoder block keeps the build
    short (the encoder is not exported).
    """
    preset = {**PRESETS["vit_b"], "encoder_depth": 1, "encoder_global_attn_indexes": (0,)}
    ours = _random_decoder(preset, seed=11)
    theirs = official_from_ours(ours)
    folder = tmp_path_factory.mktemp("onnx-vit_b")
    official, sessions = {}, {}
    for single in (False, True):
        official[single] = OfficialOnnxModel(theirs, return_single_mask=single).eval()
        path = export_decoder_onnx(ours, folder / f"{single}.onnx", return_single_mask=single)
        sessions[single] = _session(path)
    return official, sessions


OFFICIAL_CASES = {
    # labels: 1 fg, 0 bg, 2/3 box corners, -1 padding; (x, y) in the 1024-px input frame
    "click": ([[500.0, 300.0], [0.0, 0.0]], [1, -1], 0.0),
    "clicks": ([[500.0, 300.0], [100.0, 700.0], [900.0, 50.0], [0.0, 0.0]], [1, 0, 1, -1], 0.0),
    "box": ([[120.0, 200.0], [800.0, 650.0]], [2, 3], 0.0),
    "box_points_mask": ([[400.0, 400.0], [120.0, 200.0], [800.0, 650.0]], [0, 2, 3], 1.0),
}


@pytest.mark.parametrize("orig_size", [(600, 900), (700, 480)])
@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("case", sorted(OFFICIAL_CASES))
def test_matches_the_official_onnx_model(vit_b_pair, case, single, orig_size):
    official, sessions = vit_b_pair
    coords, labels, has_mask = OFFICIAL_CASES[case]
    g = torch.Generator().manual_seed(len(case))
    inputs = {
        "image_embeddings": torch.randn(1, 256, 64, 64, generator=g),
        "point_coords": torch.tensor([coords], dtype=torch.float32),
        "point_labels": torch.tensor([labels], dtype=torch.float32),
        "mask_input": 4 * torch.randn(1, 1, 256, 256, generator=g),
        "has_mask_input": torch.tensor([has_mask]),
        "orig_im_size": torch.tensor(orig_size, dtype=torch.float32),
    }
    masks, iou, low_res = official[single](**inputs)
    got = _run(sessions[single], {k: v.numpy() for k, v in inputs.items()})
    assert got["masks"].shape == tuple(masks.shape) == (1, 1 if single else 4, *orig_size)
    assert low_res.abs().max() > 1.0
    _check(got, masks[0].numpy(), iou[0].numpy(), low_res[0].numpy())
