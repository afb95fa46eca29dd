"""``SamPredictor``: embed an image once, then decode many prompts against the embedding.

Same contract as the official predictor (``set_image``, ``predict``, ``predict_torch``,
``get_image_embedding``, ``reset_image``), plus batching and stored embeddings:

- ``embed_images(images)`` runs ONE encoder call for a list of images and returns an
  :class:`ImageEmbedding` per image, without changing the predictor's state;
- ``set_image_embedding(embedding)`` makes a stored embedding current (a worker can decode
  from an embedding computed elsewhere);
- ``set_images(images)`` embeds a list in one call, keeps the embeddings and selects image
  0; ``select_image(i)`` switches between them. ``set_image``/``set_image_embedding``/
  ``reset_image`` drop the kept list.

Everything runs under ``torch.inference_mode()``; with ``bf16`` (default: on for CUDA, off
for CPU) the encoder and decoder run under bfloat16 autocast and outputs are float32.
Returned tensors are inference tensors (no in-place updates outside inference mode);
``ImageEmbedding.features`` are ordinary tensors, usable in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch

from engine.model.sam import Sam
from engine.model.transforms import ResizeLongestSide

_NO_IMAGE = (
    "no image is set: call set_image(...), set_images(...) or set_image_embedding(...) first"
)


@dataclass
class ImageEmbedding:
    """An encoded image: ``features`` 1×C×h×w, ``original_size`` (H, W) of the image,
    ``input_size`` (h, w) of the resized image inside the padded model input."""

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class SamPredictor:
    """Mask prediction from prompts on a (stored) image embedding.

    Args:
        sam_model: the model (its device is used for all computation).
        bf16: bfloat16 autocast; None means on for CUDA, off elsewhere.
    """

    def __init__(self, sam_model: Sam, bf16: bool | None = None) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.bf16 = self.device.type == "cuda" if bf16 is None else bool(bf16)
        self.image_embeddings: list[ImageEmbedding] = []
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ---- images -> embeddings -------------------------------------------------------------

    def embed_images(
        self, images: Sequence[np.ndarray], image_format: str = "RGB"
    ) -> list[ImageEmbedding]:
        """Encode ``H×W×3`` uint8 images in one batched encoder call (state unchanged)."""
        if isinstance(images, np.ndarray) or len(images) == 0:
            raise ValueError("images must be a non-empty list of H×W×3 uint8 arrays")
        prepared = [
            self._prepare(image, image_format, f"images[{i}]") for i, image in enumerate(images)
        ]
        batch = torch.stack([p[0] for p in prepared])
        return [
            ImageEmbedding(feats[None], original, resized)
            for feats, (_, original, resized) in zip(self._encode(batch), prepared)
        ]

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Encode one ``H×W×3`` uint8 image and make it current."""
        (embedding,) = self.embed_images([image], image_format)
        self.set_image_embedding(embedding)

    def set_torch_image(
        self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
    ) -> None:
        """Encode an image already resized by :class:`ResizeLongestSide` (``1×3×h×w``, 0–255)."""
        size = self.model.image_encoder.img_size
        shape = tuple(transformed_image.shape)
        if len(shape) != 4 or shape[:2] != (1, 3) or max(shape[2:]) != size:
            raise ValueError(
                f"transformed_image must be 1×3×h×w with long side {size}, got {shape}"
            )
        features = self._encode(self.model.preprocess(transformed_image.to(self.device)))
        original = (int(original_image_size[0]), int(original_image_size[1]))
        self.set_image_embedding(ImageEmbedding(features, original, (shape[2], shape[3])))

    def set_images(
        self, images: Sequence[np.ndarray], image_format: str = "RGB"
    ) -> list[ImageEmbedding]:
        """Encode a list of images in one call, keep them and select image 0."""
        embeddings = self.embed_images(images, image_format)
        self.set_image_embedding(embeddings[0])
        self.image_embeddings = embeddings
        return embeddings

    def select_image(self, index: int) -> None:
        """Make image ``index`` of the last :meth:`set_images` call current."""
        if not self.image_embeddings:
            raise RuntimeError("no image list is kept: call set_images(...) first")
        if not 0 <= index < len(self.image_embeddings):
            raise ValueError(
                f"index {index} is out of range for {len(self.image_embeddings)} images"
            )
        kept = self.image_embeddings
        self.set_image_embedding(kept[index])
        self.image_embeddings = kept

    def set_image_embedding(self, embedding: ImageEmbedding) -> None:
        """Make a stored :class:`ImageEmbedding` current (drops any kept image list)."""
        if not isinstance(embedding, ImageEmbedding):
            raise TypeError(f"embedding must be an ImageEmbedding, got {type(embedding).__name__}")
        pe = self.model.prompt_encoder
        expected = (1, pe.embed_dim, *pe.image_embedding_size)
        if tuple(embedding.features.shape) != expected:
            raise ValueError(
                f"embedding.features must have shape {expected} for this model, "
                f"got {tuple(embedding.features.shape)}"
            )
        original = tuple(int(s) for s in embedding.original_size)
        resized = self.transform.get_preprocess_shape(*original, self.transform.target_length)
        if tuple(embedding.input_size) != resized:
            raise ValueError(
                f"embedding.input_size {tuple(embedding.input_size)} does not match "
                f"original_size {original} (expected {resized})"
            )
        self.reset_image()
        self.features = embedding.features.to(self.device)
        self.original_size = original
        self.input_size = resized
        self.is_image_set = True

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's features, ``1×C×h×w``."""
        if not self.is_image_set:
            raise RuntimeError(_NO_IMAGE)
        return self.features

    def get_embedding(self) -> ImageEmbedding:
        """The current image as an :class:`ImageEmbedding` (to store and restore later)."""
        if not self.is_image_set:
            raise RuntimeError(_NO_IMAGE)
        return ImageEmbedding(self.features, self.original_size, self.input_size)

    def reset_image(self) -> None:
        """Forget the current image and any kept image list."""
        self.is_image_set = False
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self.image_embeddings = []

    # ---- prompts -> masks -------------------------------------------------------------------

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for one prompt set on the current image (original-image pixels).

        Args:
            point_coords: ``N×2`` ``(x, y)``; point_labels: ``N`` (1 fg, 0 bg).
            box: XYXY, shape ``4`` or ``1×4``.
            mask_input: ``1×L×L`` low-res logits from a previous call (``L×L`` accepted).
            multimask_output: 3 ambiguity masks instead of 1.
            return_logits: return logits instead of boolean masks.

        Returns:
            masks ``C×H×W`` (bool, or float32 logits), IoU predictions ``C``,
            low-res logits ``C×L×L`` (L = 4 × the embedding grid, 256 for vit_*).
        """
        if not self.is_image_set:
            raise RuntimeError(_NO_IMAGE)
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            coords = np.asarray(point_coords)
            labels = np.asarray(point_labels)
            if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
                raise ValueError(f"point_coords must be N×2 (x, y) with N ≥ 1, got {coords.shape}")
            if labels.shape != (coords.shape[0],):
                raise ValueError(
                    f"point_labels must have shape ({coords.shape[0]},), got {labels.shape}"
                )
            coords = self.transform.apply_coords(coords, self.original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None]
        elif point_labels is not None:
            raise ValueError("point_labels given without point_coords")
        if box is not None:
            box_np = np.asarray(box)
            if box_np.shape not in ((4,), (1, 4)):
                raise ValueError(f"box must be XYXY of shape (4,) or (1, 4), got {box_np.shape}")
            box_np = self.transform.apply_boxes(box_np, self.original_size)
            box_t = torch.as_tensor(box_np, dtype=torch.float, device=self.device)
        if mask_input is not None:
            side = self.model.prompt_encoder.mask_input_size
            mask_np = np.asarray(mask_input)
            if mask_np.shape not in ((1, *side), side):
                raise ValueError(
                    f"mask_input must have shape (1, {side[0]}, {side[1]}), got {mask_np.shape}"
                )
            mask_t = torch.as_tensor(mask_np, dtype=torch.float, device=self.device).reshape(
                1, 1, *side
            )
        masks, iou, low_res = self.predict_torch(
            coords_t, labels_t, box_t, mask_t, multimask_output, return_logits=return_logits
        )
        return masks[0].cpu().numpy(), iou[0].cpu().numpy(), low_res[0].cpu().numpy()

    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict masks for B prompt sets at once, in the resized input frame.

        Args:
            point_coords: ``B×N×2`` ``(x, y)`` already passed through ``apply_coords``;
            point_labels: ``B×N``; boxes: ``B×4`` XYXY (resized frame);
            mask_input: ``B×1×L×L`` low-res logits.

        Returns:
            masks ``B×C×H×W`` (bool or float32 logits), IoU ``B×C``, low-res logits
            ``B×C×L×L`` (float32).
        """
        if not self.is_image_set:
            raise RuntimeError(_NO_IMAGE)
        points, boxes, mask_input = self._check_prompts(
            point_coords, point_labels, boxes, mask_input
        )
        with torch.inference_mode():
            with self._autocast():
                sparse, dense = self.model.prompt_encoder(
                    points=points, boxes=boxes, masks=mask_input
                )
                low_res, iou = self.model.mask_decoder(
                    image_embeddings=self.features,
                    image_pe=self.model.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=multimask_output,
                )
            low_res, iou = low_res.float(), iou.float()
            masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
            if not return_logits:
                masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    # ---- helpers ----------------------------------------------------------------------------

    def _autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _encode(self, batch: torch.Tensor) -> torch.Tensor:
        """Run the image encoder on a preprocessed ``B×3×S×S`` batch → float32 features."""
        with torch.inference_mode(), self._autocast():
            features = self.model.image_encoder(batch)
        # a copy made outside inference mode is an ordinary tensor (usable with autograd)
        return features.float().clone()

    def _prepare(
        self, image: np.ndarray, image_format: str, name: str
    ) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """Check, colour-convert, resize and normalise one image → (3×S×S, (H, W), (h, w))."""
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if not isinstance(image, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"{name} must be H×W×3 uint8, got shape {image.shape} dtype {image.dtype}"
            )
        if min(image.shape[:2]) == 0:
            raise ValueError(f"{name} is empty (shape {image.shape})")
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        resized = self.transform.apply_image(np.ascontiguousarray(image))
        pixels = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)
        original = (int(image.shape[0]), int(image.shape[1]))
        return self.model.preprocess(pixels), original, (resized.shape[0], resized.shape[1])

    def _check_prompts(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor | None, torch.Tensor | None]:
        sizes = {}
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            if point_coords.ndim != 3 or point_coords.shape[-1] != 2:
                raise ValueError(f"point_coords must be B×N×2, got {tuple(point_coords.shape)}")
            if tuple(point_labels.shape) != tuple(point_coords.shape[:2]):
                raise ValueError(
                    f"point_labels must be B×N = {tuple(point_coords.shape[:2])}, "
                    f"got {tuple(point_labels.shape)}"
                )
            sizes["point_coords"] = point_coords.shape[0]
            points = (point_coords.to(self.device), point_labels.to(self.device))
        elif point_labels is not None:
            raise ValueError("point_labels given without point_coords")
        if boxes is not None:
            if (
                boxes.shape[-1] != 4
                or boxes.ndim not in (2, 3)
                or (boxes.ndim == 3 and boxes.shape[1] != 1)
            ):
                raise ValueError(f"boxes must be B×4 XYXY, got {tuple(boxes.shape)}")
            boxes = boxes.reshape(-1, 4).to(self.device)
            sizes["boxes"] = boxes.shape[0]
        if mask_input is not None:
            side = tuple(self.model.prompt_encoder.mask_input_size)
            if mask_input.ndim != 4 or tuple(mask_input.shape[1:]) != (1, *side):
                raise ValueError(
                    f"mask_input must be B×1×{side[0]}×{side[1]}, got {tuple(mask_input.shape)}"
                )
            mask_input = mask_input.to(self.device)
            sizes["mask_input"] = mask_input.shape[0]
        if len(set(sizes.values())) > 1:
            raise ValueError(f"prompt batch sizes differ: {sizes}")
        return points, boxes, mask_input
