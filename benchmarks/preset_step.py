"""Training-step cost of the CPU presets: ``tiny`` (ViT, the baseline) against ``mobile``.

One training step of the CPU recipe (forward with the interactive simulation, backward,
AdamW update) on the same synthetic batch, presets alternating so that machine load affects
both alike; prints the median seconds per step, the ratio baseline / preset (> 1: faster than
``tiny``) and the parameter counts.

    .venv/bin/python benchmarks/preset_step.py [--presets tiny mobile] [--repeats 15]
        [--images 2] [--masks 16] [--iterations 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from engine.data import iter_items
from engine.data.synthetic import SyntheticSource
from engine.model import PRESETS, build_sam
from engine.train.data import TrainDataset, collate
from engine.train.step import InteractiveStep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "mobile"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--masks", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    items = list(iter_items(SyntheticSource.from_split("public", args.images)))
    setups = {}
    for preset in args.presets:
        size = PRESETS[preset].get("image_size", 1024)
        samples = TrainDataset.from_items(items, size, min_area=256).samples
        generator = torch.Generator().manual_seed(0)
        batch = collate(samples, size, args.masks, generator)
        step = InteractiveStep(build_sam(preset), num_iterations=args.iterations)
        optimizer = torch.optim.AdamW(step.parameters(), lr=1e-4)
        params = sum(p.numel() for p in step.sam.parameters())
        setups[preset] = (step, optimizer, batch, params, [])

    for repeat in range(args.repeats + 2):  # the first two are warm-up
        for step, optimizer, batch, _, times in setups.values():
            generator = torch.Generator().manual_seed(repeat)
            start = time.perf_counter()
            loss, _ = step(*batch, generator=generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if repeat >= 2:
                times.append(time.perf_counter() - start)

    baseline = statistics.median(setups[args.presets[0]][4])
    for preset, (_, _, _, params, times) in setups.items():
        median = statistics.median(times)
        print(
            f"{preset:8s} {params / 1e6:5.2f} M params  {median:.3f} s/step  "
            f"×{baseline / median:.2f} vs {args.presets[0]}"
        )


if __name__ == "__main__":
    main()
