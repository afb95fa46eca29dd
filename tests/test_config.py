"""Structured configs (stages.config) composed by Hydra (stages.hydra_app)."""

from __future__ import annotations

import pytest

from engine.model import PRESETS
from stages.config import DataConfig, ModelConfig, TrainConfig, TrainJobConfig
from stages.hydra_app import CONFIG_DIR, ConfigError, load_train_job


def test_defaults_compose_into_typed_dataclasses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config dir is found from the package, not the cwd
    job, resolved, text = load_train_job([])
    assert isinstance(job, TrainJobConfig)
    assert isinstance(job.model, ModelConfig) and job.model.preset == "mobile"
    assert isinstance(job.train, TrainConfig) and isinstance(job.eval.data, DataConfig)
    # the CPU recipe of configs/train_job.yaml on the public split (docs/training.md)
    assert job.data.split == "public" and job.eval.data.split == "heldout"
    assert resolved["train"]["lr"] == pytest.approx(1e-3)
    assert "masks_per_image: 16" in text and "mask_loss: bce" in text
    assert not (tmp_path / "outputs").exists()  # compose API: no output folders


def test_overrides_select_groups_and_set_values():
    job, _, _ = load_train_job(
        [
            "model=vit_b",
            "data=coco",
            "data.path=/imgs",
            "data.annotations=/a.json",
            "train.steps=7",
            "train.decay_steps=[5,6]",
            "tracking.register_model=sam-b",
        ]
    )
    assert job.model.preset == "vit_b"
    assert job.data.kind == "coco" and job.data.source_kwargs()["annotations"] == "/a.json"
    assert job.train.steps == 7 and job.train.decay_steps == [5, 6]
    assert job.tracking.register_model == "sam-b"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.steps=many", "train.steps"),
        ("train.bogus=1", "bogus"),
        ("model=vit_z", "vit_z"),
        ("train.freeze_image_encoder=perhaps", "freeze_image_encoder"),
    ],
)
def test_bad_overrides_fail_before_work_with_the_key_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_job([override])


def test_every_model_option_is_a_preset():
    for path in (CONFIG_DIR / "model").glob("*.yaml"):
        job, _, _ = load_train_job([f"model={path.stem}"])
        assert job.model.preset in PRESETS


@pytest.mark.parametrize(
    ("kind", "kwargs", "expected"),
    [
        ("folder", {"path": "/imgs"}, {"root": "/imgs", "max_short_side": 1500}),
        ("webdataset", {"path": "s/*.tar"}, {"shards": "s/*.tar", "max_short_side": 1500}),
    ],
)
def test_data_config_source_kwargs(kind, kwargs, expected):
    assert DataConfig(kind=kind, **kwargs).source_kwargs() == expected


def test_synthetic_data_config_maps_split_to_seeds():
    kwargs = DataConfig(kind="synthetic", split="heldout", offset=3, count=5).source_kwargs()
    assert kwargs["count"] == 5 and kwargs["seed_start"] == 2_000_003


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (DataConfig(kind="coco", path="/imgs"), "annotations"),
        (DataConfig(kind="webdataset"), "data.path"),
        (DataConfig(kind="lmdb"), "data.kind"),
        (DataConfig(kind="synthetic", split="validation"), "split"),
    ],
)
def test_incomplete_data_configs_raise(config, message):
    with pytest.raises(ValueError, match=message):
        config.source_kwargs()
