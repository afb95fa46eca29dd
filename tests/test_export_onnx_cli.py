"""``sa-engine export-onnx``: writes a file that decodes like the checkpoint, refuses bad config."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from official_peer import scaled_random_weights_

from engine.data.synthetic import render_scene
from engine.model import SamPredictor, build_sam, save_checkpoint
from engine.model.onnx_export import OUTPUT_NAMES, decoder_inputs
from stages import cli


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(a tiny model with scaled random decoder weights, its checkpoint file)."""
    torch.manual_seed(0)
    model = build_sam("tiny")
    scaled_random_weights_(model.prompt_encoder, seed=2)
    scaled_random_weights_(model.mask_decoder, seed=3)
    return model, save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _decode(path, model, prompt: dict) -> tuple[dict, SamPredictor]:
    image, _ = render_scene(seed=2, height=150, width=220)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = decoder_inputs(predictor.get_embedding(), model.image_encoder.img_size, **prompt)
    return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), inputs))), predictor


def test_writes_a_verified_file_that_decodes_like_the_checkpoint(checkpoint, tmp_path, capsys):
    model, ckpt = checkpoint
    out = tmp_path / "nested" / "decoder.onnx"
    argv = ["export-onnx", "model=tiny", f"model.checkpoint={ckpt}", f"out={out}"]
    assert cli.main(argv) == 0
    assert "verified in onnxruntime" in capsys.readouterr().out
    proto = onnx.load(str(out))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17  # the default
    prompt = {"point_coords": np.array([[100.0, 60.0]]), "point_labels": np.array([1])}
    got, predictor = _decode(out, model, prompt)
    masks, iou, low_res = predictor.predict(**prompt, multimask_output=True, return_logits=True)
    assert got["masks"].shape == (1, 4, 150, 220)
    np.testing.assert_allclose(got["low_res_masks"][0, 1:], low_res, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["iou_predictions"][0, 1:], iou, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["masks"][0, 1:], masks, atol=1e-3, rtol=0)


def test_single_mask_and_opset_options(checkpoint, tmp_path):
    model, ckpt = checkpoint
    out = tmp_path / "single.onnx"
    argv = [f"model.checkpoint={ckpt}", "model=tiny", f"out={out}", "opset=14"]
    assert cli.main(["export-onnx", *argv, "return_single_mask=true", "verify=false"]) == 0
    assert {o.domain: o.version for o in onnx.load(str(out)).opset_import}[""] == 14
    box = {"box": np.array([20.0, 30.0, 180.0, 120.0])}  # N = 2 corners: the best of 3
    got, predictor = _decode(out, model, box)
    masks, iou, _ = predictor.predict(**box, multimask_output=True, return_logits=True)
    assert got["masks"].shape == (1, 1, 150, 220)
    best = int(np.argmax(iou))
    np.testing.assert_allclose(got["iou_predictions"][0, 0], iou[best], atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["masks"][0, 0], masks[best], atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("opset=13", "opset"),
        ("opset=21", "opset"),
        ("opset=seventeen", "opset"),
        ("out=decoder.txt", "out"),
        ("return_single_mask=perhaps", "return_single_mask"),
        ("model.preset=vit_q", "model.preset"),
        ("model=vit_q", "vit_q"),
        ("tolerance=0", "tolerance"),
        ("bogus=1", "bogus"),
    ],
)
def test_bad_config_fails_before_writing(tmp_path, capsys, override, named):
    out = tmp_path / "decoder.onnx"
    assert cli.main(["export-onnx", "model=tiny", f"out={out}", override]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and named in err
    assert not out.exists()


def test_missing_checkpoint_fails(tmp_path, capsys):
    out = tmp_path / "decoder.onnx"
    argv = ["export-onnx", "model=tiny", f"model.checkpoint={tmp_path / 'none.pt'}", f"out={out}"]
    assert cli.main(argv) == 1
    assert "none.pt" in capsys.readouterr().err
    assert not out.exists()


def test_cfg_prints_the_default_model_without_writing(tmp_path, capsys):
    out = tmp_path / "decoder.onnx"
    assert cli.main(["export-onnx", f"out={out}", "--cfg"]) == 0
    text = capsys.readouterr().out
    assert "checkpoint: bundled:mobile_public" in text and "opset: 17" in text
    assert not out.exists()
    assert cli.main(["--help"]) == 0 and "export-onnx" in capsys.readouterr().out
