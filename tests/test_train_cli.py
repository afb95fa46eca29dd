"""``sa-engine train`` end to end in a subprocess: checkpoint, MLflow metrics, resume, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.model import build_sam
from engine.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def sa_engine(*args: str, progress: str | None = None) -> subprocess.CompletedProcess:
    """``sa-engine train ARGS`` with ``SA_ENGINE_PROGRESS=progress`` (unset when None)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop("SA_ENGINE_PROGRESS", None)
    if progress is not None:
        env["SA_ENGINE_PROGRESS"] = progress
    return subprocess.run(
        [sys.executable, "-m", "stages.cli", "train", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_cli")
    args = [
        "model=tiny",
        "data=synthetic",
        "data.count=2",
        "data.height=96",
        "data.width=128",
        "train.steps=3",
        "train.warmup_steps=1",
        "train.masks_per_image=2",
        "train.num_iterations=2",
        "train.checkpoint_every=2",
        "train.workers=0",
        "eval.images=1",
        "eval.data.height=96",
        "eval.data.width=128",
        "eval.max_objects_per_image=2",
        "eval.max_clicks=5",
        "tracking.register_model=sam-tiny-test",
        f"run_dir={root / 'run'}",
        f"runs_root={root}",
    ]
    first = sa_engine(*args, progress="1")
    return root, args, first


def test_train_writes_checkpoints_and_logs_to_mlflow(finished_run):
    import mlflow

    root, _, first = finished_run
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = root / "run"
    state = json.loads((run_dir / "state.json").read_text())
    assert state["status"] == "complete" and state["step"] == 3
    assert load_checkpoint(run_dir / "checkpoints" / "train.pt")["step"] == 3
    build_sam("tiny", checkpoint=run_dir / "checkpoints" / "model.pt")  # loads strictly
    assert "model: tiny" not in (run_dir / "config.yaml").read_text()  # resolved, nested
    assert "preset: tiny" in (run_dir / "config.yaml").read_text()
    # forced on: a step bar with the loss (frames start a line or follow a carriage return)
    bars = re.findall(r"(?:^|\r)(train: [^\r\n]*)", first.stderr, re.M)
    assert bars and "3/3" in bars[-1] and "loss=" in bars[-1], first.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    run = client.get_run(state["mlflow_run_id"])
    assert run.data.params["model.preset"] == "tiny"
    assert run.data.params["train.steps"] == "3"
    losses = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in losses] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/lr")] == [1, 2, 3]
    for name in ("eval/miou_1click", "eval/miou_3click", "eval/noc_90", "eval/box_miou"):
        assert name in run.data.metrics
    eval_json = json.loads((run_dir / "eval.json").read_text())
    assert eval_json["miou_1click"] == pytest.approx(run.data.metrics["eval/miou_1click"])
    versions = client.search_model_versions("name='sam-tiny-test'")
    assert [v.run_id for v in versions] == [run.info.run_id]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "eval.json", "checkpoint"} <= artifacts


def test_running_the_same_command_again_does_nothing(finished_run):
    root, args, first = finished_run
    assert first.returncode == 0
    before = (root / "run" / "checkpoints" / "train.pt").stat().st_mtime_ns
    again = sa_engine(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already complete" in again.stderr
    assert (root / "run" / "checkpoints" / "train.pt").stat().st_mtime_ns == before


def test_more_steps_resume_from_the_run_directory(finished_run):
    root, args, first = finished_run
    assert first.returncode == 0
    more = sa_engine(*[a for a in args if not a.startswith("train.steps")], "train.steps=4")
    assert more.returncode == 0, more.stderr[-3000:]
    assert "from step 3 to 4" in more.stderr
    assert "step/s" not in more.stderr  # stderr is a pipe: no progress bar
    state = json.loads((root / "run" / "state.json").read_text())
    assert state["step"] == 4 and state["status"] == "complete"
    steps = [json.loads(line)["step"] for line in (root / "run" / "train_log.jsonl").open()]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["train.steps=lots"], "train.steps"), (["data=coco"], "data.path")],
)
def test_bad_config_exits_2_with_a_message(args, needle, capsys):
    from stages.train_cmd import main

    assert main(args) == 2
    err = capsys.readouterr().err
    assert "config error" in err and needle in err


def test_help_and_cfg_print_without_training(capsys):
    from stages.cli import main

    assert main(["train", "--help"]) == 0
    assert (
        "model: mobile, mobile_public, mobile_s8, mobile_sam, tiny, vit_b, vit_h, vit_l"
        in capsys.readouterr().out
    )
    assert main(["train", "--cfg", "train.steps=9"]) == 0
    assert "steps: 9" in capsys.readouterr().out


def _final_weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "train.pt")["model"]


def test_the_same_command_trains_the_same_model_and_the_seed_changes_it(finished_run, tmp_path):
    """The random start is seeded by ``train.seed``: the same command into two new run
    directories gives the same weights; another seed gives others."""
    _, args, _ = finished_run
    base = [a for a in args if not a.startswith(("run_dir=", "tracking.register_model="))]
    runs = {"one": [], "two": [], "other": ["train.seed=1"]}
    for name, extra in runs.items():
        result = sa_engine(*base, *extra, f"run_dir={tmp_path / name}")
        assert result.returncode == 0, result.stderr[-3000:]
    a, b, c = (_final_weights(tmp_path / name) for name in runs)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
