"""Replays what ingest gave up on: Lambda's on-failure record names a shard's sequence range; its records are read
back from the stream (kept 7 days) and ingested by the same code as the fast path, retried with backoff.

The range is read through the StreamReader port (KinesisRangeReader in AWS and locally). A replay either writes
every record of the range or raises ReplayError, so the failure queue keeps the message for the next attempt.
Records the stream no longer holds are named loudly: the trail's own files still have their events.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import DeutziaError
from chalicelib.ingest import process_kinesis_batch
from chalicelib.store import AuditStore

logger = logging.getLogger("deutzia.replay")

# How often one replay retries the records that still fail, and how long it waits between tries.
REPLAY_ATTEMPTS = 5
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
# Lambda hands a function at most 10,000 Kinesis records; a range that claims more is not an on-failure record.
MAX_RANGE_RECORDS = 10_000
_MAX_MESSAGE_CHARS = 64 * 1024


class ReplayError(DeutziaError):
    """The range could not be replayed now; the failure queue keeps its message for another attempt."""


@dataclass(frozen=True)
class FailedBatch:
    """A shard's sequence range that ingest gave up on, from Lambda's on-failure record (`KinesisBatchInfo`)."""

    stream_arn: str
    shard_id: str
    start_sequence_number: str
    end_sequence_number: str
    batch_size: int


@dataclass(frozen=True)
class ReplayResult:
    """What one replay did."""

    records: int
    lost: int
    attempts: int


class StreamReader(Protocol):
    """Reads a shard's records between two sequence numbers, as Lambda-shaped Kinesis records."""

    def read_range(self, batch: FailedBatch) -> list[dict[str, Any]]: ...


def parse_failure_record(body: str) -> FailedBatch:
    """The range an on-failure record names; ReplayError when the message is not one (it would never succeed)."""
    try:
        if len(body) > _MAX_MESSAGE_CHARS:
            raise ValueError("too long")
        info = json.loads(body)["KinesisBatchInfo"]
        batch = FailedBatch(
            stream_arn=_text(info["streamArn"]),
            shard_id=_text(info["shardId"]),
            start_sequence_number=_sequence(info["startSequenceNumber"]),
            end_sequence_number=_sequence(info["endSequenceNumber"]),
            batch_size=int(info.get("batchSize", 0)),
        )
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ReplayError(f"not an on-failure record of a Kinesis event source mapping: {exc!r}"[:300]) from None
    if int(batch.end_sequence_number) < int(batch.start_sequence_number):
        raise ReplayError("the on-failure record's range ends before it starts")
    return batch


def _text(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > 2048:
        raise ValueError("not a name")
    return value


def _sequence(value: object) -> str:
    if not isinstance(value, str) or not value.isdigit() or len(value) > 128:
        raise ValueError("not a sequence number")
    return value


def lambda_kinesis_record(record: Mapping[str, Any], shard_id: str, stream_arn: str) -> dict[str, Any]:
    """A record from Kinesis GetRecords as Lambda delivers it to a Kinesis handler."""
    arrival = record["ApproximateArrivalTimestamp"]
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record["PartitionKey"],
            "sequenceNumber": record["SequenceNumber"],
            "data": base64.b64encode(record["Data"]).decode("ascii"),
            "approximateArrivalTimestamp": arrival.timestamp() if isinstance(arrival, datetime) else arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{record['SequenceNumber']}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "",
        "awsRegion": stream_arn.split(":")[3],
        "eventSourceARN": stream_arn,
    }


class KinesisRangeReader:
    """StreamReader on Kinesis: GetShardIterator at the range's start, then GetRecords past its end."""

    def __init__(self, client: Any, page_size: int = 1000) -> None:
        self._client = client
        self._page_size = page_size

    @classmethod
    def from_environment(cls) -> KinesisRangeReader:
        """A reader through $AWS_ENDPOINT_URL when boto3 finds it set."""
        return cls(boto3.client("kinesis"))

    def read_range(self, batch: FailedBatch) -> list[dict[str, Any]]:
        start, end = int(batch.start_sequence_number), int(batch.end_sequence_number)
        try:
            iterator = self._client.get_shard_iterator(
                StreamName=batch.stream_arn.split("/", 1)[-1],  # by name: moto's GetRecords loses an ARN's stream
                ShardId=batch.shard_id,
                ShardIteratorType="AT_SEQUENCE_NUMBER",
                StartingSequenceNumber=batch.start_sequence_number,
            )["ShardIterator"]
            records: list[dict[str, Any]] = []
            while iterator and len(records) <= MAX_RANGE_RECORDS:
                response = self._client.get_records(ShardIterator=iterator, Limit=self._page_size)
                page = response.get("Records", [])
                for record in page:
                    if start <= int(record["SequenceNumber"]) <= end:
                        records.append(lambda_kinesis_record(record, batch.shard_id, batch.stream_arn))
                past_end = bool(page) and int(page[-1]["SequenceNumber"]) >= end
                caught_up = not page and response.get("MillisBehindLatest", 0) == 0
                if past_end or caught_up:
                    break
                iterator = response.get("NextShardIterator")
        except (ClientError, BotoCoreError) as exc:
            raise ReplayError(f"reading {batch.shard_id} from the stream failed: {type(exc).__name__}: {exc}") from exc
        return records


def replay_failed_batch(
    batch: FailedBatch,
    reader: StreamReader,
    store: AuditStore,
    prefix: str,
    attempts: int = REPLAY_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayResult:
    """Ingest every record of the range, retrying the failed ones with backoff; ReplayError when some still fail."""
    records = reader.read_range(batch)
    if not records:
        logger.error(
            "replay of %s %s..%s: the stream no longer holds these records; their events are in the trail's files",
            batch.shard_id,
            batch.start_sequence_number,
            batch.end_sequence_number,
        )
        return ReplayResult(records=0, lost=batch.batch_size, attempts=0)
    lost = 0
    if records[0]["kinesis"]["sequenceNumber"] != batch.start_sequence_number:
        lost = max(0, batch.batch_size - len(records))
        logger.error("replay of %s: the range's first records have expired from the stream", batch.shard_id)
    pending = records
    delay = FIRST_BACKOFF_SECONDS
    for attempt in range(1, attempts + 1):
        response = process_kinesis_batch({"Records": pending}, store, prefix, report_item_failures=True)
        failed = {failure["itemIdentifier"] for failure in response["batchItemFailures"]}
        if not failed:
            return ReplayResult(records=len(records), lost=lost, attempts=attempt)
        first = min(i for i, record in enumerate(pending) if record["kinesis"]["sequenceNumber"] in failed)
        pending = pending[first:]
        if attempt < attempts:
            sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
    raise ReplayError(f"{len(pending)} of {len(records)} records of {batch.shard_id} still fail after {attempts} tries")
