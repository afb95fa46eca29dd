"""Interactive metrics of a checkpoint on held-out scenes of the project's generator.

    .venv/bin/python benchmarks/heldout_eval.py CHECKPOINT [--preset mobile] [--style studio]
        [--images 10] [--max-objects-per-image 30]

prints 1/3/5-click mIoU (and 1-click per COCO size bucket), NoC@85/90 and box mIoU of the
checkpoint on the first ``--images`` scenes of the synthetic ``heldout`` split, in the given
style (``studio``: the public scenes' look; ``dusk``: the default run's target domain).
Target (issue 15): 1-click mIoU ≥ 0.75 and NoC@90 ≤ 5 for the checkpoint of ``sa-engine train``.
``bundled:NAME`` names a shipped checkpoint.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--preset", default="mobile")
    parser.add_argument("--style", default="studio")
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--max-objects-per-image", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from engine.data import iter_items
    from engine.data.synthetic import SyntheticSource
    from engine.model import SamPredictor, build_sam
    from engine.train.evaluate import evaluate_interactive
    from engine.weights import resolve_checkpoint

    torch.set_num_threads(args.threads)
    model = build_sam(args.preset, resolve_checkpoint(args.checkpoint)).eval()
    source = SyntheticSource.from_split("heldout", args.images, style=args.style)
    metrics = evaluate_interactive(
        SamPredictor(model),
        iter_items(source, limit=args.images),
        max_objects_per_image=args.max_objects_per_image,
    ).as_dict()
    print(json.dumps({k: round(v, 3) for k, v in metrics.items()}))


if __name__ == "__main__":
    main()
