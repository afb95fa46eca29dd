"""Shared helpers of the reliability tests: a tiny ``sa-engine run`` config, running and killing
it, reading a run's dataset back, and a fault-injecting entry point.

``python tests/reliability_support.py <sa-engine run overrides>`` runs ``sa-engine run`` with
``engine.dataset.atomic.open_for_write`` replaced when ``SA_TEST_FAIL_WRITES=<name part>:<bytes>``
is set: files whose name holds ``<name part>`` fail with ENOSPC once ``<bytes>`` have been
written (a disk filling up, for machines where a tmpfs cannot be mounted).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FAIL_WRITES_ENV = "SA_TEST_FAIL_WRITES"

# The smallest run that still retrains: 3 synthetic images of 96×128 — stage 1 takes one and
# retrains (4 optimizer steps, a training checkpoint after each), stage 2 none, stage 3 the
# other two. No initial pre-training, evaluation, audit or MLflow: they are not what is tested.
MINI = [
    "model=tiny",
    "data.count=3",
    "data.height=96",
    "data.width=128",
    "stages.assisted_manual.rounds=1",
    "stages.assisted_manual.images_per_round=1",
    "stages.semi_automatic.rounds=0",
    "stages.max_clicks=3",
    "stages.fully_automatic.points_per_side=4",
    "stages.fully_automatic.crop_n_layers=1",
    "stages.fully_automatic.pred_iou_thresh=0.0",
    "stages.fully_automatic.stability_score_thresh=0.0",
    "stages.fully_automatic.min_mask_region_area=4",
    "train.steps=4",
    "train.lr=3e-4",  # the random tiny model's 4 steps; its stage 3 gives an image 2+ masks
    "train.warmup_steps=1",
    "train.masks_per_image=2",
    "train.num_iterations=2",
    "train.checkpoint_every=1",
    "train.workers=0",
    "initial.enabled=false",
    "eval.enabled=false",
    "output.audit=false",
    "tracking.enabled=false",
    "cluster.workers=0",
]

# Stage 3 only (no annotation, no retraining): for sources without reference masks.
AUTOMATIC_ONLY = [
    "stages.assisted_manual.rounds=0",
    "stages.semi_automatic.rounds=0",
    "stages.fully_automatic.points_per_side=4",
    "stages.fully_automatic.crop_n_layers=0",
    "stages.fully_automatic.pred_iou_thresh=0.0",
    "stages.fully_automatic.stability_score_thresh=0.0",
    "stages.fully_automatic.min_mask_region_area=0",
    "initial.enabled=false",
    "eval.enabled=false",
    "output.audit=false",
    "tracking.enabled=false",
    "cluster.workers=0",
    "train.workers=0",
]


def run_env(**extra: str) -> dict[str, str]:
    """The environment of an ``sa-engine run`` subprocess (one thread, quiet MLflow)."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        **extra,
    }


def run_args(root: Path, name: str, *extra: str, base: list[str] = MINI) -> list[str]:
    return [*base, f"runs_root={root}", f"name={name}", *extra]


def sa_engine(*args: str, faults: str = "", timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``sa-engine run *args`` to the end (through the fault wrapper when ``faults``)."""
    return subprocess.run(
        _command(args, faults),
        cwd=REPO,
        env=run_env(**({FAIL_WRITES_ENV: faults} if faults else {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_sa_engine(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        _command(args, ""),
        cwd=REPO,
        env=run_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _command(args: tuple[str, ...], faults: str) -> list[str]:
    if faults:
        return [sys.executable, str(Path(__file__).resolve()), *args]
    return [sys.executable, "-m", "stages.cli", "run", *args]


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-4000:] + result.stderr[-4000:]


def kill_when(
    proc: subprocess.Popen, condition: Callable[[], bool], what: str, deadline_s: float = 600
) -> None:
    """SIGKILL ``proc`` at a moment ``condition()`` holds.

    The process is frozen (SIGSTOP) as soon as the condition is seen and the condition is
    checked again while it cannot move: it is killed only if it still holds, else it runs on
    and the next occurrence is awaited. ``deadline_s`` only guards against a hang.
    """
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (code {proc.returncode}) before {what}")
        if condition():
            proc.send_signal(signal.SIGSTOP)
            if condition():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    raise AssertionError(f"gave up waiting for {what}")


def dataset_contents(run_dir: Path) -> dict[str, list[tuple]]:
    """key → sorted (counts, area) of its masks, read back from the shards; each key once."""
    from engine.dataset.reader import ShardReader

    out: dict[str, list[tuple]] = {}
    for key, _, record in ShardReader(run_dir / "shards", decode_images=False):
        assert key not in out, f"{key} written twice"
        out[key] = sorted((a.segmentation["counts"], a.area) for a in record.annotations)
    return out


def temp_files(run_dir: Path) -> list[str]:
    """Temporary files (``*.tmp``) anywhere under the run directory."""
    return sorted(str(p) for p in run_dir.rglob("*") if p.name.endswith(".tmp"))


def assert_final_tars_complete(shards_dir: Path) -> None:
    """Every final-named tar reads to its end-of-archive marker (none is truncated)."""
    from engine.dataset.reader import ShardReader

    for shard in sorted(shards_dir.glob("*.tar")):
        list(ShardReader(shard, decode_images=False, on_error="raise"))
        with tarfile.open(shard) as tar:
            assert tar.getnames(), f"{shard} is empty"


# -- fault injection (runs in the sa-engine subprocess) ----------------------------------------


class FailingFile:
    """A real file whose writes raise ``OSError(ENOSPC)`` once ``limit`` bytes are written."""

    def __init__(self, path: Path, limit: int) -> None:
        self._file = open(path, "wb")  # noqa: SIM115 - closed by the writer
        self._limit = limit
        self._written = 0

    def write(self, data: bytes) -> int:
        if self._written + len(data) > self._limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._written += len(data)
        return self._file.write(data)

    def __getattr__(self, name: str):  # tell, flush, fileno, close
        return getattr(self._file, name)


def install_write_faults(spec: str) -> None:
    """``"<name part>:<bytes>"`` → files opened by the dataset writer fail past ``bytes``."""
    from engine.dataset import atomic

    part, _, limit = spec.rpartition(":")
    real = atomic.open_for_write

    def opener(path: Path):
        return FailingFile(path, int(limit)) if part in path.name else real(path)

    atomic.open_for_write = opener


if __name__ == "__main__":
    if os.environ.get(FAIL_WRITES_ENV):
        install_write_faults(os.environ[FAIL_WRITES_ENV])
    from stages.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
