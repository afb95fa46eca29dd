"""The round queue file and the on-disk store of human annotation work."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from engine import masks as mask_ops
from engine.annotators.human_store import ClaimError, HumanAnnotationStore, ImageWork
from engine.annotators.queue import (
    RoundQueue,
    entry_from_dict,
    list_queues,
    queue_path,
    read_queue,
    write_queue,
)
from engine.data.sources import SourceEntry
from engine.sa1b import ImageRecord, MaskRecord, Provenance, validate
from engine.webtool.demo_queue import write_demo_queue


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _queue(prefix: str = "stage1-r00", keys: tuple[str, ...] = ("a", "b", "c"), **kw) -> RoundQueue:
    entries = [SourceEntry(key=k, path=f"synthetic:{i}", index=i) for i, k in enumerate(keys)]
    args = dict(
        stage="assisted_manual",
        round=0,
        prefix=prefix,
        preset="tiny",
        checkpoint=None,
        source={"kind": "synthetic", "count": len(keys)},
        entries=entries,
        target_images=len(keys),
    )
    args.update(kw)
    return RoundQueue(**args)


def _record(mask: np.ndarray, seconds: float = 4.0, clicks: int = 2, fixed: bool = False):
    rle = mask_ops.mask_to_rle(mask)
    return MaskRecord(
        id=0,
        segmentation=rle,
        bbox=[float(v) for v in mask_ops.mask_bbox_xywh(mask)],
        area=int(mask.sum()),
        predicted_iou=0.9,
        stability_score=0.95,
        point_coords=[[1.0, 1.0]],
        crop_box=[0.0, 0.0, float(mask.shape[1]), float(mask.shape[0])],
        provenance=Provenance(
            stage="assisted_manual",
            round=0,
            source="annotator",
            clicks=clicks,
            seconds=seconds,
            model_iou=0.8,
            hand_fixed=fixed,
        ),
    )


def _square(x0: int, y0: int, side: int = 2, shape: tuple[int, int] = (4, 6)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


@pytest.fixture
def run_dir(tmp_path):
    write_queue(tmp_path, _queue())
    return tmp_path


# ---- queue ---------------------------------------------------------------------------------------


def test_queue_round_trip_keeps_entries_with_tuples(tmp_path):
    members = (("jpg", 512, 100), ("json", 1024, 40))
    queue = _queue(
        entries=[SourceEntry("k0", "shard.tar#k0", 0, image_id=7, members=members)],
        source={"kind": "webdataset", "urls": "x.tar"},
        prefill={"k0": [{"id": 0}]},
        target_images=1,
    )
    path = write_queue(tmp_path, queue)
    assert path == tmp_path / "queues" / "stage1-r00.json"
    back = read_queue(tmp_path, "stage1-r00")
    assert back == queue
    assert back.entries[0].members == members  # tuples again, not lists
    assert json.loads(path.read_text())["entries"][0] == asdict(queue.entries[0]) | {
        "members": [list(m) for m in members]
    }
    assert [p.name for p in (tmp_path / "queues").iterdir()] == ["stage1-r00.json"]  # no temp


def test_list_queues_sorted_and_ignores_other_files(tmp_path):
    for prefix in ("stage2-r00", "stage1-r01", "stage1-r00"):
        write_queue(tmp_path, _queue(prefix))
    (tmp_path / "queues" / "notes.txt").write_text("x")
    assert list_queues(tmp_path) == ["stage1-r00", "stage1-r01", "stage2-r00"]
    assert list_queues(tmp_path / "missing") == []


@pytest.mark.parametrize("prefix", ["../x", "a/b", "", ".hidden", "x" * 200])
def test_queue_refuses_unsafe_prefix(tmp_path, prefix):
    with pytest.raises(ValueError, match="prefix"):
        queue_path(tmp_path, prefix)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prefill": {"zzz": []}}, "prefill"),
        ({"target_images": 4}, "target_images"),
        ({"round": -1}, "round"),
        ({"source": {"path": "x"}}, "source"),
        ({"entries": [SourceEntry("a", "p", 0), SourceEntry("a", "q", 1)]}, "duplicate"),
        ({"entries": [SourceEntry("../a", "p", 0)], "target_images": 1}, "key"),
    ],
)
def test_queue_rejects_bad_fields(change, message):
    with pytest.raises(ValueError, match=message):
        _queue(**change)


def test_entry_from_dict_rejects_unsafe_key():
    with pytest.raises(ValueError, match="key"):
        entry_from_dict({"key": "a/../b", "path": "p", "index": 0})


# ---- store: files --------------------------------------------------------------------------------


def test_save_writes_the_documented_format_and_load_returns_records(run_dir):
    store = HumanAnnotationStore(run_dir, "stage1-r00")
    record = _record(_square(1, 1))
    store.save("a", [record], annotator="ann1", done=True, seconds=12.5)
    path = run_dir / "human" / "stage1-r00" / "a.json"
    doc = json.loads(path.read_text())
    assert set(doc) == {"key", "annotator", "done", "masks", "seconds"}
    assert (doc["key"], doc["annotator"], doc["done"], doc["seconds"]) == ("a", "ann1", True, 12.5)
    mask = doc["masks"][0]
    assert set(mask) == {
        "id",
        "segmentation",
        "bbox",
        "area",
        "predicted_iou",
        "stability_score",
        "point_coords",
        "crop_box",
        "provenance",
    }
    assert mask["bbox"] == [1.0, 1.0, 2.0, 2.0] and mask["area"] == 4
    assert mask["provenance"] == {
        "stage": "assisted_manual",
        "round": 0,
        "source": "annotator",
        "clicks": 2,
        "seconds": 4.0,
        "model_iou": 0.8,
        "hand_fixed": False,
        "level": None,
        "granularity": "whole",
        "parent_id": None,
    }
    (loaded,) = store.load("a")
    assert loaded == record
    image = ImageRecord(image_id=1, width=6, height=4, file_name="a.jpg", annotations=[loaded])
    assert validate(image) == []
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # the temp file is gone
    assert store.load("b") == []


def test_done_keys_follow_saved_documents(run_dir):
    store = HumanAnnotationStore(run_dir, "stage1-r00")
    assert store.done_keys() == set()
    store.save("a", [], annotator="x", done=True)
    store.save("b", [_record(_square(0, 0))], annotator="x", done=False)
    assert store.done_keys() == {"a"}
    # another process (a new store) sees the same
    assert HumanAnnotationStore(run_dir, "stage1-r00").done_keys() == {"a"}


def test_store_refuses_unsafe_keys(run_dir):
    store = HumanAnnotationStore(run_dir, "stage1-r00")
    with pytest.raises(ValueError, match="key"):
        store.save("../../etc", [], annotator="x")
    with pytest.raises(ValueError, match="key"):
        store.load("a/b")


# ---- store: edits and undo -----------------------------------------------------------------------


def test_accept_delete_undo_finish(run_dir):
    store = HumanAnnotationStore(run_dir, "stage1-r00")
    work = store.accept("a", _record(_square(0, 0)), "ann1", seconds=3.0)
    work = store.accept("a", _record(_square(3, 1)), "ann1", seconds=2.0)
    assert [m["id"] for m in work.masks] == [0, 1] and work.seconds == 5.0
    work = store.delete("a", 0, "ann1", seconds=1.0)
    assert [m["id"] for m in work.masks] == [1]
    assert [m["id"] for m in store.undo("a", "ann1").masks] == [0, 1]
    assert [m["id"] for m in store.undo("a", "ann1").masks] == [0]
    undone = store.undo("a", "ann1")
    assert undone.masks == [] and undone.seconds == 6.0  # time spent is never undone
    assert store.undo("a", "ann1") is None
    store.accept("a", _record(_square(2, 2)), "ann1")
    replaced = store.accept("a", _record(_square(4, 2)), "ann1", replaces=0)
    assert [m["id"] for m in replaced.masks] == [1]
    assert replaced.masks[0]["bbox"] == [4.0, 2.0, 2.0, 2.0]
    with pytest.raises(KeyError):
        store.delete("a", 7, "ann1")
    finished = store.finish("a", "ann1")
    assert finished.done and store.done_keys() == {"a"}
    with pytest.raises(ClaimError, match="finished"):
        store.accept("a", _record(_square(0, 0)), "ann1")


def test_edits_by_another_annotator_are_refused_while_claimed(run_dir):
    clock = FakeClock()
    store = HumanAnnotationStore(run_dir, "stage1-r00", claim_seconds=60, clock=clock)
    key = store.claim("ann1")
    with pytest.raises(ClaimError, match="held"):
        store.accept(key, _record(_square(0, 0)), "ann2")
    clock.now += 61  # the claim expired: ann2 may take the image over
    store.accept(key, _record(_square(0, 0)), "ann2")
    assert store.holder(key) == "ann2"


def test_work_of_an_untouched_image_is_its_prefill(tmp_path):
    prefill = {"b": [_record(_square(0, 0)).to_json(), _record(_square(3, 1)).to_json()]}
    write_queue(tmp_path, _queue(stage="semi_automatic", round=2, prefill=prefill))
    store = HumanAnnotationStore(tmp_path, "stage1-r00")
    work = store.work("b")
    assert not work.done and [m["id"] for m in work.masks] == [0, 1]
    assert {m["provenance"]["source"] for m in work.masks} == {"model"}
    assert work.masks[0]["provenance"]["stage"] == "semi_automatic"
    assert work.masks[0]["provenance"]["round"] == 2
    assert store.load("b") == []  # nothing saved until someone edits
    store.delete("b", 0, "ann1")
    store.finish("b", "ann1")
    (kept,) = store.load("b")
    assert kept.provenance.source == "model" and kept.provenance.clicks == 0
    assert kept.bbox == [3.0, 1.0, 2.0, 2.0]
    with pytest.raises(KeyError):
        store.work("not-in-queue")


# ---- store: claims -------------------------------------------------------------------------------


def test_claims_give_distinct_images_expire_and_release(run_dir):
    clock = FakeClock()
    store = HumanAnnotationStore(run_dir, "stage1-r00", claim_seconds=60, clock=clock)
    first, second, third = store.claim("ann1"), store.claim("ann2"), store.claim("ann3")
    assert [first, second, third] == ["a", "b", "c"]
    assert store.claim("ann4") is None  # everything is held
    assert store.claim("ann1") == "a"  # your own claim comes back
    store.release("b", "ann1")  # only the holder can release
    assert store.holder("b") == "ann2"
    store.release("b", "ann2")
    assert store.claim("ann4") == "b"
    clock.now += 61
    assert store.holder("a") is None
    assert store.claim("ann5") == "a"


def test_claim_prefers_images_the_annotator_started_and_stops_at_target(tmp_path):
    write_queue(tmp_path, _queue(target_images=2))
    clock = FakeClock()
    store = HumanAnnotationStore(tmp_path, "stage1-r00", clock=clock)
    store.save("c", [_record(_square(0, 0))], annotator="ann1")  # started before a restart
    store.save("a", [_record(_square(0, 0))], annotator="ann2")
    assert store.claim("ann1") == "c"
    assert store.claim("ann3") == "b"  # untouched images before others' started ones
    store.finish("c", "ann1")
    store.finish("b", "ann3")
    assert store.claim("ann1") is None  # target_images reached: the round is done


# ---- statistics ----------------------------------------------------------------------------------


def test_stats_are_the_papers_numbers_hand_checked(run_dir):
    store = HumanAnnotationStore(run_dir, "stage1-r00")
    assert store.stats()["seconds_per_mask_median"] is None
    store.accept("a", _record(_square(0, 0), seconds=3.0, clicks=1), "ann1")
    store.accept("a", _record(_square(2, 0), seconds=10.0, clicks=4, fixed=True), "ann1")
    store.finish("a", "ann1", seconds=20.0)
    store.accept("b", _record(_square(0, 2), seconds=5.0, clicks=1), "ann2")
    model_mask = _record(_square(4, 2))
    model_mask.provenance = Provenance(stage="s", source="model")
    store.save("c", [model_mask], annotator="ann2", done=True)
    stats = store.stats()
    assert stats["seconds_per_mask_median"] == 5.0  # of 3, 10, 5
    assert stats["clicks_per_mask_mean"] == 2.0  # (1 + 4 + 1) / 3
    assert stats["brush_share"] == pytest.approx(1 / 3)
    assert stats["masks_per_image_mean"] == 1.5  # done images a (2 masks) and c (1)
    assert (stats["images_done"], stats["images_started"]) == (2, 1)
    assert (stats["masks_annotator"], stats["masks_prefilled_kept"]) == (3, 1)
    assert stats["seconds_total"] == 20.0
    assert stats["annotators"] == ["ann1", "ann2"]


def test_image_work_from_json_checks_shape():
    with pytest.raises(ValueError, match="masks"):
        ImageWork.from_json({"key": "a", "masks": "no"})


def test_demo_queue_prefill_masks_are_valid_sa1b(tmp_path):
    queue = write_demo_queue(tmp_path, count=2, prefill=2, height=64, width=96)
    assert read_queue(tmp_path, "stage1-r00") == queue
    for key, anns in queue.prefill.items():
        assert 1 <= len(anns) <= 2
        record = {
            "image": {"image_id": 0, "width": 96, "height": 64, "file_name": f"{key}.jpg"},
            "annotations": anns,
        }
        assert validate(record) == []
