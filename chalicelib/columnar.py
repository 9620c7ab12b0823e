"""The audit record as Arrow data: its schema, and the two tiers' files (fresh gzip JSON Lines, compacted Parquet)
decoded into it; and the raw trail's events as rows of the CloudTrail table. Shared by compaction and the local
query engines, so both read the tiers the same way.

Only the compaction function and the local engine import this (pyarrow is a large import): the ingest path and
the API on Athena never do. No I/O: bytes in, Arrow out.
"""

from __future__ import annotations

import gzip
import io

import pyarrow as pa
import pyarrow.json as pajson

from chalicelib.bounds import MAX_LINE_BYTES, valid_unicode
from chalicelib.records import compact_json
from chalicelib.schema import (
    AUDIT_COLUMNS,
    COMPACTED_PARTITION_COLUMNS,
    PARTITION_COLUMNS,
    TRAIL_COLUMNS,
    TRAIL_PARTITION_COLUMNS,
)

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
# The CloudTrail table's rows, as the local engine reads trail files: its columns, the partitions, and the file.
TRAIL_PATH_COLUMN = "$path"


def arrow_type(hive_type: str) -> pa.DataType:
    """The Arrow type of a Glue (Hive) type: string, int, boolean, and array<...> and struct<name:type,...> of them."""
    parsed, rest = _parse_hive_type(hive_type.replace(" ", ""))
    if rest:
        raise ValueError(f"not a Hive type: {hive_type!r}")
    return parsed


def _parse_hive_type(text: str) -> tuple[pa.DataType, str]:
    for name in ("string", "int", "boolean"):
        if text.startswith(name):
            return _ARROW_TYPES[name], text[len(name) :]
    if text.startswith("array<"):
        element, rest = _parse_hive_type(text[len("array<") :])
        if not rest.startswith(">"):
            raise ValueError(f"unclosed array<...> before {rest[:20]!r}")
        return pa.list_(element), rest[1:]
    if text.startswith("struct<"):
        fields = []
        rest = text[len("struct<") :]
        while True:
            name, colon, rest = rest.partition(":")
            if not colon or not name:
                raise ValueError(f"a struct field without a name before {rest[:20]!r}")
            field_type, rest = _parse_hive_type(rest)
            fields.append(pa.field(name, field_type))
            if rest.startswith(","):
                rest = rest[1:]
                continue
            if rest.startswith(">"):
                return pa.struct(fields), rest[1:]
            raise ValueError(f"unclosed struct<...> before {rest[:20]!r}")
    raise ValueError(f"unknown Hive type at {text[:20]!r}")


TRAIL_SCHEMA = pa.schema(
    [pa.field(column.name, arrow_type(column.glue_type)) for column in TRAIL_COLUMNS + TRAIL_PARTITION_COLUMNS]
    + [pa.field(TRAIL_PATH_COLUMN, pa.string())]
)


def trail_rows(events: list[object], path: str, region: str, date: str) -> pa.Table:
    """One trail file's events as rows of the CloudTrail table, as Athena's JSON SerDe reads them: field names
    matched case-insensitively, objects in `string` columns kept as their JSON text, unknown fields left out."""
    rows = []
    for event in events:
        row = _conform(event, TRAIL_SCHEMA.field(0).type, top=True)
        if isinstance(row, dict):
            row.update({"region": region, "date": date, TRAIL_PATH_COLUMN: path})
            rows.append(row)
    try:
        return pa.Table.from_pylist(rows, schema=TRAIL_SCHEMA)
    except UnicodeEncodeError:  # a lone surrogate (a JSON escape, not UTF-8): U+FFFD, as ingest stores it
        return pa.Table.from_pylist(_valid_unicode(rows), schema=TRAIL_SCHEMA)


def _valid_unicode(value: object) -> object:
    """`value` with every string in it (dict keys are the schema's names) made valid Unicode."""
    if isinstance(value, str):
        return valid_unicode(value)
    if isinstance(value, dict):
        return {name: _valid_unicode(inner) for name, inner in value.items()}
    if isinstance(value, list):
        return [_valid_unicode(inner) for inner in value]
    return value


_TRAIL_ROW_TYPE = pa.struct([TRAIL_SCHEMA.field(name) for name in (c.name for c in TRAIL_COLUMNS)])


def _conform(value: object, data_type: pa.DataType, top: bool = False) -> object:
    """`value` shaped to `data_type` (the whole row when `top`); what does not fit becomes null."""
    if top:
        data_type = _TRAIL_ROW_TYPE
    if value is None:
        return None
    if pa.types.is_struct(data_type):
        if not isinstance(value, dict):
            return None
        by_name = {str(name).lower(): inner for name, inner in value.items()}
        return {field.name: _conform(by_name.get(field.name), field.type) for field in data_type}
    if pa.types.is_list(data_type):
        if not isinstance(value, list):
            return None
        return [_conform(item, data_type.value_type) for item in value]
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return compact_json(value)


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
