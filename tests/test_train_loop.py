"""engine.train: the loop reduces the loss, resumes exactly, checkpoints in the official format."""

from __future__ import annotations

import pytest
import torch

from engine.data.synthetic import SyntheticSource
from engine.model import build_sam
from engine.train.checkpoint import load_checkpoint
from engine.train.data import TrainDataset, collate
from engine.train.loop import TrainOptions, train
from engine.train.step import InteractiveStep

# A SAM small enough for unit tests: 64-px input, 4×4 embedding grid, 16×16 low-res masks.
MICRO = {
    "encoder_embed_dim": 32,
    "encoder_depth": 2,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": (1,),
    "image_size": 64,
    "patch_size": 16,
    "window_size": 2,
    "prompt_embed_dim": 32,
    "mask_in_chans": 8,
    "decoder_depth": 2,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 2,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 32,
}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a busy 2-core machine, 2 threads are many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def micro_sam(seed: int = 0, drop_path_rate: float = 0.0):
    torch.manual_seed(seed)
    return build_sam(MICRO, drop_path_rate=drop_path_rate)


@pytest.fixture(scope="module")
def dataset() -> TrainDataset:
    source = SyntheticSource.from_split("train", 4, height=96, width=128)
    return TrainDataset.from_source(source, img_size=64)


def fixed_batch_loss(model, dataset: TrainDataset) -> float:
    """The loss of the first image's masks with fixed prompts (seeded generator)."""
    generator = torch.Generator().manual_seed(123)
    images, targets = collate([dataset[0]], 64, 8, generator)
    with torch.no_grad():
        loss, _ = InteractiveStep(model)(images, targets, generator)
    return float(loss)


def options(**kw) -> TrainOptions:
    base = dict(steps=6, lr=2e-3, warmup_steps=2, masks_per_image=8, num_iterations=3, seed=7)
    base.update(kw)
    return TrainOptions(**base)


def test_dataset_from_synthetic_source(dataset):
    assert len(dataset) == 4
    for sample in dataset.samples:
        h, w = sample.size
        assert max(h, w) == 64 and (h, w) == (48, 64)
        assert sample.masks and all(m["size"] == [48, 64] for m in sample.masks)


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(dataset):
    model = micro_sam()
    before = fixed_batch_loss(model, dataset)
    one_image = TrainDataset([dataset[0]])
    result = train(model, one_image, options(steps=6, warmup_steps=1, lr=3e-3))
    after = fixed_batch_loss(model, one_image)
    assert result.step == 6 and len(result.history) == 6
    assert after < 0.8 * before, (before, after)


def test_resume_continues_the_same_trajectory(dataset, tmp_path):
    straight = micro_sam(seed=1)
    full = train(straight, dataset, options(), checkpoint_path=tmp_path / "straight.pt")

    first = micro_sam(seed=1)
    part = train(first, dataset, options(steps=3), checkpoint_path=tmp_path / "split.pt")
    assert part.step == 3 and load_checkpoint(tmp_path / "split.pt")["step"] == 3
    second = micro_sam(seed=99)  # different init: the checkpoint must restore everything
    rest = train(second, dataset, options(), checkpoint_path=tmp_path / "split.pt", resume=True)
    assert [r.step for r in rest.history] == [4, 5, 6]
    expected = [r.stats["loss"] for r in full.history[3:]]
    assert [r.stats["loss"] for r in rest.history] == pytest.approx(expected, abs=1e-6)
    for (name, a), b in zip(straight.state_dict().items(), second.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_checkpoint_is_one_dict_in_the_official_key_format(dataset, tmp_path):
    model = micro_sam()
    path = tmp_path / "train.pt"
    train(model, dataset, options(steps=2), checkpoint_path=path, config={"run": "x"})
    state = load_checkpoint(path)
    assert {"model", "optimizer", "scheduler", "step", "rng", "options", "config"} <= set(state)
    assert state["step"] == 2 and state["config"] == {"run": "x"}
    assert state["scheduler"]["step"] == 2 and state["options"]["masks_per_image"] == 8
    prefixes = {key.split(".")[0] for key in state["model"]}
    assert prefixes == {"image_encoder", "prompt_encoder", "mask_decoder"}
    reloaded = build_sam(MICRO, checkpoint=path)  # the model loader reads "model"
    for (name, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_freezing_the_image_encoder_trains_only_prompt_encoder_and_decoder(dataset):
    model = micro_sam()
    encoder = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in model.mask_decoder.state_dict().items()}
    train(model, dataset, options(steps=2, freeze_image_encoder=True))
    for key, value in model.image_encoder.state_dict().items():
        assert torch.equal(value, encoder[key]), key
    assert any(not torch.equal(v, decoder[k]) for k, v in model.mask_decoder.state_dict().items())


def test_step_statistics_and_drop_path(dataset):
    model = micro_sam(drop_path_rate=0.4)
    result = train(model, dataset, options(steps=2, images_per_step=2, masks_per_image=3))
    record = result.history[-1]
    assert record.images == 2 and record.stats["masks"] == 6
    assert record.lr == pytest.approx(2e-3)
    assert 0 <= record.stats["iou_first"] <= 1 and 0 <= record.stats["iou_last"] <= 1
    assert record.grad_norm > 0


def test_time_limit_stops_early(dataset, tmp_path):
    result = train(
        micro_sam(), dataset, options(steps=50), time_limit_s=0.0, checkpoint_path=tmp_path / "t.pt"
    )
    assert result.step == 1
    assert load_checkpoint(tmp_path / "t.pt")["step"] == 1


def test_sharding_by_image_index(dataset):
    shard = dataset.shard(1, 2)
    assert [s.key for s in shard.samples] == [dataset[1].key, dataset[3].key]
    assert shard.shard(1, 2) is shard
    with pytest.raises(ValueError, match="sharded for"):
        shard.shard(0, 3)
    with pytest.raises(ValueError, match="rank"):
        dataset.shard(2, 2)


@pytest.mark.parametrize(("name", "value"), [("steps", 0), ("autocast", "fp8")])
def test_bad_options_raise(name, value):
    with pytest.raises(ValueError, match=name):
        options(**{name: value})


def test_bf16_autocast_step_runs_and_keeps_float32_weights(dataset):
    # the CUDA default ("auto" → bf16); on CPU it has to be asked for
    model = micro_sam()
    result = train(model, dataset, options(steps=1, autocast="bf16"))
    assert torch.isfinite(torch.tensor(result.history[0].stats["loss"]))
    assert all(p.dtype == torch.float32 for p in model.parameters())
