"""Decoder latency per click in the web annotation tool, on the CPU.

For each preset and image size, on one cached image embedding, times N clicks (a positive
point on a random pixel; every other click adds a second point and feeds the previous
low-res mask back, as the page does):

- ``predictor``: ``SamPredictor.predict`` — prompt encoder + mask decoder + upsampling to the
  image size (the baseline, measured in the same run);
- ``service``: the tool's decode step (``AnnotationService.decode``) — the same plus the
  RLE encoding of the masks sent to the page and keeping the low-res logits;
- ``service CPU``: process CPU time of that step (both threads; steadier on a shared machine);
- ``http``: the ``/decode`` endpoint through FastAPI's in-process client (JSON, validation,
  the guard middleware; no network).

Prints medians (ms) and the ratios to the predictor. The embedding (computed once per image,
in the background while the annotator looks at the previous image) is reported beside.

    .venv/bin/python benchmarks/annotation_decode.py [--presets tiny vit_b] [--clicks 30]
        [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from fastapi.testclient import TestClient

from engine.model import SamPredictor, build_sam
from engine.webtool import create_app
from engine.webtool.demo_queue import write_demo_queue
from engine.webtool.schemas import DecodeRequest

SIZES = ((384, 512), (1500, 2250))


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000.0


def _clicks(rng: np.random.Generator, count: int, height: int, width: int) -> list[list[float]]:
    return [[float(rng.uniform(0, width)), float(rng.uniform(0, height))] for _ in range(count)]


def bench(preset: str, height: int, width: int, clicks: int) -> dict:
    torch.manual_seed(0)
    model = build_sam(preset)
    with tempfile.TemporaryDirectory() as run_dir:
        write_demo_queue(run_dir, count=1, height=height, width=width, preset=preset)
        app = create_app(run_dir, model=model)
        service = app.state.service
        key = service.queue.keys[0]
        tic = time.perf_counter()
        service.embeddings.get(key)
        embed_s = time.perf_counter() - tic
        predictor = SamPredictor(model)
        predictor.set_image_embedding(service.embeddings.get(key))
        rng = np.random.default_rng(0)
        points = _clicks(rng, clicks + 1, height, width)
        timings: dict[str, list[float]] = {
            "predictor": [],
            "service": [],
            "service_cpu": [],
            "http": [],
        }
        with TestClient(app) as client:
            for i in range(clicks):
                pair = i % 2 == 1
                prompt = points[i : i + 2] if pair else points[i : i + 1]
                labels = [1] * len(prompt)
                tic = time.perf_counter()
                _, _, low_res = predictor.predict(
                    np.array(prompt), np.array(labels), multimask_output=not pair
                )
                timings["predictor"].append(time.perf_counter() - tic)
                request = {"points": prompt, "labels": labels, "multimask": not pair}
                if pair:  # the previous click's mask goes back in, as the page does
                    first = service.decode(key, DecodeRequest(points=prompt[:1], labels=[1]))
                    request["mask_input"] = {"handle": first["handle"], "index": 0}
                tic, cpu = time.perf_counter(), time.process_time()
                service.decode(key, DecodeRequest(**request))
                timings["service"].append(time.perf_counter() - tic)
                timings["service_cpu"].append(time.process_time() - cpu)
                tic = time.perf_counter()
                response = client.post(f"/api/images/{key}/decode", json=request)
                timings["http"].append(time.perf_counter() - tic)
                assert response.status_code == 200, response.text
        service.close()
    return {"embed_s": embed_s, **{name: _median_ms(v) for name, v in timings.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "vit_b"])
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads, load = torch.get_num_threads(), os.getloadavg()[0]
    print(f"torch {torch.__version__}, {threads} threads, load {load:.1f}")
    print(
        "preset  image       embed (s)  predictor (ms)  service (ms)  service CPU (ms)  "
        "http (ms)  service/predictor  http/predictor"
    )
    for preset in args.presets:
        for height, width in SIZES:
            r = bench(preset, height, width, args.clicks)
            print(
                f"{preset:6s}  {height}x{width:<5d}  {r['embed_s']:9.2f}  {r['predictor']:14.1f}  "
                f"{r['service']:12.1f}  {r['service_cpu']:16.1f}  {r['http']:9.1f}  "
                f"{r['service'] / r['predictor']:17.2f}  "
                f"{r['http'] / r['predictor']:14.2f}",
                flush=True,
            )
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
