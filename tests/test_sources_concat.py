"""ConcatSource: parts read in order, cut to their limits, keys unique, items from their part."""

import numpy as np
import pytest

from engine.data.coco import CocoSource
from engine.data.concat import ConcatSource, FirstEntries
from engine.data.sources import iter_items
from engine.data.synthetic import SyntheticSource


def test_parts_in_order_with_limits_and_prefixed_keys():
    public = SyntheticSource.from_split("public", 5, height=64, width=96)
    heldout = SyntheticSource.from_split("heldout", 3, height=64, width=96)
    mixed = ConcatSource([heldout, FirstEntries(public, 2)])
    keys = [e.key for e in mixed.entries()]
    expected = [f"p0-{e.key}" for e in heldout.entries()]
    expected += [f"p1-{e.key}" for e in list(public.entries())[:2]]
    assert keys == expected
    assert len(set(keys)) == len(keys)
    items = list(iter_items(mixed))
    direct = list(iter_items(heldout)) + list(iter_items(public, limit=2))
    for got, want in zip(items, direct, strict=True):
        assert got.key.endswith(want.key) and got.key.startswith("p")
        np.testing.assert_array_equal(got.image, want.image)
        assert [r.rle for r in got.references] == [r.rle for r in want.references]


def test_index_based_sources_load_their_own_entries(tmp_path):
    from PIL import Image

    images = []
    for n, color in enumerate([(255, 0, 0), (0, 0, 255)]):
        name = f"im{n}.png"
        Image.new("RGB", (16, 12), color).save(tmp_path / name)
        images.append({"id": n + 1, "file_name": name, "height": 12, "width": 16})
    import json

    anns = tmp_path / "a.json"
    anns.write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    coco = CocoSource(str(tmp_path), str(anns))
    mixed = ConcatSource([SyntheticSource.from_split("public", 1, height=32, width=32), coco])
    items = list(iter_items(mixed))
    assert [tuple(i.image[0, 0]) for i in items[1:]] == [(255, 0, 0), (0, 0, 255)]


def test_bad_parts_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        ConcatSource([])
    with pytest.raises(ValueError, match="limit"):
        FirstEntries(SyntheticSource.from_split("public", 1), -1)


def test_first_entries_keeps_keys_and_loads_through():
    source = SyntheticSource.from_split("public", 4, height=32, width=32)
    first = FirstEntries(source, 2)
    assert [e.key for e in first.entries()] == [e.key for e in list(source.entries())[:2]]
    assert [i.key for i in iter_items(first)] == [i.key for i in iter_items(source, limit=2)]


def test_data_config_limit_cuts_every_kind_of_source():
    from stages.config import DataConfig

    source = DataConfig(kind="synthetic", split="public", count=5, limit=3).open()
    assert len(list(source.entries())) == 3
    with pytest.raises(ValueError, match="limit"):
        DataConfig(kind="synthetic", count=5, limit=0).open()
