"""Bad configs and untrusted checkpoints through ``sa-engine run``: one clear error before any work
(no state.json, no shard), and a pickled payload is never run. (Unknown ``model.preset``,
negative thresholds, a missing checkpoint and an unwritable run directory:
tests/test_pipeline.py.)"""

from __future__ import annotations

import pathlib
from pathlib import Path

import torch
from reliability_support import output, run_args, sa_engine

from engine.model import build_sam, save_checkpoint


def _assert_no_work(run_dir: Path) -> None:
    assert not (run_dir / "state.json").exists()
    assert not (run_dir / "shards").exists()
    assert not (run_dir / "checkpoints").exists()


def test_checkpoint_of_another_preset_is_refused_before_any_work(tmp_path):
    torch.manual_seed(0)
    checkpoint = save_checkpoint(build_sam("tiny"), tmp_path / "tiny.pt")
    result = sa_engine(
        *run_args(tmp_path, "mismatch", "model=vit_b", f"model.checkpoint={checkpoint}")
    )
    assert result.returncode == 2, output(result)
    message = result.stderr
    assert f"model.checkpoint {checkpoint}" in message and "model.preset=vit_b" in message
    assert "preset 'tiny'" in message  # the preset the file does fit is named
    assert message.count("config error") == 1 and "Traceback" not in message
    _assert_no_work(tmp_path / "mismatch")


class _Payload:
    """Unpickling this (unsafely) creates ``marker``: a stand-in for code an attacker runs."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.mkdir, (self.marker,))


def test_checkpoint_carrying_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    state = dict(build_sam("tiny").state_dict())
    state["payload"] = _Payload(marker)
    torch.save(state, tmp_path / "evil.pt")
    result = sa_engine(*run_args(tmp_path, "evil", f"model.checkpoint={tmp_path / 'evil.pt'}"))
    assert result.returncode == 2, output(result)
    assert "model.checkpoint: " in result.stderr and "evil.pt: refused to load" in result.stderr
    assert "Unsupported global" in result.stderr  # what was refused, not a size mismatch
    assert "does not fit" not in result.stderr and "\x1b[" not in result.stderr
    assert not marker.exists()
    _assert_no_work(tmp_path / "evil")


def test_unreachable_ray_address_fails_fast_naming_it(tmp_path):
    # port 1 on the loopback: nothing listens there; Ray alone would retry for many minutes
    result = sa_engine(
        *run_args(tmp_path, "noray", "cluster.address=127.0.0.1:1", "cluster.workers=1"),
        timeout=300,
    )
    assert result.returncode == 2, output(result)
    assert "cannot start Ray on 127.0.0.1:1" in result.stderr
    assert "no Ray cluster reachable at '127.0.0.1:1' (cluster.address)" in result.stderr
    _assert_no_work(tmp_path / "noray")


def test_unknown_preset_group_is_named(tmp_path):
    result = sa_engine(*run_args(tmp_path, "vitq", "model=vit_q"), timeout=300)
    assert result.returncode != 0
    assert "Could not find 'model/vit_q'" in result.stderr, output(result)
    assert "vit_b" in result.stderr  # the options that exist are listed
    assert not (tmp_path / "vitq").exists()


def test_negative_ray_retry_settings_are_refused(tmp_path):
    result = sa_engine(*run_args(tmp_path, "retries", "cluster.max_restarts=-2"), timeout=300)
    assert result.returncode == 2, output(result)
    assert "cluster.max_restarts" in result.stderr
    _assert_no_work(tmp_path / "retries")
