"""A Ray actor killed (SIGKILL) while it works on an image: the pool restarts it, retries the
image, and every input arrives exactly once, in order — and so is written exactly once."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from engine.data.synthetic import SyntheticSource  # noqa: E402
from engine.dataset.reader import ShardReader  # noqa: E402
from engine.dataset.writer import ShardWriter  # noqa: E402
from engine.tasks import image_record  # noqa: E402
from engine.work import ModelSpec  # noqa: E402
from workers.cluster import local_cluster  # noqa: E402
from workers.pool import RayImagePool  # noqa: E402

# the actors unpickle this module's task by value (tests/ is not on their sys.path)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class MarkedSlowTask:
    """A stage task that leaves ``<pid>_<key>.start`` / ``.done`` files around a short sleep,
    so the test sees which actor process works on which image."""

    marks: str
    seconds: float

    def __call__(self, predictor, item):
        mark = Path(self.marks) / f"{os.getpid()}_{item.key}"
        mark.with_suffix(".start").touch()
        time.sleep(self.seconds)
        record = image_record(item, [])
        mark.with_suffix(".done").touch()
        return record


def _busy(marks: Path) -> list[tuple[int, str]]:
    """(pid, key) of the images started and not finished."""
    out = []
    for start in marks.glob("*.start"):
        if not start.with_suffix(".done").exists():
            pid, _, key = start.stem.partition("_")
            out.append((int(pid), key))
    return sorted(out)


def _kill_a_busy_actor(marks: Path, deadline_s: float = 300) -> tuple[int, str]:
    """SIGKILL an actor process in the middle of an image (frozen, re-checked, then killed)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for pid, key in _busy(marks):
            os.kill(pid, signal.SIGSTOP)
            if (pid, key) in _busy(marks):
                os.kill(pid, signal.SIGKILL)
                return pid, key
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("no actor was ever seen working on an image")


def test_actor_killed_mid_image_is_restarted_and_nothing_is_lost_or_doubled(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    source = SyntheticSource(seed_start=1000, count=6, height=64, width=64)
    entries = list(source.entries())
    task = MarkedSlowTask(str(marks), seconds=0.4)
    results = []
    with local_cluster(num_cpus=2):
        pool = RayImagePool(
            source,
            ModelSpec("tiny"),
            num_workers=2,
            cpus_per_worker=0.5,
            max_restarts=2,
            max_task_retries=2,
        )
        with ShardWriter(tmp_path / "shards", tmp_path / "index", "stage3-r00") as writer:
            killed = None
            for result in pool.map(entries, task):
                assert result.quarantine is None, result.quarantine
                results.append(result.key)
                writer.write(result.key, result.image, result.record)
                if killed is None:
                    killed = _kill_a_busy_actor(marks)
        pool.close()
    keys = [e.key for e in entries]
    assert results == keys  # each once, in the order of the entries
    assert [k for k, _, _ in ShardReader(tmp_path / "shards", decode_images=False)] == keys
    pid, key = killed
    assert (marks / f"{pid}_{key}.start").exists()
    assert not (marks / f"{pid}_{key}.done").exists()  # it died in the middle of that image
    redone = [p for p in marks.glob(f"*_{key}.done")]
    assert len(redone) == 1 and not redone[0].name.startswith(f"{pid}_")  # retried elsewhere
    pids = {int(p.name.partition("_")[0]) for p in marks.iterdir()}
    assert len(pids) >= 3  # two actors plus the restarted one
