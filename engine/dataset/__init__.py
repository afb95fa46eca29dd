"""Dataset I/O: SA-1B WebDataset shards, their Parquet index, the reader, the quarantine log.

See ``docs/dataset.md`` for the layout, the index columns and the guarantees.
"""

from engine.dataset.atomic import DatasetWriteError
from engine.dataset.index import (
    IMAGE_SCHEMA,
    MASK_SCHEMA,
    read_image_index,
    read_mask_index,
)
from engine.dataset.quarantine import QuarantineLog, read_quarantine
from engine.dataset.reader import DatasetReadError, ReadStats, ShardReader, UnsafeMemberError
from engine.dataset.writer import ShardWriter, shard_name, written_keys

__all__ = [
    "IMAGE_SCHEMA",
    "MASK_SCHEMA",
    "DatasetReadError",
    "DatasetWriteError",
    "QuarantineLog",
    "ReadStats",
    "ShardReader",
    "ShardWriter",
    "UnsafeMemberError",
    "read_image_index",
    "read_mask_index",
    "read_quarantine",
    "shard_name",
    "written_keys",
]
