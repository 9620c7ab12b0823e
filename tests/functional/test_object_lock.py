"""An audit bucket under S3 Object Lock (the template's `ObjectLockMode`): S3 refuses every upload into a bucket with
a default retention that carries neither Content-MD5 nor a checksum, and SDKs before botocore 1.36 (January 2025;
Lambda's runtimes ship their own boto3) send none unless asked. Every write Deutzia makes asks: ingest's records and
quarantine, reconciliation's backfill and reports, compaction's files. moto refuses such uploads as S3 does.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import boto3
import pytest
from chalice.test import Client

import app as deutzia_app
from chalicelib.duckdb_engine import AuditObjects, DuckDBTrailEngine, TrailFiles, s3_filesystem
from chalicelib.reconcile import report_key
from chalicelib.reconciler import Reconciler
from deutzia_local.lambda_context import LambdaContext
from tests.factories import ACCOUNT, cloudtrail_event, kinesis_event, logs_payload

DAY = "2024-05-01"
TRAIL_PREFIX = f"AWSLogs/{ACCOUNT}/CloudTrail/"


@pytest.fixture
def locked_bucket(s3: Any, audit_bucket: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An audit bucket with Object Lock's default retention, and clients that send a checksum only when asked."""
    bucket = f"{audit_bucket}-locked"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )
    monkeypatch.setenv("AUDIT_BUCKET", bucket)
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")  # what botocore did before 1.36
    deutzia_app.get_audit_store.cache_clear()
    deutzia_app.get_query_engine.cache_clear()
    return bucket


def test_every_write_into_a_bucket_under_object_lock_carries_a_checksum(
    client: Client, locked_bucket: str, s3: Any, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = boto3.client("s3")
    with pytest.raises(plain.exceptions.ClientError, match="Object Lock"):  # what S3 answers a write without one
        plain.put_object(Bucket=locked_bucket, Key="probe", Body=b"x")
    calls = [cloudtrail_event(event_time=f"{DAY}T10:00:0{n}Z", request_parameters=_put(f"song-{n}")) for n in range(3)]
    lost = cloudtrail_event(event_time=f"{DAY}T11:00:00Z", request_parameters=_put("lost"))
    items = [{"operation": "Put", "tableName": "Music", "key": {"id": f"i{n}"}} for n in range(101)]
    refused = cloudtrail_event("BatchWriteItem", {"requestItems": items}, event_time=f"{DAY}T12:00:00Z")

    response = client.lambda_.invoke("ingest_audit_events", kinesis_event([logs_payload(calls), b"not gzip"]))

    assert response.payload == {"batchItemFailures": []}
    assert [key.split("/")[0] for key in _keys(plain, locked_bucket, "quarantine/")] == ["quarantine"]

    trail_bucket = f"{locked_bucket}-trail"
    s3.create_bucket(Bucket=trail_bucket)
    trail_file = f"{TRAIL_PREFIX}us-east-1/2024/05/01/{ACCOUNT}_CloudTrail_us-east-1_20240501T1200Z_lock.json.gz"
    body = gzip.compress(json.dumps({"Records": [*calls, lost, refused]}).encode())
    s3.put_object(Bucket=trail_bucket, Key=trail_file, Body=body)
    filesystem = s3_filesystem(moto_endpoint)
    engine = DuckDBTrailEngine(AuditObjects(filesystem, locked_bucket, "audit/", "compacted/"), TrailFiles(filesystem))
    reconciler = Reconciler(engine, plain, locked_bucket, trail_bucket, TRAIL_PREFIX, tables=frozenset({"Music"}))

    report = reconciler.run(DAY)

    music = report.tables["Music"]
    assert (music.trail_events, music.backfilled, music.still_missing) == (5, 1, 1)
    assert plain.head_object(Bucket=locked_bucket, Key=report_key(DAY, "Music"))["ContentLength"] > 0
    assert len(_keys(plain, locked_bucket, "quarantine/")) == 2  # the event of 101 items, kept with its reason

    scheduled = client.events.generate_cw_event("Scheduled Event", "aws.events", {}, [])
    monkeypatch.setenv("COMPACTION_GRACE_SECONDS", "0.001")  # what it replaced deleted at the end of the run
    compacted = deutzia_app.compact_audit_records(scheduled, LambdaContext("compact_audit_records", 900_000))

    assert (len(compacted["files"]), compacted["deferred"], compacted["deleted"]) == (1, 0, 2)
    assert _keys(plain, locked_bucket, "audit/") == []
    response = client.http.get("/audit?table=Music&limit=1000")
    assert response.status_code == 200, response.body
    entries = json.loads(response.body)["entries"]
    assert sorted(entry["event_id"] for entry in entries) == sorted(event["eventID"] for event in [*calls, lost])


def _put(item_id: str) -> dict[str, Any]:
    return {"tableName": "Music", "key": {"id": item_id}, "item": ["id"]}


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))
