"""Turns a partition's fresh audit records into the compacted tier's Parquet: each `(event_id, item_index)` once,
sorted by `item_key` then `event_time`, in bounded row groups that never split one key, so every row group's
`item_key` min/max range is disjoint from the others' and a reader of one item's history opens one row group.

Pure: Arrow data in, Parquet bytes out; reading the fresh objects, writing the file and deleting the sources is the
caller's job (not yet wired: the scheduled function and the two-tier query are still to come, issue 8). pyarrow
is imported on use, so the ingest path never loads it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# Rows per row group, before the group is extended to the end of the key it has reached.
ROW_GROUP_ROWS = 64 * 1024
_SORT_KEYS = [
    ("item_key", "ascending"),
    ("event_time", "ascending"),
    ("event_id", "ascending"),
    ("item_index", "ascending"),
]


def deduplicated(records: pa.Table) -> pa.Table:
    """`records` with each `(event_id, item_index)` once (copies are identical; the first is kept)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if records.num_rows == 0:
        return records
    order = pc.sort_indices(records, sort_keys=[("event_id", "ascending"), ("item_index", "ascending")])
    ordered = records.take(order)
    event_ids = ordered.column("event_id").to_pylist()
    indexes = ordered.column("item_index").to_pylist()
    keep = [True] + [(event_ids[n], indexes[n]) != (event_ids[n - 1], indexes[n - 1]) for n in range(1, len(event_ids))]
    return ordered.filter(pa.array(keep))


def row_group_bounds(item_keys: list[str | None], target_rows: int) -> list[tuple[int, int]]:
    """`[start, end)` row ranges of about `target_rows` each over keys sorted ascending (nulls last), never
    splitting one key's run across two ranges."""
    bounds: list[tuple[int, int]] = []
    start = 0
    total = len(item_keys)
    while start < total:
        end = min(start + target_rows, total)
        while end < total and item_keys[end] == item_keys[end - 1]:
            end += 1
        bounds.append((start, end))
        start = end
    return bounds


def compact_to_parquet(records: pa.Table, target_rows: int = ROW_GROUP_ROWS) -> bytes:
    """The records as one Parquet file (zstd): de-duplicated, sorted, in key-disjoint row groups."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    unique = deduplicated(records)
    ordered = unique.take(pc.sort_indices(unique, sort_keys=_SORT_KEYS))
    sink = io.BytesIO()
    with pq.ParquetWriter(sink, ordered.schema, compression="zstd", write_statistics=True) as writer:
        for start, end in row_group_bounds(ordered.column("item_key").to_pylist(), target_rows):
            writer.write_table(ordered.slice(start, end - start), row_group_size=end - start)
    return sink.getvalue()
