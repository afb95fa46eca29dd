"""Scheduled retraining: ``sa-engine train`` on a finished run retrains only when its data
changed (a new shard), for another ``train.steps`` steps on all the data, in the same MLflow
run; the data fingerprint and the segment plan are checked on their own too."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from dataset_support import samples

from engine.data import SyntheticSource, WebDatasetSource
from engine.data.fingerprint import same_data, source_fingerprint
from engine.dataset.writer import ShardWriter
from engine.train.checkpoint import load_checkpoint
from engine.train.data import TrainDataset
from stages.train_plan import Segment, plan_segment


def write_shard(root: Path, prefix: str, start: int, n: int = 3) -> list[str]:
    """One shard ``root/shards/<prefix>-*.tar`` of samples ``img_{start..}``; their keys."""
    data = samples(n, start=start)
    with ShardWriter(root / "shards", root / "index", prefix, maxcount=100) as writer:
        for key, image, record in data:
            writer.write(key, image, record)
    return [key for key, _, _ in data]


def test_webdataset_fingerprint_changes_with_a_new_shard_only(tmp_path):
    write_shard(tmp_path, "a", start=1)
    pattern = str(tmp_path / "shards" / "*.tar")
    first = source_fingerprint(WebDatasetSource(pattern))
    assert first["kind"] == "shards" and first["count"] == 1 and first["bytes"] > 0
    assert same_data(first, source_fingerprint(WebDatasetSource(pattern)))
    assert not same_data(first, source_fingerprint(WebDatasetSource(pattern), limit=2))
    write_shard(tmp_path, "b", start=5)
    second = source_fingerprint(WebDatasetSource(pattern))
    assert second["count"] == 2 and not same_data(first, second)
    assert json.loads(json.dumps(second)) == second  # stored in state.json as is


def test_entry_fingerprint_follows_the_entry_keys():
    a = source_fingerprint(SyntheticSource.from_split("train", 3))
    assert a["kind"] == "entries" and a["count"] == 3
    assert same_data(a, source_fingerprint(SyntheticSource.from_split("train", 3)))
    assert not same_data(a, source_fingerprint(SyntheticSource.from_split("train", 4)))
    assert not same_data(None, a)


OLD = {"digest": "old", "count": 1, "kind": "shards"}
NEW = {"digest": "new", "count": 2, "kind": "shards"}


@pytest.mark.parametrize(
    ("state", "done", "expected"),
    [
        ({}, 0, Segment(0, 3, 0, retrain=False)),  # a fresh run
        ({"status": "training"}, 2, Segment(0, 3, 2, retrain=False)),  # interrupted: resume
        ({"status": "stopped", "fingerprint": NEW}, 1, Segment(0, 3, 1, retrain=False)),
        ({"status": "complete", "fingerprint": NEW}, 2, Segment(0, 3, 2, retrain=False)),  # steps↑
        ({"status": "complete", "fingerprint": NEW}, 3, None),  # same data: nothing
        ({"status": "complete"}, 3, None),  # an older run without a fingerprint
        ({"status": "complete", "fingerprint": OLD}, 3, Segment(3, 6, 3, retrain=True)),
        # an interrupted retraining segment resumes to its own end
        ({"status": "training", "segment_start": 3}, 4, Segment(3, 6, 4, retrain=False)),
        ({"status": "complete", "segment_start": 3, "fingerprint": NEW}, 6, None),
        (
            {"status": "complete", "segment_start": 3, "fingerprint": OLD},
            6,
            Segment(6, 9, 6, retrain=True),
        ),
    ],
)
def test_plan_segment(state, done, expected):
    segment, reason = plan_segment(state, done, 3, NEW)
    assert segment == expected
    if segment is None:
        assert "nothing to do" in reason


def train(root: Path, caplog) -> tuple[int, dict, str]:
    from stages.train_cmd import main

    args = [
        "model=tiny",
        "data=webdataset",
        f"data.path={root / 'shards' / '*.tar'}",
        "train.steps=2",
        "train.lr=1e-3",
        "train.warmup_steps=2",
        "train.decay_steps=[]",
        "train.images_per_step=1",
        "train.masks_per_image=2",
        "train.num_iterations=1",
        "train.min_mask_area=1",
        "train.augment_flip=0",
        "train.augment_scale=[1,1]",
        "train.augment_color=0",
        "train.checkpoint_every=0",
        "train.workers=0",
        "eval.enabled=false",
        f"run_dir={root / 'run'}",
        f"runs_root={root}",
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sa_engine.train"):
        rc = main(args)
    state = json.loads((root / "run" / "state.json").read_text())
    return rc, state, caplog.text


def test_new_shards_retrain_a_finished_run(tmp_path, caplog, monkeypatch):
    import mlflow

    trained_keys: list[set[str]] = []
    from_source = TrainDataset.from_source.__func__

    def recording(cls, *args, **kwargs):
        dataset = from_source(cls, *args, **kwargs)
        trained_keys.append({s.key for s in dataset.samples})
        return dataset

    monkeypatch.setattr(TrainDataset, "from_source", classmethod(recording))
    old_keys = write_shard(tmp_path, "a", start=1)
    checkpoint = tmp_path / "run" / "checkpoints" / "train.pt"

    rc, state, _ = train(tmp_path, caplog)
    assert rc == 0 and state["status"] == "complete" and state["step"] == 2
    assert [h["step"] for h in state["history"]] == [2]
    assert trained_keys == [set(old_keys)]
    run_id = state["mlflow_run_id"]

    before = checkpoint.stat().st_mtime_ns
    rc, state, log = train(tmp_path, caplog)
    assert rc == 0 and "has not changed; nothing to do" in log
    assert state["step"] == 2 and len(state["history"]) == 1
    assert checkpoint.stat().st_mtime_ns == before and len(trained_keys) == 1

    new_keys = write_shard(tmp_path, "b", start=5)
    rc, state, log = train(tmp_path, caplog)
    assert rc == 0 and "data changed (1 → 2 shards)" in log and "from step 2 to 4" in log
    assert state["status"] == "complete" and state["step"] == 4 and state["segment_start"] == 2
    assert load_checkpoint(checkpoint)["step"] == 4
    assert [h["step"] for h in state["history"]] == [2, 4]
    first, second = (h["fingerprint"] for h in state["history"])
    assert (first["count"], second["count"]) == (1, 2) and not same_data(first, second)
    assert state["fingerprint"] == second
    assert trained_keys[-1] == set(old_keys) | set(new_keys)  # old and new shards
    assert state["mlflow_run_id"] == run_id  # the same MLflow run, steps continuing
    log_lines = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").open()]
    assert [r["step"] for r in log_lines] == [1, 2, 3, 4]
    lrs = [r["lr"] for r in log_lines]
    assert lrs[2:] == pytest.approx(lrs[:2]) and lrs[0] == pytest.approx(5e-4)  # fresh warm-up
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    losses = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in losses) == [1, 2, 3, 4]

    rc, state, log = train(tmp_path, caplog)
    assert rc == 0 and "nothing to do" in log
    assert state["step"] == 4 and len(state["history"]) == 2 and len(trained_keys) == 2
