"""The audit end to end: audit.json, audit.html, images.parquet, CLI, compare, sample, MLflow."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from audit_support import disk, image_record, noise_image, rect, references, write_shards
from scipy import ndimage

from engine.audit import run_audit
from engine.audit.cli import main as audit_main
from engine.audit.compare import compare_summaries, load_summary
from engine.audit.plots import close_figures, make_figures
from engine.audit.sample import export_sample, sample_keys
from engine.audit.select import random_priority
from engine.dataset.writer import encode_jpeg, encode_record
from engine.masks import mask_to_rle, rle_to_mask
from engine.records import SOURCE_MODEL, SOURCE_SIMULATED
from engine.sa1b import Provenance

H, W = 40, 56


def _masks(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(2 + seed % 3):
        y0, x0 = int(rng.integers(0, H - 12)), int(rng.integers(0, W - 12))
        out.append(rect(H, W, y0, x0, y0 + int(rng.integers(6, 12)), x0 + int(rng.integers(6, 12))))
    out.append(disk(H, W, 20, 28, 5 + seed % 4))
    return out


def _items(seeds, source):
    items = []
    for s in seeds:
        record = image_record(_masks(s), image_id=s, predicted_iou=0.8 + 0.02 * s)
        for ann in record.annotations:
            ann.provenance = Provenance(source=source, clicks=2, seconds=3.0)
        items.append((f"img{s:02d}", noise_image(H, W, s), record))
    return items


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Two stages in one run directory: stage1 (simulated) and stage3 (model), 3 shards."""
    root = tmp_path_factory.mktemp("audit-run")
    write_shards(root, _items(range(0, 4), SOURCE_SIMULATED), "stage1-r00", "stage1", 0)
    write_shards(root, _items(range(4, 6), SOURCE_MODEL), "stage3-r00", "stage3", 0)
    return root


@pytest.fixture(scope="module")
def reference(run_dir) -> dict:
    """References: the masks themselves, except img00's first mask eroded by 1 px and img05's
    last mask missing from the output (a reference nobody matched)."""
    refs = {}
    for s in range(6):
        masks = _masks(s)
        if s == 0:
            masks[0] = ndimage.binary_dilation(masks[0])  # output = reference eroded by 1 px
        if s == 5:
            masks.append(rect(H, W, 0, 0, 3, 3))
        refs[f"img{s:02d}"] = references(masks)
    return refs


@pytest.fixture(scope="module")
def audited(run_dir, reference, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("audit-out")
    return run_audit(run_dir, reference=reference, out_dir=out, gallery_size=2), out


def test_audit_json_numbers_and_groups(audited, reference):
    summary, out = audited
    on_disk = json.loads((out / "audit.json").read_text())
    assert on_disk["iou_above"] == summary["iou_above"]
    refs = sum(len(v) for v in reference.values())
    masks = refs - 1
    # img00's first mask: its IoU with the dilated reference is |mask| / |dilated|
    m0 = _masks(0)[0]
    iou0 = m0.sum() / ndimage.binary_dilation(m0).sum()
    assert on_disk["iou_above"]["0.90"] == pytest.approx((masks - (iou0 < 0.9)) / masks)
    assert on_disk["recall"]["0.50"] == pytest.approx((masks - (iou0 < 0.5)) / refs)
    assert on_disk["dataset"]["images"] == 6 and on_disk["dataset"]["masks"] == masks
    groups = on_disk["groups"]
    assert set(groups) == {"stage1/r00", "stage3/r00"}
    assert groups["stage1/r00"]["images"] == 4 and groups["stage1/r00"]["clicks_per_mask"] == 2
    assert set(on_disk["reference"]["by_group"]) == set(groups)
    assert set(on_disk["reference"]["by_source"]) == {"model", "simulated"}
    assert on_disk["read"] == {"samples": 6, "skipped": 0, "failed_shards": 0, "problems": []}
    assert [g["kind"] for g in on_disk["gallery"]] == ["best"] * 2 + ["worst"] * 2 + ["random"] * 2


def test_per_image_table(audited):
    summary, out = audited
    table = pq.read_table(out / "images.parquet").to_pylist()
    assert sorted(r["key"] for r in table) == [f"img{s:02d}" for s in range(6)]
    row = next(r for r in table if r["key"] == "img05")
    assert row["group"] == "stage3/r00" and row["references"] == row["masks"] + 1
    assert row["recall_0.90"] == pytest.approx(row["masks"] / row["references"])


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[dict] = []
        self.tags: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(attrs)
        self.links += [v for k, v in attrs.items() if k in ("href", "src") and v]


def test_html_is_self_contained_and_holds_every_plot(audited):
    summary, out = audited
    page = _Page()
    page.feed((out / "audit.html").read_text(encoding="utf-8"))
    page.close()
    figures = make_figures(summary)
    names = set(figures)
    close_figures(figures)
    assert {"masks_per_image", "centre_heatmap", "concavity", "calibration", "matched_iou"} <= names
    alts = [img["alt"] for img in page.images]
    assert names <= set(alts)
    assert len(page.images) == len(names) + len(summary["gallery"])
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(img["src"].split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(link.startswith("data:") for link in page.links)  # nothing from the network
    assert not page.tags & {"script", "link", "iframe"}


def test_cli_defaults_to_run_audit_dir_and_dispatch(run_dir, tmp_path, capsys):
    from stages.cli import main as sa_engine

    assert (
        sa_engine(["audit", str(run_dir / "shards" / "stage3-r00-000000.tar"), "--gallery", "0"])
        == 0
    )
    assert (run_dir / "audit" / "audit.json").is_file()  # beside the run, not in the cwd
    assert "images 2" in capsys.readouterr().out
    assert audit_main([str(tmp_path / "nothing-here")]) == 2
    assert "nothing-here" in capsys.readouterr().err


def test_compare_two_audits(audited, run_dir, tmp_path, capsys):
    summary, out = audited
    other = run_audit(run_dir / "shards" / "stage1-r00-000000.tar", out_dir=tmp_path / "b")
    table = compare_summaries(summary, other)
    rows = {r["name"]: r for section in table.values() for r in section}
    assert rows["images"]["a"] == 6 and rows["images"]["b"] == 3 and rows["images"]["delta"] == -3
    assert rows["iou_above_0.90"]["b"] is None and rows["iou_above_0.90"]["delta"] is None
    assert "group/stage1/r00/masks_per_image" in rows
    assert audit_main(["--compare", str(out), str(tmp_path / "b"), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "masks_per_image" in printed and "-3" in printed
    assert json.loads((tmp_path / "compare.json").read_text())["tables"] == json.loads(
        json.dumps(table)
    )
    assert load_summary(out)["dataset"] == summary["dataset"]
    with pytest.raises(ValueError, match="no audit.json"):
        load_summary(tmp_path / "missing")


def test_export_sample_is_reproducible_and_reimports(run_dir, tmp_path):
    keys = [f"img{s:02d}" for s in range(6)]
    expected = sorted(sorted(keys, key=lambda k: (random_priority(3, k), k))[:3])
    shards = sorted((run_dir / "shards").glob("*.tar"))
    first = export_sample([run_dir], 3, seed=3, out_dir=tmp_path / "a")
    again = export_sample(shards[::-1], 3, seed=3, out_dir=tmp_path / "b")  # other order
    assert first.read_bytes() == again.read_bytes()
    assert (tmp_path / "a" / "keys.txt").read_text().split() == expected
    assert sample_keys(run_dir, 3, seed=3) == expected
    for key in expected:
        assert (tmp_path / "a" / "images" / f"{key}.jpg").is_file()
        assert (tmp_path / "a" / "overlays" / f"{key}.png").is_file()
    assert len(list((tmp_path / "a" / "images").iterdir())) == 3  # displaced images deleted
    document = json.loads(first.read_text())
    assert [i["file_name"] for i in document["images"]] == [f"{k}.jpg" for k in expected]

    # untouched re-import: perfect agreement on the sampled images only
    summary = run_audit(run_dir, reference=first, out_dir=tmp_path / "audit1", gallery_size=0)
    assert summary["reference_info"]["images_with_reference"] == 3
    assert summary["iou_above"]["0.90"] == 1.0
    assert summary["reference"]["recall_by_level"].keys() == {"unknown"}

    # a reviewer "corrects" one mask by growing it 2 px: that pair's IoU drops accordingly
    ann = document["annotations"][0]
    original = rle_to_mask(ann["segmentation"])
    mask = ndimage.binary_dilation(original, iterations=2)
    ann["segmentation"] = mask_to_rle(mask)
    corrected = tmp_path / "corrected.json"
    corrected.write_text(json.dumps(document))
    summary = run_audit(run_dir, reference=corrected, out_dir=tmp_path / "audit2", gallery_size=0)
    n = summary["reference"]["matched"]
    iou = original.sum() / mask.sum()
    assert summary["reference"]["mean_matched_iou"] == pytest.approx((n - 1 + iou) / n)


def _coco_file(references: dict, path: Path) -> Path:
    """The reference mapping written as a COCO JSON (images named ``<key>.jpg``)."""
    images, annotations = [], []
    for image_id, (key, refs) in enumerate(sorted(references.items()), start=1):
        images.append({"id": image_id, "file_name": f"{key}.jpg", "height": H, "width": W})
        for ref in refs:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": ref.rle,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 1, "name": "object"}]
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


def test_cli_with_coco_reference_logs_to_mlflow(run_dir, reference, audited, tmp_path):
    """The CLI route (COCO file reference, --tracking-uri/--experiment) gives the same numbers
    as the mapping route, and MLflow holds them, the plots and the files."""
    from mlflow import MlflowClient

    expected, _ = audited
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    coco = _coco_file(reference, tmp_path / "reference.json")
    argv = [
        str(run_dir),
        "--reference",
        str(coco),
        "--out",
        str(tmp_path / "out"),
        "--tracking-uri",
        uri,
        "--experiment",
        "audit-test",
        "--gallery",
        "1",
    ]
    assert audit_main(argv) == 0
    summary = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert summary["reference"]["by_group"] == expected["reference"]["by_group"]
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.run_name == "audit"
    assert run.data.metrics["iou_above_0.90"] == pytest.approx(summary["iou_above"]["0.90"])
    assert run.data.metrics["images"] == 6
    assert run.data.metrics["group/stage3/r00/recall_0.90"] == pytest.approx(
        summary["reference"]["by_group"]["stage3/r00"]["recall"]["0.90"]
    )
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"audit.json", "audit.html", "images.parquet", "audit_images.json", "plots"} <= top
    assert (tmp_path / "mlartifacts").is_dir()  # beside the database, not in the cwd
    plots = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"calibration.png", "masks_per_image.png", "recall_by_size.png"} <= plots


def test_two_worker_processes_give_the_same_numbers(run_dir, reference, audited, tmp_path):
    summary, _ = audited
    parallel = run_audit(run_dir, reference=reference, out_dir=tmp_path, gallery_size=2, workers=2)
    for key in ("dataset", "groups", "reference", "gallery"):
        assert parallel[key] == summary[key]


def test_sa1b_shards_as_reference(run_dir, tmp_path):
    """A directory of SA-1B shards (here the run's own) is a reference through the source."""
    summary = run_audit(
        run_dir / "shards" / "stage3-r00-000000.tar",
        reference=run_dir / "shards",
        out_dir=tmp_path,
        gallery_size=0,
    )
    assert summary["reference_info"]["images_with_reference"] == 2
    assert summary["iou_above"] == {"0.50": 1.0, "0.75": 1.0, "0.90": 1.0}
    assert summary["recall"]["0.90"] == 1.0
    assert set(summary["reference"]["recall_by_level"]) == {"unknown"}


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_bad_samples_are_skipped_and_counted_or_raise(tmp_path):
    good = image_record([rect(H, W, 0, 0, 5, 5)])
    wrong_size = image_record([rect(H, W, 0, 0, 5, 5)])
    wrong_size.width = W + 1  # masks no longer fit the image
    bad_runs = image_record([rect(H, W, 0, 0, 5, 5)])
    bad_runs.annotations[0].segmentation["counts"] = mask_to_rle(rect(4, 4, 0, 0, 2, 2))["counts"]
    jpeg = encode_jpeg(noise_image(H, W, 0), 90)
    jpeg_wide = encode_jpeg(noise_image(H, W + 1, 0), 90)
    shard = tmp_path / "bad-000000.tar"
    with tarfile.open(shard, "w") as tar:
        _tar_member(tar, "a.jpg", jpeg)
        _tar_member(tar, "a.json", encode_record(good))
        _tar_member(tar, "b.jpg", jpeg)
        _tar_member(tar, "b.json", b"{not json")
        _tar_member(tar, "c.jpg", jpeg_wide)
        _tar_member(tar, "c.json", encode_record(wrong_size))
        _tar_member(tar, "d.jpg", jpeg)
        _tar_member(tar, "d.json", encode_record(bad_runs))
        _tar_member(tar, "e.jpg", b"not a jpeg")  # the record is fine: audited, not drawn
        _tar_member(tar, "e.json", encode_record(good))
    summary = run_audit(shard, out_dir=tmp_path / "out", gallery_size=2)
    assert summary["read"]["samples"] == 2 and summary["read"]["skipped"] == 3
    problems = summary["read"]["problems"]
    assert any(": e: gallery image does not decode" in p for p in problems)
    assert {g["key"] for g in summary["gallery"]} == {"a"}
    assert any(": b: " in p for p in problems)  # not JSON
    assert any(": c: " in p and "RLE size" in p for p in problems)  # masks of another size
    assert any(": d: " in p for p in problems)  # runs that do not cover the image
    with pytest.raises(Exception, match="json"):
        run_audit(shard, out_dir=tmp_path / "out2", on_error="raise")


def test_coco_permissive_tar_against_its_annotations(shared_data, tmp_path):
    """SA-1B shards made from the real COCO sample (one mask per image left out), audited
    against the COCO JSON directly and through the COCO source."""
    from audit_support import coco_items

    from engine.audit.reference import SourceReference
    from engine.data.sources import open_source

    coco = shared_data / "coco-permissive"
    items = coco_items(coco / "instances_val.json", coco / "images")
    kept = 0
    for _, _, record in items:
        record.annotations = record.annotations[1:]
        kept += len(record.annotations)
    refs = _non_crowd_references(coco / "instances_val.json")
    write_shards(tmp_path / "run", items, maxcount=8)
    source = open_source(
        "coco", images_dir=str(coco / "images"), annotations=str(coco / "instances_val.json")
    )
    for reference in (coco / "instances_val.json", SourceReference(source)):
        summary = run_audit(
            tmp_path / "run", reference=reference, out_dir=tmp_path / "out", gallery_size=1
        )
        assert summary["reference_info"]["images_with_reference"] == len(items)
        assert summary["iou_above"] == {"0.50": 1.0, "0.75": 1.0, "0.90": 1.0}
        assert summary["recall"]["0.90"] == pytest.approx(kept / refs)
        assert set(summary["reference"]["recall_by_level"]) == {"whole"}
        assert summary["reference"]["precision"]["0.90"] == 1.0


def _non_crowd_references(path: Path) -> int:
    data = json.loads(path.read_text())
    return sum(1 for a in data["annotations"] if not a.get("iscrowd", 0))
