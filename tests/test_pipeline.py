"""``sa-engine run`` end to end on CPU with the tiny model: in-process, on 2 Ray workers, killed
and resumed, swept with ``-m``; and the config checks that must fail before any work."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.dataset.index import read_image_index, read_mask_index
from engine.dataset.reader import ShardReader
from engine.dataset.validate import validate_paths

REPO = Path(__file__).resolve().parents[1]

# A run small enough for CI: 6 images of 96×128 — stage 1: 2 rounds × 1, stage 2: 1 round × 1,
# stage 3: the other 3; two optimizer steps per training; thresholds that let a barely trained
# model emit masks. The tiny model from random init, studio scenes: the mechanics, not quality
# (test_pipeline_tracking runs the default shipped model).
SMALL = [
    "model=tiny",
    "data.style=studio",
    "eval.data.style=studio",
    "data.count=6",
    "data.height=96",
    "data.width=128",
    "stages.assisted_manual.rounds=2",
    "stages.assisted_manual.images_per_round=1",
    "stages.semi_automatic.rounds=1",
    "stages.semi_automatic.images_per_round=1",
    "stages.max_clicks=3",
    "stages.prefill.points_per_side=4",
    "stages.prefill.pred_iou_thresh=0.0",
    "stages.prefill.stability_score_thresh=0.0",
    "stages.fully_automatic.points_per_side=4",
    "stages.fully_automatic.crop_n_layers=1",
    "stages.fully_automatic.pred_iou_thresh=0.0",
    "stages.fully_automatic.stability_score_thresh=0.0",
    "stages.fully_automatic.min_mask_region_area=4",
    "train.steps=2",
    "train.warmup_steps=1",
    "train.masks_per_image=2",
    "train.num_iterations=2",
    "train.checkpoint_every=1",
    "initial.steps=2",
    "initial.cache=false",
    "initial.data.count=2",
    "initial.rehearsal_images=2",
    "initial.data.height=96",
    "initial.data.width=128",
    "eval.images=1",
    "eval.max_clicks=5",
    "eval.max_objects_per_image=2",
    "eval.data.count=1",
    "eval.data.height=96",
    "eval.data.width=128",
]


def sa_engine(
    *args: str, timeout: float = 900, progress: str | None = None
) -> subprocess.CompletedProcess:
    """``sa-engine run ARGS`` with ``SA_ENGINE_PROGRESS=progress`` (unset when None)."""
    env = _env()
    env.pop("SA_ENGINE_PROGRESS", None)
    if progress is not None:
        env["SA_ENGINE_PROGRESS"] = progress
    return subprocess.run(
        [sys.executable, "-m", "stages.cli", "run", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def _args(root: Path, name: str, *extra: str) -> list[str]:
    return [*SMALL, f"runs_root={root}", f"name={name}", *extra]


def dataset_contents(run_dir: Path) -> dict[str, list[tuple]]:
    """key → sorted (counts, area) of its masks, read back from the shards."""
    out = {}
    for key, _, record in ShardReader(run_dir / "shards", decode_images=False):
        assert key not in out, f"{key} written twice"
        out[key] = sorted((a.segmentation["counts"], a.area) for a in record.annotations)
    return out


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    result = sa_engine(*_args(root, "local", "cluster.workers=0"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, root / "local", result


def test_local_run_writes_a_valid_dataset(local_run):
    root, run_dir, result = local_run
    state = json.loads((run_dir / "state.json").read_text())
    assert state["finished"] is True
    assert [r["prefix"] for r in state["rounds"]] == [
        "stage1-r00",
        "stage1-r01",
        "stage2-r00",
        "stage3-r00",
    ]
    assert all(r["annotated"] for r in state["rounds"])
    assert [bool(r["checkpoint"]) for r in state["rounds"]] == [True, True, True, False]
    report = validate_paths([run_dir / "shards"])
    assert report.ok, [str(p) for p in report.problems]
    contents = dataset_contents(run_dir)
    planned = [k for r in state["rounds"] for k in r["keys"]]
    assert sorted(contents) == sorted(planned) and len(planned) == 6
    masks = read_mask_index(run_dir / "index").to_pylist()
    by_stage = {(m["stage"], m["source"]) for m in masks}
    assert ("assisted_manual", "simulated") in by_stage
    assert ("fully_automatic", "model") in by_stage
    images = read_image_index(run_dir / "index")
    assert images.num_rows == 6
    assert None not in images["blurred_boxes"].to_pylist()  # the privacy filter is on by default
    for line in ("round", "stage1-r00", "stage3-r00", "initial model"):
        assert line in (run_dir / "summary.txt").read_text()
    assert "run directory:" in result.stdout and "mlflow ui" in result.stdout
    assert "%|" not in result.stderr + result.stdout  # not a terminal: no progress bar
    audit = json.loads((run_dir / "audit" / "audit.json").read_text())
    assert set(audit["iou_above"]) == {"0.50", "0.75", "0.90"}
    assert audit["privacy"]["images_filtered"] == 6
    assert (run_dir / "audit" / "audit.html").is_file()
    for name in ("initial.pt", "stage1-r00.pt", "stage1-r01.pt", "stage2-r00.pt"):
        assert (run_dir / "checkpoints" / name).is_file()


def test_retraining_takes_every_annotated_round_so_far_plus_rehearsal(local_run):
    _, run_dir, _ = local_run
    state = json.loads((run_dir / "state.json").read_text())
    retrained = [r for r in state["rounds"] if r["checkpoint"]]
    offered = [r["summary"]["train_source_images"] for r in retrained]
    # one image per stage-1/2 round, cumulative, plus the 2 rehearsal images of initial.data
    assert offered == [1 + 2, 2 + 2, 3 + 2]


def test_local_run_is_tracked_in_mlflow(local_run):
    import mlflow

    root, run_dir, _ = local_run
    state = json.loads((run_dir / "state.json").read_text())
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    parent = client.get_run(state["mlflow_run_id"])
    assert parent.data.params["model.preset"] == "tiny"
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    names = {c.info.run_name for c in children}
    assert {"stage1-r00", "stage1-r01", "stage2-r00", "stage3-r00"} <= names
    stage1 = next(c for c in children if c.info.run_name == "stage1-r00")
    for metric in (
        "masks",
        "masks_per_image",
        "clicks_per_mask",
        "seconds_per_mask",
        "hand_fixed_share",
        "miou_1click",
        "noc_90",
        "images_per_s",
    ):
        assert metric in stage1.data.metrics, metric


def test_rerun_of_a_finished_run_changes_nothing(local_run):
    root, run_dir, _ = local_run
    before = dataset_contents(run_dir)
    shards = sorted(p.name for p in (run_dir / "shards").iterdir())
    again = sa_engine(*_args(root, "local", "cluster.workers=0"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.name for p in (run_dir / "shards").iterdir()) == shards
    assert dataset_contents(run_dir) == before


def test_two_ray_workers_give_the_same_dataset(local_run, tmp_path):
    root, run_dir, _ = local_run
    # a 9-image source cut to the same 6 by data.limit (stage 3 would take 6 otherwise)
    more = ("data.count=9", "data.limit=6")
    args = _args(tmp_path, "ray", "cluster.workers=2", "cluster.num_cpus=2", *more)
    result = sa_engine(*args, progress="1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # forced on: the driver's bars, each round's images as the Ray workers' results come back
    err = result.stderr
    for prefix, n in (("stage1-r00", 1), ("stage1-r01", 1), ("stage2-r00", 1), ("stage3-r00", 3)):
        bar = rf"(?:^|\r){prefix}:[^\r\n]* {n}/{n} "
        assert re.search(bar, err, re.M), (prefix, err[-3000:])
    # the initial model + 3 retrainings, 2 steps each: every bar starts at 0/2 and ends at 2/2
    # (text=True turns tqdm's carriage returns into newlines: one frame per line)
    frames = [line for line in err.splitlines() if line.startswith("train:")]
    starts = [i for i, frame in enumerate(frames) if " 0/2 " in frame]
    assert len(starts) == 4, err[-3000:]
    for begin, end in zip(starts, [*starts[1:], len(frames)]):
        assert any(" 2/2 " in f and "loss=" in f for f in frames[begin:end]), frames[begin:end]
    assert re.search(r"(?:^|\r)audit:[^\r\n]*100%", err, re.M), err[-3000:]
    assert dataset_contents(tmp_path / "ray") == dataset_contents(run_dir)


def test_driver_killed_mid_run_resumes_to_the_same_dataset(local_run, tmp_path):
    root, run_dir, _ = local_run
    args = _args(tmp_path, "killed", "cluster.workers=0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.cli", "run", *args],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    shards = tmp_path / "killed" / "shards"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if shards.is_dir() and any(shards.glob("stage1-r01-*.tar")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = sa_engine(*args)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert dataset_contents(tmp_path / "killed") == dataset_contents(run_dir)
    leftovers = [p for p in (tmp_path / "killed").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model.preset=vit_q", "model.preset"),
        ("stages.accept_iou=-0.5", "accept_iou"),
        ("model.checkpoint=/no/such/file.pt", "model.checkpoint"),
        ("stages.prefill.pred_iou_thresh=-1", "stages.prefill"),
        ("stages.fully_automatic.stability_score_offset=0", "stability_score_offset must be > 0"),
        ("stages.annotator=robot", "stages.annotator"),
        ("train.steps=0", "train"),
        ("initial.rehearsal_images=-1", "initial.rehearsal_images"),
        ("data.limit=0", "data"),
    ],
)
def test_bad_config_fails_before_any_work(tmp_path, override, named):
    result = sa_engine(*_args(tmp_path, "bad", override), timeout=300)
    assert result.returncode != 0
    assert named in result.stderr + result.stdout
    assert not (tmp_path / "bad" / "shards").exists()
    assert not (tmp_path / "bad" / "state.json").exists()


def test_unknown_key_and_wrong_type_are_rejected_by_the_schema(tmp_path):
    for override, named in [("stages.bogus=1", "bogus"), ("train.steps=many", "train.steps")]:
        result = sa_engine(*_args(tmp_path, "bad", override), timeout=300)
        assert result.returncode != 0
        assert named in result.stderr + result.stdout


def test_unwritable_run_dir_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = sa_engine(*SMALL, f"runs_root={tmp_path}", f"run_dir={blocker / 'run'}", timeout=300)
    assert result.returncode != 0
    assert "not writable" in result.stderr + result.stdout


def test_multirun_sweeps_into_one_directory_per_job(tmp_path):
    sweep = [
        "-m",
        *SMALL,
        f"runs_root={tmp_path}",
        "name=sweep",
        "cluster.workers=0",
        "initial.enabled=false",
        "eval.enabled=false",
        "output.audit=false",
        "stages.assisted_manual.rounds=1",
        "stages.semi_automatic.rounds=0",
        "data.count=2",
        "stages.accept_iou=0.5,0.95",
    ]
    result = sa_engine(*sweep)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = sorted(p for p in (tmp_path / "multirun" / "sweep").iterdir() if p.is_dir())
    assert [j.name for j in jobs] == ["0", "1"]
    for job in jobs:
        state = json.loads((job / "state.json").read_text())
        assert state["finished"] is True
        assert "accept_iou: 0." in (job / "config.yaml").read_text()
