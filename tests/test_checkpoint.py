"""Checkpoints: official format, round trip, strict loading with named errors, safe unpickling."""

from __future__ import annotations

import pathlib
import pickle

import numpy as np
import pytest
import torch
from official_peer import build_official, scaled_random_weights_

from engine.model import (
    PRESETS,
    SamPredictor,
    build_sam,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_sam("tiny")
    scaled_random_weights_(model, seed=7)
    return model


def _outputs(model):
    predictor = SamPredictor(model)
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    predictor.set_image(image)
    return predictor.features, predictor.predict(np.array([[40, 50]]), np.array([1]))


def test_round_trip_gives_identical_weights_and_outputs(tiny, tmp_path):
    path = save_checkpoint(tiny, tmp_path / "ckpt" / "tiny.pt")
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    loaded = build_sam("tiny", checkpoint=path)
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    features_a, (masks_a, iou_a, low_a) = _outputs(tiny)
    features_b, (masks_b, iou_b, low_b) = _outputs(loaded)
    assert torch.equal(features_a, features_b)
    np.testing.assert_array_equal(masks_a, masks_b)
    np.testing.assert_array_equal(iou_a, iou_b)
    np.testing.assert_array_equal(low_a, low_b)


def test_saved_file_is_a_bare_official_state_dict(tiny, tmp_path):
    path = save_checkpoint(tiny, tmp_path / "tiny.pt")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert set(raw) == set(tiny.state_dict())
    assert "pixel_mean" not in raw
    build_official(PRESETS["tiny"]).load_state_dict(raw, strict=True)  # the official model takes it


def test_official_state_dict_and_wrapped_training_checkpoint_load(tmp_path):
    torch.manual_seed(1)
    official = build_official("tiny")
    torch.save(official.state_dict(), tmp_path / "official.pth")  # what the published files are
    torch.save({"model": official.state_dict(), "step": 12, "lr": 1e-4}, tmp_path / "train.pt")
    for name in ("official.pth", "train.pt"):
        model = build_sam("tiny", checkpoint=tmp_path / name)
        for key, value in official.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), (name, key)


def test_checkpoint_of_another_preset_names_keys_and_the_fitting_preset(tiny, tmp_path):
    path = save_checkpoint(tiny, tmp_path / "tiny.pt")
    deeper = {**PRESETS["tiny"], "encoder_depth": 8, "encoder_global_attn_indexes": (3, 7)}
    with pytest.raises(ValueError) as err:
        build_sam(deeper, checkpoint=path)
    message = str(err.value)
    assert "missing keys" in message and "image_encoder.blocks.6." in message
    assert "fit preset 'tiny'" in message
    assert "custom preset" in message  # describes the model it was loaded into

    narrower = {**PRESETS["tiny"], "iou_head_hidden_dim": 64}
    with pytest.raises(ValueError) as err:
        build_sam(narrower, checkpoint=path)
    message = str(err.value)
    assert "shape mismatches" in message and "missing keys" not in message
    head = "mask_decoder.iou_prediction_head.layers"
    assert f"{head}.0.weight: checkpoint [128, 128] vs model [64, 128]" in message
    assert f"{head}.2.weight: checkpoint [4, 128] vs model [4, 64]" in message
    assert "fit preset 'tiny'" in message


def test_checkpoint_with_a_wrong_shape_fits_no_preset(tiny, tmp_path):
    state = dict(tiny.state_dict())
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 64)
    state["extra.weight"] = torch.zeros(3)
    del state["prompt_encoder.no_mask_embed.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(ValueError) as err:
        build_sam("tiny", checkpoint=tmp_path / "broken.pt")
    message = str(err.value)
    assert "preset 'tiny'" in message
    assert "missing keys [prompt_encoder.no_mask_embed.weight]" in message
    assert "unexpected keys [extra.weight]" in message
    assert "mask_decoder.iou_token.weight: checkpoint [1, 64] vs model [1, 128]" in message
    assert "No preset" in message


class _Payload:
    """Unpickling this object (unsafely) writes a marker file: a stand-in for malicious code."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "code ran"))


def test_pickle_that_would_run_code_is_refused(tiny, tmp_path):
    marker = tmp_path / "marker.txt"
    state = dict(tiny.state_dict())
    state["payload"] = _Payload(marker)
    torch.save({"model": state}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused to load"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused to load"):
        build_sam("tiny", checkpoint=tmp_path / "evil.pt")
    assert not marker.exists()
    # control: an unsafe load of the same file does run the payload
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize(
    "content, match",
    [
        ({"a.weight": torch.zeros(2), "step": 3}, r"not tensors: \[step\]"),
        ([torch.zeros(2)], "expected a state dict, found list"),
        ({"model": [1, 2]}, "not tensors"),
    ],
)
def test_files_without_a_state_dict_are_rejected(tmp_path, content, match):
    torch.save(content, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match=match):
        read_state_dict(tmp_path / "odd.pt")


def test_raw_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "marker.txt"
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(_Payload(marker), f, protocol=2)
    with pytest.raises(ValueError, match="refused to load"):
        read_state_dict(tmp_path / "plain.pkl")
    assert not marker.exists()
