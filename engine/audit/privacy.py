"""What the privacy filter did, from the image index of the audited shards.

The writer stores the number of regions (faces, licence plates) blurred in each image in the
``blurred_boxes`` column of the image index; null means no filter ran on that image (a run
with ``privacy.enabled=false``, an index rebuilt from a shard, or shards without an index).
"""

from __future__ import annotations

import pyarrow.parquet as pq

from engine.audit.inputs import ShardInput
from engine.dataset.index import index_file_paths

COLUMN = "blurred_boxes"


def privacy_summary(shards: list[ShardInput]) -> dict:
    """``{"images_filtered", "images_not_filtered", "images_blurred", "blurred_boxes"}``.

    ``images_filtered``: images the filter ran on; ``images_blurred``: those with at least
    one blurred box; ``blurred_boxes``: boxes blurred in all; ``images_not_filtered``: indexed
    images with no count. Shards without an index file add nothing.
    """
    counts: list[int | None] = []
    for shard in shards:
        if shard.index_dir is None:
            continue
        images_path, _ = index_file_paths(shard.index_dir, shard.path.name)
        if not images_path.is_file():
            continue
        if COLUMN not in pq.read_schema(images_path).names:  # index written before the column
            counts.extend([None] * pq.read_metadata(images_path).num_rows)
            continue
        counts.extend(pq.read_table(images_path, columns=[COLUMN]).column(COLUMN).to_pylist())
    known = [n for n in counts if n is not None]
    return {
        "images_filtered": len(known),
        "images_not_filtered": len(counts) - len(known),
        "images_blurred": sum(1 for n in known if n > 0),
        "blurred_boxes": sum(known),
    }
