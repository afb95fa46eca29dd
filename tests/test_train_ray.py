"""The one Ray Train fit of the suite: 2 CPU workers (gloo, DDP) for a few steps."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import pytest
import torch

from engine.data.synthetic import SyntheticSource
from engine.model import build_sam
from engine.train.checkpoint import load_checkpoint
from engine.train.data import TrainDataset
from engine.train.loop import TrainOptions
from engine.train.steplog import JsonlStepLog, read_step_log

ray = pytest.importorskip("ray")

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


def test_two_worker_fit(tmp_path, monkeypatch, capsys):
    """Relative paths (as from ``sa-engine train run_dir=runs/x``) land in the caller's
    directory, not in the Ray workers' own. The driver shows rank 0's steps as a bar."""
    from workers.cluster import local_cluster
    from workers.trainer import fit_distributed

    source = SyntheticSource.from_split("train", 4, height=96, width=128)
    options = TrainOptions(steps=3, lr=1e-3, warmup_steps=1, masks_per_image=4, num_iterations=2)
    monkeypatch.chdir(tmp_path)
    checkpoint = Path("train.pt")
    with local_cluster(num_cpus=2):
        result = fit_distributed(
            partial(build_sam, MICRO),
            partial(TrainDataset.from_source, source, 64, None),
            options,
            checkpoint,
            config={"job": "test"},
            num_workers=2,
            on_step=JsonlStepLog("log.jsonl"),
            storage_path="ray",
            progress=True,
        )
        assert ray.is_initialized()
    assert not ray.is_initialized()  # the context manager shut down what it started
    assert result.step == 3 and result.num_workers == 2
    assert [r["step"] for r in result.history] == [1, 2, 3]
    bars = re.findall(r"(?:^|\r)(train: [^\r\n]*)", capsys.readouterr().err, re.M)
    assert bars and "3/3" in bars[-1], bars
    assert f"loss={result.history[-1]['loss']:.4f}" in bars[-1]
    assert all(r["images"] == 2 for r in result.history)  # 1 image per worker per step
    assert result.samples_per_second > 0
    assert [r["step"] for r in read_step_log(tmp_path / "log.jsonl")] == [1, 2, 3]
    state = load_checkpoint(checkpoint)
    assert state["step"] == 3 and state["config"] == {"job": "test"}
    model = build_sam(MICRO, checkpoint=checkpoint)
    assert all(torch.isfinite(p).all() for p in model.parameters())
