"""Granularity and parent links of human work: the web tool's accept request, the store (a
parent must exist; delete unlinks, replace relinks), pre-filled levels and old documents."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine import masks as mask_ops
from engine.annotators.human_store import HumanAnnotationStore, ImageWork
from engine.annotators.queue import RoundQueue, write_queue
from engine.data.sources import SourceEntry
from engine.model import build_sam
from engine.sa1b import MaskRecord, Provenance
from engine.webtool.demo_queue import write_demo_queue

PREFIX = "stage1-r00"


def _record(y0: int, y1: int, granularity: str = "whole", parent: int | None = None):
    mask = np.zeros((8, 8), dtype=bool)
    mask[y0:y1, 1:7] = True
    rle = mask_ops.mask_to_rle(mask)
    prov = Provenance(source="annotator", granularity=granularity, parent_id=parent)
    box = [float(v) for v in mask_ops.mask_bbox_xywh(mask)]
    return MaskRecord(0, rle, box, int(mask.sum()), 1.0, 1.0, [], [0.0, 0.0, 8.0, 8.0], prov)


@pytest.fixture
def store(tmp_path) -> HumanAnnotationStore:
    entries = [SourceEntry(key="a", path="synthetic:0", index=0)]
    whole = {**_record(0, 8).to_json(), "granularity": "part"}  # a pre-fill the model calls a part
    queue = RoundQueue(
        stage="semi_automatic", round=1, prefix=PREFIX, preset="tiny", checkpoint=None,
        source={"kind": "synthetic", "count": 1}, entries=entries, target_images=1,
        prefill={"a": [whole]},
    )  # fmt: skip
    write_queue(tmp_path, queue)
    return HumanAnnotationStore(tmp_path, PREFIX)


def _links(work: ImageWork) -> list[tuple[int, str, int | None]]:
    return [
        (m["id"], m["provenance"]["granularity"], m["provenance"]["parent_id"]) for m in work.masks
    ]


def test_prefilled_masks_keep_the_generator_level(store):
    work = store.work("a")
    assert _links(work) == [(0, "part", None)]
    assert "granularity" not in work.masks[0]  # moved into the provenance
    assert work.records()[0].provenance.granularity == "part"


def test_parent_links_follow_edits(store):
    store.accept("a", _record(1, 5, "part", parent=0), "ann")
    work = store.accept("a", _record(2, 3, "subpart", parent=1), "ann")
    assert _links(work) == [(0, "part", None), (1, "part", 0), (2, "subpart", 1)]
    with pytest.raises(ValueError, match="parent_id 9 is not another saved mask"):
        store.accept("a", _record(2, 4, "part", parent=9), "ann")
    with pytest.raises(ValueError, match="parent_id 1 is not another saved mask"):
        store.accept("a", _record(2, 4, "part", parent=1), "ann", replaces=1)
    work = store.accept("a", _record(1, 6, "part", parent=0), "ann", replaces=1)  # edit the part
    assert _links(work) == [(0, "part", None), (2, "subpart", 3), (3, "part", 0)]
    work = store.delete("a", 0, "ann")  # the whole goes: its part loses its parent
    assert _links(work) == [(2, "subpart", 3), (3, "part", None)]
    work = store.finish("a", "ann")
    assert [r.provenance.parent_id for r in store.load("a")] == [3, None]


def test_documents_written_before_the_fields_load_as_whole(store):
    doc = {**_record(0, 4).to_json(), "provenance": {"stage": "s", "source": "annotator"}}
    store.folder.mkdir(parents=True)
    store.path("a").write_text(json.dumps({"key": "a", "masks": [doc]}))
    (record,) = store.load("a")
    assert (record.provenance.granularity, record.provenance.parent_id) == ("whole", None)


def test_web_tool_accept_takes_a_level_and_a_parent(tmp_path):
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    from fastapi.testclient import TestClient

    from engine.webtool import create_app

    root = tmp_path / "run"
    write_demo_queue(root, count=1, height=48, width=64, prefill=1)
    torch.manual_seed(0)
    with TestClient(create_app(root, model=build_sam("tiny"))) as client:
        key = client.post("/api/claim", json={"annotator": "ann"}).json()["key"]
        mask = np.zeros((48, 64), dtype=bool)
        mask[10:20, 10:20] = True
        body = {"annotator": "ann", "mask": mask_ops.mask_to_rle(mask)}
        plain = client.post(f"/api/images/{key}/accept", json=body)
        assert plain.status_code == 200, plain.text
        assert plain.json()["masks"][-1]["provenance"]["granularity"] == "whole"
        part = client.post(
            f"/api/images/{key}/accept", json={**body, "granularity": "part", "parent_id": 0}
        )
        assert part.status_code == 200, part.text
        saved = part.json()["masks"][-1]["provenance"]
        assert (saved["granularity"], saved["parent_id"]) == ("part", 0)
        for bad in ({"granularity": "object"}, {"parent_id": -1}, {"parent_id": 42}):
            response = client.post(f"/api/images/{key}/accept", json={**body, **bad})
            assert response.status_code == 422, (bad, response.text)
