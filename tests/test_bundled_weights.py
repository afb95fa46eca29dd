"""The shipped initial model: its provenance matches the committed `sa-engine train` config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.model import SamPredictor, build_sam
from engine.weights import WEIGHTS_DIR, bundled_names, provenance, resolve_checkpoint
from engine.weights.ship import sha256, ship
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
    assert job.model.preset == "mobile" and job.train.seed == 0
    assert record["step"] >= 1 and record["eval"]["miou_1click"] > 0
    # each run of the chain (`make weights`) starts from the committed recipe's random start,
    # or, continued, from the shipped file it replaced; nothing else about the model is set
    links = 1
    while "start" in record:
        _assert_continues_the_shipped_file(record)
        record = record["start"]
        links += 1
    _assert_is_a_committed_start(record)
    assert links == _make_weights_links()


def _assert_continues_the_shipped_file(record: dict) -> None:
    overrides = record["overrides"]
    assert record["command"] == " ".join(["sa-engine train", *overrides])
    model = {o for o in overrides if o.startswith(("model", "seed", "train.seed"))}
    assert model == {f"model.checkpoint=bundled:{NAME}"}
    job, _, _ = hydra_app.load_train_job(overrides)
    assert job.model.preset == "mobile" and job.train.seed == 0
    assert record["step"] >= 1 and record["eval"]["miou_1click"] > 0


def _assert_is_a_committed_start(start: dict) -> None:
    overrides = start["overrides"]
    assert start["command"] == " ".join(["sa-engine train", *overrides])
    assert all(not o.startswith(("model", "seed", "train.seed", "run_dir")) for o in overrides)
    job, _, _ = hydra_app.load_train_job(overrides)
    assert job.model.preset == "mobile" and job.model.checkpoint == "" and job.train.seed == 0
    assert start["step"] >= 1 and start["eval"]["miou_1click"] > 0


def _make_weights_links() -> int:
    """How many `sa-engine train` runs `make weights` chains (the Makefile's recipe)."""
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    recipe = makefile.split("\nweights:", 1)[1].split("\n\n", 1)[0]
    return recipe.count("sa-engine train ")


def test_shipping_a_continued_run_keeps_the_record_it_replaces(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    first = _finished_run(tmp_path / "first", b"first weights", step=10)
    base = ship(first, "demo", ["train.steps=10"], weights_dir=weights)
    assert base["command"] == "sa-engine train train.steps=10" and "start" not in base
    second = _finished_run(tmp_path / "second", b"second weights", step=20)
    overrides = ["model.checkpoint=bundled:demo", "train.steps=20"]
    record = ship(second, "demo", overrides, continued=True, weights_dir=weights)
    assert record["start"] == base
    assert record["sha256"] == sha256(weights / "demo.pt") != base["sha256"]
    assert json.loads((weights / "demo.json").read_text()) == record


def test_a_continued_run_must_have_started_from_the_unchanged_shipped_file(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    ship(_finished_run(tmp_path / "first", b"first", step=1), "demo", [], weights_dir=weights)
    run = _finished_run(tmp_path / "second", b"second", step=2)
    with pytest.raises(ValueError, match="must have started from 'model.checkpoint=bundled:demo'"):
        ship(run, "demo", ["train.steps=2"], continued=True, weights_dir=weights)
    (weights / "demo.pt").write_bytes(b"changed since it was shipped")
    with pytest.raises(ValueError, match="no longer matches demo.json"):
        ship(run, "demo", ["model.checkpoint=bundled:demo"], continued=True, weights_dir=weights)
    assert (weights / "demo.pt").read_bytes() == b"changed since it was shipped"  # nothing copied


def test_an_unfinished_run_is_not_shipped(tmp_path):
    run = _finished_run(tmp_path / "run", b"weights", step=3)
    (run / "state.json").write_text(json.dumps({"status": "training", "step": 3}))
    with pytest.raises(ValueError, match="has not finished"):
        ship(run, "demo", [], weights_dir=tmp_path)
    assert not (tmp_path / "demo.pt").exists()


def _finished_run(run_dir: Path, weights: bytes, step: int) -> Path:
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "model.pt").write_bytes(weights)
    (run_dir / "config.yaml").write_text(f"train:\n  steps: {step}\n")
    state = {"status": "complete", "step": step, "train_seconds": 1.5, "eval": {"miou_1click": 0.5}}
    (run_dir / "state.json").write_text(json.dumps(state))
    return run_dir


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
