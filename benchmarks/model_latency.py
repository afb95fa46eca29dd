"""Image-encoder and decoder latency: our SAM against the official package, same weights.

Both models hold the same weights (ours → official via the state dict) and see the same
inputs; runs alternate ours/official so that machine load affects both alike. Reports the
median of repeated runs and the ratio official / ours (> 1: ours is faster).

    .venv/bin/python benchmarks/model_latency.py                 # tiny and vit_b
    .venv/bin/python benchmarks/model_latency.py --geometries tiny --repeats 20

Decoder = prompt encoder + mask decoder (multimask output), for 1 point prompt and for a
batch of 64 point prompts (automatic mask generation's batch), without upsampling. Also
shows our encoder with the opt-in CPU bfloat16 autocast against the official in float32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the official peer and its torchvision stand-ins

from official_peer import official_from_ours  # noqa: E402

from engine.model import build_sam  # noqa: E402


def alternate(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per function; one warm-up each, then ``repeats`` alternating rounds."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def decoder_call(model, n_prompts: int, image_embedding: torch.Tensor) -> Callable[[], object]:
    size = model.image_encoder.img_size
    gen = torch.Generator().manual_seed(0)
    coords = torch.rand(n_prompts, 1, 2, generator=gen) * size
    labels = torch.ones(n_prompts, 1, dtype=torch.int)

    def run():
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        return model.mask_decoder(
            image_embeddings=image_embedding,
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )

    return run


def bench_geometry(name: str, repeats: int) -> list[tuple[str, float, float]]:
    torch.manual_seed(0)
    ours = build_sam(name)
    theirs = official_from_ours(ours)
    size = ours.image_encoder.img_size
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 255
    pixels = ours.preprocess(image)
    rows = []
    with torch.inference_mode():
        enc = alternate(
            {
                "ours": lambda: ours.image_encoder(pixels),
                "official": lambda: theirs.image_encoder(pixels),
            },
            repeats,
        )
        rows.append((f"{name} encoder", enc["ours"], enc["official"]))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = alternate({"ours": lambda: ours.image_encoder(pixels)}, max(1, repeats // 2))
        rows.append((f"{name} encoder, ours bf16 vs official fp32", bf16["ours"], enc["official"]))
        embedding = ours.image_encoder(pixels)
        dec_repeats = repeats * 5
        for n in (1, 64):
            dec = alternate(
                {
                    "ours": decoder_call(ours, n, embedding),
                    "official": decoder_call(theirs, n, embedding),
                },
                dec_repeats,
            )
            rows.append((f"{name} decoder, {n} point prompt(s)", dec["ours"], dec["official"]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--geometries", nargs="+", default=["tiny", "vit_b"])
    parser.add_argument("--repeats", type=int, default=0, help="0: 20 for tiny, 3 for vit_*")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32 unless noted")
    print(f"{'case':48s} {'ours ms':>10s} {'official ms':>12s} {'official/ours':>14s}")
    for name in args.geometries:
        repeats = args.repeats or (20 if name == "tiny" else 3)
        for label, ours_s, theirs_s in bench_geometry(name, repeats):
            ratio = theirs_s / ours_s
            print(f"{label:48s} {ours_s * 1e3:10.1f} {theirs_s * 1e3:12.1f} {ratio:13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
