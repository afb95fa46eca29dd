"""A run with ``stages.annotator=human``: the round waits for the web tool's store, then
writes what people accepted, exactly like simulated work (``source=annotator``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from test_pipeline import REPO, SMALL, _env

from engine.annotators.human_store import HumanAnnotationStore
from engine.annotators.queue import queue_path, read_queue
from engine.dataset.index import read_mask_index
from engine.masks import mask_to_rle, rle_area, rle_bbox_xywh
from engine.sa1b import MaskRecord, Provenance


def _person_annotates(run_dir: Path, prefix: str, proc: subprocess.Popen) -> list[str]:
    """Wait for the round's queue, then label every image with one rectangle and finish."""
    deadline = time.monotonic() + 600
    while not queue_path(run_dir, prefix).exists():
        assert proc.poll() is None, "the run stopped before opening its human round"
        assert time.monotonic() < deadline, f"no queue for {prefix}"
        time.sleep(0.2)
    queue = read_queue(run_dir, prefix)
    store = HumanAnnotationStore(run_dir, prefix)
    keys = []
    while (key := store.claim("ann-1")) is not None:
        mask = np.zeros((96, 128), dtype=bool)
        mask[10:40, 20:70] = True
        rle = mask_to_rle(mask)
        record = MaskRecord(
            id=0,
            segmentation=rle,
            bbox=rle_bbox_xywh(rle),
            area=rle_area(rle),
            predicted_iou=0.9,
            stability_score=0.95,
            point_coords=[[40.0, 25.0]],
            crop_box=[0, 0, 128, 96],
            provenance=Provenance(
                stage=queue.stage, round=queue.round, source="annotator", clicks=2, seconds=7.5
            ),
        )
        store.accept(key, record, "ann-1", seconds=7.5)
        store.finish(key, "ann-1")
        keys.append(key)
    return keys


def test_human_rounds_wait_for_the_tool_and_write_its_masks(tmp_path):
    args = [
        *SMALL,
        f"runs_root={tmp_path}",
        "name=human",
        "cluster.workers=0",
        "stages.annotator=human",
        "stages.human_poll_s=0.2",
        "initial.enabled=false",
        "eval.enabled=false",
        "output.audit=false",
        "stages.assisted_manual.rounds=1",
        "data.count=3",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.cli", "run", *args],
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run_dir = tmp_path / "human"
    try:
        stage1 = _person_annotates(run_dir, "stage1-r00", proc)
        stage2 = _person_annotates(run_dir, "stage2-r00", proc)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "sa-engine annotate run_dir=" in out
    assert len(stage1) == 1 and len(stage2) == 1
    assert isinstance(read_queue(run_dir, "stage2-r00").prefill, dict)
    masks = read_mask_index(run_dir / "index").to_pylist()
    human = [m for m in masks if m["source"] == "annotator"]
    assert {m["key"] for m in human} == set(stage1 + stage2)
    assert all(m["seconds"] == 7.5 and m["clicks"] == 2 for m in human)
    assert {m["stage"] for m in masks if m["source"] == "model"} <= {
        "semi_automatic",
        "fully_automatic",
    }
