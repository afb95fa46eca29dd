"""Progress bars (engine.progress): training steps, audit shards, validate shards, round images.

Bars go to stderr when forced on (``SA_ENGINE_PROGRESS=1`` or ``progress=True``) with the
right totals, and print nothing when stderr is not a terminal (pytest's capture is not one).
"""

from __future__ import annotations

import io
import re

import pytest
import torch
from dataset_support import make_image, make_record, write_dataset
from test_train_loop import MICRO

from engine.audit.run import run_audit
from engine.data.synthetic import SyntheticSource
from engine.dataset.validate import main as validate_main
from engine.dataset.validate import validate_paths
from engine.model import build_sam
from engine.progress import ENV, progress_bar, progress_enabled
from engine.records import QuarantineRecord
from engine.tracking import Tracker
from engine.train.data import TrainDataset
from engine.train.loop import TrainOptions, train
from engine.work import WorkResult
from stages.pipeline import Pipeline, PipelineSettings
from stages.retrain import Retrainer
from stages.rounds import StagePlan


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


@pytest.mark.parametrize(
    ("enabled", "env", "tty", "expected"),
    [
        (None, None, True, True),  # a terminal
        (None, None, False, False),  # a pipe, a CI log
        (None, "1", False, True),  # forced on
        (None, "0", True, False),  # forced off
        (None, "off", True, False),
        (True, "0", False, True),  # the caller's setting wins
        (False, "1", True, False),
    ],
)
def test_progress_enabled_precedence(monkeypatch, enabled, env, tty, expected):
    if env is not None:
        monkeypatch.setenv(ENV, env)
    assert progress_enabled(enabled, _Stream(tty)) is expected


def test_bad_env_value_names_it(monkeypatch):
    monkeypatch.setenv(ENV, "sometimes")
    with pytest.raises(ValueError, match="SA_ENGINE_PROGRESS.*'sometimes'"):
        progress_enabled()


def test_disabled_bar_prints_nothing(capsys):
    with progress_bar(5, "quiet", enabled=False) as bar:
        bar.set_postfix(x=1)
        bar.update(5)
    assert capsys.readouterr().err == ""


def _final_line(err: str) -> str:
    """The last frame tqdm drew (frames are separated by carriage returns)."""
    return re.split(r"[\r\n]+", err.strip())[-1]


@pytest.fixture(scope="module")
def dataset() -> TrainDataset:
    source = SyntheticSource.from_split("train", 2, height=96, width=128)
    return TrainDataset.from_source(source, img_size=64)


def _options(steps: int) -> TrainOptions:
    return TrainOptions(steps=steps, warmup_steps=1, masks_per_image=4, num_iterations=2)


def test_training_bar_counts_steps_and_shows_the_loss(dataset, monkeypatch, capsys, tmp_path):
    torch.manual_seed(0)
    monkeypatch.setenv(ENV, "1")
    path = tmp_path / "train.pt"
    train(build_sam(MICRO), dataset, _options(2), checkpoint_path=path)
    first = capsys.readouterr().err
    assert "train:" in first and "2/2" in _final_line(first)
    # resuming to 4 steps: the bar starts at the checkpoint's step
    result = train(build_sam(MICRO), dataset, _options(4), checkpoint_path=path, resume=True)
    err = capsys.readouterr().err
    assert "2/4" in err and "0/4" not in err
    last = _final_line(err)
    assert "4/4" in last and "step" in last
    assert f"loss={result.history[-1].stats['loss']:.4f}" in last


def test_retraining_between_rounds_shows_its_steps(monkeypatch, capsys, tmp_path):
    """``stages.retrain.Retrainer`` (the initial model and every retraining) in-process."""
    monkeypatch.setenv(ENV, "1")
    source = SyntheticSource.from_split("train", 2, height=96, width=128)
    summary = Retrainer(MICRO, _options(3)).train(source, None, tmp_path, "stage1-r00", steps=2)
    assert summary["steps_done"] == 2
    last = _final_line(capsys.readouterr().err)
    assert last.startswith("train:") and "2/2" in last and "loss=" in last


def test_training_is_quiet_when_not_a_terminal(dataset, capsys):
    torch.manual_seed(0)
    result = train(build_sam(MICRO), dataset, _options(1))
    assert result.step == 1
    assert capsys.readouterr().err == ""


def test_training_bar_off_when_the_caller_says_so(dataset, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "1")
    torch.manual_seed(0)
    train(build_sam(MICRO), dataset, _options(1), progress=False)  # what a Ray worker does
    assert capsys.readouterr().err == ""


@pytest.fixture
def shards(tmp_path):
    """3 shards (2 + 2 + 1 samples) with their index."""
    shard_dir, _, data = write_dataset(tmp_path, n=5, maxcount=2)
    return shard_dir, data


def test_validate_bar_counts_shards(shards, capsys):
    shard_dir, data = shards
    report = validate_paths([shard_dir], progress=True)
    assert report.ok and report.shards == 3
    last = _final_line(capsys.readouterr().err)
    assert last.startswith("validate:") and "3/3" in last and f"samples={len(data)}" in last
    assert "problems=0" in last


def test_validate_cli_bar_only_when_forced(shards, monkeypatch, capsys):
    shard_dir, _ = shards
    assert validate_main([str(shard_dir)]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and "3 shards, 5 samples" in quiet.out
    monkeypatch.setenv(ENV, "1")
    assert validate_main([str(shard_dir)]) == 0
    forced = capsys.readouterr()
    assert "3/3" in _final_line(forced.err) and "shard/s" not in forced.out  # bars: stderr


def test_audit_bar_counts_shards_images_and_masks(shards, tmp_path, monkeypatch, capsys):
    shard_dir, data = shards
    monkeypatch.setenv(ENV, "1")
    summary = run_audit(shard_dir.parent, out_dir=tmp_path / "audit", gallery_size=0)
    last = _final_line(capsys.readouterr().err)
    masks = sum(len(record.annotations) for _, _, record in data)
    assert summary["dataset"]["images"] == len(data) and summary["dataset"]["masks"] == masks
    assert last.startswith("audit:") and "3/3" in last and "shard" in last
    assert f"images={len(data)}" in last and f"masks={masks}" in last


def test_audit_is_quiet_when_not_a_terminal(shards, tmp_path, capsys):
    shard_dir, _ = shards
    run_audit(shard_dir.parent, out_dir=tmp_path / "audit", gallery_size=0)
    assert capsys.readouterr().err == ""


class _FakePool:
    """Stands in for the Ray / local pool: hand-made results, the last one quarantined."""

    def set_model(self, model) -> None:
        pass

    def map(self, entries, task):
        entries = list(entries)
        for i, entry in enumerate(entries):
            if i == len(entries) - 1:
                reason = QuarantineRecord(entry.key, entry.path, "bad image")
                yield WorkResult(entry.key, entry.index, quarantine=reason)
            else:
                yield WorkResult(
                    entry.key, entry.index, image=make_image(i), record=make_record(i, 2)
                )

    def close(self) -> None:
        pass


def _pipeline(tmp_path, show_progress: bool = True) -> Pipeline:
    settings = PipelineSettings(
        run_dir=tmp_path / "run",
        source=SyntheticSource(count=4, height=32, width=48),
        preset="tiny",
        stages=[StagePlan(1, 1, 4, retrain=False)],
        make_task=lambda plan: None,
        retrainer=Retrainer("tiny", TrainOptions()),
        retrain_steps=1,
        tracker=Tracker(None, "progress-test", enabled=False),
        config_digest="progress-test",
        start_checkpoint=str(tmp_path / "start.pt"),  # never loaded: the pool is fake
        audit=False,
        show_progress=show_progress,
    )
    return Pipeline(settings, _FakePool())


def test_round_bar_counts_images_as_results_come_back(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "1")
    result = _pipeline(tmp_path).run()
    assert result.quarantined == 1
    err = capsys.readouterr().err
    last = _final_line(err)
    assert last.startswith("stage1-r00:") and "4/4" in last and "img" in last
    assert "quarantined=1" in last


def test_round_bar_off_with_show_progress_false(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "1")
    _pipeline(tmp_path, show_progress=False).run()
    assert capsys.readouterr().err == ""


def test_cli_rejects_a_bad_env_value_before_any_work(monkeypatch, capsys, tmp_path):
    from stages.cli import main

    monkeypatch.setenv(ENV, "maybe")
    assert main(["validate", str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert ENV in out and "'maybe'" in out
