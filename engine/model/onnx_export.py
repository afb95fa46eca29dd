"""ONNX export of the prompt encoder + mask decoder (decode in a browser or any ONNX runtime).

The image encoder runs once per image (PyTorch, :class:`SamPredictor`); the exported graph
turns its embedding and a prompt into masks in milliseconds. Inputs and outputs follow the
official ``segment_anything.utils.onnx.SamOnnxModel`` contract, so code written for the
official ONNX decoder (its web demo, its notebook) runs unchanged on ours:

========================  ==============  =================================================
input                     shape, dtype    meaning
========================  ==============  =================================================
``image_embeddings``      1×C×h×w, f32    ``SamPredictor.get_image_embedding()``
``point_coords``          1×N×2, f32      ``(x, y)`` in the resized input frame
                                          (``ResizeLongestSide.apply_coords``)
``point_labels``          1×N, f32        1 fg, 0 bg, 2 box top-left, 3 box bottom-right,
                                          -1 padding (add one ``(0, 0)``/-1 point when
                                          there is no box)
``mask_input``            1×1×4h×4w, f32  previous low-res logits (zeros when none)
``has_mask_input``        1, f32          1 when ``mask_input`` is used, else 0
``orig_im_size``          2, f32          ``(H, W)`` of the original image
========================  ==============  =================================================

Outputs: ``masks`` 1×M×H×W logits at the original size (threshold at 0), ``iou_predictions``
1×M, ``low_res_masks`` 1×M×4h×4w (feed back as ``mask_input``). M = 4 (the single-mask
token, then the three ambiguity masks), or 1 with ``return_single_mask``: the ambiguity mask
with the best predicted IoU when N ≤ 2 (one click plus the padding point), else token 0.
N (the number of points) is a dynamic axis; ``orig_im_size`` may change from call to call.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.model.predictor import ImageEmbedding
from engine.model.sam import Sam
from engine.model.transforms import ResizeLongestSide

INPUT_NAMES = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")
OPSETS = range(14, 21)  # 14 … 20: scaled_dot_product_attention exports from 14 on
DEFAULT_OPSET = 17


def check_opset(opset: int) -> None:
    """ValueError unless ``opset`` is an integer in 14 … 20."""
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in OPSETS:
        raise ValueError(f"opset must be an integer in [{OPSETS[0]}, {OPSETS[-1]}], got {opset!r}")


class SamOnnxModel(nn.Module):
    """Prompt encoder + mask decoder + mask upscaling of one :class:`Sam`, trace-friendly.

    Label-driven arithmetic replaces the prompt encoder's branches (points or boxes, mask or
    no mask), so a single graph serves every prompt. Multiplying by 0/1 and adding zeros is
    exact, so the outputs are the eager prompt encoder + decoder's up to float32 rounding.
    Holds (does not copy) ``model``'s prompt encoder and mask decoder.
    """

    def __init__(self, model: Sam, return_single_mask: bool = False) -> None:
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = model.mask_decoder
        self.img_size = model.image_encoder.img_size
        self.return_single_mask = return_single_mask

    def _embed_points(self, point_coords: torch.Tensor, point_labels: torch.Tensor) -> torch.Tensor:
        """``1×N×2`` coordinates, ``1×N`` labels (-1…3) → ``1×N×C`` sparse embeddings."""
        pe_layer = self.prompt_encoder.pe_layer
        embedding = pe_layer.forward_with_coords(point_coords + 0.5, (self.img_size,) * 2)
        labels = point_labels.unsqueeze(-1).expand_as(embedding)
        embedding = embedding * (labels != -1)
        embedding = embedding + self.prompt_encoder.not_a_point_embed.weight * (labels == -1)
        for i, table in enumerate(self.prompt_encoder.point_embeddings):
            embedding = embedding + table.weight * (labels == i)
        return embedding

    def _embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """``1×1×4h×4w`` mask logits, weight ``has_mask_input`` → ``1×C×h×w`` dense."""
        no_mask = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = has_mask_input * self.prompt_encoder.mask_downscaling(mask_input)
        return dense + (1 - has_mask_input) * no_mask

    def _upscale(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        """``1×M×4h×4w`` → ``1×M×H×W``: to the padded input, crop the padding, to (H, W)."""
        masks = F.interpolate(
            masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        size = orig_im_size.to(torch.float32)
        resized = torch.floor(size * (self.img_size / size.max()) + 0.5).to(torch.int64)
        masks = masks[..., : resized[0], : resized[1]]
        orig = orig_im_size.to(torch.int64)
        return F.interpolate(masks, (orig[0], orig[1]), mode="bilinear", align_corners=False)

    def _select(
        self, masks: torch.Tensor, iou: torch.Tensor, num_points: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per prompt without control flow: token 0 when N > 2, else best of 1…3."""
        weight = torch.zeros_like(iou[:1])
        weight[:, 0] = 1000.0
        best = torch.argmax(iou + (num_points - 2.5) * weight, dim=1)
        rows = torch.arange(masks.shape[0])
        return masks[rows, best].unsqueeze(1), iou[rows, best].unsqueeze(1)

    @torch.no_grad()
    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
        orig_im_size: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The six inputs of the module docstring → ``(masks, iou_predictions, low_res)``."""
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_masks(mask_input, has_mask_input)
        low_res, iou = self.mask_decoder.predict_masks(
            image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense
        )
        if self.return_single_mask:
            low_res, iou = self._select(low_res, iou, point_coords.shape[1])
        return self._upscale(low_res, orig_im_size), iou, low_res


def decoder_inputs(
    embedding: ImageEmbedding,
    img_size: int,
    point_coords: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    mask_input: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The exported graph's inputs for one prompt, in original-image pixels (like
    :meth:`SamPredictor.predict`): ``point_coords`` N×2 ``(x, y)``, ``point_labels`` N,
    ``box`` XYXY, ``mask_input`` 1×4h×4w low-res logits. ``img_size``: the model input side.
    """
    transform = ResizeLongestSide(img_size)
    coords = np.zeros((0, 2))
    labels = np.zeros(0)
    if (point_coords is None) != (point_labels is None):
        raise ValueError("point_coords and point_labels must be given together")
    if point_coords is not None:
        coords = transform.apply_coords(
            np.asarray(point_coords, dtype=float), embedding.original_size
        )
        labels = np.asarray(point_labels, dtype=float).reshape(-1)
    if box is not None:  # the corners are two points labelled 2 and 3
        corners = transform.apply_boxes(np.asarray(box).reshape(1, 4), embedding.original_size)
        coords = np.concatenate([coords, corners.reshape(2, 2)])
        labels = np.concatenate([labels, [2.0, 3.0]])
    else:  # without a box, one padding point (label -1)
        coords = np.concatenate([coords, np.zeros((1, 2))])
        labels = np.concatenate([labels, [-1.0]])
    _, _, h, w = embedding.features.shape
    has_mask = mask_input is not None
    mask = np.zeros((1, 1, 4 * h, 4 * w)) if not has_mask else np.asarray(mask_input)
    return {
        "image_embeddings": embedding.features.detach().float().cpu().numpy(),
        "point_coords": coords[None].astype(np.float32),
        "point_labels": labels[None].astype(np.float32),
        "mask_input": mask.reshape(1, 1, 4 * h, 4 * w).astype(np.float32),
        "has_mask_input": np.array([float(has_mask)], dtype=np.float32),
        "orig_im_size": np.array(embedding.original_size, dtype=np.float32),
    }


def dummy_inputs(model: Sam, num_points: int = 5) -> dict[str, torch.Tensor]:
    """Example inputs of the exported graph (random embedding, ``num_points`` points)."""
    dim = model.prompt_encoder.embed_dim
    h, w = model.prompt_encoder.image_embedding_size
    g = torch.Generator().manual_seed(0)
    size = model.image_encoder.img_size
    return {
        "image_embeddings": torch.randn(1, dim, h, w, generator=g),
        "point_coords": torch.randint(0, size, (1, num_points, 2), generator=g).float(),
        "point_labels": torch.randint(0, 4, (1, num_points), generator=g).float(),
        "mask_input": torch.randn(1, 1, 4 * h, 4 * w, generator=g),
        "has_mask_input": torch.tensor([1.0]),
        "orig_im_size": torch.tensor([1500.0, 2250.0]),
    }


def export_decoder_onnx(
    model: Sam,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    return_single_mask: bool = False,
) -> Path:
    """Write the prompt encoder + mask decoder of ``model`` to ``path`` as ONNX.

    Uses the TorchScript-based exporter (``dynamo=False``) with ``point_coords`` and
    ``point_labels`` dynamic on axis 1 (the number of points). ``opset``: 14 … 20. The model
    is exported in float32 on the CPU; ``model`` itself is left as it was. Returns the path.
    """
    check_opset(opset)
    if not isinstance(model, Sam):
        raise TypeError(f"model must be an engine.model.Sam, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a float32 CPU copy of the two small modules only (the image encoder is not exported)
    wrapper = copy.deepcopy(SamOnnxModel(model, return_single_mask)).float().cpu().eval()
    inputs = dummy_inputs(model)
    dynamic = {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}}
    with warnings.catch_warnings():
        # shape checks in the decoder become constants of the trace: N is the only dynamic axis
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # return_single_mask's row/column gather: its indices are never negative
        warnings.filterwarnings("ignore", "Exporting aten::index operator", UserWarning)
        torch.onnx.export(
            wrapper,
            tuple(inputs.values()),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def verify_decoder_onnx(
    model: Sam, path: str | Path, return_single_mask: bool = False
) -> dict[str, float]:
    """Run the file at ``path`` in onnxruntime and the PyTorch wrapper on the same random
    inputs (1 and 4 points, with and without a mask input, two image sizes); returns the
    largest absolute difference per output name."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError("verifying needs onnxruntime: pip install 'sa-engine[onnx]'") from exc

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapper = copy.deepcopy(SamOnnxModel(model, return_single_mask)).float().cpu().eval()
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    for num_points, has_mask, size in ((1, 0.0, (1500, 2250)), (4, 1.0, (480, 320))):
        inputs = dummy_inputs(model, num_points)
        inputs["has_mask_input"] = torch.tensor([has_mask])
        inputs["orig_im_size"] = torch.tensor(size, dtype=torch.float32)
        expected = wrapper(**inputs)
        got = session.run(list(OUTPUT_NAMES), {k: v.numpy() for k, v in inputs.items()})
        for name, a, b in zip(OUTPUT_NAMES, got, expected):
            if a.shape != tuple(b.shape):
                raise RuntimeError(f"{name}: onnxruntime gave {a.shape}, PyTorch {tuple(b.shape)}")
            worst[name] = max(worst[name], float(np.abs(a - b.numpy()).max()))
    return worst
