"""`ingest_audit_events` through chalice.test.Client, writing to moto's S3: partitions, quarantine, S3 failures."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from chalice.test import Client

import app as deutzia_app
from chalicelib.ingest import IngestBatchError
from chalicelib.store import S3AuditStore
from tests.factories import cloudtrail_event, kinesis_event, logs_payload


def _objects(s3: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"]: s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listing}


def _lines(objects: dict[str, bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for body in objects.values() for line in gzip.decompress(body).splitlines()]


def test_records_land_partitioned_by_table_and_utc_date(client: Client, s3: Any, audit_bucket: str) -> None:
    events = [
        cloudtrail_event(event_time="2024-05-01T23:59:59Z"),
        cloudtrail_event(event_time="2024-05-02T00:00:00Z"),
        cloudtrail_event(table="Books", request_parameters={"tableName": "Books", "key": {"isbn": 1}}),
    ]
    event = kinesis_event([logs_payload(events)])
    assert client.lambda_.invoke("ingest_audit_events", event).payload == {"batchItemFailures": []}
    objects = _objects(s3, audit_bucket)
    assert sorted(key.rsplit("/", 1)[0] for key in objects) == [
        "audit/table_name=Books/dt=2024-05-01",
        "audit/table_name=Music/dt=2024-05-01",
        "audit/table_name=Music/dt=2024-05-02",
    ]
    assert sorted(line["event_id"] for line in _lines(objects)) == sorted(e["eventID"] for e in events)


def test_bad_records_are_quarantined_with_their_reason(client: Client, s3: Any, audit_bucket: str) -> None:
    bad = {
        "garbage": b"\xde\xad\xbe\xef",
        "truncated gzip": logs_payload([cloudtrail_event()])[:30],
        "gzip of non-JSON": gzip.compress(b"<html>nope</html>"),
        "wrong shape": gzip.compress(json.dumps({"Records": []}).encode()),
    }
    event = kinesis_event(list(bad.values()))
    assert client.lambda_.invoke("ingest_audit_events", event).payload == {"batchItemFailures": []}
    sequences = [record["kinesis"]["sequenceNumber"] for record in event["Records"]]
    for (name, data), sequence in zip(bad.items(), sequences, strict=True):
        key = f"quarantine/dt=2024-05-01/shardId-000000000000-{sequence}"
        stored = s3.get_object(Bucket=audit_bucket, Key=key)
        assert stored["Body"].read() == data, name
        assert stored["Metadata"]["reason"], name
    assert _objects(s3, audit_bucket, "audit/") == {}


def test_shared_kinesis_fixtures_are_skipped_not_failed(
    client: Client, s3: Any, audit_bucket: str, shared_fixtures: Path
) -> None:
    powertools = json.loads(
        (shared_fixtures / "kinesis" / "powertools-kinesisStreamCloudWatchLogsEvent.json").read_text()
    )
    control = (shared_fixtures / "kinesis" / "clever-cwl-kinesis-control-message.b64").read_text().strip()
    event = kinesis_event([base64.b64decode(control)])
    event["Records"] += powertools["Records"]
    assert client.lambda_.invoke("ingest_audit_events", event).payload == {"batchItemFailures": []}
    assert _objects(s3, audit_bucket) == {}


def _failing_store(bucket: str, failing_key: str) -> tuple[S3AuditStore, dict[str, bool]]:
    """A real S3 store whose PutObject calls to keys holding `failing_key` are refused as S3 does under load, while
    the returned switch's `on` is true."""
    s3_client = boto3.client("s3")
    switch = {"on": True}

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if switch["on"] and failing_key in params["Key"]:
            raise ClientError(
                {"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}}, "PutObject"
            )

    s3_client.meta.events.register("provide-client-params.s3.PutObject", refuse)
    return S3AuditStore(s3_client, bucket), switch


def test_s3_failure_mid_batch_fails_the_rest_and_the_retry_duplicates_nothing_visible(
    client: Client, s3: Any, audit_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, switch = _failing_store(audit_bucket, "table_name=Books/")
    monkeypatch.setattr(deutzia_app, "get_audit_store", lambda: store)
    batches = [[cloudtrail_event()], [cloudtrail_event(table="Books")], [cloudtrail_event(), cloudtrail_event()]]
    event = kinesis_event([logs_payload(events) for events in batches])
    sequences = [record["kinesis"]["sequenceNumber"] for record in event["Records"]]
    response = client.lambda_.invoke("ingest_audit_events", event).payload
    assert response == {"batchItemFailures": [{"itemIdentifier": s} for s in sequences[1:]]}
    assert len(_objects(s3, audit_bucket)) == 1  # Music, with rows of records 0 and 2

    # Lambda retries from the first failed record; this time S3 accepts every write.
    switch["on"] = False
    retry = {"Records": event["Records"][1:]}
    assert client.lambda_.invoke("ingest_audit_events", retry).payload == {"batchItemFailures": []}
    stored = [line["event_id"] for line in _lines(_objects(s3, audit_bucket))]
    expected = sorted(e["eventID"] for events in batches for e in events)
    assert len(stored) == len(expected) + 2  # record 2's rows were written by both attempts
    assert sorted(set(stored)) == expected
    entries = json.loads(client.http.get("/audit?table=Music&limit=1000").body)["entries"]
    assert sorted(entry["event_id"] for entry in entries) == sorted(e["eventID"] for e in batches[0] + batches[2])


def test_without_partial_responses_a_failure_fails_the_invocation(
    client: Client, audit_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPORT_BATCH_ITEM_FAILURES", "false")
    store, _ = _failing_store(audit_bucket, "table_name=Books/")
    monkeypatch.setattr(deutzia_app, "get_audit_store", lambda: store)
    event = kinesis_event([logs_payload([cloudtrail_event(table=t)]) for t in ("Music", "Books", "Music")])
    with pytest.raises(IngestBatchError, match="2 of 3 records failed"):
        client.lambda_.invoke("ingest_audit_events", event)


def test_a_250_kb_event_is_recorded_with_its_statement_cut_and_marked(
    client: Client, s3: Any, audit_bucket: str
) -> None:
    assignments = ", ".join(f"note{n} = ***(Redacted)" for n in range(12_000))
    statement = f"UPDATE Music SET {assignments} WHERE id = 'big'"
    event = cloudtrail_event("ExecuteStatement", {"statement": statement})
    payload = logs_payload([event])
    assert len(json.dumps(event)) > 250_000
    assert client.lambda_.invoke("ingest_audit_events", kinesis_event([payload])).payload == {"batchItemFailures": []}
    (line,) = _lines(_objects(s3, audit_bucket))
    assert line["item_key"] == '{"id":"big"}'
    kept, cut = line["statement"].split("…[truncated ")
    assert statement.startswith(kept)
    assert len(kept) + int(cut.removesuffix(" characters]")) == len(statement)
