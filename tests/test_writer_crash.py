"""A writer process killed with SIGKILL leaves only complete shards and a resumable directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from dataset_support import samples

from engine.dataset import ShardReader, ShardWriter, read_image_index, written_keys
from engine.dataset.index import STATUS_OK
from engine.dataset.validate import validate_paths

ROOT = Path(__file__).resolve().parents[1]
N = 7

# Writes N samples (2 per shard) and prints one line per sample; the mode decides where it
# then stops so that the parent can kill it there.
CHILD = """
import sys
from pathlib import Path
from dataset_support import samples
from engine.dataset import atomic
from engine.dataset.writer import ShardWriter

shards, index, mode, n = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if mode == "after-shard-rename":
    real_commit = atomic.commit
    def commit(tmp, final):
        real_commit(tmp, final)
        if final.suffix == ".tar":
            print("renamed", final.name, flush=True)
            sys.stdin.read()  # blocks: killed between the shard rename and the index renames
    atomic.commit = commit
writer = ShardWriter(shards, index, "stage1-r00", maxcount=2, stage="stage1")
for key, image, record in samples(n):
    writer.write(key, image, record)
    print("wrote", key, flush=True)
if mode == "mid-shard":
    sys.stdin.read()  # blocks with a half-filled shard open under its temporary name
writer.close()
print("closed", flush=True)
"""


def _start(tmp_path: Path, mode: str, n: int = N) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    args = [str(tmp_path / "shards"), str(tmp_path / "index"), mode, str(n)]
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _kill_after(proc: subprocess.Popen, lines: int) -> list[str]:
    seen = []
    for _ in range(lines):
        line = proc.stdout.readline()
        assert line, f"child exited early with {proc.wait()} after {seen}"
        seen.append(line.strip())
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    proc.stdout.close()
    proc.stdin.close()
    return seen


def _assert_only_complete_shards(shards: Path) -> list[str]:
    finals = sorted(p.name for p in shards.glob("*.tar"))
    for name in finals:
        with tarfile.open(shards / name) as tar:  # complete, readable tars
            assert len(tar.getnames()) % 2 == 0
    temps = [p.name for p in shards.iterdir() if p.name.startswith(".")]
    assert len(temps) <= 1 and all(t.endswith(".tar.tmp") for t in temps)
    return finals


def _resume(tmp_path: Path, n: int = N) -> ShardWriter:
    shards, index = tmp_path / "shards", tmp_path / "index"
    done = written_keys(shards, "stage1-r00")
    writer = ShardWriter(shards, index, "stage1-r00", maxcount=2, stage="stage1")
    assert written_keys(index, "stage1-r00") == done  # index completed by the reopen
    for key, image, record in samples(n):
        if key not in done:
            writer.write(key, image, record)
    writer.close()
    return writer


def test_killed_with_a_shard_half_written(tmp_path):
    proc = _start(tmp_path, "mid-shard")
    _kill_after(proc, N)  # 7 samples: shards 0-2 complete, shard 3 holds one sample
    shards = tmp_path / "shards"
    assert _assert_only_complete_shards(shards) == [f"stage1-r00-00000{i}.tar" for i in range(3)]
    assert (shards / ".stage1-r00-000003.tar.tmp").exists()
    assert written_keys(shards) == {f"img_{i:04d}" for i in range(6)}
    assert validate_paths([shards]).ok
    writer = _resume(tmp_path)
    assert writer.shards_written == ["stage1-r00-000003.tar"]  # numbering continues
    assert not (shards / ".stage1-r00-000003.tar.tmp").exists()
    report = validate_paths([shards])
    assert report.ok and report.samples == N
    assert [k for k, _, _ in ShardReader(shards)] == [f"img_{i:04d}" for i in range(N)]


def test_killed_between_shard_rename_and_index_rename(tmp_path):
    proc = _start(tmp_path, "after-shard-rename")
    assert _kill_after(proc, 2)[-1] == "renamed stage1-r00-000000.tar"
    shards, index = tmp_path / "shards", tmp_path / "index"
    assert _assert_only_complete_shards(shards) == ["stage1-r00-000000.tar"]
    assert not validate_paths([shards]).ok  # the shard's index rows are missing: detected
    writer = _resume(tmp_path)
    assert writer.recovered == ["stage1-r00-000000.tar"]
    images = read_image_index(index).to_pydict()
    assert images["status"] == [STATUS_OK] * N  # staged index kept: provenance not lost
    assert validate_paths([shards]).ok


@pytest.mark.parametrize("kill_after", [3, 8])
def test_killed_while_writing_continuously(tmp_path, kill_after):
    """Killed at whatever point of the next writes it has reached."""
    proc = _start(tmp_path, "continuous", n=40)
    _kill_after(proc, kill_after)
    shards = tmp_path / "shards"
    finals = _assert_only_complete_shards(shards)
    assert finals == [f"stage1-r00-{i:06d}.tar" for i in range(len(finals))]
    assert len(finals) >= kill_after // 2  # each "wrote" line follows its shard commit
    _resume(tmp_path, n=40)
    report = validate_paths([shards])
    assert report.ok, [str(p) for p in report.problems]
    assert report.samples == 40
