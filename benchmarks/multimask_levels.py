"""Which multimask output index plays which granularity role, for a checkpoint.

One positive click inside each sub-part of held-out synthetic scenes (the click sits in
the sub-part, its part and its whole, so all three levels are plausible answers). Per output
index it prints the mean mask area and how often that output was the largest, middle or
smallest of its prompt's three. docs/dataset.md (*Granularity*) gives the result for the
shipped ``mobile_public``.

    .venv/bin/python benchmarks/multimask_levels.py                  # mobile_public, 20 scenes
    .venv/bin/python benchmarks/multimask_levels.py --scenes 50 --preset vit_b --checkpoint X
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from engine.data.synthetic import SyntheticSource
from engine.masks import rle_to_mask
from engine.model import SamPredictor, build_sam
from engine.records import LEVEL_SUBPART
from engine.weights import resolve_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="mobile")
    parser.add_argument("--checkpoint", default="bundled:mobile_public")
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    predictor = SamPredictor(build_sam(args.preset, resolve_checkpoint(args.checkpoint)))
    source = SyntheticSource.from_split("heldout", args.scenes)
    rng = np.random.default_rng(args.seed)
    areas, ranks = [], []
    for entry in source.entries():
        item = source.load(entry)
        predictor.set_image(item.image)
        for ref in item.references:
            if ref.level != LEVEL_SUBPART:
                continue
            ys, xs = np.nonzero(rle_to_mask(ref.rle))
            k = rng.integers(len(ys))
            masks, _, _ = predictor.predict(
                point_coords=np.array([[xs[k], ys[k]]], dtype=np.float32),
                point_labels=np.array([1]),
                multimask_output=True,
            )
            area = masks.reshape(len(masks), -1).sum(1)
            areas.append(area)
            ranks.append(np.argsort(np.argsort(-area, kind="stable"), kind="stable"))
    areas, ranks = np.array(areas), np.array(ranks)
    print(f"{len(areas)} clicks in sub-parts of {args.scenes} held-out scenes")
    print("index  mean area  largest  middle  smallest")
    for i in range(areas.shape[1]):
        shares = [np.mean(ranks[:, i] == r) for r in range(3)]
        print(f"{i:5d}  {areas[:, i].mean():9.0f}  " + "  ".join(f"{s:6.0%}" for s in shares))


if __name__ == "__main__":
    main()
