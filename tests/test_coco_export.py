"""COCO export of a run (engine.dataset.coco_export, ``sa-engine export-coco``) and its round
trip: export, edit the file as a labelling tool would, re-import with ``stages.annotator=coco``.

The COCO side is read by pycocotools' own ``COCO`` API (``annToMask`` decodes RLE and polygons).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from dataset_support import make_image, make_record
from PIL import Image
from pycocotools.coco import COCO
from reliability_support import output, run_args, sa_engine
from scipy import ndimage

from engine.annotators.coco_import import CocoImportTask, load_corrected_masks
from engine.dataset.coco_export import export_coco, image_file_bytes, safe_relative_name
from engine.dataset.index import read_image_index, read_mask_index
from engine.dataset.reader import ShardReader, iter_raw_samples
from engine.dataset.writer import ShardWriter
from engine.masks import mask_bbox_xywh, mask_to_rle, rle_to_mask
from engine.records import ImageItem
from engine.sa1b import MaskRecord
from stages import export_coco_cmd
from stages.cli import main as sa_engine_main

# prefix, stage, round, [(key, seed, file_name)]
LAYOUT = [
    ("stage1-r00", "assisted_manual", 0, [("k0", 1, "a.jpg"), ("k1", 2, "photos/b.jpg")]),
    ("stage2-r01", "semi_automatic", 1, [("k2", 3, "c.png"), ("k3", 5, "d.jpg")]),
    ("stage3-r00", "fully_automatic", 0, [("k4", 6, "e.jpg")]),
]


def _ring_mask(h: int, w: int) -> MaskRecord:
    """A square with a hole (polygons cannot carry the hole)."""
    mask = np.zeros((h, w), dtype=bool)
    mask[4:20, 6:26] = True
    mask[8:14, 12:18] = False
    rle = mask_to_rle(mask)
    bbox = [float(v) for v in mask_bbox_xywh(mask)]
    return MaskRecord(9, rle, bbox, int(mask.sum()), 0.9, 0.8, [], [0.0, 0.0, float(w), 0.0])


def write_run(root: Path, layout=LAYOUT) -> Path:
    """A run directory (``shards/`` + ``index/``) written by the real ShardWriter."""
    for prefix, stage, round_, samples in layout:
        with ShardWriter(root / "shards", root / "index", prefix, stage=stage, round=round_) as w:
            for key, seed, file_name in samples:
                record = make_record(seed)
                record.file_name = file_name
                if key == "k3":
                    record.annotations.append(_ring_mask(record.height, record.width))
                w.write(key, make_image(seed), record)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("coco-run"))


def shard_masks(run: Path) -> dict[str, dict[int, np.ndarray]]:
    """file name → {SA-1B annotation id: mask} read back from the shards."""
    out = {}
    for _, _, record in ShardReader(run / "shards", decode_images=False):
        out[record.file_name] = {a.id: rle_to_mask(a.segmentation) for a in record.annotations}
    return out


@pytest.mark.parametrize("segmentation", ["rle", "polygon"])
def test_every_mask_decodes_with_pycocotools_to_the_shard_mask(run_dir, tmp_path, segmentation):
    path = tmp_path / "run.json"
    summary = export_coco(run_dir, path, segmentation=segmentation)
    coco = COCO(str(path))
    expected = shard_masks(run_dir)
    assert summary.images == 5 and summary.annotations == sum(len(m) for m in expected.values())
    assert sorted(img["file_name"] for img in coco.dataset["images"]) == sorted(expected)
    assert coco.loadCats(coco.getCatIds()) == [
        {"id": 1, "name": "object", "supercategory": "object"}
    ]
    for ann in coco.dataset["annotations"]:
        image = coco.imgs[ann["image_id"]]
        want = expected[image["file_name"]][ann["sa_engine_annotation_id"]]
        got = coco.annToMask(ann).astype(bool)
        assert got.shape == (image["height"], image["width"])
        if segmentation == "rle":
            assert isinstance(ann["segmentation"]["counts"], str)
            assert np.array_equal(got, want)
        elif ann["sa_engine_annotation_id"] == 9:  # the ring: its hole comes back filled
            assert not (want & ~got).any() and (got & ~want).sum() == 36
        else:
            assert np.array_equal(got, want)
        assert ann["area"] == int(want.sum()) and ann["iscrowd"] == 0
        assert ann["bbox"] == [float(v) for v in mask_bbox_xywh(want)]
    assert summary.holes_filled == (1 if segmentation == "polygon" else 0)


def test_extra_fields_carry_the_index_provenance(run_dir, tmp_path):
    document = json.loads(export_coco(run_dir, tmp_path / "run.json").path.read_text())
    masks = read_mask_index(run_dir / "index").to_pylist()
    rows = {(r["key"], r["annotation_id"]): r for r in masks}
    keys = {img["id"]: img["sa_engine_key"] for img in document["images"]}
    assert len(document["annotations"]) == len(rows)
    for ann in document["annotations"]:
        row = rows[(keys[ann["image_id"]], ann["sa_engine_annotation_id"])]
        assert (ann["stage"], ann["round"], ann["source"]) == (
            row["stage"],
            row["round"],
            row["source"],
        )
        assert ann["predicted_iou"] == pytest.approx(row["predicted_iou"])
        assert ann["stability_score"] == pytest.approx(row["stability_score"])
    assert [a["id"] for a in document["annotations"]] == list(range(1, len(rows) + 1))
    images = {r["key"]: r for r in read_image_index(run_dir / "index").to_pylist()}
    for image in document["images"]:
        assert image["sa_engine_image_id"] == images[image["sa_engine_key"]]["image_id"]


@pytest.mark.parametrize(
    "stage, round_, keys",
    [
        ("assisted_manual", None, {"k0", "k1"}),
        ("semi_automatic", 1, {"k2", "k3"}),
        (None, 0, {"k0", "k1", "k4"}),
    ],
)
def test_stage_and_round_select_images(run_dir, tmp_path, stage, round_, keys):
    path = export_coco(run_dir, tmp_path / "part.json", stage=stage, round=round_).path
    document = json.loads(path.read_text())
    assert {img["sa_engine_key"] for img in document["images"]} == keys
    image_ids = {img["id"] for img in document["images"]}
    assert all(ann["image_id"] in image_ids for ann in document["annotations"])
    assert all(stage in (None, ann["stage"]) for ann in document["annotations"])


def test_images_are_written_under_their_coco_file_names(run_dir, tmp_path):
    images_dir = tmp_path / "images"
    document = json.loads(export_coco(run_dir, tmp_path / "a.json", images_dir=images_dir)
                          .path.read_text())  # fmt: skip
    jpegs = {}
    for shard in sorted((run_dir / "shards").glob("*.tar")):
        for raw in iter_raw_samples(shard):
            jpegs[raw.key] = raw.files["jpg"]
    written = sorted(str(p.relative_to(images_dir)) for p in images_dir.rglob("*") if p.is_file())
    assert written == sorted(img["file_name"] for img in document["images"])
    for image in document["images"]:
        data = (images_dir / image["file_name"]).read_bytes()
        jpeg = jpegs[image["sa_engine_key"]]
        if image["file_name"].endswith(".jpg"):
            assert data == jpeg
        else:  # c.png: a real PNG holding the shard's decoded pixels
            assert data.startswith(b"\x89PNG")
            png, stored = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(jpeg))
            assert np.array_equal(np.asarray(png), np.asarray(stored.convert("RGB")))
        assert Image.open(io.BytesIO(data)).size == (image["width"], image["height"])


def test_image_file_bytes_keeps_unknown_suffixes_as_jpeg():
    jpeg = io.BytesIO()
    Image.fromarray(make_image(0)).save(jpeg, format="JPEG")
    assert image_file_bytes(jpeg.getvalue(), "x.JPEG") == jpeg.getvalue()
    assert image_file_bytes(jpeg.getvalue(), "x.unknown-suffix") == jpeg.getvalue()


@pytest.mark.parametrize("name", ["../x.jpg", "/abs/x.jpg", "a//x.jpg", "a\\x.jpg", ""])
def test_file_names_that_would_leave_the_folder_are_refused(name):
    with pytest.raises(ValueError, match="image file name"):
        safe_relative_name(name)


def test_two_images_with_one_base_name_cannot_be_reimported(tmp_path):
    layout = [("stage1-r00", "assisted_manual", 0, [("k0", 1, "a/x.jpg"), ("k1", 2, "b/x.jpg")])]
    run = write_run(tmp_path / "run", layout)
    with pytest.raises(ValueError, match="share the file name 'x.jpg'"):
        export_coco(run, tmp_path / "out.json")


def test_nothing_selected_or_no_run_is_an_error(run_dir, tmp_path):
    with pytest.raises(ValueError, match="no image"):
        export_coco(run_dir, tmp_path / "x.json", stage="semi_automatic", round=0)
    with pytest.raises(ValueError, match="not a run directory"):
        export_coco(tmp_path, tmp_path / "x.json")
    with pytest.raises(ValueError, match="segmentation"):
        export_coco(run_dir, tmp_path / "x.json", segmentation="mask")
    assert not (tmp_path / "x.json").exists()


def test_export_reimports_through_the_coco_annotator(run_dir, tmp_path):
    path = export_coco(run_dir, tmp_path / "run.json", segmentation="polygon").path
    corrected = load_corrected_masks(path)
    for key, _, record in ShardReader(run_dir / "shards", decode_images=False):
        item = ImageItem(
            key, np.zeros((record.height, record.width, 3), np.uint8), record.file_name
        )
        back = CocoImportTask(corrected, stage="semi_automatic", round=3)(None, item)
        masks = [rle_to_mask(a.segmentation) for a in back.annotations]
        # polygons: the ring (id 9) comes back with its hole filled, every other mask as is
        originals = [
            ndimage.binary_fill_holes(m) if a.id == 9 else m
            for a, m in ((a, rle_to_mask(a.segmentation)) for a in record.annotations)
        ]
        assert len(masks) == len(originals)
        assert all(np.array_equal(a, b) for a, b in zip(masks, originals))
        assert all(a.provenance.source == "annotator" for a in back.annotations)


def test_cli_exports_and_reports_errors(run_dir, tmp_path, capsys):
    out = tmp_path / "cli.json"
    argv = [str(run_dir), "--out", str(out), "--stage", "2", "--round", "1", "--format", "polygon"]
    assert export_coco_cmd.main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 images" in printed and "1 masks had holes" in printed
    assert {img["file_name"] for img in json.loads(out.read_text())["images"]} == {"c.png", "d.jpg"}
    assert (
        export_coco_cmd.main([str(run_dir), "--out", str(out), "--stage", "1", "--round", "1"]) == 2
    )
    assert "no image" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_coco_cmd.main([str(run_dir), "--out", str(out), "--stage", "4"])


# -- the whole round trip: sa-engine run → export-coco → edit → sa-engine run annotator=coco --


def _polygon_rectangle(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    """A polygon a labelling tool would write for pixels x0..x1-1, y0..y1-1 (pixel corners)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def test_run_export_edit_reimport_finds_the_edits(tmp_path):
    first = sa_engine(*run_args(tmp_path, "first"))
    assert first.returncode == 0, output(first)
    exported = tmp_path / "first.json"
    argv = ["export-coco", str(tmp_path / "first"), "--out", str(exported)]
    assert sa_engine_main([*argv, "--images", str(tmp_path / "images")]) == 0
    document = json.loads(exported.read_text())
    assert len(document["images"]) == 3  # stage 1's image and stage 3's two

    # the corrections: one mask redrawn as a polygon, one mask deleted, one mask added
    by_name = {img["file_name"]: img["id"] for img in document["images"]}
    anns = document["annotations"]
    per_image = {i: [a for a in anns if a["image_id"] == i] for i in by_name.values()}
    crowded = max(per_image, key=lambda i: len(per_image[i]))
    assert len(per_image[crowded]) >= 2, "the first run gave no image two masks to edit"
    redrawn, deleted = per_image[crowded][0], per_image[crowded][-1]
    redrawn["segmentation"] = _polygon_rectangle(10, 20, 40, 30)
    anns.remove(deleted)
    other = next(i for i in by_name.values() if i != crowded)
    anns.append({"id": 999, "image_id": other, "category_id": 1, "iscrowd": 0,
                 "segmentation": _polygon_rectangle(60, 5, 70, 50)})  # fmt: skip
    corrected = tmp_path / "corrected.json"
    corrected.write_text(json.dumps(document))

    second = sa_engine(
        *run_args(tmp_path, "second"),
        "stages.annotator=coco",
        f"stages.annotations={corrected}",
        "stages.assisted_manual.images_per_round=3",  # every image is annotated from the file
        "stages.assisted_manual.retrain=false",
    )
    assert second.returncode == 0, output(second)
    got = {name: list(m.values()) for name, m in shard_masks(tmp_path / "second").items()}
    coco = COCO(str(corrected))
    want = {
        name: [coco.annToMask(a).astype(bool) for a in coco.imgToAnns[image_id]]
        for name, image_id in by_name.items()
    }
    assert sorted(got) == sorted(want)
    for name in want:
        assert len(got[name]) == len(want[name]), name
        assert all(np.array_equal(g, w) for g, w in zip(got[name], want[name])), name
    crowded_name = next(n for n, i in by_name.items() if i == crowded)
    other_name = next(n for n, i in by_name.items() if i == other)
    rectangle = np.zeros_like(got[crowded_name][0])
    rectangle[20:30, 10:40] = True
    assert np.array_equal(got[crowded_name][0], rectangle)
    assert len(got[crowded_name]) == len(per_image[crowded]) - 1
    added = np.zeros_like(rectangle)
    added[5:50, 60:70] = True
    assert np.array_equal(got[other_name][-1], added)
    rows = read_mask_index(tmp_path / "second" / "index").to_pylist()
    assert len(rows) == len(anns)
    assert {(r["source"], r["stage"]) for r in rows} == {("annotator", "assisted_manual")}
