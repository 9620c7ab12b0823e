"""Replaying what ingest gave up on: the range read back from moto's Kinesis, ingested through the deployed
`replay_failed_batches` (chalice.test), retried with backoff, and the local replayer's queue semantics."""

from __future__ import annotations

import gzip
import itertools
import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from chalice.test import Client

import app as deutzia_app
from chalicelib.replay import (
    FailedBatch,
    KinesisRangeReader,
    ReplayError,
    lambda_kinesis_record,
    parse_failure_record,
    replay_failed_batch,
)
from deutzia_local.replayer import FailureQueueReplayer
from tests.factories import cloudtrail_event, logs_payload
from tests.unit.test_ingest import MemoryStore

_names = itertools.count()
SHARD = "shardId-000000000000"


@pytest.fixture
def stream(s3: Any) -> tuple[Any, str, list[dict[str, Any]]]:
    """A stream holding six CloudWatch Logs payloads (one event each): its client, ARN and the events."""
    kinesis = boto3.client("kinesis")
    name = f"replay-{next(_names)}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # Kinesis stamps each record's arrival: now
    events = [
        cloudtrail_event(request_parameters={"tableName": "Music", "key": {"id": f"k{n}"}}, event_time=now)
        for n in range(6)
    ]
    for event in events:
        kinesis.put_record(StreamName=name, Data=logs_payload([event]), PartitionKey="p")
    return kinesis, arn, events


def _on_failure_record(kinesis: Any, arn: str, first: int, last: int) -> str:
    """What Lambda sends to the on-failure destination for records `first..last` of the shard."""
    name = arn.split("/", 1)[1]
    iterator = kinesis.get_shard_iterator(StreamName=name, ShardId=SHARD, ShardIteratorType="TRIM_HORIZON")
    records = kinesis.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    info = {
        "shardId": SHARD,
        "startSequenceNumber": records[first]["SequenceNumber"],
        "endSequenceNumber": records[last]["SequenceNumber"],
        "batchSize": last - first + 1,
        "streamArn": arn,
    }
    return json.dumps({"requestContext": {"condition": "RetryAttemptsExhausted"}, "KinesisBatchInfo": info})


def _sqs_event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {"messageId": str(n), "receiptHandle": str(n), "body": body, "attributes": {}, "eventSource": "aws:sqs"}
            for n, body in enumerate(bodies)
        ]
    }


def _recorded_ids(s3: Any, bucket: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="audit/").get("Contents", [])
    bodies = [s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listing]
    return [json.loads(line)["event_id"] for body in bodies for line in gzip.decompress(body).splitlines()]


def test_the_reader_returns_exactly_the_failed_range(stream: tuple[Any, str, list[dict[str, Any]]]) -> None:
    kinesis, arn, _ = stream
    batch = parse_failure_record(_on_failure_record(kinesis, arn, 2, 4))
    records = KinesisRangeReader(kinesis, page_size=2).read_range(batch)
    sequence_numbers = [r["kinesis"]["sequenceNumber"] for r in records]
    assert len(sequence_numbers) == 3
    assert (sequence_numbers[0], sequence_numbers[-1]) == (batch.start_sequence_number, batch.end_sequence_number)


def test_replay_failed_batches_writes_the_range_through_the_deployed_handler(
    client: Client, s3: Any, audit_bucket: str, stream: tuple[Any, str, list[dict[str, Any]]]
) -> None:
    kinesis, arn, events = stream
    deutzia_app.get_stream_reader.cache_clear()
    client.lambda_.invoke("replay_failed_batches", _sqs_event(_on_failure_record(kinesis, arn, 1, 3)))
    assert sorted(_recorded_ids(s3, audit_bucket)) == sorted(e["eventID"] for e in events[1:4])
    # A second delivery of the same message overwrites the same objects: nothing is duplicated.
    client.lambda_.invoke("replay_failed_batches", _sqs_event(_on_failure_record(kinesis, arn, 1, 3)))
    assert sorted(_recorded_ids(s3, audit_bucket)) == sorted(e["eventID"] for e in events[1:4])


def test_a_message_that_is_no_on_failure_record_raises_so_it_reaches_the_dead_letter_queue(
    client: Client, audit_bucket: str
) -> None:
    with pytest.raises(ReplayError, match="not an on-failure record"):
        client.lambda_.invoke("replay_failed_batches", _sqs_event('{"hello": "world"}'))


class _ListReader:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records

    def read_range(self, batch: FailedBatch) -> list[dict[str, Any]]:
        return self.records


def _batch_of(records: list[dict[str, Any]]) -> FailedBatch:
    first, last = records[0]["kinesis"]["sequenceNumber"], records[-1]["kinesis"]["sequenceNumber"]
    return FailedBatch("arn:aws:kinesis:us-east-1:123456789012:stream/s", SHARD, first, last, len(records))


def _records(count: int) -> list[dict[str, Any]]:
    raw = [
        {
            "SequenceNumber": str(1000 + n),
            "PartitionKey": "p",
            "Data": logs_payload([cloudtrail_event()]),
            "ApproximateArrivalTimestamp": 1714564800.0,
        }
        for n in range(count)
    ]
    return [lambda_kinesis_record(r, SHARD, "arn:aws:kinesis:us-east-1:123456789012:stream/s") for r in raw]


def test_replay_retries_what_still_fails_with_growing_waits() -> None:
    records = _records(4)
    store = MemoryStore(fail_on_write=1)  # the first write fails once, then S3 is back
    waits: list[float] = []
    result = replay_failed_batch(_batch_of(records), _ListReader(records), store, "audit/", sleep=waits.append)
    assert (result.records, result.attempts, result.lost) == (4, 2, 0)
    assert waits == [1.0]
    assert len(store.lines()) == 4


def test_replay_that_keeps_failing_raises_after_its_attempts() -> None:
    class DownStore(MemoryStore):
        def put_records(self, key: str, body: bytes) -> None:
            from chalicelib.errors import StoreError

            raise StoreError("S3 PutObject failed: AccessDenied")

    records = _records(3)
    waits: list[float] = []
    with pytest.raises(ReplayError, match="3 of 3 records"):
        replay_failed_batch(_batch_of(records), _ListReader(records), DownStore(), "audit/", sleep=waits.append)
    assert waits == [1.0, 2.0, 4.0, 8.0]


def test_a_range_the_stream_no_longer_holds_is_reported_lost_not_retried_for_ever() -> None:
    records = _records(3)
    result = replay_failed_batch(_batch_of(records), _ListReader([]), MemoryStore(), "audit/", sleep=lambda _: None)
    assert (result.records, result.lost) == (0, 3)


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[" * 5000,
        json.dumps({"KinesisBatchInfo": {"shardId": SHARD}}),
        json.dumps(
            {
                "KinesisBatchInfo": {
                    "shardId": SHARD,
                    "startSequenceNumber": "9",
                    "endSequenceNumber": "1",
                    "streamArn": "arn",
                }
            }
        ),
        json.dumps(
            {
                "KinesisBatchInfo": {
                    "shardId": SHARD,
                    "startSequenceNumber": "1; drop",
                    "endSequenceNumber": "2",
                    "streamArn": "arn",
                }
            }
        ),
    ],
)
def test_malformed_on_failure_records_are_refused(body: str) -> None:
    with pytest.raises(ReplayError):
        parse_failure_record(body)


def test_the_local_replayer_deletes_only_what_it_replayed(s3: Any) -> None:
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"failures-{next(_names)}")["QueueUrl"]
    for body in ("good-1", "bad", "good-2"):
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    handled: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> None:
        (record,) = event["Records"]
        handled.append(record["body"])
        if record["body"] == "bad":
            raise ReplayError("S3 still down")

    replayer = FailureQueueReplayer(sqs, queue_url, handler)
    result = replayer.drain()
    assert (result.replayed, result.failed) == (2, 1)
    assert sorted(handled) == ["bad", "good-1", "good-2"]
    (left,) = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert left["Body"] == "bad"
