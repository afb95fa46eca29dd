"""One small ``sa-engine run`` started as the README says (``runs_root=runs`` under the working
directory), whose stage 3 keeps no mask: every stage still has its image rows in the index, the
MLflow parent run found at the README's tracking URI holds one nested run per round, the final
checkpoint is a registered model version, and ``train.time_limit_s`` cuts each retraining."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_support import run_env

from engine.dataset.index import read_image_index, read_mask_index

REPO = Path(__file__).resolve().parents[1]

TINY = [
    "data.count=4",
    "data.height=96",
    "data.width=128",
    "stages.assisted_manual.rounds=1",
    "stages.assisted_manual.images_per_round=1",
    "stages.semi_automatic.rounds=1",
    "stages.semi_automatic.images_per_round=1",
    "stages.max_clicks=3",
    "stages.prefill.points_per_side=4",
    "stages.prefill.pred_iou_thresh=0.0",
    "stages.prefill.stability_score_thresh=0.0",
    "stages.fully_automatic.points_per_side=4",
    "stages.fully_automatic.crop_n_layers=0",
    "stages.fully_automatic.pred_iou_thresh=1.0",  # nothing passes: stage 3 keeps no mask
    "train.steps=3",
    "train.warmup_steps=1",
    "train.masks_per_image=2",
    "train.num_iterations=2",
    "train.time_limit_s=0",  # every retraining stops after its first step
    "initial.enabled=false",
    "initial.rehearsal_images=0",
    "eval.enabled=false",
    "output.audit=false",
    "cluster.workers=0",
    "tracking.register_model=sam-tiny-test",
    "name=small",
]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("readme-run")
    result = subprocess.run(
        [sys.executable, "-m", "stages.cli", "run", *TINY],
        cwd=cwd,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return cwd, cwd / "runs" / "small", result


def test_a_stage_with_no_mask_keeps_its_images_in_the_index(small_run):
    _, run_dir, _ = small_run
    images = read_image_index(run_dir / "index").to_pylist()
    by_stage = {}
    for row in images:
        by_stage.setdefault(row["stage"], []).append(row)
    assert sorted(by_stage) == ["assisted_manual", "fully_automatic", "semi_automatic"]
    assert len(by_stage["fully_automatic"]) == 2
    assert all(row["masks"] == 0 for row in by_stage["fully_automatic"])
    masks = read_mask_index(run_dir / "index").to_pylist()
    assert {m["stage"] for m in masks} == {"assisted_manual", "semi_automatic"}
    summary = (run_dir / "summary.txt").read_text()
    assert re.search(r"stage3-r00\s+2\s+0\s", summary)


def test_parent_run_holds_a_nested_run_per_round_at_the_readme_uri(small_run, monkeypatch):
    import mlflow

    cwd, run_dir, result = small_run
    uri = re.search(r"--backend-store-uri (\S+)`", (REPO / "README.md").read_text()).group(1)
    assert uri == "sqlite:///runs/mlflow.db"
    monkeypatch.chdir(cwd)  # the README's URI is relative to where the run was started
    client = mlflow.MlflowClient(tracking_uri=uri)
    state = json.loads((run_dir / "state.json").read_text())
    parent = client.get_run(state["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert sorted(c.info.run_name for c in children) == ["stage1-r00", "stage2-r00", "stage3-r00"]
    stage3 = next(c for c in children if c.info.run_name == "stage3-r00")
    assert stage3.data.metrics["images"] == 2 and stage3.data.metrics["masks"] == 0
    assert "mlflow ui --backend-store-uri sqlite:///" in result.stdout


def test_register_model_registers_the_final_checkpoint(small_run, monkeypatch):
    import mlflow

    cwd, run_dir, result = small_run
    monkeypatch.chdir(cwd)
    client = mlflow.MlflowClient(tracking_uri="sqlite:///runs/mlflow.db")
    state = json.loads((run_dir / "state.json").read_text())
    versions = client.search_model_versions("name = 'sam-tiny-test'")
    assert [str(v.version) for v in versions] == [state["model_version"]] == ["1"]
    assert versions[0].run_id == state["mlflow_run_id"]
    assert versions[0].source.endswith("/checkpoint/stage2-r00.pt")
    assert "registered stage2-r00.pt as sam-tiny-test version 1" in result.stdout


def test_time_limit_cuts_every_retraining(small_run):
    _, run_dir, _ = small_run
    state = json.loads((run_dir / "state.json").read_text())
    retrained = [r["summary"] for r in state["rounds"] if r["checkpoint"]]
    assert len(retrained) == 2
    assert all(s["steps"] == 3 and s["steps_done"] == 1 for s in retrained)
