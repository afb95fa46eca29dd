"""The privacy filter (engine.privacy): blurring, OpenCV's Haar default on real photos, the
pipeline step before the writer, the audit's counts and the ``privacy`` config block."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from privacy_support import noise_image, record_for

from engine.audit.run import run_audit
from engine.dataset.index import read_image_index
from engine.dataset.reader import ShardReader
from engine.dataset.writer import ShardWriter, encode_jpeg
from engine.privacy import HaarDetector, PrivacyBox, PrivacyFilter, blur_regions, padded_box
from engine.work import WorkResult
from stages import hydra_app
from stages.pipeline import Pipeline, PipelineSettings
from stages.run_cmd import RunConfigError, build_settings, privacy_filter
from stages.run_config import PrivacyConfig

# ---- blur_regions --------------------------------------------------------------------------


def test_padded_box_grows_and_clips():
    assert padded_box(PrivacyBox("face", 10, 20, 30, 40), 0.1, 100, 100) == (7, 16, 43, 64)
    assert padded_box(PrivacyBox("face", -5, 90, 30, 20), 0.5, 100, 50) == (0, 80, 40, 100)


@pytest.mark.parametrize(
    "box", [PrivacyBox("face", 20, 10, 16, 12), PrivacyBox("plate", 50, 40, 30, 30)]
)
def test_blur_changes_pixels_inside_the_box_only(box):
    image = noise_image(64, 72, seed=1)
    out = blur_regions(image, [box], strength=0.25, padding=0.1)
    x0, y0, x1, y1 = padded_box(box, 0.1, 64, 72)
    inside = np.zeros((64, 72), bool)
    inside[y0:y1, x0:x1] = True
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out[~inside], image[~inside])
    before, after = image[inside].astype(float), out[inside].astype(float)
    assert after.std() < 0.35 * before.std()  # noise flattened: unreadable, not just softened
    assert np.abs(after - before).mean() > 20
    assert np.array_equal(image, noise_image(64, 72, seed=1))  # the input is not modified


def test_blur_of_a_box_past_the_border_is_clipped():
    image = noise_image(40, 40, seed=2)
    out = blur_regions(image, [PrivacyBox("face", 30, -10, 30, 25)])
    assert np.array_equal(out[:, :27], image[:, :27]) and np.array_equal(out[18:], image[18:])
    assert not np.array_equal(out[:18, 27:], image[:18, 27:])


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"strength": 0}, "strength"), ({"padding": -1}, "padding")]
)
def test_blur_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        blur_regions(noise_image(8, 8), [], **kwargs)


class ListDetector:
    """A fake detector: the boxes of call ``i`` are ``calls[i]`` (then none)."""

    def __init__(self, calls: list[list[PrivacyBox]]) -> None:
        self.calls = list(calls)
        self.seen: list[tuple[int, int]] = []

    def detect(self, image_rgb: np.ndarray) -> list[PrivacyBox]:
        self.seen.append(image_rgb.shape[:2])
        return self.calls.pop(0) if self.calls else []


def test_filter_runs_every_detector_and_keeps_an_image_without_boxes():
    image = noise_image(32, 32)
    a, b = PrivacyBox("face", 1, 1, 8, 8), PrivacyBox("plate", 20, 20, 8, 8)
    privacy = PrivacyFilter([ListDetector([[a]]), ListDetector([[b]])])
    out, boxes = privacy(image)
    assert boxes == [a, b]
    assert np.array_equal(out, blur_regions(image, [a, b]))
    same, none = privacy(image)
    assert same is image and none == []
    with pytest.raises(ValueError, match="detector"):
        PrivacyFilter([])


# ---- the OpenCV default on real photos -------------------------------------------------------


def _photo(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _overlap(box: PrivacyBox, xywh: list[float]) -> float:
    """Share of ``xywh``'s area inside ``box``."""
    x, y, w, h = xywh
    ix = max(0.0, min(box.x + box.w, x + w) - max(box.x, x))
    iy = max(0.0, min(box.y + box.h, y + h) - max(box.y, y))
    return ix * iy / (w * h)


def test_haar_finds_the_face_of_a_coco_person(shared_data):
    coco = json.loads((shared_data / "coco-permissive" / "instances_val.json").read_text())
    image_id = next(i["id"] for i in coco["images"] if i["file_name"] == "000000329323.jpg")
    person = next(c["id"] for c in coco["categories"] if c["name"] == "person")
    people = [
        a["bbox"] for a in coco["annotations"]
        if a["image_id"] == image_id and a["category_id"] == person
    ]  # fmt: skip
    image = _photo(shared_data / "coco-permissive" / "images" / "000000329323.jpg")
    faces = HaarDetector(plates=False).detect(image)
    assert faces and all(f.label == "face" for f in faces)
    # each face lies inside the top half of a COCO person box (a head, not a random patch)
    for face in faces:
        cx, cy = face.x + face.w / 2, face.y + face.h / 2
        assert any(x <= cx <= x + w and y <= cy <= y + h / 2 for x, y, w, h in people), face


def test_haar_finds_the_licence_plate_and_the_filter_blurs_it(shared_data):
    image = _photo(shared_data / "photos" / "cars.jpg")
    plate_xywh = [519, 890, 178, 48]  # the Cuban plate "P 075 359", labelled by hand
    plates = HaarDetector(faces=False).detect(image)
    assert any(_overlap(p, plate_xywh) > 0.9 for p in plates), plates
    out, boxes = PrivacyFilter([HaarDetector()])(image)
    x, y, w, h = plate_xywh
    assert out[y : y + h, x : x + w].std() < 0.5 * image[y : y + h, x : x + w].std()
    assert HaarDetector(faces=False).detect(out) == []  # the blurred plate is not found again


def test_haar_finds_nothing_in_a_flat_image():
    assert HaarDetector().detect(np.full((120, 160, 3), 128, np.uint8)) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"faces": False, "plates": False}, "faces=True or plates=True"),
        ({"scale_factor": 1.0}, "scale_factor"),
        ({"min_neighbors": -1}, "min_neighbors"),
        ({"min_size": 0}, "min_size"),
    ],
)
def test_haar_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HaarDetector(**kwargs)


# ---- the pipeline step, the index and the audit ----------------------------------------------


def _decoded(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)


def test_pipeline_writes_the_blurred_jpeg_and_the_audit_counts_it(tmp_path):
    box = PrivacyBox("face", 40, 32, 24, 24)
    detector = ListDetector([[box], []])
    settings = PipelineSettings(
        run_dir=tmp_path / "run", source=None, preset="tiny", stages=[], make_task=None,
        retrainer=None, retrain_steps=0, tracker=None, config_digest="x",
        privacy=PrivacyFilter([detector], strength=0.25, padding=0.1),
    )  # fmt: skip
    pipeline = Pipeline(settings, pool=None)
    images = {k: noise_image(96, 128, seed=s) for s, k in enumerate(("a", "b"))}
    with ShardWriter(pipeline.shards_dir, pipeline.index_dir, "stage3-r00", jpeg_quality=90) as w:
        for index, (key, image) in enumerate(images.items()):
            result = WorkResult(key, index, image=image, record=record_for(image, index))
            pipeline._write(w, result)
    assert detector.seen == [(96, 128), (96, 128)]
    shard = next(pipeline.shards_dir.glob("*.tar"))
    decoded = {key: pixels.astype(int) for key, pixels, _ in ShardReader(shard)}
    written, plain = decoded["a"], _decoded(encode_jpeg(images["a"], 90))
    # JPEG codes 16×16 blocks (4:2:0) independently; the decoder's chroma upsampling reads one
    # chroma pixel (2 px) across a block edge: pixels clear of that are equal
    x0, y0, x1, y1 = padded_box(box, 0.1, 96, 128)
    touched = np.zeros((96, 128), bool)
    top, left = max(0, y0 // 16 * 16 - 2), max(0, x0 // 16 * 16 - 2)
    touched[top : -(-y1 // 16) * 16 + 2, left : -(-x1 // 16) * 16 + 2] = True
    assert np.array_equal(written[~touched], plain[~touched])
    inside = (slice(y0, y1), slice(x0, x1))
    assert written[inside].std() < 0.5 * plain[inside].std()
    assert np.array_equal(decoded["b"], _decoded(encode_jpeg(images["b"], 90)))
    rows = read_image_index(pipeline.index_dir).to_pydict()
    assert dict(zip(rows["key"], rows["blurred_boxes"])) == {"a": 1, "b": 0}

    summary = run_audit(settings.run_dir, out_dir=tmp_path / "audit")
    assert summary["privacy"] == {
        "images_filtered": 2, "images_not_filtered": 0, "images_blurred": 1, "blurred_boxes": 1,
    }  # fmt: skip
    assert (
        json.loads((tmp_path / "audit" / "audit.json").read_text())["privacy"] == summary["privacy"]
    )
    html = (tmp_path / "audit" / "audit.html").read_text()
    assert (
        "faces and licence plates blurred" in html and "1 boxes in 1 of 2 filtered images" in html
    )


def test_audit_counts_images_written_without_a_filter(tmp_path):
    with ShardWriter(tmp_path / "shards", tmp_path / "index", "stage1-r00") as writer:
        for i in range(3):
            image = noise_image(32, 32, seed=i)
            writer.write(f"k{i}", image, record_for(image, i), blurred_boxes=None if i else 2)
    summary = run_audit(tmp_path, out_dir=tmp_path / "audit")
    assert summary["privacy"] == {
        "images_filtered": 1, "images_not_filtered": 2, "images_blurred": 1, "blurred_boxes": 2,
    }  # fmt: skip
    assert "2 images not filtered" in (tmp_path / "audit" / "audit.html").read_text()


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_writer_refuses_a_bad_blurred_count(tmp_path, bad):
    image = noise_image(16, 16)
    with ShardWriter(tmp_path / "s", tmp_path / "i", "p") as writer:
        with pytest.raises(ValueError, match="blurred_boxes"):
            writer.write("k", image, record_for(image, 0), blurred_boxes=bad)


# ---- the config block --------------------------------------------------------------------------


def test_privacy_config_builds_the_haar_filter_or_nothing():
    privacy = privacy_filter(PrivacyConfig(min_neighbors=6, blur_strength=0.5, plates=False))
    (detector,) = privacy.detectors
    assert isinstance(detector, HaarDetector) and set(detector.cascades) == {"face"}
    assert (detector.min_neighbors, privacy.strength, privacy.padding) == (6, 0.5, 0.1)
    assert privacy_filter(PrivacyConfig(enabled=False)) is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"min_neighbors": -2}, "privacy: min_neighbors"),
        ({"scale_factor": 0.9}, "privacy: scale_factor"),
        ({"min_size": 0}, "privacy: min_size"),
        ({"faces": False, "plates": False}, "privacy: HaarDetector needs"),
        ({"blur_strength": 0.0}, "privacy: blur_strength"),
        ({"padding": -0.1}, "privacy: padding"),
        ({"enabled": False, "min_size": -5}, "privacy: min_size"),  # checked even when off
    ],
)
def test_bad_privacy_values_fail_naming_the_block(values, message):
    with pytest.raises(RunConfigError, match=message):
        privacy_filter(PrivacyConfig(**values))


def test_run_config_privacy_defaults_on_and_bad_values_fail_before_work(tmp_path):
    def settings(*overrides):
        cfg = hydra_app.compose_config(
            "run", [f"runs_root={tmp_path}", "model=tiny", "eval.enabled=false", *overrides]
        )
        return build_settings(
            hydra_app.to_dataclass(cfg), hydra_app.to_container(cfg), "", tmp_path / "r"
        )[0]

    default = settings()
    (detector,) = default.privacy.detectors
    assert set(detector.cascades) == {"face", "plate"} and detector.min_neighbors == 8
    assert settings("privacy.enabled=false").privacy is None
    with pytest.raises(RunConfigError, match="privacy: min_neighbors"):
        settings("privacy.min_neighbors=-1")
    with pytest.raises(hydra_app.ConfigError, match="min_size"):
        settings("privacy.min_size=big")
    assert not (tmp_path / "r" / "shards").exists()  # nothing written by a failed check
