"""Reconciliation against moto's S3, on both engines: DuckDB itself, and Athena's engine on real SQL results.

Records reach the audit bucket the real way (a Kinesis event through `ingest_audit_events`) and the trail's files
are CloudTrail's gzip `{"Records": [...]}` under `AWSLogs/<account>/CloudTrail/<region>/<yyyy>/<MM>/<dd>/`; some
calls never went through the fast path, and reconciliation must find and backfill exactly those.
"""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from chalice.test import Client

from chalicelib.athena import AthenaTrailEngine
from chalicelib.compactor import S3Compactor
from chalicelib.duckdb_engine import AuditObjects, DuckDBTrailEngine, TrailFiles, s3_filesystem
from chalicelib.reconcile import report_key
from chalicelib.reconciler import ReconcileError, Reconciler, TrailEngine
from tests.factories import ACCOUNT, cloudtrail_event, table_arn
from tests.functional.athena_fake import DATABASE, WORKGROUP, DuckDBAthenaClient

DAY = "2024-05-01"
TRAIL_PREFIX = f"AWSLogs/{ACCOUNT}/CloudTrail/"
_files = itertools.count()


@pytest.fixture
def trail_bucket(s3: Any) -> str:
    bucket = f"deutzia-trail-{next(_files)}"
    s3.create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(params=["duckdb", "athena"])
def engine(request: pytest.FixtureRequest, audit_bucket: str, trail_bucket: str, moto_endpoint: str) -> TrailEngine:
    if request.param == "athena":
        return AthenaTrailEngine(DuckDBAthenaClient(audit_bucket, moto_endpoint, trail_bucket), WORKGROUP, DATABASE)
    filesystem = s3_filesystem(moto_endpoint)
    return DuckDBTrailEngine(AuditObjects(filesystem, audit_bucket, "audit/", "compacted/"), TrailFiles(filesystem))


@pytest.fixture
def reconciler(engine: TrailEngine, s3: Any, audit_bucket: str, trail_bucket: str) -> Reconciler:
    return Reconciler(engine, s3, audit_bucket, trail_bucket, TRAIL_PREFIX, tables=frozenset({"Music", "Books"}))


def put_trail_file(
    s3: Any, bucket: str, events: list[Any], date: str = "2024/05/01", region: str = "us-east-1", body: Any = None
) -> str:
    """A trail file as CloudTrail names and writes it; its `s3://` path."""
    stamp = date.replace("/", "") + "T1200Z"
    key = f"{TRAIL_PREFIX}{region}/{date}/{ACCOUNT}_CloudTrail_{region}_{stamp}_{next(_files):016d}.json.gz"
    data = body if body is not None else gzip.compress(json.dumps({"Records": events}).encode())
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}"


def history(client: Client, table: str = "Music") -> list[dict[str, Any]]:
    response = client.http.get(f"/audit?{urlencode({'table': table, 'limit': '1000'})}")
    assert response.status_code == 200, response.body
    return list(json.loads(response.body)["entries"])


def audit_objects(s3: Any, bucket: str) -> dict[str, str]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="audit/").get("Contents", [])
    return {entry["Key"]: entry["ETag"] for entry in listed}


def stored_report(s3: Any, bucket: str, table: str | None) -> dict[str, Any]:
    document = json.loads(s3.get_object(Bucket=bucket, Key=report_key(DAY, table))["Body"].read())
    document.pop("checked_at")
    return dict(document)


def transaction(event_time: str) -> dict[str, Any]:
    """A TransactWriteItems over two tables, one item each."""
    items = [
        {"operation": "Put", "tableName": "Music", "key": {"id": "tx-song"}, "items": ["id"]},
        {"operation": "Update", "tableName": "Books", "key": {"isbn": "tx-book"}},
    ]
    event = cloudtrail_event("TransactWriteItems", {"requestItems": items}, event_time=event_time)
    event["resources"] = [
        {"accountId": ACCOUNT, "type": "AWS::DynamoDB::Table", "ARN": table_arn(table)} for table in ("Music", "Books")
    ]
    return event


def test_missing_calls_are_backfilled_once_and_a_second_run_changes_nothing(
    reconciler: Reconciler, ingest: Callable[..., Any], client: Client, s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    fast = [cloudtrail_event(event_time=f"{DAY}T10:00:0{n}Z", request_parameters=_put(f"fast-{n}")) for n in range(3)]
    lost = cloudtrail_event(event_time=f"{DAY}T11:00:00Z", request_parameters=_put("lost"))
    late = cloudtrail_event(event_time=f"{DAY}T23:59:59Z", request_parameters=_put("late"))
    other_day = cloudtrail_event(event_time="2024-05-02T00:00:01Z", request_parameters=_put("tomorrow"))
    across = transaction(f"{DAY}T12:00:00Z")
    ingest(fast)
    put_trail_file(s3, trail_bucket, [*fast[:2], lost, across])
    put_trail_file(s3, trail_bucket, [fast[2]])
    put_trail_file(s3, trail_bucket, [late, other_day], date="2024/05/02")  # delivered after midnight

    first = reconciler.run(DAY)

    music, books = first.tables["Music"], first.tables["Books"]
    assert (music.trail_events, music.audited_by_ingest, music.backfilled, music.still_missing) == (6, 3, 3, 0)
    assert (books.trail_events, books.audited_by_ingest, books.backfilled, books.still_missing) == (1, 0, 1, 0)
    assert (music.status, books.status, first.status) == ("backfilled", "backfilled", "backfilled")
    assert first.next_day_delivered
    assert first.trail_file_count == 3
    assert all(name.rsplit("/", 1)[-1].startswith("backfill-") for name in music.backfill_objects)
    entries = history(client)
    assert sorted(entry["event_id"] for entry in entries) == sorted(
        event["eventID"] for event in [*fast, lost, late, across]
    )
    assert [entry["item_key"] for entry in history(client, "Books")] == ['{"isbn":"tx-book"}']
    objects, reports = audit_objects(s3, audit_bucket), stored_report(s3, audit_bucket, "Music")
    head = s3.head_object(Bucket=audit_bucket, Key=music.backfill_objects[0])
    assert head["Metadata"]["trail-file"].startswith(f"s3://{trail_bucket}/{TRAIL_PREFIX}us-east-1/")

    second = reconciler.run(DAY)

    assert audit_objects(s3, audit_bucket) == objects
    assert stored_report(s3, audit_bucket, "Music") == reports | {"backfill_objects": [], "backfilled_now": 0}
    assert second.tables["Music"].status == "backfilled"
    assert len(history(client)) == len(entries)


def test_backfilled_records_are_compacted_and_still_not_backfilled_again(
    reconciler: Reconciler, client: Client, s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    lost = [cloudtrail_event(event_time=f"{DAY}T11:00:0{n}Z", request_parameters=_put(f"lost-{n}")) for n in range(2)]
    put_trail_file(s3, trail_bucket, lost)
    assert reconciler.run(DAY).tables["Music"].backfilled_now == 2
    S3Compactor(s3, audit_bucket, "audit/", "compacted/").run("2024-05-31", lambda: 900.0)
    assert audit_objects(s3, audit_bucket) == {}

    again = reconciler.run(DAY)

    assert (again.tables["Music"].backfilled_now, again.tables["Music"].status) == (0, "backfilled")
    assert audit_objects(s3, audit_bucket) == {}
    assert len(history(client)) == 2


def test_an_event_seen_twice_in_the_trail_is_counted_once_and_reported_as_a_duplicate(
    reconciler: Reconciler, client: Client, s3: Any, trail_bucket: str
) -> None:
    event = cloudtrail_event(event_time=f"{DAY}T09:00:00Z")
    put_trail_file(s3, trail_bucket, [event])
    put_trail_file(s3, trail_bucket, [event])

    report = reconciler.run(DAY).tables["Music"]

    assert (report.trail_events, report.duplicates_in_trail, report.backfilled) == (1, 1, 1)
    assert len(history(client)) == 1


def test_trail_files_of_every_region_are_reconciled(
    reconciler: Reconciler, client: Client, s3: Any, trail_bucket: str
) -> None:
    here = cloudtrail_event(event_time=f"{DAY}T09:00:00Z")
    there = cloudtrail_event(event_time=f"{DAY}T09:00:01Z", awsRegion="eu-west-1")
    put_trail_file(s3, trail_bucket, [here])
    put_trail_file(s3, trail_bucket, [there], region="eu-west-1")

    day = reconciler.run(DAY)

    assert day.trail_files_by_region == {"eu-west-1": 1, "us-east-1": 1}
    assert day.tables["Music"].backfilled == 2
    assert {entry["aws_region"] for entry in history(client)} == {"us-east-1", "eu-west-1"}


def test_a_day_without_trail_files_is_not_verified(reconciler: Reconciler, s3: Any, audit_bucket: str) -> None:
    day = reconciler.run(DAY)

    assert day.status == "no_trail_files"
    assert stored_report(s3, audit_bucket, None)["status"] == "no_trail_files"


def test_an_event_the_formatter_refuses_is_quarantined_with_its_reason_and_stays_missing(
    reconciler: Reconciler, s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    items = [{"operation": "Put", "tableName": "Music", "key": {"id": f"i{n}"}} for n in range(101)]
    refused = cloudtrail_event("BatchWriteItem", {"requestItems": items}, event_time=f"{DAY}T09:00:00Z")
    path = put_trail_file(s3, trail_bucket, [refused])

    report = reconciler.run(DAY).tables["Music"]

    assert (report.status, report.still_missing, report.backfilled) == ("incomplete", 1, 0)
    assert report.missing_examples[0]["event_id"] == refused["eventID"]
    assert report.missing_examples[0]["trail_file"] == path
    assert "101 items" in report.missing_examples[0]["reason"]
    quarantined = s3.list_objects_v2(Bucket=audit_bucket, Prefix=f"quarantine/dt={DAY}/")["Contents"]
    head = s3.head_object(Bucket=audit_bucket, Key=quarantined[0]["Key"])
    assert quarantined[0]["Key"].endswith(refused["eventID"])
    assert "101 items" in head["Metadata"]["reason"]


@pytest.mark.parametrize(
    "body",
    [b"\x1f\x8b\x08\x00 cut short", gzip.compress(b"{not json"), gzip.compress(b'{"Digest": true}'), b"plain"],
    ids=["cut-gzip", "not-json", "not-cloudtrail", "not-gzip"],
)
def test_an_unreadable_trail_file_is_quarantined_and_reported_never_crashing(
    body: bytes, moto_endpoint: str, s3: Any, audit_bucket: str, trail_bucket: str, client: Client
) -> None:
    filesystem = s3_filesystem(moto_endpoint)
    engine = DuckDBTrailEngine(AuditObjects(filesystem, audit_bucket, "audit/", "compacted/"), TrailFiles(filesystem))
    reconciler = Reconciler(engine, s3, audit_bucket, trail_bucket, TRAIL_PREFIX)
    good = cloudtrail_event(event_time=f"{DAY}T09:00:00Z")
    put_trail_file(s3, trail_bucket, [good])
    bad = put_trail_file(s3, trail_bucket, [], body=body)

    day = reconciler.run(DAY)

    assert list(day.unreadable_trail_files) == [bad]
    assert (day.status, day.tables["Music"].status, day.tables["Music"].backfilled) == ("incomplete", "incomplete", 1)
    quarantined = s3.list_objects_v2(Bucket=audit_bucket, Prefix=f"quarantine/dt={DAY}/trail-")["Contents"]
    stored = s3.get_object(Bucket=audit_bucket, Key=quarantined[0]["Key"])
    assert stored["Body"].read() == body
    assert stored["Metadata"]["reason"]
    assert stored_report(s3, audit_bucket, None)["unreadable_trail_files"] == {bad: day.unreadable_trail_files[bad]}
    assert len(history(client)) == 1


def test_on_athena_an_unreadable_trail_file_fails_the_run_and_keeps_the_earlier_report(
    moto_endpoint: str, s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    engine = AthenaTrailEngine(DuckDBAthenaClient(audit_bucket, moto_endpoint, trail_bucket), WORKGROUP, DATABASE)
    reconciler = Reconciler(engine, s3, audit_bucket, trail_bucket, TRAIL_PREFIX)
    put_trail_file(s3, trail_bucket, [cloudtrail_event(event_time=f"{DAY}T09:00:00Z")])
    reconciler.run(DAY)
    put_trail_file(s3, trail_bucket, [], body=b"plain")

    with pytest.raises(ReconcileError, match="failed; its reason is in the function's log"):
        reconciler.run(DAY)

    assert stored_report(s3, audit_bucket, "Music")["status"] == "backfilled"


def _put(item_id: str) -> dict[str, Any]:
    return {"tableName": "Music", "key": {"id": item_id}, "item": ["id"]}
