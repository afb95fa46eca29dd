"""SamPredictor: batched embeddings, stored embeddings, argument errors, transforms, bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from official_peer import scaled_random_weights_
from segment_anything.utils.transforms import ResizeLongestSide as OfficialResize

from engine.model import ImageEmbedding, ResizeLongestSide, SamPredictor, build_sam

POINT = {"point_coords": np.array([[30.0, 40.0]]), "point_labels": np.array([1])}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    sam = build_sam("tiny")
    scaled_random_weights_(sam, seed=3)
    return sam


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    shapes = [(120, 160), (200, 90), (64, 64)]  # landscape, portrait, square
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in shapes]


def _assert_same_prediction(a, b, atol=1e-5):
    masks_a, iou_a, low_a = a
    masks_b, iou_b, low_b = b
    np.testing.assert_allclose(low_a, low_b, rtol=0, atol=atol)
    np.testing.assert_allclose(iou_a, iou_b, rtol=0, atol=atol)
    assert masks_a.shape == masks_b.shape


def test_embed_images_is_one_batched_call_equal_to_one_by_one(model, images):
    predictor = SamPredictor(model)
    calls = []
    handle = model.image_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    try:
        embeddings = predictor.embed_images(images)
    finally:
        handle.remove()
    assert calls == [(3, 3, 256, 256)]
    assert not predictor.is_image_set  # embedding alone does not change the state
    for image, embedding in zip(images, embeddings):
        predictor.set_image(image)
        assert embedding.original_size == image.shape[:2]
        assert embedding.input_size == predictor.input_size
        assert embedding.features.shape == (1, 128, 16, 16)
        torch.testing.assert_close(embedding.features, predictor.features, rtol=0, atol=1e-5)
        assert not embedding.features.is_inference()  # usable with autograd later


def test_set_images_and_select_image_match_set_image(model, images):
    batch = SamPredictor(model)
    single = SamPredictor(model)
    kept = batch.set_images(images)
    assert len(kept) == len(images) and batch.image_embeddings == kept
    for i in [0, 2, 1]:
        batch.select_image(i)
        single.set_image(images[i])
        assert batch.original_size == images[i].shape[:2]
        _assert_same_prediction(batch.predict(**POINT), single.predict(**POINT))
    assert len(batch.image_embeddings) == len(images)  # selecting keeps the list


def test_stored_embedding_decodes_like_the_image(model, images):
    producer = SamPredictor(model)
    producer.set_image(images[1])
    stored = producer.get_embedding()
    expected = producer.predict(**POINT, multimask_output=False)
    worker = SamPredictor(model)
    worker.set_image_embedding(
        ImageEmbedding(stored.features.clone(), stored.original_size, stored.input_size)
    )
    assert torch.equal(worker.get_image_embedding(), stored.features)
    result = worker.predict(**POINT, multimask_output=False)
    _assert_same_prediction(result, expected, atol=0)
    np.testing.assert_array_equal(result[0], expected[0])


def test_predict_output_shapes_and_types(model, images):
    predictor = SamPredictor(model)
    predictor.set_image(images[0])
    masks, iou, low_res = predictor.predict(**POINT)
    assert masks.shape == (3, 120, 160) and masks.dtype == np.bool_
    assert iou.shape == (3,) and iou.dtype == np.float32
    assert low_res.shape == (3, 64, 64) and low_res.dtype == np.float32
    logits, _, _ = predictor.predict(**POINT, multimask_output=False, return_logits=True)
    assert logits.shape == (1, 120, 160) and logits.dtype == np.float32
    masks_t, iou_t, low_t = predictor.predict_torch(
        torch.rand(4, 2, 2) * 256, torch.ones(4, 2, dtype=torch.int), multimask_output=True
    )
    assert masks_t.shape == (4, 3, 120, 160) and iou_t.shape == (4, 3)
    assert low_t.shape == (4, 3, 64, 64)
    # predict feeds its own low-res output back as a mask prompt
    again = predictor.predict(**POINT, mask_input=low_res[:1], multimask_output=False)
    assert again[0].shape == (1, 120, 160)


def test_bgr_input_equals_rgb(model, images):
    predictor = SamPredictor(model)
    predictor.set_image(images[0])
    rgb = predictor.features
    predictor.set_image(np.ascontiguousarray(images[0][..., ::-1]), image_format="BGR")
    torch.testing.assert_close(predictor.features, rgb, rtol=0, atol=0)


def test_call_order_errors_say_what_to_call_first(model, images):
    predictor = SamPredictor(model)
    for call in (
        lambda: predictor.predict(**POINT),
        lambda: predictor.predict_torch(None, None),
        predictor.get_image_embedding,
        predictor.get_embedding,
    ):
        with pytest.raises(RuntimeError, match=r"set_image\(\.\.\.\)"):
            call()
    with pytest.raises(RuntimeError, match=r"set_images\(\.\.\.\)"):
        predictor.select_image(0)
    predictor.set_images(images[:2])
    with pytest.raises(ValueError, match="index 2"):
        predictor.select_image(2)
    predictor.reset_image()
    assert not predictor.is_image_set and predictor.image_embeddings == []
    with pytest.raises(RuntimeError):
        predictor.predict(**POINT)


@pytest.mark.parametrize(
    "image, error, match",
    [
        (np.zeros((10, 10), np.uint8), ValueError, "image"),
        (np.zeros((10, 10, 4), np.uint8), ValueError, "H×W×3"),
        (np.zeros((10, 10, 3), np.float32), ValueError, "uint8"),
        (np.zeros((0, 10, 3), np.uint8), ValueError, "empty"),
        ([[[0, 0, 0]]], TypeError, "numpy array"),
    ],
)
def test_bad_images_are_rejected(model, image, error, match):
    with pytest.raises(error, match=match):
        SamPredictor(model).set_image(image)


def test_bad_image_arguments_are_named(model, images):
    predictor = SamPredictor(model)
    with pytest.raises(ValueError, match="image_format"):
        predictor.set_image(images[0], image_format="RGBA")
    with pytest.raises(ValueError, match=r"images\[1\]"):
        predictor.embed_images([images[0], np.zeros((5, 5), np.uint8)])
    with pytest.raises(ValueError, match="non-empty list"):
        predictor.embed_images([])
    with pytest.raises(ValueError, match="embedding.features"):
        predictor.set_image_embedding(
            ImageEmbedding(torch.zeros(1, 64, 16, 16), (10, 10), (256, 256))
        )
    with pytest.raises(ValueError, match="embedding.input_size"):
        predictor.set_image_embedding(
            ImageEmbedding(torch.zeros(1, 128, 16, 16), (100, 50), (256, 256))
        )
    with pytest.raises(TypeError, match="ImageEmbedding"):
        predictor.set_image_embedding(torch.zeros(1, 128, 16, 16))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"point_coords": np.zeros((2, 3)), "point_labels": np.ones(2)}, "point_coords"),
        ({"point_coords": np.zeros((0, 2)), "point_labels": np.ones(0)}, "point_coords"),
        ({"point_coords": np.zeros((2, 2)), "point_labels": np.ones(3)}, "point_labels"),
        ({"point_coords": np.zeros((2, 2))}, "point_labels must be given"),
        ({"point_labels": np.ones(2)}, "point_labels given without point_coords"),
        ({"box": np.zeros(5)}, "box"),
        ({"box": np.zeros((2, 4))}, "box"),
        ({"mask_input": np.zeros((1, 256, 256))}, "mask_input"),
        ({"mask_input": np.zeros((2, 64, 64))}, "mask_input"),
    ],
)
def test_bad_prompts_raise_value_errors_naming_the_argument(model, images, kwargs, match):
    predictor = SamPredictor(model)
    predictor.set_image(images[0])
    with pytest.raises(ValueError, match=match):
        predictor.predict(**kwargs)


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(2, 2), torch.ones(2)), "point_coords"),
        ((torch.zeros(2, 3, 2), torch.ones(2, 2)), "point_labels"),
        ((torch.zeros(2, 1, 2), torch.ones(2, 1), torch.zeros(3, 4)), "batch sizes differ"),
        ((None, None, torch.zeros(2, 5)), "boxes"),
        ((None, None, None, torch.zeros(1, 1, 32, 32)), "mask_input"),
    ],
)
def test_bad_batched_prompts_raise_value_errors(model, images, args, match):
    predictor = SamPredictor(model)
    predictor.set_image(images[0])
    with pytest.raises(ValueError, match=match):
        predictor.predict_torch(*args)


def test_cpu_bf16_is_opt_in_and_close_to_float32(model, images):
    exact = SamPredictor(model)
    assert not exact.bf16  # float32 by default on the CPU
    fast = SamPredictor(model, bf16=True)
    exact.set_image(images[0])
    fast.set_image(images[0])
    assert fast.features.dtype == torch.float32
    assert not torch.equal(fast.features, exact.features)  # bf16 really ran
    masks_a, iou_a, low_a = exact.predict(**POINT)
    masks_b, iou_b, low_b = fast.predict(**POINT)
    assert low_b.dtype == np.float32 and iou_b.dtype == np.float32
    assert (masks_a == masks_b).mean() > 0.9
    np.testing.assert_allclose(iou_b, iou_a, atol=0.25)


@pytest.mark.parametrize("shape", [(120, 160), (200, 90), (3, 1000), (333, 333), (1500, 2250)])
def test_resize_longest_side_matches_official(shape):
    target = 256
    ours, theirs = ResizeLongestSide(target), OfficialResize(target)
    assert ours.get_preprocess_shape(*shape, target) == theirs.get_preprocess_shape(*shape, target)
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ours.apply_image(image), theirs.apply_image(image))
    coords = np.array([[0.0, 0.0], [shape[1] - 1, shape[0] - 1], [10.5, 3.25]])
    np.testing.assert_array_equal(
        ours.apply_coords(coords, shape), theirs.apply_coords(coords, shape)
    )
    boxes = np.array([[1, 2, 30, 40], [0, 0, shape[1], shape[0]]])
    np.testing.assert_array_equal(ours.apply_boxes(boxes, shape), theirs.apply_boxes(boxes, shape))
    coords_t = torch.as_tensor(coords)
    torch.testing.assert_close(
        ours.apply_coords_torch(coords_t, shape), theirs.apply_coords_torch(coords_t, shape)
    )
    boxes_t = torch.as_tensor(boxes)
    torch.testing.assert_close(
        ours.apply_boxes_torch(boxes_t, shape), theirs.apply_boxes_torch(boxes_t, shape)
    )
    assert coords_t[1, 0] == shape[1] - 1  # the input was not modified in place


def test_very_elongated_images_keep_one_pixel():
    """The official rounding gives a 0-pixel side here (and then fails); ours keeps 1."""
    transform = ResizeLongestSide(256)
    assert transform.get_preprocess_shape(1, 1000, 256) == (1, 256)
    image = np.zeros((1, 1000, 3), np.uint8)
    assert transform.apply_image(image).shape == (1, 256, 3)


def test_apply_image_torch_uses_height_and_width():
    batch = torch.rand(2, 3, 100, 50) * 255
    assert ResizeLongestSide(256).apply_image_torch(batch).shape == (2, 3, 256, 128)
