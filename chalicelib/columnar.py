"""The audit record as Arrow data: its schema, and the two tiers' files (fresh gzip JSON Lines, compacted Parquet)
decoded into it. Shared by compaction and the local query engine, so both read the tiers the same way.

Only the compaction function and the local engine import this (pyarrow is a large import): the ingest path and
the API on Athena never do. No I/O: bytes in, Arrow out.
"""

from __future__ import annotations

import gzip
import io

import pyarrow as pa
import pyarrow.json as pajson

from chalicelib.bounds import MAX_LINE_BYTES
from chalicelib.schema import AUDIT_COLUMNS, COMPACTED_PARTITION_COLUMNS, PARTITION_COLUMNS

_ARROW_TYPES = {
    "string": pa.string(),
    "int": pa.int32(),
    "boolean": pa.bool_(),
    "array<string>": pa.list_(pa.string()),
}
# The columns of one line, in schema order.
RECORD_SCHEMA = pa.schema([pa.field(column.name, _ARROW_TYPES[column.glue_type]) for column in AUDIT_COLUMNS])
# Fresh objects: the partition (table_name, dt) lives in the key.
FRESH_PARTITION_SCHEMA = pa.schema([pa.field(column.name, pa.string()) for column in PARTITION_COLUMNS])
# Compacted files hold `dt` as a column (a month's file holds many days); table_name and month live in the key.
COMPACTED_FILE_SCHEMA = RECORD_SCHEMA.append(pa.field("dt", pa.string()))
COMPACTED_PARTITION_SCHEMA = pa.schema([pa.field(column.name, pa.string()) for column in COMPACTED_PARTITION_COLUMNS])
# pyarrow's JSON reader needs each line whole within one block: room for the longest line ingest writes.
READ_BLOCK_BYTES = 2 * MAX_LINE_BYTES


def json_parse_options() -> pajson.ParseOptions:
    """Lines typed by the record schema; a field the schema lacks is ignored, as Athena's JSON SerDe does."""
    return pajson.ParseOptions(explicit_schema=RECORD_SCHEMA, unexpected_field_behavior="ignore")


def json_read_options() -> pajson.ReadOptions:
    return pajson.ReadOptions(block_size=READ_BLOCK_BYTES, use_threads=False)


def fresh_records(body: bytes, dt: str) -> pa.Table:
    """A fresh object's gzip JSON Lines as compacted-file rows (the partition's `dt` added as a column)."""
    data = gzip.decompress(body)
    if not data.strip():
        records = RECORD_SCHEMA.empty_table()
    else:
        records = pajson.read_json(
            io.BytesIO(data), read_options=json_read_options(), parse_options=json_parse_options()
        )
    return records.append_column(COMPACTED_FILE_SCHEMA.field("dt"), pa.array([dt] * records.num_rows, pa.string()))
