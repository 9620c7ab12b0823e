"""The compacted tier's file, checked from the Parquet metadata itself: sorted, key-disjoint row groups, each
`(event_id, item_index)` once; and a key's history readable from one row group."""

from __future__ import annotations

import io
import itertools
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.compaction import compact_to_parquet, row_group_bounds
from chalicelib.duckdb_engine import RECORD_SCHEMA


def _records(rows: list[tuple[str, int, str, str | None]]) -> pa.Table:
    columns: dict[str, list[Any]] = {field.name: [None] * len(rows) for field in RECORD_SCHEMA}
    columns["event_id"] = [row[0] for row in rows]
    columns["item_index"] = [row[1] for row in rows]
    columns["event_time"] = [row[2] for row in rows]
    columns["item_key"] = [row[3] for row in rows]
    columns["event_name"] = ["PutItem"] * len(rows)
    columns["operation"] = ["Put"] * len(rows)
    columns["attribute_names"] = [[] for _ in rows]
    columns["success"] = [True] * len(rows)
    return pa.table(columns, schema=RECORD_SCHEMA)


rows = st.lists(
    st.tuples(
        st.sampled_from([f"e{n}" for n in range(30)]),
        st.integers(0, 3),
        st.sampled_from([f"2024-05-01T00:00:{n:02d}Z" for n in range(60)]),
        st.sampled_from(['{"id":"a"}', '{"id":"b"}', '{"id":"c"}', '{"id":"d"}', None]),
    ),
    max_size=300,
)


@settings(max_examples=60, deadline=None)
@given(rows, st.integers(1, 40))
def test_the_file_is_deduplicated_sorted_and_its_row_groups_never_share_a_key(
    given_rows: list[tuple[str, int, str, str | None]], target: int
) -> None:
    # Copies of one (event_id, item_index) are identical, as ingest writes them: the first of each is kept.
    first: dict[tuple[str, int], tuple[str, int, str, str | None]] = {}
    for row in given_rows:
        first.setdefault((row[0], row[1]), row)
    duplicated = given_rows + list(first.values())
    records = _records([first[(row[0], row[1])] for row in duplicated])
    parquet = pq.ParquetFile(io.BytesIO(compact_to_parquet(records, target_rows=target)))
    table = parquet.read()
    pairs = list(zip(table.column("event_id").to_pylist(), table.column("item_index").to_pylist(), strict=True))
    assert len(pairs) == len(set(pairs)) == len(first)
    keys = table.column("item_key").to_pylist()
    present = [key for key in keys if key is not None]
    assert present == sorted(present)
    assert keys[len(present) :] == [None] * (len(keys) - len(present))  # nulls last
    metadata = parquet.metadata
    ranges = []
    for group in range(metadata.num_row_groups):
        column = metadata.row_group(group).column(table.schema.get_field_index("item_key"))
        assert column.compression == "ZSTD"
        if column.statistics is not None and column.statistics.has_min_max:
            ranges.append((column.statistics.min, column.statistics.max))
    for (_, previous_max), (next_min, _) in itertools.pairwise(ranges):
        assert previous_max < next_min  # disjoint: one key's history is in one row group


def test_row_groups_are_bounded_but_never_split_a_key() -> None:
    keys = ["a"] * 5 + ["b"] * 2 + ["c"] + [None] * 3
    assert row_group_bounds(keys, 3) == [(0, 5), (5, 8), (8, 11)]
    assert row_group_bounds([], 3) == []
    assert row_group_bounds(["a", "b", "c", "d"], 2) == [(0, 2), (2, 4)]
