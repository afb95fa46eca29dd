"""Peak memory of automatic mask generation on a 1500×2250 photo with the ``sa1b`` preset:
ours (engine.amg) against the official SamAutomaticMaskGenerator, each in its own process.

Each child builds the same model (same seed, so the same random weights, planted as in the
tests), runs one generator on ``cars.jpg`` (2250×1500) and reports its peak resident set size
(``ru_maxrss``) and the RSS after building the model; the parent prints both and the ratio.
The official generator gets the same parameters as ``AutomaticMaskGenerator.from_preset
("sa1b")`` minus our ``max_mask_fraction`` (it has none). ``pred_iou_thresh`` is 0 for both:
random weights predict IoUs near 0, and the official generator crashes when no crop keeps a
mask (``box_area`` of an empty 1-D tensor).

    .venv/bin/python benchmarks/amg_memory.py                  # tiny geometry
    .venv/bin/python benchmarks/amg_memory.py --geometry vit_b # vit_b numbers, 2 encoder blocks
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "photos" / "cars.jpg"


def child(which: str, geometry: str) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import numpy as np
    import torch
    from amg_peer import install_cv2_stand_in, plant
    from official_peer import official_from_ours
    from PIL import Image

    from engine.amg import PRESETS, AutomaticMaskGenerator
    from engine.model import PRESETS as MODEL_PRESETS
    from engine.model import build_sam

    torch.set_grad_enabled(False)
    torch.manual_seed(1)
    if geometry == "tiny":
        model = build_sam("tiny")
    else:
        preset = dict(MODEL_PRESETS["vit_b"], encoder_depth=2, encoder_global_attn_indexes=(1,))
        model = build_sam(preset)
    plant(model)
    image = np.asarray(Image.open(PHOTO).convert("RGB")).copy()
    if which == "official":
        install_cv2_stand_in()
        from segment_anything import SamAutomaticMaskGenerator

        model = official_from_ours(model)
        params = {k: v for k, v in PRESETS["sa1b"].items() if k != "max_mask_fraction"}
        params["pred_iou_thresh"] = 0.0
        generator = SamAutomaticMaskGenerator(model, output_mode="coco_rle", **params)
    else:
        generator = AutomaticMaskGenerator.from_preset("sa1b", model, pred_iou_thresh=0.0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    anns = generator.generate(image)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_kib": peak, "base_kib": base, "masks": len(anns), "s": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--geometry", choices=["tiny", "vit_b"], default="tiny")
    parser.add_argument("--child", choices=["ours", "official"], default=None)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.geometry)
        return
    results = {}
    for which in ("ours", "official"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", which, "--geometry", args.geometry],
            capture_output=True,
            text=True,
        )
        if out.returncode:
            sys.exit(f"{which} failed:\n{out.stderr}")
        results[which] = json.loads(out.stdout.strip().splitlines()[-1])
        print(which, results[which], flush=True)
    print(f"sa1b preset, {args.geometry} geometry, cars.jpg 2250×1500 (peak RSS, MiB)")
    print("| generator | peak RSS | RSS before generate | masks | seconds |")
    print("|---|---|---|---|---|")
    for which, r in results.items():
        print(
            f"| {which} | {r['peak_kib'] / 1024:.0f} | {r['base_kib'] / 1024:.0f} | "
            f"{r['masks']} | {r['s']:.1f} |"
        )
    ratio = results["ours"]["peak_kib"] / results["official"]["peak_kib"]
    print(f"peak RSS ours / official: {ratio:.2f}× (target ≤ 0.5×)")


if __name__ == "__main__":
    main()
