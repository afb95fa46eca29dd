"""Kill anything, lose nothing: ``sa-engine run`` killed (SIGKILL) during retraining and while a
shard is being written, or stopped by a full or read-only disk, resumes with the same command to
the dataset of an uninterrupted run — same keys, same masks, no temporary file left, no
truncated tar under a final name. (Killed during annotation: tests/test_pipeline.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from reliability_support import (
    assert_final_tars_complete,
    dataset_contents,
    kill_when,
    output,
    run_args,
    sa_engine,
    start_sa_engine,
    temp_files,
)

from engine.dataset.atomic import DatasetWriteError
from engine.model import build_sam, save_checkpoint
from stages.state import RunState, save_state

TRAIN_STEPS = 4  # MINI's train.steps


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The run directory of an uninterrupted run (the same seed as every run below)."""
    root = tmp_path_factory.mktemp("reference")
    result = sa_engine(*run_args(root, "ref"))
    assert result.returncode == 0, output(result)
    return root / "ref"


@pytest.fixture(scope="module")
def reference(reference_run) -> dict[str, list[tuple]]:
    """The uninterrupted run's dataset: key → its masks."""
    contents = dataset_contents(reference_run)
    assert len(contents) == 3 and any(contents.values())
    return contents


def _resume_and_compare(args: list[str], run_dir: Path, reference: dict) -> None:
    resumed = sa_engine(*args)
    assert resumed.returncode == 0, output(resumed)
    assert json.loads((run_dir / "state.json").read_text())["finished"] is True
    assert dataset_contents(run_dir) == reference
    assert temp_files(run_dir) == []
    assert_final_tars_complete(run_dir / "shards")


def test_killed_during_retraining_resumes_from_the_training_checkpoint(
    reference_run, reference, tmp_path
):
    args = run_args(tmp_path, "killed")
    run_dir = tmp_path / "killed"
    checkpoints = run_dir / "checkpoints"
    proc = start_sa_engine(*args)
    kill_when(
        proc,
        lambda: (
            (checkpoints / "stage1-r00-train.pt").exists()
            and not (checkpoints / "stage1-r00.pt").exists()
        ),
        "retraining wrote its first training checkpoint",
    )
    step = torch.load(checkpoints / "stage1-r00-train.pt", weights_only=True)["step"]
    assert 1 <= step < TRAIN_STEPS  # killed part-way: the resumed run must continue it
    state = json.loads((run_dir / "state.json").read_text())
    assert state["rounds"][0]["annotated"] and state["rounds"][0]["checkpoint"] is None
    # the same model as an uninterrupted retraining, hence the same stage-3 masks
    _resume_and_compare(args, run_dir, reference)
    resumed = torch.load(checkpoints / "stage1-r00.pt", weights_only=True)
    uninterrupted = torch.load(reference_run / "checkpoints" / "stage1-r00.pt", weights_only=True)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_killed_while_a_shard_is_written_leaves_only_complete_shards(reference, tmp_path):
    args = run_args(tmp_path, "killed")
    run_dir = tmp_path / "killed"
    shards = run_dir / "shards"
    proc = start_sa_engine(*args)
    kill_when(
        proc,
        lambda: shards.is_dir() and any(shards.glob(".stage3-r00-*.tar.tmp")),
        "a stage-3 shard was open under its temporary name",
    )
    assert any(shards.glob(".stage3-r00-*.tar.tmp"))
    assert not any(shards.glob("stage3-r00-*.tar"))  # nothing half-written under a final name
    assert_final_tars_complete(shards)
    _resume_and_compare(args, run_dir, reference)


# -- write failures -----------------------------------------------------------------------------


def _can_mount() -> bool:
    return os.geteuid() == 0 and "tmpfs" in Path("/proc/filesystems").read_text()


@contextlib.contextmanager
def _tmpfs(target: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``target`` (root only, else the test is skipped); unmounted after."""
    if not _can_mount():
        pytest.skip("mounting a tmpfs needs root (test_failing_writes_... covers a full disk)")
    target.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("tmpfs mount refused here (no CAP_SYS_ADMIN)")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=False)


@pytest.fixture
def tmpfs_shards(tmp_path):
    """``<runs_root>/full/shards`` on a read-only 4 KiB tmpfs."""
    with _tmpfs(tmp_path / "full" / "shards", "ro,size=4k") as shards:
        yield shards


@pytest.fixture
def full_disk(tmp_path):
    """A directory on a 64 KiB tmpfs that is already full."""
    with _tmpfs(tmp_path / "disk", "size=64k") as disk:
        with open(disk / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:
                handle.write(bytes(4096))
        yield disk


def _remount(target: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(target)], check=True)


def test_read_only_then_full_disk_names_the_shard_and_the_run_resumes(
    reference, tmp_path, tmpfs_shards
):
    args = run_args(tmp_path, "full")
    run_dir = tmp_path / "full"
    failed = sa_engine(*args)  # the shard directory is a read-only mount
    assert failed.returncode != 0
    message = failed.stderr
    assert "Read-only file system" in message and str(tmpfs_shards) in message, output(failed)
    assert "Traceback" not in message
    _remount(tmpfs_shards, "rw,size=12k")  # stage 1's shard (10 KiB) fits, stage 3's does not
    failed = sa_engine(*args)
    assert failed.returncode != 0
    message = failed.stderr
    assert "No space left on device" in message and str(tmpfs_shards) in message, output(failed)
    assert "Traceback" not in message
    assert temp_files(run_dir) == []
    assert_final_tars_complete(tmpfs_shards)
    _remount(tmpfs_shards, "rw,size=16m")
    _resume_and_compare(args, run_dir, reference)


def test_failing_writes_name_the_file_and_the_run_resumes(reference, tmp_path):
    args = run_args(tmp_path, "failing")
    run_dir = tmp_path / "failing"
    # stage 3's index files fail after 100 bytes: its shard is never committed
    failed = sa_engine(*args, faults="images-stage3-r00:100")
    assert failed.returncode != 0
    message = failed.stderr
    assert "No space left on device" in message, output(failed)
    assert "images-stage3-r00-000000.parquet" in message
    assert "Traceback" not in message
    assert temp_files(run_dir) == []
    assert not any((run_dir / "shards").glob("stage3-*.tar"))
    _resume_and_compare(args, run_dir, reference)


def test_checkpoint_and_state_writes_on_a_full_disk_name_the_file(full_disk):
    with pytest.raises(OSError, match=f"cannot write checkpoint {full_disk / 'model.pt'}"):
        save_checkpoint(build_sam("tiny"), full_disk / "model.pt")
    with pytest.raises(DatasetWriteError, match=f"cannot write {full_disk / 'state.json'}"):
        save_state(full_disk, RunState(config_digest="x"))
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no temporary left
