"""An ablation: re-fit only the predicted-IoU head on stage 3's kind of prompts.

Stage 3 keeps a grid mask when its predicted IoU passes a threshold, so what matters there is
how the head ranks the masks of points placed anywhere in the image, not of clicks inside an
object. This freezes every weight but ``mask_decoder.iou_prediction_head`` (the masks stay
exactly as they were) and trains the head, for ``--steps`` steps of 2 augmented ``public``
scenes, on 64 uniformly placed points per scene: each point's 3 outputs learn (MSE) their best
IoU with any of the scene's reference masks — what the audit measures.

    .venv/bin/python benchmarks/iou_head_refit.py OUT.pt [--checkpoint bundled:mobile_public]
        [--steps 150] [--lr 3e-4]

Then measure ``OUT.pt`` with ``benchmarks/iou_calibration.py OUT.pt --style dusk`` and
``benchmarks/pipeline.py model.checkpoint=OUT.pt`` (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

POINTS_PER_IMAGE = 64
IMAGES_PER_STEP = 2
WARMUP_STEPS = 20
DECAY_AT = 0.8  # lr ÷ 10 for the last 20 % of the steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--checkpoint", default="bundled:mobile_public")
    parser.add_argument("--preset", default="mobile")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--scenes", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from engine.data.synthetic import SyntheticSource
    from engine.model import build_sam
    from engine.train.augment import Augmentation
    from engine.train.data import TrainDataset, collate
    from engine.train.step import best_containing_iou
    from engine.weights import resolve_checkpoint

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sam = build_sam(args.preset, resolve_checkpoint(args.checkpoint))
    sam.requires_grad_(False)
    head = sam.mask_decoder.iou_prediction_head
    head.requires_grad_(True)
    sam.eval()
    size = sam.image_encoder.img_size
    source = SyntheticSource.from_split("public", args.scenes)
    dataset = TrainDataset.from_source(source, size, min_area=1)  # every reference counts
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=0.0)
    augmentation = Augmentation(0.5, (0.5, 1.5), 0.2)  # the run's retraining augmentation
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for step in range(args.steps):
        warm = min(1.0, (step + 1) / WARMUP_STEPS)
        decay = 0.1 if step > DECAY_AT * args.steps else 1.0
        for group in optimizer.param_groups:
            group["lr"] = args.lr * warm * decay
        picks = torch.randint(len(dataset), (IMAGES_PER_STEP,), generator=generator).tolist()
        images, targets = collate(
            [dataset[i] for i in picks], size, 10_000, generator, augmentation
        )
        with torch.no_grad():
            embeddings = sam.image_encoder(torch.stack([sam.preprocess(im) for im in images]))
        dense_pe = sam.prompt_encoder.get_dense_pe()
        losses, errors = [], []
        for index, target in enumerate(targets):
            h, w = target.valid_hw
            xy = torch.rand((POINTS_PER_IMAGE, 2), generator=generator) * torch.tensor([w, h])
            labels = torch.ones((POINTS_PER_IMAGE, 1), dtype=torch.long)
            with torch.no_grad():
                sparse, dense = sam.prompt_encoder(
                    points=(xy[:, None], labels), boxes=None, masks=None
                )
            low_res, iou_pred = sam.mask_decoder(
                image_embeddings=embeddings[index : index + 1],
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            with torch.no_grad():
                upsampled = F.interpolate(
                    low_res.float(), (size, size), mode="bilinear", align_corners=False
                )
                valid = torch.zeros((size, size), dtype=torch.bool)
                valid[:h, :w] = True
                predicted = (upsampled > 0) & valid
                if len(target.masks):
                    anyone = torch.ones((POINTS_PER_IMAGE, len(target.masks)), dtype=torch.bool)
                    true_iou = best_containing_iou(predicted, target.masks, anyone)
                else:
                    true_iou = torch.zeros_like(iou_pred)
            losses.append(F.mse_loss(iou_pred, true_iou))
            errors.append((iou_pred.detach() - true_iou).abs().mean())
        loss = torch.stack(losses).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0 or step == args.steps - 1:
            print(
                f"step {step + 1}: loss {float(loss.detach()):.4f}, "
                f"mean |predicted - true IoU| {float(torch.stack(errors).mean()):.3f}, "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
    torch.save(sam.state_dict(), args.out)
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
