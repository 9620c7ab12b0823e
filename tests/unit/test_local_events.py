"""The local recorder's CloudTrail events and trail selection: the shape AWS logs, and what a trail would log."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.cloudtrail import build_audit_records
from chalicelib.selectors import TrailSettings, trail_logs
from deutzia_local.trail_events import DynamoDBCall, build_cloudtrail_event, error_of, is_data_operation

ALICE = {
    "type": "IAMUser",
    "principalId": "AIDAALICE",
    "arn": "arn:aws:iam::123456789012:user/alice",
    "accountId": "123456789012",
    "accessKeyId": "AKIAALICE",
    "userName": "alice",
}
KEYS = {"Music": frozenset({"Artist", "SongTitle"}), "Books": frozenset({"isbn"})}


def _event(operation: str, request: dict[str, Any], **fields: Any) -> dict[str, Any]:
    call = DynamoDBCall(
        operation=operation,
        request=request,
        region="us-east-1",
        account_id="123456789012",
        user_identity=ALICE,
        source_ip="127.0.0.1",
        user_agent="aws-cli/1.46.3",
        request_id="REQ1",
        event_time=datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC),
        **fields,
    )
    return build_cloudtrail_event(call, KEYS.get)


def test_put_item_logs_the_key_and_attribute_names_never_values() -> None:
    request = {
        "TableName": "Music",
        "Item": {"Artist": {"S": "A"}, "SongTitle": {"S": "B"}, "Secret": {"S": "do-not-log"}},
        "ConditionExpression": "attribute_not_exists(#a)",
        "ExpressionAttributeNames": {"#a": "Artist"},
        "ExpressionAttributeValues": {":v": {"S": "do-not-log-either"}},
    }
    event = _event("PutItem", request)
    assert event["requestParameters"] == {
        "tableName": "Music",
        "key": {"Artist": "A", "SongTitle": "B"},
        "item": ["Artist", "SongTitle", "Secret"],
        "conditionExpression": "attribute_not_exists(#a)",
        "expressionAttributeNames": {"#a": "Artist"},
    }
    assert "do-not-log" not in str(event)
    assert event["resources"] == [
        {
            "accountId": "123456789012",
            "type": "AWS::DynamoDB::Table",
            "ARN": "arn:aws:dynamodb:us-east-1:123456789012:table/Music",
        }
    ]
    assert (event["eventTime"], event["readOnly"], event["eventCategory"], event["requestID"]) == (
        "2024-05-01T12:00:00Z",
        False,
        "Data",
        "REQ1",
    )


def test_number_and_binary_keys_are_logged_as_number_and_base64_text() -> None:
    event = _event("GetItem", {"TableName": "Books", "Key": {"isbn": {"N": "978.50"}, "b": {"B": "AAE="}}})
    assert event["requestParameters"]["key"] == {"isbn": 978.5, "b": "AAE="}
    assert event["readOnly"] is True


def test_failed_call_carries_its_error() -> None:
    event = _event(
        "UpdateItem",
        {
            "TableName": "Music",
            "Key": {"Artist": {"S": "A"}, "SongTitle": {"S": "B"}},
            "UpdateExpression": "SET x = :x",
        },
        error_code="ConditionalCheckFailedException",
        error_message="The conditional request failed",
    )
    (record,) = build_audit_records(event)
    assert (record.success, record.error_code, record.update_expression) == (
        False,
        "ConditionalCheckFailedException",
        "SET x = :x",
    )


def test_transact_write_items_log_one_entry_per_item_that_the_formatter_expands() -> None:
    request = {
        "TransactItems": [
            {"Put": {"TableName": "Music", "Item": {"Artist": {"S": "A"}, "SongTitle": {"S": "B"}, "x": {"N": "1"}}}},
            {
                "Update": {
                    "TableName": "Books",
                    "Key": {"isbn": {"N": "7"}},
                    "UpdateExpression": "SET #n = :n",
                    "ExpressionAttributeNames": {"#n": "name"},
                    "ExpressionAttributeValues": {":n": {"S": "v"}},
                }
            },
            {
                "ConditionCheck": {
                    "TableName": "Music",
                    "Key": {"Artist": {"S": "A"}, "SongTitle": {"S": "C"}},
                    "ConditionExpression": "attribute_exists(Artist)",
                }
            },
        ]
    }
    event = _event("TransactWriteItems", request)
    records = build_audit_records(event)
    assert [(r.item_index, r.table_name, r.operation, r.item_key) for r in records] == [
        (0, "Music", "Put", '{"Artist":"A","SongTitle":"B"}'),
        (1, "Books", "Update", '{"isbn":"7"}'),
        (2, "Music", "ConditionCheck", '{"Artist":"A","SongTitle":"C"}'),
    ]
    assert records[1].attribute_names == ["name"]
    assert [r["ARN"].rsplit("/", 1)[1] for r in event["resources"]] == ["Music", "Books"]


def test_batch_calls_log_each_item_in_request_order() -> None:
    write = _event(
        "BatchWriteItem",
        {
            "RequestItems": {
                "Music": [
                    {"PutRequest": {"Item": {"Artist": {"S": "A"}, "SongTitle": {"S": "B"}}}},
                    {"DeleteRequest": {"Key": {"Artist": {"S": "A"}, "SongTitle": {"S": "C"}}}},
                ]
            }
        },
    )
    assert [(i["operation"], i["key"]) for i in write["requestParameters"]["requestItems"]] == [
        ("Put", {"Artist": "A", "SongTitle": "B"}),
        ("Delete", {"Artist": "A", "SongTitle": "C"}),
    ]
    read = _event("BatchGetItem", {"RequestItems": {"Books": {"Keys": [{"isbn": {"N": "1"}}, {"isbn": {"N": "2"}}]}}})
    assert [r.item_key for r in build_audit_records(read)] == ['{"isbn":"1"}', '{"isbn":"2"}']
    assert read["readOnly"] is True


def test_partiql_is_logged_with_non_key_literals_redacted() -> None:
    event = _event(
        "ExecuteStatement", {"Statement": "UPDATE Music SET plays = 5 WHERE Artist = 'A' AND SongTitle = 'B'"}
    )
    assert event["requestParameters"]["statement"] == (
        "UPDATE Music SET plays = ***(Redacted) WHERE Artist = 'A' AND SongTitle = 'B'"
    )
    (record,) = build_audit_records(event)
    assert record.item_key == '{"Artist":"A","SongTitle":"B"}'
    transaction = _event(
        "ExecuteTransaction", {"TransactStatements": [{"Statement": "SELECT * FROM Books WHERE isbn = 1"}]}
    )
    assert transaction["requestParameters"] == {
        "transactStatements": [{"statement": "SELECT * FROM Books WHERE isbn = 1"}]
    }
    assert transaction["readOnly"] is True


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b"{}", (None, None)),
        (
            400,
            b'{"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException", "message": "no"}',
            ("ConditionalCheckFailedException", "no"),
        ),
        (400, b'{"__type": "ResourceNotFoundException", "Message": "gone"}', ("ResourceNotFoundException", "gone")),
        (500, b"<html>boom</html>", ("InternalServerError", "Internal server error")),
    ],
)
def test_errors_are_read_from_dynamodb_responses(
    status: int, body: bytes, expected: tuple[str | None, str | None]
) -> None:
    assert error_of(status, body) == expected


def test_only_data_plane_targets_are_recorded() -> None:
    assert is_data_operation("DynamoDB_20120810.PutItem") == "PutItem"
    assert is_data_operation("DynamoDB_20120810.CreateTable") is None
    assert is_data_operation("DynamoDBStreams_20120810.GetRecords") is None
    assert is_data_operation(None) is None


ALL_TABLES = [
    {
        "FieldSelectors": [
            {"Field": "eventCategory", "Equals": ["Data"]},
            {"Field": "resources.type", "Equals": ["AWS::DynamoDB::Table"]},
        ]
    }
]


def _trail(**fields: Any) -> TrailSettings:
    settings: dict[str, Any] = {
        "name": "t",
        "home_region": "us-east-1",
        "is_multi_region": True,
        "is_logging": True,
        "advanced_event_selectors": ALL_TABLES,
    }
    settings.update(fields)
    return TrailSettings(**settings)


def test_trail_selection_follows_selectors_regions_and_logging() -> None:
    put = _event("PutItem", {"TableName": "Music", "Item": {}})
    get = _event("GetItem", {"TableName": "Music", "Key": {}})
    assert trail_logs(_trail(), put)
    assert not trail_logs(_trail(is_logging=False), put)
    assert not trail_logs(_trail(is_multi_region=False, home_region="eu-west-1"), put)
    writes_only = [{"FieldSelectors": [*ALL_TABLES[0]["FieldSelectors"], {"Field": "readOnly", "Equals": ["false"]}]}]
    assert trail_logs(_trail(advanced_event_selectors=writes_only), put)
    assert not trail_logs(_trail(advanced_event_selectors=writes_only), get)
    books_only = [{"FieldSelectors": [{"Field": "resources.ARN", "EndsWith": [":table/Books"]}]}]
    assert not trail_logs(_trail(advanced_event_selectors=books_only), put)
    not_music = [{"FieldSelectors": [{"Field": "resources.ARN", "NotEndsWith": ["/Music"]}]}]
    assert not trail_logs(_trail(advanced_event_selectors=not_music), put)
    basic = [
        {
            "ReadWriteType": "WriteOnly",
            "DataResources": [{"Type": "AWS::DynamoDB::Table", "Values": ["arn:aws:dynamodb"]}],
        }
    ]
    assert trail_logs(_trail(advanced_event_selectors=[], event_selectors=basic), put)
    assert not trail_logs(_trail(advanced_event_selectors=[], event_selectors=basic), get)
    assert not trail_logs(_trail(advanced_event_selectors=[], event_selectors=[]), put)
    # One caller left out by the ARN CloudTrail's selectors filter on: alice's calls go unrecorded, others' do not.
    not_alice = [
        {
            "FieldSelectors": [
                *ALL_TABLES[0]["FieldSelectors"],
                {"Field": "userIdentity.arn", "NotEquals": [ALICE["arn"]]},
            ]
        }
    ]
    assert not trail_logs(_trail(advanced_event_selectors=not_alice), put)
    bob = {**put, "userIdentity": {**ALICE, "arn": "arn:aws:iam::123456789012:user/bob"}}
    assert trail_logs(_trail(advanced_event_selectors=not_alice), bob)
