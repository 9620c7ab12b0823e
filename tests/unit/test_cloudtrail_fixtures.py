"""AWS's own CloudTrail examples become the records DESIGN section 3 defines, field by field."""

from __future__ import annotations

import json
from pathlib import Path

from chalicelib.cloudtrail import build_audit_records, is_dynamodb_data_event, parse_event_message
from chalicelib.records import AuditRecord

BOB_ARN = "arn:aws:sts::111122223333:assumed-role/users/bob"
ADMIN_ROLE_ARN = "arn:aws:iam::444455556666:role/admin-role"
MUSIC_ARN = "arn:aws:dynamodb:us-west-2:123456789012:table/Music"


def _records(shared_fixtures: Path, name: str) -> list[AuditRecord]:
    (event,) = parse_event_message((shared_fixtures / "cloudtrail" / name).read_text())["Records"]
    assert is_dynamodb_data_event(event)
    return build_audit_records(event)


def _assert_bob(record: AuditRecord) -> None:
    assert record.principal_type == "AssumedRole"
    assert record.principal_arn == BOB_ARN
    assert record.principal_id == "AKIAIOSFODNN7EXAMPLE:bob"
    assert record.principal_name == "bob"
    assert record.session_issuer_arn == ADMIN_ROLE_ARN
    assert record.access_key_id == "AKIAIOSFODNN7EXAMPLE"
    assert record.account_id == "111122223333"
    assert record.source_ip == "192.0.2.0"
    assert record.table_arn == MUSIC_ARN
    assert record.table_name == "Music"


def test_put_item_yields_one_successful_put_with_item_names(shared_fixtures: Path) -> None:
    (record,) = _records(shared_fixtures, "awsdocs-ddb-put-item.json")
    _assert_bob(record)
    assert record.event_id == "a954451c-c2fc-4561-8aea-7a30ba1fdf52"
    assert record.item_index == 0
    assert record.event_time == "2019-01-19T15:41:54Z"
    assert record.dt == "2019-01-19"
    assert record.event_name == "PutItem"
    assert record.operation == "Put"
    assert record.item_key == '{"Artist":"No One You Know","SongTitle":"Scared of My Shadow"}'
    assert record.attribute_names == ["Artist", "SongTitle", "AlbumTitle"]
    assert record.success is True
    assert record.error_code is None
    assert record.read_only is False
    assert record.aws_region == "us-west-2"
    assert record.request_id == "4KBNVRGD25RG1KEO9UT4V3FQDJVV4KQNSO5AEMVJF66Q9ASUAAJG"
    assert record.event_version == "1.06"
    assert json.loads(record.request_parameters or "")["item"] == ["Artist", "SongTitle", "AlbumTitle"]


def test_failed_update_item_keeps_error_and_expressions(shared_fixtures: Path) -> None:
    (record,) = _records(shared_fixtures, "awsdocs-ddb-update-item.json")
    _assert_bob(record)
    assert record.operation == "Update"
    assert record.item_key == '{"Artist":"No One You Know","SongTitle":"Call Me Today"}'
    assert record.success is False
    assert record.error_code == "ConditionalCheckFailedException"
    assert record.error_message == "The conditional request failed"
    assert record.update_expression == "SET #Y = :y, #AT = :t"
    assert record.condition_expression == "attribute_not_exists(#Y)"
    assert record.attribute_names == ["Year", "AlbumTitle"]


def test_transact_write_items_yields_one_record_per_item(shared_fixtures: Path) -> None:
    records = _records(shared_fixtures, "awsdocs-ddb-transact-write-items.json")
    assert [(r.item_index, r.operation) for r in records] == [
        (0, "Put"),
        (1, "Update"),
        (2, "Delete"),
        (3, "ConditionCheck"),
    ]
    assert [json.loads(r.item_key or "")["SongTitle"] for r in records] == [
        "Call Me Today",
        "Call Me Tomorrow",
        "Call Me Yesterday",
        "Call Me Now",
    ]
    for record in records:
        _assert_bob(record)
        assert record.event_id == "4f1cc78b-5c94-4174-a6ad-3ee78605381c"
        assert record.success is True
    assert records[0].attribute_names == ["Artist", "SongTitle", "AlbumTitle"]
    assert records[1].attribute_names == ["AlbumTitle"]
    # AWS's example mixes `ConditionExpression` and `conditionExpression`: both are read.
    assert records[1].condition_expression == "attribute_not_exists(Rating)"
    assert records[1].update_expression == "SET #AT = :newval"
    assert records[3].condition_expression == "#P between :lo and :hi"
    assert json.loads(records[2].request_parameters or "")["operation"] == "Delete"


def test_execute_statement_reads_the_key_from_unredacted_equalities(shared_fixtures: Path) -> None:
    (record,) = _records(shared_fixtures, "awsdocs-ddb-execute-statement.json")
    _assert_bob(record)
    assert record.operation == "Statement"
    assert record.item_key == '{"Artist":"No One You Know","SongTitle":"Call Me Today"}'
    assert record.statement is not None
    assert record.statement.endswith("nonKeyAttr = ***(Redacted)")


def test_management_event_is_not_a_data_event(shared_fixtures: Path) -> None:
    (event,) = parse_event_message((shared_fixtures / "cloudtrail" / "awsdocs-ddb-update-table.json").read_text())[
        "Records"
    ]
    assert not is_dynamodb_data_event(event)
