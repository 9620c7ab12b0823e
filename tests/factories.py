"""Builders of the formats Deutzia consumes: CloudTrail events, CloudWatch Logs payloads, Lambda Kinesis events."""

from __future__ import annotations

import base64
import copy
import gzip
import itertools
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
SHARD = "shardId-000000000000"
# A GET /audit/coverage answer with a day whose calls are not all in the audit records, from a trail now stopped.
INCOMPLETE_COVERAGE = {
    "table": "Music",
    "since": "2026-11-24",
    "until": "2026-11-27",
    "days": [
        {
            "day": "2026-11-24",
            "status": "unconfirmed",
            "trail_events": 9,
            "backfilled": 0,
            "still_missing": 0,
            "not_in_trail": 1,
            "altered": 1,
            "gone": 2,
            "restored": 1,
        },
        {
            "day": "2026-11-25",
            "status": "incomplete",
            "trail_events": 5,
            "backfilled": 0,
            "still_missing": 0,
            "not_logging": ["from 2026-11-25T01:00:00Z to 2026-11-25T04:00:00Z"],
        },
        {
            "day": "2026-11-26",
            "status": "incomplete",
            "trail_events": 9,
            "backfilled": 0,
            "still_missing": 3,
            "deferred": 2,
        },
        {"day": "2026-11-27", "status": "not_checked"},
    ],
    "trail_problems": [
        "the trail is not logging since 2026-11-28T09:00:00Z: no call is recorded, neither in GET /audit nor in the "
        "trail's files, until it is started again"
    ],
}

# GET /audit/coverage's `table_notes` as chalicelib/table_notes.py writes them: Time to Live, and a table created again.
TABLE_NOTES = [
    {
        "kind": "expiry",
        "time": None,
        "text": "DynamoDB's Time to Live deletes items of Music once the time in expires_at has passed, by itself: no "
        "call makes those deletions, so no trail logs them, and an item's history can end without its Delete",
    },
    {
        "kind": "created",
        "time": "2026-11-25T12:00:00Z",
        "text": "Music as it is now was created at 2026-11-25T12:00:00Z (or imported); entries before then are of an "
        "earlier table named Music, deleted since",
    },
]

_sequence = itertools.count(49_600_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000)


def cloudtrail_event(
    event_name: str = "PutItem",
    request_parameters: Mapping[str, Any] | None = None,
    *,
    table: str = "Music",
    event_time: str = "2024-05-01T12:00:00Z",
    user: str = "alice",
    **overrides: Any,
) -> dict[str, Any]:
    """A CloudTrail DynamoDB data event of the documented shape, made by IAM user `user`."""
    if request_parameters is None:
        request_parameters = {"tableName": table, "key": {"id": "item-1"}, "item": ["id", "title"]}
    event: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": f"AIDA{user.upper()}",
            "arn": f"arn:aws:iam::{ACCOUNT}:user/{user}",
            "accountId": ACCOUNT,
            "accessKeyId": f"AKIA{user.upper()}",
            "userName": user,
        },
        "eventTime": event_time,
        "eventSource": "dynamodb.amazonaws.com",
        "eventName": event_name,
        "awsRegion": REGION,
        "sourceIPAddress": "192.0.2.10",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": dict(request_parameters),
        "responseElements": None,
        "requestID": uuid.uuid4().hex.upper(),
        "eventID": str(uuid.uuid4()),
        "readOnly": event_name in ("GetItem", "BatchGetItem", "TransactGetItems", "Query", "Scan"),
        "resources": [{"accountId": ACCOUNT, "type": "AWS::DynamoDB::Table", "ARN": table_arn(table)}],
        "eventType": "AwsApiCall",
        "apiVersion": "2012-08-10",
        "managementEvent": False,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Data",
    }
    event.update(copy.deepcopy(overrides))
    return event


def _arrival(payload: bytes) -> float:
    """A second after the latest `eventTime` among the payload's messages that a stream could see (else
    2024-05-01T12:00:00.5Z): a hostile event's time is no record's arrival."""
    latest = 1714564800.5
    try:
        events = json.loads(gzip.decompress(payload))["logEvents"]
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return latest
    times = []
    for event in events if isinstance(events, list) else []:
        try:
            when = json.loads(event["message"])["eventTime"]
            moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
            if 2000 <= moment.year < 2100:
                times.append(moment.timestamp() + 1)
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
            continue
    return max(times) if times else latest


def table_arn(table: str) -> str:
    return f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}"


def logs_payload(messages: Iterable[str | Mapping[str, Any]], message_type: str = "DATA_MESSAGE") -> bytes:
    """What a CloudWatch Logs subscription filter puts on Kinesis: gzip JSON of the log events."""
    events = [
        {
            "id": str(index),
            "timestamp": 1714564800000 + index,
            "message": message if isinstance(message, str) else json.dumps(message),
        }
        for index, message in enumerate(messages)
    ]
    document = {
        "messageType": message_type,
        "owner": ACCOUNT,
        "logGroup": "/deutzia/cloudtrail",
        "logStream": f"{ACCOUNT}_CloudTrail_{REGION}",
        "subscriptionFilters": ["deutzia-to-kinesis"],
        "logEvents": events,
    }
    return gzip.compress(json.dumps(document).encode())


def kinesis_event(payloads: Iterable[bytes], shard: str = SHARD, arrival: float | None = None) -> dict[str, Any]:
    """A Lambda Kinesis event, one record per payload, with distinct increasing sequence numbers; each record reached
    the stream at `arrival` (epoch seconds), by default a second after the latest call its payload holds."""
    records = []
    for payload in payloads:
        sequence = str(next(_sequence))
        records.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "1",
                    "sequenceNumber": sequence,
                    "data": base64.b64encode(payload).decode("ascii"),
                    "approximateArrivalTimestamp": arrival if arrival is not None else _arrival(payload),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard}:{sequence}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/deutzia-ingest",
                "awsRegion": REGION,
                "eventSourceARN": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/deutzia-audit-events-test",
            }
        )
    return {"Records": records}
