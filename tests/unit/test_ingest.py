"""One Lambda batch: records written per partition, bad data quarantined, failures never reported as success."""

from __future__ import annotations

import gzip
import json
import threading
from collections import Counter
from typing import Any

import pytest

from chalicelib.errors import StoreError
from chalicelib.ingest import IngestBatchError, logger, process_kinesis_batch
from tests.factories import cloudtrail_event, kinesis_event, logs_payload


class MemoryStore:
    """An AuditStore in memory that can fail its Nth write, or every write to a key holding `fail_on_key`, as S3 does
    under throttling. Safe to write from several threads, as ingest does."""

    def __init__(self, fail_on_write: int | None = None, fail_on_key: str | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.quarantine: dict[str, tuple[bytes, str]] = {}
        self.writes = 0
        self._fail_on_write = fail_on_write
        self.fail_on_key = fail_on_key
        self._lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._lock:
            self.writes += 1
            if self.writes == self._fail_on_write or (self.fail_on_key is not None and self.fail_on_key in key):
                raise StoreError("S3 PutObject failed: SlowDown")

    def put_records(self, key: str, body: bytes) -> None:
        self._count(key)
        with self._lock:
            self.objects[key] = body

    def put_quarantine(self, key: str, body: bytes, reason: str) -> None:
        self._count(key)
        with self._lock:
            self.quarantine[key] = (body, reason)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for body in self.objects.values() for line in gzip.decompress(body).splitlines()]


def _sequence_numbers(event: dict[str, Any]) -> list[str]:
    return [record["kinesis"]["sequenceNumber"] for record in event["Records"]]


def test_a_batch_is_written_as_one_object_per_partition_named_after_its_sequence_range() -> None:
    store = MemoryStore()
    events = [
        [cloudtrail_event(table="Music"), cloudtrail_event(table="Books")],
        [cloudtrail_event(table="Music", event_time="2024-05-02T00:00:01Z"), cloudtrail_event(table="Music")],
    ]
    event = kinesis_event([logs_payload(batch) for batch in events])
    assert process_kinesis_batch(event, store, "audit/", report_item_failures=True) == {"batchItemFailures": []}
    first, last = _sequence_numbers(event)
    assert sorted(store.objects) == [
        f"audit/table_name=Books/dt=2024-05-01/shardId-000000000000-{first}-{last}.json.gz",
        f"audit/table_name=Music/dt=2024-05-01/shardId-000000000000-{first}-{last}.json.gz",
        f"audit/table_name=Music/dt=2024-05-02/shardId-000000000000-{first}-{last}.json.gz",
    ]
    assert sorted(line["event_id"] for line in store.lines()) == sorted(e["eventID"] for b in events for e in b)
    before = dict(store.objects)
    assert process_kinesis_batch(event, store, "audit/", report_item_failures=True) == {"batchItemFailures": []}
    assert store.objects == before  # a plain retry rewrites the same objects, byte for byte


def test_undecodable_records_are_quarantined_byte_for_byte_and_not_retried() -> None:
    store = MemoryStore()
    garbage = b"\x00\x01 definitely not gzip"
    event = kinesis_event([garbage, logs_payload([cloudtrail_event()])])
    assert process_kinesis_batch(event, store, "audit/", report_item_failures=True) == {"batchItemFailures": []}
    ((key, (body, reason)),) = store.quarantine.items()
    assert key == f"quarantine/dt=2024-05-01/shardId-000000000000-{_sequence_numbers(event)[0]}"
    assert body == garbage
    assert "not gzip" in reason
    assert len(store.lines()) == 1


def test_control_messages_and_other_events_are_skipped() -> None:
    store = MemoryStore()
    other = [cloudtrail_event(eventName="UpdateTable"), "START RequestId: 1", cloudtrail_event(eventName="GetRecords")]
    event = kinesis_event([logs_payload(["CWL CONTROL MESSAGE"], "CONTROL_MESSAGE"), logs_payload(other)])
    assert process_kinesis_batch(event, store, "audit/", report_item_failures=True) == {"batchItemFailures": []}
    assert store.objects == {}
    assert store.quarantine == {}


def test_counts_are_logged_as_one_structured_line_without_key_values(caplog: pytest.LogCaptureFixture) -> None:
    secret_key = {"id": "customer-4711-secret"}
    events = [cloudtrail_event(request_parameters={"tableName": "Music", "key": secret_key}), "not json"]
    process_kinesis_batch(kinesis_event([logs_payload(events), b"junk"]), MemoryStore(), "audit/", True)
    (record,) = [record for record in caplog.records if record.getMessage() == "ingest batch"]
    line = logger.registered_formatter.format(record)
    assert "\n" not in line
    counts = json.loads(line)["counts"]
    assert {k: counts[k] for k in ("records", "events", "audit_rows", "skipped", "quarantined", "failed")} == {
        "records": 2,
        "events": 2,
        "audit_rows": 1,
        "skipped": 1,
        "quarantined": 1,
        "failed": 0,
    }
    assert "customer-4711-secret" not in line


def test_malformed_event_is_quarantined_while_its_neighbours_are_recorded() -> None:
    store = MemoryStore()
    broken = cloudtrail_event()
    del broken["eventTime"]
    good = cloudtrail_event()
    event = kinesis_event([logs_payload([broken, good])])
    assert process_kinesis_batch(event, store, "audit/", report_item_failures=True) == {"batchItemFailures": []}
    assert [line["event_id"] for line in store.lines()] == [good["eventID"]]
    ((body, reason),) = store.quarantine.values()
    assert "log event 0: eventTime is missing" in reason
    assert body == logs_payload([broken, good])


def test_an_event_dated_far_from_its_arrival_is_quarantined_as_late_or_forged() -> None:
    # Kinesis stamps when a record arrived; a log event's writer can set eventTime to any day, even one already
    # reconciled. Ingest takes the day before its arrival's to a few minutes after it; reconciliation backfills the
    # rest from the trail's files if CloudTrail logged them.
    arrival = 1714608000.0  # 2024-05-02T00:00:00Z
    kept = [
        cloudtrail_event(event_time="2024-04-30T00:00:00Z"),  # a day before it arrived
        cloudtrail_event(event_time="2024-05-01T23:59:59Z"),
        cloudtrail_event(event_time="2024-05-02T00:04:59Z"),  # a clock a few minutes ahead
    ]
    refused = [
        cloudtrail_event(event_time="2024-04-29T23:59:59Z"),  # two days before it arrived: a day long reconciled
        cloudtrail_event(event_time="2024-05-03T00:00:00Z"),  # a day ahead
        cloudtrail_event(event_time="2999-12-31T00:00:00Z"),
    ]
    store = MemoryStore()
    event = kinesis_event([logs_payload(kept[1:] + refused)], arrival=arrival)
    earlier = kinesis_event([logs_payload(kept[:1])], arrival=arrival - 86400)

    assert process_kinesis_batch(event, store, "audit/", report_item_failures=True) == {"batchItemFailures": []}
    assert process_kinesis_batch(earlier, store, "audit/", report_item_failures=True) == {"batchItemFailures": []}

    assert sorted(line["event_id"] for line in store.lines()) == sorted(e["eventID"] for e in kept)
    ((key, (body, reason)),) = store.quarantine.items()
    assert key.startswith("quarantine/dt=2024-05-02/")
    assert body == logs_payload(kept[1:] + refused)
    assert reason.startswith("3 malformed DynamoDB event(s): log event 2: its eventTime is on 2024-04-29, too far from")
    assert "log event 3: its eventTime is on 2024-05-03" in reason
    assert "log event 4: its eventTime is on 2999-12-31" in reason


@pytest.mark.parametrize("failing", range(4))
def test_a_failed_object_fails_its_first_record_and_every_later_one(failing: int) -> None:
    tables = ["Music", "Books", "Films", "Games"]
    store = MemoryStore(fail_on_key=f"table_name={tables[failing]}/")
    event = kinesis_event([logs_payload([cloudtrail_event(table=table)]) for table in tables])
    sequences = _sequence_numbers(event)
    response = process_kinesis_batch(event, store, "audit/", report_item_failures=True)
    assert response == {"batchItemFailures": [{"itemIdentifier": s} for s in sequences[failing:]]}
    assert len(store.objects) == 3  # the other partitions were written, and count as written only before the failure


def test_a_failed_quarantine_write_fails_its_record_and_later_ones_not_the_earlier() -> None:
    store = MemoryStore(fail_on_key="quarantine/")
    event = kinesis_event([logs_payload([cloudtrail_event()]), b"junk", logs_payload([cloudtrail_event()])])
    sequences = _sequence_numbers(event)
    response = process_kinesis_batch(event, store, "audit/", report_item_failures=True)
    assert response == {"batchItemFailures": [{"itemIdentifier": s} for s in sequences[1:]]}
    (key,) = store.objects
    assert key.endswith(f"-{sequences[0]}-{sequences[0]}.json.gz")  # only what came before the failure
    assert len(store.lines()) == 1


def test_failures_raise_when_the_mapping_ignores_partial_responses() -> None:
    store = MemoryStore(fail_on_write=1)
    with pytest.raises(IngestBatchError, match="2 of 2 records failed"):
        process_kinesis_batch(kinesis_event([logs_payload([cloudtrail_event()])] * 2), store, "audit/", False)


def test_a_retry_after_a_failure_may_store_a_row_twice_but_loses_none() -> None:
    store = MemoryStore(fail_on_key="table_name=Books/")
    events = [[cloudtrail_event(table="Music")], [cloudtrail_event(table="Books")], [cloudtrail_event(table="Music")]]
    event = kinesis_event([logs_payload(batch) for batch in events])
    first = process_kinesis_batch(event, store, "audit/", report_item_failures=True)
    failed = [f["itemIdentifier"] for f in first["batchItemFailures"]]
    assert failed == _sequence_numbers(event)[1:]
    store.fail_on_key = None
    retry = {"Records": event["Records"][1:]}  # Lambda resumes at the first failed record
    assert process_kinesis_batch(retry, store, "audit/", report_item_failures=True) == {"batchItemFailures": []}
    stored = Counter(line["event_id"] for line in store.lines())
    assert set(stored) == {e["eventID"] for batch in events for e in batch}
    assert stored[events[2][0]["eventID"]] == 2  # written with the first attempt's Music object and again
    assert stored[events[0][0]["eventID"]] == stored[events[1][0]["eventID"]] == 1


def test_an_event_the_formatter_cannot_handle_is_quarantined_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    import chalicelib.cloudtrail as formatter_module

    def explode(event: Any) -> Any:
        raise TypeError("unexpected shape")

    monkeypatch.setattr(formatter_module, "_record_columns", explode)
    store = MemoryStore()
    response = process_kinesis_batch(kinesis_event([logs_payload([cloudtrail_event()])]), store, "audit/", True)
    assert response == {"batchItemFailures": []}
    ((_, reason),) = store.quarantine.values()
    assert "formatter failed: TypeError: unexpected shape" in reason
