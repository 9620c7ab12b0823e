"""Canonical keys, object names and encoding: deterministic, and consistent with the schema."""

from __future__ import annotations

import dataclasses
import gzip
import json
from decimal import Decimal

import pytest

from chalicelib.records import (
    AuditRecord,
    build_object_key,
    build_quarantine_key,
    canonical_key,
    encode_lines,
    normalise_number,
)
from chalicelib.schema import AUDIT_COLUMNS, COLUMN_NAMES


def _record(**fields: object) -> AuditRecord:
    values: dict[str, object] = {
        "table_name": "Music",
        "event_id": "e1",
        "item_index": 0,
        "event_time": "2024-05-01T12:00:00Z",
        "event_name": "PutItem",
        "operation": "Put",
        "item_key": '{"id":"1"}',
    }
    values.update(fields)
    return AuditRecord(**values)  # type: ignore[arg-type]


def test_record_fields_are_the_schema_columns_plus_the_table_partition() -> None:
    names = [field.name for field in dataclasses.fields(AuditRecord)]
    assert names == ["table_name", *COLUMN_NAMES]
    assert len(AUDIT_COLUMNS) == 32


@pytest.mark.parametrize(
    ("value", "text"),
    [(7, "7"), (7.0, "7"), (Decimal("1.50"), "1.5"), (Decimal("1E+3"), "1000"), (Decimal("-0.0"), "0"), (0.1, "0.1")],
)
def test_numbers_are_normalised_like_dynamodb(value: int | float | Decimal, text: str) -> None:
    assert normalise_number(value) == text


def test_canonical_key_sorts_names_and_stringifies_values() -> None:
    assert canonical_key({"SongTitle": "Call Me Today", "Artist": "No One"}) == (
        '{"Artist":"No One","SongTitle":"Call Me Today"}'
    )
    assert canonical_key({"id": 7}) == canonical_key({"id": "7"}) == canonical_key({"id": Decimal("7.0")})
    assert canonical_key({"id": {"N": "7.00"}}) == '{"id":"7"}'
    assert canonical_key({"k": "ünï'\""}) == '{"k":"ünï\'\\""}'


def test_object_key_is_partitioned_and_deterministic() -> None:
    key = build_object_key("audit/", "Music", "2024-05-01", "shardId-000000000001", "4960", "4975")
    assert key == "audit/table_name=Music/dt=2024-05-01/shardId-000000000001-4960-4975.json.gz"
    assert build_object_key("audit/", "a/b'c", "2024-05-01", "s", "1", "2").startswith("audit/table_name=a%2Fb%27c/")
    assert build_quarantine_key("2024-05-01", "shardId-1", "42") == "quarantine/dt=2024-05-01/shardId-1-42"


def test_encoded_object_is_gzip_json_lines_without_partition_columns_and_repeatable() -> None:
    records = [_record(), _record(item_index=1, item_key=None)]
    body = encode_lines(record.to_line() for record in records)
    assert body == encode_lines(record.to_line() for record in records)
    lines = gzip.decompress(body).decode().splitlines()
    assert [json.loads(line)["item_index"] for line in lines] == [0, 1]
    assert "table_name" not in json.loads(lines[0])
    assert "dt" not in json.loads(lines[0])
    assert list(json.loads(lines[0])) == list(COLUMN_NAMES)
