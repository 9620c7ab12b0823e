"""Turns one Lambda batch of Kinesis records (CloudWatch Logs payloads of CloudTrail events) into audit objects.

Records are decoded one by one (undecodable data, malformed events, and events dated too far from when their
record reached the stream, late or forged, go to quarantine per record and count as done), then the whole batch
is written as one object per `(table_name, dt)`, the objects at once, named after the batch's shard and first and
last sequence numbers, so a plain retry overwrites them. Nothing is reported as processed that was not written:
the first record with a row in a failed object, and every later one, fail (the shard resumes there; records
already written then land twice, which every reader de-duplicates). Powertools' per-record BatchProcessor does not
fit batch-wide writes; its Kinesis record class still reads the event. Whether failures are returned
(`batchItemFailures`) or raised depends on how the event source mapping is configured. One structured log line per
invocation; never a key value.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord

from chalicelib.bounds import MAX_EVENT_AGE_SECONDS, MAX_EVENT_CLOCK_SKEW_SECONDS, MAX_EVENT_MESSAGE_CHARS
from chalicelib.cloudtrail import message_stored_lines
from chalicelib.cloudwatch import CONTROL_MESSAGE, decode_logs_payload
from chalicelib.errors import DeutziaError, MalformedEventError, UndecodableRecordError
from chalicelib.records import build_object_key, build_quarantine_key, encode_lines
from chalicelib.store import MAX_CONCURRENT_WRITES, AuditStore

# The event source mapping's settings; the template and the local poller use the same values.
BATCH_SIZE = 100
MAXIMUM_BATCHING_WINDOW_SECONDS = 1
# How many failure reasons one log line carries.
_MAX_LOGGED_FAILURES = 10

logger = Logger(service="deutzia-ingest")


class IngestBatchError(DeutziaError):
    """Some records of the batch failed and the mapping cannot take a partial response: retry the batch."""


_Partition = tuple[str, str]


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
    untimely: int = 0
    quarantined: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str, exc: Exception) -> None:
        if len(self.failures) < _MAX_LOGGED_FAILURES:
            self.failures.append(f"{what}: {type(exc).__name__}: {str(exc)[:300]}")


class BatchIngestor:
    """Decodes a shard's batch record by record (quarantining per record), then writes one object per partition."""

    def __init__(self, store: AuditStore, prefix: str) -> None:
        self._store = store
        self._prefix = prefix
        self.counts = IngestCounts()

    def ingest(self, records: list[KinesisStreamRecord]) -> int | None:
        """Write the batch; the index of the first record that must be retried, or None when all are durable."""
        self.counts.records = len(records)
        groups: dict[_Partition, list[tuple[int, str]]] = defaultdict(list)
        failed_from: int | None = None
        for index, record in enumerate(records):
            try:
                lines = self._decode(record)
            except Exception as exc:  # a quarantine write failed: this record and later ones wait for the retry
                self.counts.fail(record.kinesis.sequence_number, exc)
                failed_from = index
                break
            for partition, line in lines:
                groups[partition].append((index, line))
        included = records[:failed_from] if failed_from is not None else records
        if groups:
            shard_id = included[0].event_id.split(":", 1)[0]
            first, last = included[0].kinesis.sequence_number, included[-1].kinesis.sequence_number
            for partition, first_index, error in self._write(groups, shard_id, first, last):
                self.counts.fail(f"{partition[0]}/{partition[1]}", error)
                failed_from = first_index if failed_from is None else min(failed_from, first_index)
        if failed_from is not None:
            self.counts.failed = len(records) - failed_from
        return failed_from

    def _write(
        self, groups: dict[_Partition, list[tuple[int, str]]], shard_id: str, first: str, last: str
    ) -> list[tuple[_Partition, int, Exception]]:
        """Write every partition's object at once; the ones that failed, with the first record they held."""

        def put(partition: _Partition) -> None:
            key = build_object_key(self._prefix, partition[0], partition[1], shard_id, first, last)
            self._store.put_records(key, encode_lines(line for _, line in groups[partition]))

        failures = []
        with ThreadPoolExecutor(max_workers=min(MAX_CONCURRENT_WRITES, len(groups))) as pool:
            futures = {partition: pool.submit(put, partition) for partition in groups}
        for partition, future in futures.items():
            error = future.exception()
            if error is None:
                self.counts.objects += 1
                self.counts.audit_rows += len(groups[partition])
            elif isinstance(error, Exception):
                failures.append((partition, groups[partition][0][0], error))
            else:
                raise error
        return failures

    def _decode(self, record: KinesisStreamRecord) -> list[tuple[_Partition, str]]:
        """The record's stored lines; undecodable data and malformed events are quarantined here, per record."""
        shard_id = record.event_id.split(":", 1)[0]
        sequence_number = record.kinesis.sequence_number
        data = record.kinesis.data_as_bytes()
        arrival = record.kinesis.approximate_arrival_timestamp
        arrival_date = _utc_date(arrival)
        try:
            payload = decode_logs_payload(data)
        except UndecodableRecordError as exc:
            self._quarantine(data, str(exc), arrival_date, shard_id, sequence_number)
            return []
        if payload.message_type == CONTROL_MESSAGE:
            self.counts.control_messages += 1
            return []
        lines: list[tuple[_Partition, str]] = []
        malformed: list[str] = []
        days = accepted_days(arrival)
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
            untimely = next((dt for (_, dt), _ in event_lines if dt not in days), None)
            if untimely is not None:
                self.counts.untimely += 1
                malformed.append(f"log event {log_event.id[:64]}: {_untimely(untimely, arrival_date)}")
                continue
            lines += event_lines
        if malformed:
            self.counts.malformed += len(malformed)
            reason = f"{len(malformed)} malformed DynamoDB event(s): " + "; ".join(malformed)
            self._quarantine(data, reason, arrival_date, shard_id, sequence_number)
        return lines

    def _quarantine(self, data: bytes, reason: str, dt: str, shard_id: str, sequence_number: str) -> None:
        self._store.put_quarantine(build_quarantine_key(dt, shard_id, sequence_number), data, reason)
        self.counts.quarantined += 1


def process_kinesis_batch(
    event: dict[str, Any], store: AuditStore, prefix: str, report_item_failures: bool
) -> dict[str, list[dict[str, str]]]:
    """Process a Lambda Kinesis event; the partial batch response, or IngestBatchError when failures must raise."""
    records = [KinesisStreamRecord(record) for record in event.get("Records", [])]
    ingestor = BatchIngestor(store, prefix)
    try:
        failed_from = ingestor.ingest(records)
    finally:
        logger.info("ingest batch", extra={"counts": asdict(ingestor.counts)})
    if failed_from is None:
        return {"batchItemFailures": []}
    if not report_item_failures:
        raise IngestBatchError(
            f"{len(records) - failed_from} of {len(records)} records failed; the whole batch will be retried"
        )
    return {"batchItemFailures": [{"itemIdentifier": r.kinesis.sequence_number} for r in records[failed_from:]]}


def event_lines_of(message: str) -> list[tuple[tuple[str, str], str]] | None:
    """The stored lines of one log event's records, each with its `(table_name, dt)` partition; None when the
    message is not a DynamoDB data event (skipped, not failed). MalformedEventError for a data event that cannot
    be recorded, or a message too large or too deep to be one."""
    if len(message) > MAX_EVENT_MESSAGE_CHARS:
        raise MalformedEventError(f"message of {len(message)} characters, over {MAX_EVENT_MESSAGE_CHARS}")
    return message_stored_lines(message)


def accepted_days(arrival: float) -> frozenset[str]:
    """The days an event may be of, when its record reached the stream at `arrival` (epoch seconds): from the day a
    day before it to the day a few minutes after it (MAX_EVENT_AGE_SECONDS, MAX_EVENT_CLOCK_SKEW_SECONDS)."""
    return frozenset(
        _utc_date(arrival + offset) for offset in (-MAX_EVENT_AGE_SECONDS, 0, MAX_EVENT_CLOCK_SKEW_SECONDS)
    )


def _untimely(day: str, arrival_date: str) -> str:
    return (
        f"its eventTime is on {day}, too far from when it reached the stream ({arrival_date}) for a call CloudTrail "
        "delivered: late, or not CloudTrail's; reconciliation backfills it from the trail's files if CloudTrail "
        "logged it"
    )


def _utc_date(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, tz=UTC).strftime("%Y-%m-%d")
