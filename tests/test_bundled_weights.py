"""The shipped initial model: its provenance matches the committed `sa-engine train` config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.model import SamPredictor, build_sam
from engine.weights import WEIGHTS_DIR, bundled_names, provenance, resolve_checkpoint
from engine.weights.ship import sha256
from stages import hydra_app

NAME = "mobile_public"


def test_the_bundled_checkpoint_is_what_the_committed_train_config_writes():
    record = provenance(NAME)
    path = WEIGHTS_DIR / f"{NAME}.pt"
    overrides = record["overrides"]
    assert record["command"] == " ".join(["sa-engine train", *overrides])
    assert record["sha256"] == sha256(path)
    assert record["bytes"] == path.stat().st_size <= 10 * 2**20
    # the config that trained it is the one `sa-engine train OVERRIDES` composes today: a change
    # to configs/train_job.yaml (or its groups) without `make weights` fails here
    job, _, yaml_text = hydra_app.load_train_job(overrides)
    assert (WEIGHTS_DIR / f"{NAME}.yaml").read_text() == yaml_text
    assert all(not o.startswith(("model", "seed", "train.seed")) for o in overrides)
    assert job.model.preset == "mobile" and job.train.seed == 0
    assert record["step"] >= 1 and record["eval"]["miou_1click"] > 0


def test_the_bundled_checkpoint_loads_safely_and_segments():
    model = build_sam("mobile", resolve_checkpoint(f"bundled:{NAME}"))
    state = torch.load(WEIGHTS_DIR / f"{NAME}.pt", map_location="cpu", weights_only=True)
    assert set(state) == set(model.state_dict())
    image = np.full((96, 128, 3), 40, np.uint8)
    image[30:70, 40:90] = (230, 200, 40)  # a plain rectangle on a plain background
    truth = np.zeros((96, 128), bool)
    truth[30:70, 40:90] = True
    predictor = SamPredictor(model.eval())
    predictor.set_image(image)
    # one click is ambiguous: three masks, the user keeps the one of highest predicted IoU
    masks, scores, _ = predictor.predict(np.array([[65, 50]]), np.array([1]), multimask_output=True)
    assert _iou(masks[int(np.argmax(scores))], truth) > 0.8
    masks, _, _ = predictor.predict(box=np.array([40, 30, 89, 69]), multimask_output=False)
    assert _iou(masks[0], truth) > 0.8


def _iou(mask: np.ndarray, truth: np.ndarray) -> float:
    return float((mask & truth).sum() / (mask | truth).sum())


def test_bundled_names_resolve_and_unknown_ones_are_refused():
    assert NAME in bundled_names()
    assert resolve_checkpoint("some/file.pt") == "some/file.pt"
    with pytest.raises(ValueError, match="no bundled checkpoint 'nope'"):
        resolve_checkpoint("bundled:nope")
