"""Our SAM against the official package: same weights, same image and prompts → same outputs.

Weights are seeded random values scaled so that logits are O(1–10) (checked), making the
1e-4 bound meaningful. Geometries: ``tiny`` and ``vit_b`` (full 1024-px input, 64×64 grid,
window 14 with padding to 70, but two blocks — one windowed, one global, the official
pattern's shape — to keep the test short; full-depth key sets and shapes are checked in
test_model_presets.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from official_peer import official_from_ours, scaled_random_weights_
from segment_anything import SamPredictor as OfficialPredictor

from engine.model import PRESETS, SamPredictor, build_sam

LOGIT_TOL = 1e-4
GEOMETRIES = {
    "tiny": (PRESETS["tiny"], (200, 300)),
    "vit_b": (
        {**PRESETS["vit_b"], "encoder_depth": 2, "encoder_global_attn_indexes": (1,)},
        (450, 600),
    ),
}


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus a few rectangles (so the image is not pure noise)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.stack([xs * 255 / width, ys * 255 / height, (xs + ys) % 256], axis=-1)
    for _ in range(4):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        image[y0 : y0 + height // 3, x0 : x0 + width // 3] = rng.integers(0, 256, 3)
    return image.astype(np.uint8)


@pytest.fixture(scope="module", params=sorted(GEOMETRIES))
def pair(request):
    """(our predictor, official predictor, image, previous low-res logits), image set in both.

    ``previous`` is a realistic mask prompt: the official low-res logits of a one-point
    prediction.
    """
    preset, (height, width) = GEOMETRIES[request.param]
    torch.manual_seed(0)
    ours = build_sam(preset)
    scaled_random_weights_(ours, seed=1)
    theirs = official_from_ours(ours)
    image = _image(height, width)
    ours_pred, their_pred = SamPredictor(ours), OfficialPredictor(theirs)
    ours_pred.set_image(image)
    their_pred.set_image(image)
    _, _, previous = their_pred.predict(
        np.array([[10.0, 20.0]]), np.array([1]), multimask_output=False
    )
    return ours_pred, their_pred, image, previous


def _prompts(kind: str, image: np.ndarray, previous_low_res: np.ndarray) -> dict:
    h, w = image.shape[:2]
    point = np.array([[0.5 * w, 0.5 * h]])
    box = np.array([0.15 * w, 0.2 * h, 0.7 * w, 0.85 * h])
    if kind == "one_point":
        return {"point_coords": point, "point_labels": np.array([1])}
    if kind == "points_with_negatives":
        coords = np.array(
            [[0.5 * w, 0.5 * h], [0.1 * w, 0.1 * h], [0.9 * w, 0.8 * h], [0.3 * w, 0.6 * h]]
        )
        return {"point_coords": coords, "point_labels": np.array([1, 0, 0, 1])}
    if kind == "box":
        return {"box": box}
    if kind == "box_and_points":
        coords = np.array([[0.4 * w, 0.5 * h], [0.2 * w, 0.3 * h]])
        return {"box": box, "point_coords": coords, "point_labels": np.array([1, 0])}
    if kind == "mask_and_point":
        return {
            "point_coords": point,
            "point_labels": np.array([1]),
            "mask_input": previous_low_res,
        }
    if kind == "mask_only":
        return {"mask_input": previous_low_res}
    raise AssertionError(kind)


def test_image_embeddings_match(pair):
    ours, theirs, _, _ = pair
    assert ours.features.shape == theirs.features.shape
    assert ours.input_size == theirs.input_size and ours.original_size == theirs.original_size
    torch.testing.assert_close(ours.features, theirs.features, rtol=0, atol=LOGIT_TOL)


@pytest.mark.parametrize("multimask", [True, False], ids=["multi", "single"])
@pytest.mark.parametrize(
    "kind",
    ["one_point", "points_with_negatives", "box", "box_and_points", "mask_and_point", "mask_only"],
)
def test_predictions_match(pair, kind, multimask):
    ours, theirs, image, previous = pair
    prompts = _prompts(kind, image, previous)

    o_logits, o_iou, o_low = ours.predict(**prompts, multimask_output=multimask, return_logits=True)
    t_logits, t_iou, t_low = theirs.predict(
        **prompts, multimask_output=multimask, return_logits=True
    )
    n_masks = 3 if multimask else 1
    assert o_logits.shape == t_logits.shape == (n_masks, *image.shape[:2])
    assert o_low.shape == t_low.shape
    assert np.abs(t_low).max() > 1.0, "weights too small for a meaningful comparison"
    np.testing.assert_allclose(o_low, t_low, rtol=0, atol=LOGIT_TOL)
    np.testing.assert_allclose(o_logits, t_logits, rtol=0, atol=LOGIT_TOL)
    np.testing.assert_allclose(o_iou, t_iou, rtol=0, atol=LOGIT_TOL)


def test_boolean_masks_match(pair):
    ours, theirs, image, _ = pair
    prompts = {"point_coords": np.array([[40.0, 50.0]]), "point_labels": np.array([1])}
    o_masks, _, _ = ours.predict(**prompts)
    t_logits, _, _ = theirs.predict(**prompts, return_logits=True)
    assert o_masks.dtype == np.bool_ and o_masks.shape == (3, *image.shape[:2])
    decided = np.abs(t_logits) > LOGIT_TOL  # pixels where a 1e-4 difference cannot flip
    assert 0.05 < (t_logits > 0).mean() < 0.95, "degenerate masks make this check weak"
    np.testing.assert_array_equal(o_masks[decided], (t_logits > 0)[decided])


def test_batched_prompts_match(pair):
    """predict_torch with B prompts (as automatic mask generation calls it)."""
    ours, theirs, image, _ = pair
    h, w = image.shape[:2]
    rng = np.random.default_rng(3)
    points = rng.uniform([0, 0], [w, h], size=(5, 2))
    coords = ours.transform.apply_coords_torch(torch.as_tensor(points), (h, w))[:, None, :]
    labels = torch.ones(5, 1, dtype=torch.int)
    o = ours.predict_torch(coords, labels, multimask_output=True, return_logits=True)
    with torch.no_grad():
        t = theirs.predict_torch(coords, labels, multimask_output=True, return_logits=True)
    for a, b in zip(o, t):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=LOGIT_TOL)


def test_sam_forward_matches():
    """The module-level API used without the predictor: Sam.forward on a batch of inputs."""
    torch.manual_seed(0)
    model = build_sam("tiny")
    scaled_random_weights_(model, seed=2)
    ours, theirs = SamPredictor(model), OfficialPredictor(official_from_ours(model))
    image = _image(120, 90)
    resized = ours.transform.apply_image(image)
    batched = [
        {
            "image": torch.as_tensor(resized).permute(2, 0, 1).contiguous(),
            "original_size": image.shape[:2],
            "point_coords": torch.tensor([[[30.0, 40.0], [90.0, 20.0]]]),
            "point_labels": torch.tensor([[1, 0]]),
        }
    ]
    (o,) = ours.model(batched, multimask_output=True)
    (t,) = theirs.model(batched, multimask_output=True)
    torch.testing.assert_close(o["low_res_logits"], t["low_res_logits"], rtol=0, atol=LOGIT_TOL)
    torch.testing.assert_close(o["iou_predictions"], t["iou_predictions"], rtol=0, atol=LOGIT_TOL)
