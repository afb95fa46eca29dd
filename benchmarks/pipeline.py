"""The data engine's measured outcome (issue 6), on the embedded default run or any overrides.

1. Runs ``sa-engine run`` (defaults + the given overrides) in a subprocess into a fresh runs
   root and times it (the target: all three stages in ≤ 10 minutes on 2 cores).
2. Reads the per-round summary: clicks/mask by stage-1 round (should fall), masks/image
   through stage 2 (should rise), the model's interactive metrics after each retraining.
3. Runs stage 3's task (AMG, the run's ``sa1b`` settings) with the final model on held-out
   synthetic scenes and reports recall of their reference objects at IoU ≥ 0.50/0.75 (one-to-
   one Hungarian matching, ``engine.audit.match``), for every level and for whole objects,
   the share of matched pairs with IoU ≥ 0.75/0.9 (the audit's ``iou_above``), and the share
   of that wall time spent in model compute (image encoder + mask decoder forward passes,
   timed with hooks) — the baseline being the whole task.
4. images/s of stage 3 with 1 vs 2 Ray workers on the same held-out scenes (the 1-worker
   figure is the baseline; the ratio is printed).

    .venv/bin/python benchmarks/pipeline.py [--heldout 6] [--json out.json] [OVERRIDE ...]
    .venv/bin/python benchmarks/pipeline.py --keep DIR --reuse   # re-measure a kept run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def run_engine(root: Path, overrides: list[str]) -> tuple[float, Path]:
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "stages.cli", "run", f"runs_root={root}", "name=bench", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"sa-engine run failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    print(result.stdout[result.stdout.find("round ") :].split("run directory:")[0])
    return seconds, root / "bench"


class ForwardTimer:
    """Seconds spent inside the forward passes of some modules (pre/post hooks)."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.seconds = 0.0
        self._start: list[float] = []
        for module in modules:
            module.register_forward_pre_hook(self._pre)
            module.register_forward_hook(self._post)

    def wrap(self, function):
        """``function``, with its time added to the total."""

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed

    def _pre(self, *_):
        self._start.append(time.perf_counter())

    def _post(self, *_):
        self.seconds += time.perf_counter() - self._start.pop()


def final_checkpoint(run_dir: Path) -> Path:
    """The run's last retrained model; with retraining off, the one it started from."""
    state = json.loads((run_dir / "state.json").read_text())
    retrained = [r["checkpoint"] for r in state["rounds"] if r["checkpoint"]]
    return run_dir / (retrained[-1] if retrained else state["initial_checkpoint"])


def stage3_on_heldout(run_dir: Path, task, items: list, preset: str) -> dict:
    from engine import amg
    from engine.audit.match import match_masks
    from engine.model import SamPredictor, build_sam
    from engine.records import LEVEL_WHOLE

    model = build_sam(preset, final_checkpoint(run_dir))
    timer = ForwardTimer([model.image_encoder])
    # AMG decodes through engine.amg_decode (the decoder's submodules, not its forward)
    amg.decode_points = timer.wrap(amg.decode_points)
    predictor = SamPredictor(model)
    found = {"all": [], "whole": []}
    pairs: list[float] = []  # matched pairs' IoU: the audit's "iou_above" shares
    masks = 0
    started = time.perf_counter()
    for item in items:
        record = task(predictor, item)
        generated = [a.segmentation for a in record.annotations]
        masks += len(generated)
        refs = [r.rle for r in item.references]
        matching = match_masks(generated, refs)
        found["all"].extend(matching.reference_iou.tolist())
        pairs.extend(matching.iou.tolist())
        whole = [i for i, r in enumerate(item.references) if r.level == LEVEL_WHOLE]
        found["whole"].extend(matching.reference_iou[whole].tolist())
    wall = time.perf_counter() - started
    out = {
        "images": len(items),
        "masks_per_image": masks / len(items),
        "seconds": wall,
        "model_compute_share": timer.seconds / wall if wall else 0.0,
    }
    for t in (0.75, 0.9):
        out[f"pairs_above_{t:.2f}"] = float((np.asarray(pairs) >= t).mean()) if pairs else 0.0
    for group, ious in found.items():
        ious = np.asarray(ious)
        for t in (0.5, 0.75):
            out[f"recall_{group}_{t:.2f}"] = float((ious >= t).mean()) if ious.size else 0.0
        out[f"references_{group}"] = int(ious.size)
    return out


def workers_throughput(run_dir: Path, task, source, preset: str, workers: int) -> float:
    import ray

    from engine.work import ModelSpec
    from workers.cluster import start_cluster
    from workers.pool import RayImagePool

    checkpoint = str(final_checkpoint(run_dir))
    start_cluster(num_cpus=2)
    try:
        pool = RayImagePool(
            source,
            ModelSpec(preset, checkpoint),
            num_workers=workers,
            cpus_per_worker=1,
            torch_threads=2 // workers,
        )
        entries = list(source.entries())
        list(pool.map(entries[:workers], task))  # start-up and model load, not timed
        started = time.perf_counter()
        results = list(pool.map(entries, task))
        seconds = time.perf_counter() - started
        pool.close()
    finally:
        ray.shutdown()
    return len(results) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heldout", type=int, default=6, help="held-out scenes for stage 3")
    parser.add_argument("--json", default="")
    parser.add_argument("--keep", default="", help="runs root to keep (default: temporary)")
    parser.add_argument(
        "--reuse", action="store_true", help="measure the finished run under --keep, no new run"
    )
    args, overrides = parser.parse_known_args()

    from stages.hydra_app import compose_config, to_dataclass

    root = Path(args.keep or tempfile.mkdtemp(prefix="sa-engine-bench-"))
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    if args.reuse:
        if not args.keep:
            parser.error("--reuse needs --keep DIR (a runs root with a finished run)")
        wall, run_dir = None, root / "bench"
    else:
        wall, run_dir = run_engine(root, overrides)
    state = json.loads((run_dir / "state.json").read_text())
    rounds = {r["prefix"]: r["summary"] for r in state["rounds"]}
    stage1 = [rounds[k].get("clicks_per_mask") for k in rounds if k.startswith("stage1-")]
    stage2 = [rounds[k].get("masks_per_image") for k in rounds if k.startswith("stage2-")]
    if wall is not None:
        print(f"sa-engine run: {wall / 60:.1f} min wall (target ≤ 10 min)")
    print(f"clicks/mask by stage-1 round: {[round(v, 2) for v in stage1]}")
    print(f"masks/image by stage-2 round: {[round(v, 1) for v in stage2]}")

    cfg = to_dataclass(compose_config("run", overrides))
    from engine.data.synthetic import SyntheticSource
    from engine.tasks import FullyAutomaticTask

    automatic = dict(vars(cfg.stages.fully_automatic))
    preset_name = automatic.pop("preset")
    automatic.pop("images")
    task = FullyAutomaticTask(generator=automatic, preset=preset_name)
    source = SyntheticSource.from_split(  # held-out scenes of the run's pool style (target)
        "heldout", args.heldout, height=cfg.data.height, width=cfg.data.width, style=cfg.data.style
    )
    items = [source.load(e) for e in source.entries()]
    torch.set_num_threads(2)
    stage3 = stage3_on_heldout(run_dir, task, items, cfg.model.preset)
    print("stage 3 on held-out scenes:", json.dumps({k: round(v, 3) for k, v in stage3.items()}))
    one = workers_throughput(run_dir, task, source, cfg.model.preset, 1)
    two = workers_throughput(run_dir, task, source, cfg.model.preset, 2)
    print(f"stage-3 images/s: 1 worker {one:.3f}, 2 workers {two:.3f}, ratio {two / one:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "wall_seconds": wall,
                    "rounds": rounds,
                    "initial": state["initial_metrics"],
                    "stage3_heldout": stage3,
                    "images_per_s_1_worker": one,
                    "images_per_s_2_workers": two,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
