"""Every DynamoDB data operation becomes records; unknown shapes are read defensively and never crash."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest

from chalicelib import cloudtrail
from chalicelib.bounds import MAX_REQUEST_PARAMETERS_CHARS, MAX_STATEMENT_CHARS
from chalicelib.cloudtrail import (
    build_audit_records,
    is_dynamodb_data_event,
    message_stored_lines,
    parse_event_message,
    stored_lines,
)
from chalicelib.errors import MalformedEventError
from chalicelib.records import UNKNOWN_PARTITION
from tests.factories import cloudtrail_event, table_arn


def _keys(records: list[Any]) -> list[str | None]:
    return [record.item_key for record in records]


@pytest.mark.parametrize(
    ("event_name", "operation"),
    [("PutItem", "Put"), ("UpdateItem", "Update"), ("DeleteItem", "Delete"), ("GetItem", "Get")],
)
def test_single_item_calls_yield_their_operation_and_key(event_name: str, operation: str) -> None:
    event = cloudtrail_event(event_name, {"tableName": "Music", "key": {"id": "item-1"}})
    (record,) = build_audit_records(event)
    assert (record.operation, record.item_key, record.item_index) == (operation, '{"id":"item-1"}', 0)
    assert record.principal_type == "IAMUser"
    assert record.principal_name == "alice"
    assert record.principal_arn == "arn:aws:iam::123456789012:user/alice"
    assert record.table_arn == table_arn("Music")


@pytest.mark.parametrize("event_name", ["Query", "Scan"])
def test_query_and_scan_name_no_single_item(event_name: str) -> None:
    event = cloudtrail_event(event_name, {"tableName": "Music", "keyConditionExpression": "id = :v"})
    (record,) = build_audit_records(event)
    assert (record.operation, record.item_key, record.table_name) == (event_name, None, "Music")
    assert record.read_only is True


def test_batch_write_items_expand_in_request_order_across_tables() -> None:
    parameters = {
        "requestItems": [
            {"operation": "Put", "tableName": "Music", "key": {"id": "a"}, "items": ["id", "x"]},
            {"operation": "Delete", "tableName": "Books", "key": {"isbn": 978}},
            {"operation": "Put", "tableName": "Music", "key": {"id": "b"}, "items": ["id"]},
        ]
    }
    event = cloudtrail_event(
        "BatchWriteItem",
        parameters,
        resources=[
            {"type": "AWS::DynamoDB::Table", "ARN": table_arn("Music")},
            {"type": "AWS::DynamoDB::Table", "ARN": table_arn("Books")},
        ],
    )
    records = build_audit_records(event)
    assert [(r.item_index, r.table_name, r.operation) for r in records] == [
        (0, "Music", "Put"),
        (1, "Books", "Delete"),
        (2, "Music", "Put"),
    ]
    assert _keys(records) == ['{"id":"a"}', '{"isbn":"978"}', '{"id":"b"}']
    assert [r.table_arn for r in records] == [table_arn("Music"), table_arn("Books"), table_arn("Music")]
    assert records[0].attribute_names == ["id", "x"]


def test_batch_write_items_in_the_api_shape_are_read_too() -> None:
    parameters = {
        "RequestItems": {
            "Music": [{"PutRequest": {"Item": {"id": {"S": "a"}}}}, {"DeleteRequest": {"Key": {"id": {"S": "b"}}}}]
        }
    }
    records = build_audit_records(cloudtrail_event("BatchWriteItem", parameters))
    assert [(r.operation, r.item_key) for r in records] == [("Put", None), ("Delete", '{"id":"b"}')]
    assert records[0].attribute_names == ["id"]


@pytest.mark.parametrize("event_name", ["BatchGetItem", "TransactGetItems"])
def test_get_batches_yield_one_get_per_key(event_name: str) -> None:
    parameters = {
        "requestItems": [
            {"operation": "Get", "tableName": "Music", "key": {"id": "a"}},
            {"operation": "Get", "tableName": "Music", "key": {"id": "b"}},
        ]
    }
    records = build_audit_records(cloudtrail_event(event_name, parameters))
    assert [(r.item_index, r.operation) for r in records] == [(0, "Get"), (1, "Get")]
    assert _keys(records) == ['{"id":"a"}', '{"id":"b"}']


def test_batch_get_item_in_the_api_shape_yields_each_key() -> None:
    parameters = {"requestItems": {"Music": {"Keys": [{"id": "a"}, {"id": {"N": "2.50"}}]}}}
    records = build_audit_records(cloudtrail_event("BatchGetItem", parameters))
    assert [(r.table_name, r.operation, r.item_key) for r in records] == [
        ("Music", "Get", '{"id":"a"}'),
        ("Music", "Get", '{"id":"2.5"}'),
    ]


@pytest.mark.parametrize(
    ("event_name", "list_name"),
    [("ExecuteTransaction", "transactStatements"), ("BatchExecuteStatement", "requestItems")],
)
def test_statement_batches_yield_one_record_per_statement(event_name: str, list_name: str) -> None:
    statements = [
        {"statement": "UPDATE Music SET plays = ***(Redacted) WHERE id = 'a'"},
        {"statement": "SELECT * FROM Music WHERE plays > ***(Redacted)"},
    ]
    records = build_audit_records(cloudtrail_event(event_name, {list_name: statements}))
    assert [(r.item_index, r.operation, r.table_name) for r in records] == [
        (0, "Statement", "Music"),
        (1, "Statement", "Music"),
    ]
    assert _keys(records) == ['{"id":"a"}', None]
    assert records[1].statement == "SELECT * FROM Music WHERE plays > ***(Redacted)"


def test_transact_write_items_in_the_api_shape_are_read_too() -> None:
    parameters = {
        "transactItems": [
            {"Put": {"TableName": "Music", "Key": {"id": "a"}, "Item": ["id"]}},
            {"ConditionCheck": {"TableName": "Music", "Key": {"id": "b"}, "ConditionExpression": "x"}},
        ]
    }
    records = build_audit_records(cloudtrail_event("TransactWriteItems", parameters))
    assert [(r.operation, r.item_key) for r in records] == [("Put", '{"id":"a"}'), ("ConditionCheck", '{"id":"b"}')]
    assert records[1].condition_expression == "x"


def test_parameter_names_match_case_insensitively() -> None:
    parameters = {"TABLENAME": "Music", "KEY": {"id": "a"}, "UpdateExpression": "SET x = :x"}
    (record,) = build_audit_records(cloudtrail_event("UpdateItem", parameters))
    assert (record.table_name, record.item_key, record.update_expression) == ("Music", '{"id":"a"}', "SET x = :x")


def test_numbers_in_keys_are_written_the_way_dynamodb_normalises_them() -> None:
    event = parse_event_message(
        json.dumps(cloudtrail_event("GetItem", {"tableName": "T1x"})).replace(
            '"tableName": "T1x"', '"tableName": "T1x", "key": {"n": 1.50, "i": 7.0, "big": 12345678901234567890.123}'
        )
    )
    (record,) = build_audit_records(event)  # type: ignore[arg-type]
    assert record.item_key == '{"big":"12345678901234567890.123","i":"7","n":"1.5"}'


def test_unicode_and_quotes_in_keys_are_kept() -> None:
    parameters = {"tableName": "Music.v2_x-y", "key": {"pk": 'O\'Brien "☃" \u0000'}}
    (record,) = build_audit_records(cloudtrail_event("PutItem", parameters, resources=[]))
    assert record.table_name == "Music.v2_x-y"
    assert json.loads(record.item_key or "") == {"pk": 'O\'Brien "☃" \u0000'}
    assert json.loads(record.to_line())["item_key"] == record.item_key


@pytest.mark.parametrize(
    ("logged", "stored"),
    [
        ("arn:aws:dynamodb:us-east-1:123456789012:table/Music", "Music"),
        ("Tä'ble\"/x", UNKNOWN_PARTITION),
        ("ab", UNKNOWN_PARTITION),
        ("x" * 256, UNKNOWN_PARTITION),
        ("../../quarantine", UNKNOWN_PARTITION),
    ],
)
def test_table_name_is_a_valid_dynamodb_name_or_the_unknown_partition(logged: str, stored: str) -> None:
    parameters = {"tableName": logged, "key": {"pk": "1"}}
    (record,) = build_audit_records(cloudtrail_event("PutItem", parameters, resources=[]))
    assert record.table_name == stored


def test_multi_item_call_without_items_is_kept_with_no_key() -> None:
    (record,) = build_audit_records(cloudtrail_event("BatchWriteItem", {"returnConsumedCapacity": "TOTAL"}))
    assert (record.operation, record.item_key, record.table_name) == ("Put", None, "Music")


@pytest.mark.parametrize(
    "parameters",
    [None, "text", [], {"requestItems": "text"}, {"requestItems": [1, None, "x", {"key": 5}]}, {"key": []}],
)
def test_odd_parameters_never_crash(parameters: object) -> None:
    for event_name in ("PutItem", "BatchWriteItem", "TransactWriteItems", "ExecuteStatement"):
        event = cloudtrail_event(event_name)
        event["requestParameters"] = parameters
        records = build_audit_records(event)
        assert records
        assert all(r.item_key is None for r in records)


def test_odd_identity_and_field_types_become_text_or_null() -> None:
    event = cloudtrail_event("PutItem", userIdentity={"type": ["odd"], "arn": 5}, readOnly="yes", resources="x")
    (record,) = build_audit_records(event)
    assert (record.principal_type, record.principal_arn, record.read_only) == ('["odd"]', "5", None)
    assert record.table_arn is None


def test_unknown_table_goes_to_the_default_partition() -> None:
    event = cloudtrail_event("Scan", {}, resources=[])
    (record,) = build_audit_records(event)
    assert record.table_name == UNKNOWN_PARTITION


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("eventID", None, "eventID"),
        ("eventID", "", "eventID"),
        ("eventTime", None, "eventTime"),
        ("eventTime", "yesterday", "eventTime"),
    ],
)
def test_event_without_id_or_time_is_malformed(field: str, value: object, message: str) -> None:
    event = cloudtrail_event("PutItem")
    event[field] = value
    with pytest.raises(MalformedEventError, match=message):
        build_audit_records(event)


def test_event_time_is_normalised_to_utc_seconds() -> None:
    (record,) = build_audit_records(cloudtrail_event(event_time="2024-05-01T23:30:00.123+02:00"))
    assert (record.event_time, record.dt) == ("2024-05-01T21:30:00Z", "2024-05-01")


def test_assumed_role_session_name_and_issuer_are_recorded() -> None:
    identity = {
        "type": "AssumedRole",
        "principalId": "AROAEXAMPLE:deploy-bot",
        "arn": "arn:aws:sts::123456789012:assumed-role/ci/deploy-bot",
        "sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::123456789012:role/ci"}},
    }
    (record,) = build_audit_records(cloudtrail_event(userIdentity=identity))
    assert (record.principal_name, record.session_issuer_arn) == ("deploy-bot", "arn:aws:iam::123456789012:role/ci")


@pytest.mark.parametrize(
    "overrides",
    [
        {"eventName": "GetRecords"},
        {"eventName": "UpdateTable"},
        {"eventSource": "s3.amazonaws.com", "eventName": "PutObject"},
        {"eventCategory": "Management"},
    ],
)
def test_non_data_events_are_not_recorded(overrides: dict[str, str]) -> None:
    assert not is_dynamodb_data_event(cloudtrail_event(**overrides))


def test_large_event_is_recorded_with_its_key_and_its_long_text_cut_and_marked() -> None:
    statement = "SELECT * FROM Music WHERE id = 'a' AND note = ***(Redacted)" + " " * 250_000
    (record,) = build_audit_records(cloudtrail_event("ExecuteStatement", {"statement": statement}))
    assert record.item_key == '{"id":"a"}'
    parameters = record.request_parameters or ""
    assert len(parameters) == MAX_REQUEST_PARAMETERS_CHARS
    kept, cut = re.fullmatch(r"(.*)…\[truncated (\d+) characters\]", parameters, re.DOTALL).groups()  # type: ignore[union-attr]
    whole = json.dumps({"statement": statement}, separators=(",", ":"))
    assert whole.startswith(kept)
    assert len(kept) + int(cut) == len(whole)
    assert (record.statement or "").startswith(statement[:60])
    assert len(record.statement or "") == MAX_STATEMENT_CHARS


def test_decimal_values_in_parameters_serialise_as_numbers() -> None:
    event = cloudtrail_event("Query", {"tableName": "Music", "limit": Decimal("2.5")})
    (record,) = build_audit_records(event)
    assert json.loads(record.request_parameters or "")["limit"] == 2.5


def test_the_documented_parameter_names_hold_no_two_spellings_of_one_name() -> None:
    folded = {name.casefold() for name in cloudtrail._DOCUMENTED_NAMES}
    assert len(folded) == len(cloudtrail._DOCUMENTED_NAMES)


def test_a_name_spelled_otherwise_than_documented_is_still_found() -> None:
    parameters = {"TableName": "Music", "Key": {"id": "k"}, "ConditionExpression": "attribute_exists(id)"}
    (record,) = build_audit_records(cloudtrail_event("DeleteItem", parameters))
    assert (record.table_name, record.item_key) == ("Music", '{"id":"k"}')
    assert record.condition_expression == "attribute_exists(id)"


def test_names_that_are_not_text_are_written_as_json_whichever_parser_reads_them() -> None:
    message = json.dumps(cloudtrail_event("PutItem", {"tableName": "Music", "key": {"id": "k"}, "item": ["N"]}))
    message = message.replace('["N"]', '[[0], -0, true, {"a": 1}, "name"]')
    exact = stored_lines(parse_event_message(message)) or []
    assert message_stored_lines(message) == exact
    assert json.loads(exact[0][1])["attribute_names"] == ["[0]", "0", "true", '{"a":1}', "name"]
    with_fraction = message.replace("[[0]", "[[0.50]")
    assert json.loads((message_stored_lines(with_fraction) or [])[0][1])["attribute_names"][0] == "[0.5]"


def test_the_request_parameters_read_the_same_whatever_order_their_keys_were_logged_in() -> None:
    # The trail's files and its log group may write a call's parameters in another order: copies must compare equal.
    names = {"#t": "title", "#a": "artist", "#ü": "über"}
    logged = {
        "tableName": "Music",
        "key": {"id": "k", "sk": "2"},
        "expressionAttributeNames": names,
        "returnValues": "ALL_OLD",
    }
    reordered = {name: logged[name] for name in reversed(list(logged))}
    reordered["key"] = {"sk": "2", "id": "k"}
    reordered["expressionAttributeNames"] = dict(reversed(names.items()))
    (first,) = build_audit_records(cloudtrail_event("UpdateItem", logged))
    (second,) = build_audit_records(cloudtrail_event("UpdateItem", reordered))
    assert first.request_parameters == second.request_parameters
    assert first.request_parameters.startswith('{"expressionAttributeNames":{"#a":"artist","#t":"title","#ü":"über"},')
    assert json.loads(first.request_parameters) == logged
