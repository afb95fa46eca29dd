"""``sa-engine run`` reads every key its schema accepts: none is accepted and then ignored.

The composed config is rebuilt from dataclasses that record each field read; building the
pipeline's objects (and the task of every round) for a few variants must read every leaf key.
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.sources import SourceEntry
from engine.train.loop import TrainOptions
from stages import hydra_app
from stages.retrain import Retrainer
from stages.rounds import RoundPlan
from stages.run_cmd import RunConfigError, build_settings
from stages.run_config import RunConfig

REPO = Path(__file__).resolve().parents[1]
# keys Hydra itself consumes by interpolation in configs/run.yaml (checked below)
INTERPOLATED = {"name"}


def _recording(obj, path: str, reads: set[str]):
    """A copy of dataclass ``obj`` (recursively) whose leaf-field reads go into ``reads``."""
    cls = type(obj)
    names = {f.name for f in fields(obj)}

    def __getattribute__(self, name):  # noqa: N807
        value = object.__getattribute__(self, name)
        if name in names and not is_dataclass(value):
            reads.add(f"{path}{name}")
        return value

    sub = type(cls.__name__, (cls,), {"__getattribute__": __getattribute__})
    copy = object.__new__(sub)
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            value = _recording(value, f"{path}{f.name}.", reads)
        object.__setattr__(copy, f.name, value)
    return copy


def _leaf_keys(obj, path: str = "") -> set[str]:
    keys: set[str] = set()
    for f in fields(obj):
        value = getattr(obj, f.name)
        keys |= _leaf_keys(value, f"{path}{f.name}.") if is_dataclass(value) else {path + f.name}
    return keys


def _coco_dataset(root: Path) -> tuple[Path, Path]:
    images = root / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(images / "a.jpg")
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 48, "height": 32}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0,
             "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]], "category_id": 1}
        ],
        "categories": [{"id": 1, "name": "object"}],
    }  # fmt: skip
    path = root / "instances.json"
    path.write_text(json.dumps(coco))
    return images, path


def _coco(key: str, images: Path, instances: Path) -> list[str]:
    group = "data" if key == "data" else f"data@{key}"
    return [f"{group}=coco", f"{key}.path={images}", f"{key}.annotations={instances}"]


def _build(overrides: list[str], reads: set[str], tmp_path: Path) -> None:
    cfg = hydra_app.compose_config("run", [f"runs_root={tmp_path / 'runs'}", *overrides])
    typed = _recording(hydra_app.to_dataclass(cfg), "", reads)
    run_dir = Path(typed.run_dir)  # as hydra_app's job does
    settings, _ = build_settings(
        typed, hydra_app.to_container(cfg), hydra_app.to_yaml(cfg), run_dir
    )
    entry = SourceEntry(key="k", path="k", index=0)
    for stage in (1, 2, 3):  # every round's task reads what it needs
        settings.make_task(RoundPlan(stage, 0, (entry,), stage < 3))


def test_every_run_key_is_read(tmp_path):
    images, instances = _coco_dataset(tmp_path)
    reads: set[str] = set()
    variants = [
        [],  # the embedded defaults: synthetic data, shipped model, evaluation, simulated
        ["model.checkpoint="],  # no checkpoint: the run trains its initial model
        [*_coco("data", images, instances), *_coco("initial.data", images, instances),
         *_coco("eval.data", images, instances), "stages.annotator=coco",
         f"stages.annotations={instances}", "initial.enabled=false",
         "tracking.register_model=sam-test", "train.time_limit_s=30"],
        ["stages.annotator=human", "eval.enabled=false", "tracking.enabled=false"],
    ]  # fmt: skip
    for overrides in variants:
        _build(overrides, reads, tmp_path)
    every = _leaf_keys(RunConfig())
    unread = every - reads - INTERPOLATED
    assert unread == set(), f"keys accepted by sa-engine run but never read: {sorted(unread)}"
    assert {"tracking.register_model", "train.time_limit_s"} <= reads
    run_yaml = (REPO / "configs" / "run.yaml").read_text()
    assert all("${" + key + "}" in run_yaml for key in INTERPOLATED)


def test_run_keys_reach_the_objects_they_configure(tmp_path):
    reads: set[str] = set()
    cfg = hydra_app.compose_config(
        "run",
        [
            f"runs_root={tmp_path}",
            "train.time_limit_s=12.5",
            "tracking.register_model=sam-demo",
            "stages.prefill.detection_pred_iou_thresh=0.6",
        ],
    )
    typed = _recording(hydra_app.to_dataclass(cfg), "", reads)
    settings, _ = build_settings(
        typed, hydra_app.to_container(cfg), hydra_app.to_yaml(cfg), tmp_path / "r"
    )
    assert settings.retrainer.time_limit_s == 12.5
    assert settings.register_model == "sam-demo"
    assert settings.make_task.detection_pred_iou_thresh == 0.6


def test_negative_time_limit_is_refused(tmp_path):
    cfg = hydra_app.compose_config("run", [f"runs_root={tmp_path}", "train.time_limit_s=-1"])
    with pytest.raises(RunConfigError, match="train.time_limit_s"):
        build_settings(hydra_app.to_dataclass(cfg), hydra_app.to_container(cfg), "", tmp_path / "r")


def test_retrainer_time_limit_stops_training_early(tmp_path):
    from engine.data.synthetic import SyntheticSource

    options = TrainOptions(steps=50, warmup_steps=1, masks_per_image=2, num_iterations=1)
    retrainer = Retrainer(preset="tiny", options=options, time_limit_s=0.0)
    source = SyntheticSource(seed_start=0, count=1, height=64, width=64)
    summary = retrainer.train(source, None, tmp_path, "r", seed=0)
    assert summary["steps"] == 50
    assert summary["steps_done"] == 1  # a limit of 0 s stops after the first step
    assert (tmp_path / "r.pt").is_file()
