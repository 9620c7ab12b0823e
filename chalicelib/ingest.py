"""Turns one Lambda batch of Kinesis records (CloudWatch Logs payloads of CloudTrail events) into audit objects.

Each record is processed on its own: undecodable data goes to quarantine and counts as done; a store failure
fails that record and every later one, so the shard resumes from the first failure and nothing is reported as
processed that was not written. Whether failures are returned (`batchItemFailures`) or raised depends on how
the event source mapping is configured. One structured log line per invocation; never a key value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord

from chalicelib.bounds import MAX_EVENT_MESSAGE_CHARS, MAX_LINE_BYTES
from chalicelib.cloudtrail import build_audit_records, is_dynamodb_data_event, parse_event_message
from chalicelib.cloudwatch import CONTROL_MESSAGE, decode_logs_payload
from chalicelib.errors import DeutziaError, MalformedEventError, UndecodableRecordError
from chalicelib.records import build_object_key, build_quarantine_key, encode_lines, group_lines_by_partition
from chalicelib.store import AuditStore

# The event source mapping's settings; the template and the local poller use the same values.
BATCH_SIZE = 100
MAXIMUM_BATCHING_WINDOW_SECONDS = 1
# How many failure reasons one log line carries.
_MAX_LOGGED_FAILURES = 10

logger = Logger(service="deutzia-ingest")


class IngestBatchError(DeutziaError):
    """Some records of the batch failed and the mapping cannot take a partial response: retry the batch."""


class _SkippedAfterFailureError(DeutziaError):
    """An earlier record of the shard failed: this one waits for the retry, to keep the shard's order."""


@dataclass
class IngestCounts:
    """What one invocation did; logged as one line."""

    records: int = 0
    control_messages: int = 0
    events: int = 0
    audit_rows: int = 0
    objects: int = 0
    skipped: int = 0
    malformed: int = 0
    quarantined: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


class KinesisRecordIngestor:
    """Processes one shard's records in order, writing through an AuditStore."""

    def __init__(self, store: AuditStore, prefix: str) -> None:
        self._store = store
        self._prefix = prefix
        self.counts = IngestCounts()

    def ingest(self, record: KinesisStreamRecord) -> None:
        """Write the audit records of one Kinesis record (or quarantine it); raise to have it retried."""
        self.counts.records += 1
        shard_id = record.event_id.split(":", 1)[0]
        sequence_number = record.kinesis.sequence_number
        try:
            if self.counts.failed:
                raise _SkippedAfterFailureError(f"skipped after an earlier failure in {shard_id}")
            self._ingest(record, shard_id, sequence_number)
        except Exception as exc:
            self.counts.failed += 1
            if len(self.counts.failures) < _MAX_LOGGED_FAILURES:
                self.counts.failures.append(f"{sequence_number}: {type(exc).__name__}: {exc}")
            raise

    def _ingest(self, record: KinesisStreamRecord, shard_id: str, sequence_number: str) -> None:
        data = record.kinesis.data_as_bytes()
        arrival_date = _utc_date(record.kinesis.approximate_arrival_timestamp)
        try:
            payload = decode_logs_payload(data)
        except UndecodableRecordError as exc:
            self._quarantine(data, str(exc), arrival_date, shard_id, sequence_number)
            return
        if payload.message_type == CONTROL_MESSAGE:
            self.counts.control_messages += 1
            return
        lines: list[tuple[tuple[str, str], str]] = []
        malformed: list[str] = []
        for log_event in payload.log_events:
            self.counts.events += 1
            try:
                event_lines = event_lines_of(log_event.message)
            except MalformedEventError as exc:
                malformed.append(f"log event {log_event.id[:64]}: {exc}")
                continue
            except Exception as exc:  # whatever a payload holds, it must never block the shard: keep its bytes
                problem = f"{type(exc).__name__}: {str(exc)[:200]}"
                malformed.append(f"log event {log_event.id[:64]}: formatter failed: {problem}")
                continue
            if event_lines is None:
                self.counts.skipped += 1
                continue
            lines += event_lines
        for (table_name, dt), group in group_lines_by_partition(lines).items():
            key = build_object_key(self._prefix, table_name, dt, shard_id, sequence_number)
            self._store.put_records(key, encode_lines(group))
            self.counts.objects += 1
        if malformed:
            self.counts.malformed += len(malformed)
            reason = f"{len(malformed)} malformed DynamoDB event(s): " + "; ".join(malformed)
            self._quarantine(data, reason, arrival_date, shard_id, sequence_number)
        self.counts.audit_rows += len(lines)

    def _quarantine(self, data: bytes, reason: str, dt: str, shard_id: str, sequence_number: str) -> None:
        self._store.put_quarantine(build_quarantine_key(dt, shard_id, sequence_number), data, reason)
        self.counts.quarantined += 1


def process_kinesis_batch(
    event: dict[str, Any], store: AuditStore, prefix: str, report_item_failures: bool
) -> dict[str, list[dict[str, str]]]:
    """Process a Lambda Kinesis event; the partial batch response, or IngestBatchError when failures must raise."""
    ingestor = KinesisRecordIngestor(store, prefix)
    processor = BatchProcessor(event_type=EventType.KinesisDataStreams, raise_on_entire_batch_failure=False)
    try:
        with processor(event.get("Records", []), ingestor.ingest):
            processor.process()
    finally:
        logger.info("ingest batch", extra={"counts": asdict(ingestor.counts)})
    response = processor.response()
    failures = response.get("batchItemFailures", [])
    if failures and not report_item_failures:
        raise IngestBatchError(
            f"{len(failures)} of {ingestor.counts.records} records failed; the whole batch will be retried"
        )
    return {"batchItemFailures": [{"itemIdentifier": str(failure["itemIdentifier"])} for failure in failures]}


def event_lines_of(message: str) -> list[tuple[tuple[str, str], str]] | None:
    """The stored lines of one log event's records, each with its `(table_name, dt)` partition; None when the
    message is not a DynamoDB data event (skipped, not failed). MalformedEventError for a data event that cannot
    be recorded, or a message too large or too deep to be one."""
    if len(message) > MAX_EVENT_MESSAGE_CHARS:
        raise MalformedEventError(f"message of {len(message)} characters, over {MAX_EVENT_MESSAGE_CHARS}")
    try:
        event = parse_event_message(message)
    except RecursionError:
        raise MalformedEventError("message is JSON nested too deeply") from None
    except ValueError:
        return None
    if not is_dynamodb_data_event(event):
        return None
    assert isinstance(event, Mapping)
    lines = [((record.table_name, record.dt), record.to_line()) for record in build_audit_records(event)]
    for _, line in lines:
        if len(line) > MAX_LINE_BYTES // 4 and len(line.encode("utf-8")) > MAX_LINE_BYTES:
            raise MalformedEventError(f"a record of {len(line)} characters, over the {MAX_LINE_BYTES}-byte line bound")
    return lines


def _utc_date(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=UTC).strftime("%Y-%m-%d")
