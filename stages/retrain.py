"""Retraining between rounds, the initial model, and the evaluation that follows each.

``Retrainer.train(...)`` trains a model from a checkpoint (or a seeded random init) on image
sources — the shards written so far, or the synthetic "public" split for the initial model —
in this process (``workers=0``) or on Ray Train workers, and writes two files: the training
state (``<name>-train.pt``: weights, optimizer, step — resumed from after a crash) and the
model (``<name>.pt``: official state-dict format, what the next round's workers load).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from engine.data.sources import ImageSource, iter_items
from engine.model import SamPredictor, build_sam, save_checkpoint
from engine.train.data import TrainDataset
from engine.train.evaluate import evaluate_interactive
from engine.train.loop import TrainOptions, train

logger = logging.getLogger("sa_engine.retrain")


def seeded_model(preset: str, checkpoint: str | None, seed: int, drop_path: float = 0.0):
    """``build_sam`` with a seeded random init (so a random start is reproducible)."""
    torch.manual_seed(seed)
    return build_sam(preset, checkpoint, drop_path_rate=drop_path)


def _load_dataset(
    source: ImageSource, img_size: int, min_area: int, rank: int, world_size: int
) -> TrainDataset:
    return TrainDataset.from_source(
        source, img_size, rank=rank, world_size=world_size, min_area=min_area
    )


@dataclass
class Retrainer:
    """How every retraining runs (plain settings; see ``engine.train.loop.TrainOptions``).

    ``workers``: 0 trains in this process; N ≥ 1 uses N Ray Train workers (Ray must be up).
    ``time_limit_s``: every training stops after this many seconds of steps (None = off);
    the summary's ``steps_done`` says where it stopped.
    """

    preset: str
    options: TrainOptions
    drop_path: float = 0.0
    workers: int = 0
    cpus_per_worker: int = 1
    use_gpu: bool = False
    min_mask_area: int = 1
    time_limit_s: float | None = None

    def train(
        self,
        source: ImageSource,
        start_checkpoint: str | None,
        out_dir: Path,
        name: str,
        steps: int | None = None,
        seed: int = 0,
        num_iterations: int | None = None,
    ) -> dict:
        """Train into ``out_dir/<name>.pt``; returns a summary (steps, seconds, images/s, loss).

        ``steps`` and ``num_iterations`` override the options' when given."""
        options = replace(
            self.options,
            seed=seed,
            steps=steps or self.options.steps,
            num_iterations=num_iterations or self.options.num_iterations,
        )
        state_path = out_dir / f"{name}-train.pt"
        model_path = out_dir / f"{name}.pt"
        out_dir.mkdir(parents=True, exist_ok=True)
        build = partial(seeded_model, self.preset, start_checkpoint, seed, self.drop_path)
        started = time.perf_counter()
        if self.workers == 0:
            model = build()
            dataset = TrainDataset.from_source(
                source, int(model.image_encoder.img_size), min_area=self.min_mask_area
            )
            if len(dataset) == 0:
                raise ValueError(f"no training image with masks in {source.name}")
            result = train(
                model,
                dataset,
                options,
                checkpoint_path=state_path,
                resume=True,
                time_limit_s=self.time_limit_s,
            )
            history = [
                {"loss": r.stats.get("loss", 0.0), "images": r.images} for r in result.history
            ]
            step_seconds = result.seconds
        else:
            from workers.trainer import fit_distributed

            img_size = int(build().image_encoder.img_size)
            result = fit_distributed(
                build,
                partial(_load_dataset, source, img_size, self.min_mask_area),
                options,
                state_path,
                resume=True,
                num_workers=self.workers,
                use_gpu=self.use_gpu,
                cpus_per_worker=self.cpus_per_worker,
                storage_path=out_dir / "ray",
                time_limit_s=self.time_limit_s,
            )
            history = [{"loss": r.get("loss", 0.0), "images": r["images"]} for r in result.history]
            step_seconds = result.seconds
        trained = build_sam(self.preset, str(state_path))
        save_checkpoint(trained, model_path)
        images = sum(h["images"] for h in history)
        losses = [h["loss"] for h in history]
        return {
            "steps": options.steps,
            "steps_done": result.step,
            "train_seconds": time.perf_counter() - started,
            "train_images_per_s": images / step_seconds if step_seconds else 0.0,
            "final_loss": float(sum(losses[-10:]) / len(losses[-10:])) if losses else float("nan"),
        }


@dataclass
class Evaluator:
    """Interactive evaluation (mIoU@1/3/5 clicks, NoC@85/90, box mIoU) on held-out images."""

    source: ImageSource
    images: int = 3
    max_clicks: int = 20
    max_objects_per_image: int | None = 16

    def __call__(self, preset: str, checkpoint: str | None) -> dict[str, float]:
        model = build_sam(preset, checkpoint).eval()
        metrics = evaluate_interactive(
            SamPredictor(model),
            iter_items(self.source, limit=self.images),
            max_clicks=self.max_clicks,
            max_objects_per_image=self.max_objects_per_image,
        )
        values = metrics.as_dict()
        # "images"/"objects" would collide with a round's own counts
        values["eval_images"] = values.pop("images")
        values["eval_objects"] = values.pop("objects")
        return values
