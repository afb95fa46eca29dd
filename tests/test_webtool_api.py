"""The annotation tool's API through an in-process client (FastAPI TestClient).

Run directory: a queue over 3 small synthetic scenes, the ``tiny`` preset at a seeded random
init. Decoder outputs are checked against ``SamPredictor`` on the same image and prompt.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
from fastapi.testclient import TestClient  # noqa: E402

from engine import masks as mask_ops  # noqa: E402
from engine.annotators.human_store import HumanAnnotationStore  # noqa: E402
from engine.data.synthetic import render_scene  # noqa: E402
from engine.model import SamPredictor, build_sam, save_checkpoint  # noqa: E402
from engine.sa1b import ImageRecord, validate  # noqa: E402
from engine.webtool import create_app  # noqa: E402
from engine.webtool.demo_queue import write_demo_queue  # noqa: E402

H, W = 96, 128
PREFIX = "stage1-r00"
TOKEN = "t0ken-for-tests-0123456789"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_sam("tiny")


@pytest.fixture
def run_dir(tmp_path):
    root = tmp_path / "run"
    write_demo_queue(root, count=3, height=H, width=W, prefill=1)
    return root


@pytest.fixture
def client(run_dir, model):
    with TestClient(create_app(run_dir, model=model)) as c:
        yield c


def _predictor(model, key: str) -> SamPredictor:
    seed = int(key.split("-")[1])
    image, _ = render_scene(seed, H, W)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    return predictor


def _masks(response: dict) -> np.ndarray:
    return np.stack([mask_ops.rle_to_mask(m) for m in response["masks"]])


def _claim(client, annotator: str = "ann1") -> str:
    response = client.post("/api/claim", json={"annotator": annotator})
    assert response.status_code == 200, response.text
    return response.json()["key"]


def _decode(client, key: str, **body) -> dict:
    response = client.post(f"/api/images/{key}/decode", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _accept(client, key, rle, annotator="ann1", **extra):
    body = {"annotator": annotator, "mask": rle, **extra}
    return client.post(f"/api/images/{key}/accept", json=body)


# ---- reading, embedding, decoding ----------------------------------------------------------------


def test_round_page_and_image(client):
    info = client.get("/api/round").json()
    assert info["prefix"] == PREFIX and info["images"] == 3 and info["images_done"] == 0
    page = client.get("/")
    assert page.status_code == 200 and 'src="static/app.js"' in page.text
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset in ("app.js", "draw.js", "rle.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    key = _claim(client)
    state = client.get(f"/api/images/{key}").json()
    assert (state["width"], state["height"], state["done"]) == (W, H, False)
    jpeg = client.get(f"/api/images/{key}/image")
    assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"


def test_embed_is_cached_and_the_next_image_is_prefetched(client, model):
    service = client.app.state.service
    key = _claim(client)
    first = client.post(f"/api/images/{key}/embed").json()
    assert first["cached"] is False and first["seconds"] > 0
    assert client.post(f"/api/images/{key}/embed").json()["cached"] is True
    expected = _predictor(model, key).get_image_embedding()
    torch.testing.assert_close(service.embeddings.get(key).features, expected)
    following = service.queue.keys[1]
    service.embeddings.get(following)  # the prefetch was queued; this waits for it
    assert following in service.embeddings.seconds


def test_decode_points_matches_the_predictor(client, model):
    key = _claim(client)
    result = _decode(client, key, points=[[60.0, 40.0], [10.0, 80.0]], labels=[1, 0])
    assert len(result["masks"]) == 3 and len(result["scores"]) == 3
    assert all(m["size"] == [H, W] for m in result["masks"])
    masks, scores, _ = _predictor(model, key).predict(
        np.array([[60.0, 40.0], [10.0, 80.0]]), np.array([1, 0]), multimask_output=True
    )
    np.testing.assert_array_equal(_masks(result), masks)
    np.testing.assert_allclose(result["scores"], scores, rtol=1e-5)
    assert result["decode_ms"] > 0


def test_decode_box_and_mask_input_match_the_predictor(client, model):
    key = _claim(client)
    predictor = _predictor(model, key)
    boxed = _decode(client, key, box=[20.0, 10.0, 90.0, 70.0], multimask=False)
    masks, _, _ = predictor.predict(box=np.array([20.0, 10.0, 90.0, 70.0]), multimask_output=False)
    assert len(boxed["masks"]) == 1
    np.testing.assert_array_equal(_masks(boxed), masks)

    first = _decode(client, key, points=[[60.0, 40.0]], labels=[1])
    _, _, low_res = predictor.predict(np.array([[60.0, 40.0]]), np.array([1]))
    refined = _decode(
        client,
        key,
        points=[[60.0, 40.0], [30.0, 30.0]],
        labels=[1, 1],
        mask_input={"handle": first["handle"], "index": 2},
        multimask=False,
    )
    expected, _, _ = predictor.predict(
        np.array([[60.0, 40.0], [30.0, 30.0]]),
        np.array([1, 1]),
        mask_input=low_res[2][None],
        multimask_output=False,
    )
    np.testing.assert_array_equal(_masks(refined), expected)
    # a handle names a proposal of one image only
    other = client.app.state.service.queue.keys[1]
    response = client.post(
        f"/api/images/{other}/decode",
        json={
            "points": [[5, 5]],
            "labels": [1],
            "mask_input": {"handle": first["handle"], "index": 0},
        },
    )
    assert response.status_code == 404


# ---- edits ---------------------------------------------------------------------------------------


def test_accept_saves_at_once_in_the_store_format(client, run_dir, model):
    key = _claim(client)
    result = _decode(client, key, points=[[60.0, 40.0]], labels=[1])
    response = _accept(
        client,
        key,
        result["masks"][1],
        proposal={"handle": result["handle"], "index": 1},
        clicks=1,
        seconds=4.5,
        image_seconds=6.0,
        point_coords=[[60.0, 40.0]],
    )
    assert response.status_code == 200, response.text
    doc = json.loads((run_dir / "human" / PREFIX / f"{key}.json").read_text())
    assert doc["annotator"] == "ann1" and doc["done"] is False and doc["seconds"] == 6.0
    saved = doc["masks"][-1]
    mask = mask_ops.rle_to_mask(result["masks"][1])
    assert saved["segmentation"] == result["masks"][1]
    assert saved["area"] == int(mask.sum())
    assert saved["bbox"] == [float(v) for v in mask_ops.mask_bbox_xywh(mask)]
    assert saved["predicted_iou"] == pytest.approx(result["scores"][1])
    # stability as the automatic generator computes it, on the full-resolution logits
    logits, _, _ = _predictor(model, key).predict(
        np.array([[60.0, 40.0]]), np.array([1]), return_logits=True
    )
    expected = float(mask_ops.stability_score(torch.as_tensor(logits[1]), 0.0, 1.0))
    assert saved["stability_score"] == pytest.approx(0.0 if math.isnan(expected) else expected)
    assert saved["point_coords"] == [[60.0, 40.0]] and saved["crop_box"] == [0, 0, W, H]
    assert saved["provenance"] == {
        "stage": "assisted_manual",
        "round": 0,
        "source": "annotator",
        "clicks": 1,
        "seconds": 4.5,
        "model_iou": 1.0,
        "hand_fixed": False,
        "level": None,
        "granularity": "whole",
        "parent_id": None,
    }
    records = HumanAnnotationStore(run_dir, PREFIX).load(key)
    image = ImageRecord(image_id=0, width=W, height=H, file_name="x.jpg", annotations=records)
    assert validate(image) == []


def test_brushed_mask_records_hand_fix_and_model_iou(client, run_dir):
    key = _claim(client)
    result = _decode(client, key, points=[[60.0, 40.0]], labels=[1])
    model_mask = mask_ops.rle_to_mask(result["masks"][0])
    edited = model_mask.copy()
    edited[:10, :10] = True  # a brush stroke
    edited[-5:, :] = False  # an eraser stroke
    expected_iou = (edited & model_mask).sum() / (edited | model_mask).sum()
    response = _accept(
        client,
        key,
        mask_ops.mask_to_rle(edited),
        proposal={"handle": result["handle"], "index": 0},
        brush_strokes=2,
    )
    assert response.status_code == 200, response.text
    (record,) = [
        r
        for r in HumanAnnotationStore(run_dir, PREFIX).load(key)
        if r.provenance.clicks == 0 and r.provenance.source == "annotator"
    ]
    assert record.provenance.hand_fixed is True
    assert record.provenance.model_iou == pytest.approx(expected_iou, abs=1e-6)
    np.testing.assert_array_equal(mask_ops.rle_to_mask(record.segmentation), edited)


def test_delete_undo_finish_and_next(client, run_dir):
    key = _claim(client)  # the first image has one pre-filled mask (id 0)
    state = client.get(f"/api/images/{key}").json()
    assert [m["provenance"]["source"] for m in state["masks"]] == ["model"]
    square = np.zeros((H, W), dtype=bool)
    square[10:20, 10:30] = True
    state = _accept(client, key, mask_ops.mask_to_rle(square)).json()
    assert [m["id"] for m in state["masks"]] == [0, 1]
    body = {"annotator": "ann1", "mask_id": 0}
    assert [
        m["id"] for m in client.post(f"/api/images/{key}/delete", json=body).json()["masks"]
    ] == [1]
    undone = client.post(f"/api/images/{key}/undo", json={"annotator": "ann1"}).json()
    assert undone["undone"] is True and [m["id"] for m in undone["masks"]] == [0, 1]
    finished = client.post(f"/api/images/{key}/finish", json={"annotator": "ann1"}).json()
    assert finished["done"] is True and finished["next"] not in (None, key)
    store = HumanAnnotationStore(run_dir, PREFIX)
    assert store.done_keys() == {key}
    assert [r.provenance.source for r in store.load(key)] == ["model", "annotator"]
    assert client.get("/api/round").json()["images_done"] == 1
    again = _accept(client, key, mask_ops.mask_to_rle(square))
    assert again.status_code == 409
    stats = client.get("/api/stats").json()
    assert stats["images_done"] == 1 and stats["masks_per_image_mean"] == 2.0
    status = client.get("/status")
    assert status.status_code == 200 and "Seconds per mask (median)" in status.text


def test_resume_after_restart_sees_saved_work(run_dir, model):
    square = np.zeros((H, W), dtype=bool)
    square[30:50, 40:60] = True
    with TestClient(create_app(run_dir, model=model)) as first:
        key = _claim(first, "ann1")
        assert _accept(first, key, mask_ops.mask_to_rle(square), "ann1").status_code == 200
    with TestClient(create_app(run_dir, model=model)) as second:  # a new server process
        assert _claim(second, "ann2") != key  # ann1 started it: others get other images first
        assert _claim(second, "ann1") == key  # and ann1 gets it back
        masks = second.get(f"/api/images/{key}").json()["masks"]
        assert masks[-1]["segmentation"] == mask_ops.mask_to_rle(square)


def test_two_annotators_get_distinct_images_and_cannot_edit_each_others(client):
    first, second = _claim(client, "ann1"), _claim(client, "ann2")
    assert first != second
    square = np.zeros((H, W), dtype=bool)
    square[:4, :4] = True
    response = _accept(client, first, mask_ops.mask_to_rle(square), annotator="ann2")
    assert response.status_code == 409


# ---- security ------------------------------------------------------------------------------------


def test_token_is_required_on_every_request(run_dir, model):
    with TestClient(create_app(run_dir, model=model, token=TOKEN)) as c:
        assert c.get("/").status_code == 401
        assert c.get("/api/round").status_code == 401
        assert c.get("/static/app.js").status_code == 401
        bad = {"Authorization": "Bearer wrong-token-0123456789"}
        assert c.get("/api/round", headers=bad).status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert c.get("/api/round", headers=good).status_code == 200
        page = c.get(f"/?token={TOKEN}")  # the page link sets an HttpOnly cookie
        assert page.status_code == 200 and "HttpOnly" in page.headers["set-cookie"]
        assert c.get("/api/round").status_code == 200  # the cookie now carries the token


@pytest.mark.parametrize("token", ["short", "has space 0123456789", "x;y=0123456789abcdef"])
def test_weak_or_odd_tokens_are_refused(run_dir, model, token):
    with pytest.raises(ValueError, match="token"):
        create_app(run_dir, model=model, token=token)


def test_cli_refuses_a_public_address_without_token(run_dir, capsys, monkeypatch):
    from stages.annotate_cmd import TOKEN_ENV, main

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main([f"run_dir={run_dir}", "host=0.0.0.0"]) == 2
    assert "refusing to bind 0.0.0.0 without an access token" in capsys.readouterr().err
    assert main([f"run_dir={run_dir}", "colour=blue"]) == 2
    assert main([f"run_dir={run_dir}", "port=70000"]) == 2


def test_host_and_origin_checks(run_dir, model):
    app = create_app(run_dir, model=model, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        assert c.get("/api/round").status_code == 200
        assert c.get("/api/round", headers={"Host": "attacker.example"}).status_code == 400
        cross = c.post(
            "/api/claim", json={"annotator": "a"}, headers={"Origin": "http://attacker.example"}
        )
        assert cross.status_code == 403
        same = c.post(
            "/api/claim", json={"annotator": "a"}, headers={"Origin": "http://127.0.0.1:8765"}
        )
        assert same.status_code == 200


def test_oversize_body_is_rejected(run_dir, model):
    with TestClient(create_app(run_dir, model=model, max_body_bytes=2048)) as c:
        key = _claim(c)
        body = {"points": [[1.0, 1.0]] * 60, "labels": [1] * 60, "pad": "x" * 4000}
        assert c.post(f"/api/images/{key}/decode", json=body).status_code == 413
        chunks = (b"x" * 1024 for _ in range(4))  # no Content-Length: counted while read
        response = c.post(
            f"/api/images/{key}/decode",
            content=chunks,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        {"points": [[5.0, 5.0]] * 65, "labels": [1] * 65},  # too many points
        {"points": [[5.0, 5.0]], "labels": [1, 0]},  # labels do not match
        {"points": [[5.0, 5.0]], "labels": [2]},  # label not 0/1
        {"points": [[W + 5.0, 5.0]], "labels": [1]},  # off the image
        {"points": [], "labels": []},  # no prompt
        {"box": [50.0, 50.0, 10.0, 10.0]},  # not XYXY
        {"points": [[5.0, 5.0]], "labels": [1], "extra": 1},  # unknown field
        {"points": [[5.0, 5.0]], "labels": [1], "mask_input": {"handle": "0" * 32, "index": 0}},
    ],
)
def test_invalid_decode_requests_are_rejected(client, body):
    key = _claim(client)
    response = client.post(f"/api/images/{key}/decode", json=body)
    assert response.status_code in (404, 422), response.text


def test_nan_coordinates_are_rejected(client):
    key = _claim(client)
    raw = '{"points": [[NaN, 1.0]], "labels": [1]}'
    response = client.post(
        f"/api/images/{key}/decode", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422


def test_text_plain_posts_are_not_parsed(client):
    """A cross-site form can send text/plain without a preflight; such bodies are refused."""
    response = client.post(
        "/api/claim", content='{"annotator": "a"}', headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    "mask",
    [
        {"size": [H + 1, W], "counts": "0"},  # size is not the image's
        {"size": [H, W], "counts": "zzzz"},  # runs that do not decode
        {"size": [H, W], "counts": str(H * W)},  # well formed but wrong total
    ],
)
def test_bad_masks_are_rejected(client, mask):
    key = _claim(client)
    assert _accept(client, key, mask).status_code == 422


def test_empty_mask_and_bad_annotator_are_rejected(client):
    key = _claim(client)
    empty = mask_ops.mask_to_rle(np.zeros((H, W), dtype=bool))
    assert _accept(client, key, empty).status_code == 422
    square = mask_ops.mask_to_rle(np.ones((H, W), dtype=bool))
    assert _accept(client, key, square, annotator="../ann").status_code == 422


@pytest.mark.parametrize(
    "key",
    ["..%2F..%2Fqueues%2Fstage1-r00", "..", "syn-000000.json", "syn-999999", "%2Fetc%2Fpasswd"],
)
def test_path_traversal_and_unknown_keys_are_rejected(client, run_dir, key):
    before = sorted(p.relative_to(run_dir.parent) for p in run_dir.parent.rglob("*"))
    for path in (f"/api/images/{key}", f"/api/images/{key}/image"):
        assert client.get(path).status_code == 404
    body = {"annotator": "ann1", "mask_id": 0}
    assert client.post(f"/api/images/{key}/delete", json=body).status_code == 404
    assert client.post(f"/api/images/{key}/embed").status_code == 404
    after = sorted(p.relative_to(run_dir.parent) for p in run_dir.parent.rglob("*"))
    assert after == before


def test_checkpoint_outside_the_run_dir_is_refused(tmp_path, model):
    run_dir = tmp_path / "run"
    write_demo_queue(run_dir, count=1, height=H, width=W, checkpoint="../weights.pt")
    save_checkpoint(model, tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="leaves the run directory"):
        create_app(run_dir)


def test_round_checkpoint_is_loaded(tmp_path, model):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    save_checkpoint(model, run_dir / "checkpoints" / "stage1-r00.pt")
    write_demo_queue(run_dir, count=1, height=H, width=W, checkpoint="checkpoints/stage1-r00.pt")
    with TestClient(create_app(run_dir)) as c:
        key = _claim(c)
        result = _decode(c, key, points=[[60.0, 40.0]], labels=[1])
    masks, _, _ = _predictor(model, key).predict(np.array([[60.0, 40.0]]), np.array([1]))
    np.testing.assert_array_equal(_masks(result), masks)
