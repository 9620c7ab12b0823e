"""Reconciliation against moto's S3, on both engines: DuckDB itself, and Athena's engine on real SQL results.

Records reach the audit bucket the real way (a Kinesis event through `ingest_audit_events`) and the trail's files
are CloudTrail's gzip `{"Records": [...]}` under `AWSLogs/<account>/CloudTrail/<region>/<yyyy>/<MM>/<dd>/`; some
calls never went through the fast path, and reconciliation must find and backfill exactly those.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
from chalice.test import Client

import app as deutzia_app
from chalicelib.athena import AthenaTrailEngine
from chalicelib.compactor import CompactionReport, S3Compactor
from chalicelib.duckdb_engine import AuditObjects, DuckDBTrailEngine, TrailFiles, s3_filesystem
from chalicelib.reconcile import (
    DEFERRED_REASON,
    LOG_GROUP_EVENT_BYTES,
    OVERSIZED_TEXT_CHARS,
    TableReport,
    backfill_object_key,
    report_key,
)
from chalicelib.reconciler import RECHECK_AFTER_DAYS, ReconcileError, Reconciler, TrailEngine, recheck_days
from chalicelib.reconciler import logger as reconciler_logger
from chalicelib.trail_status import WATCH_HEARTBEAT_KEY
from deutzia_local.lambda_context import LambdaContext
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


def _compactor(s3: Any, audit_bucket: str) -> S3Compactor:
    """A compaction run as the nightly check finds it, hours later: what it replaced deleted (its grace long over)."""
    return S3Compactor(s3, audit_bucket, "audit/", "compacted/", grace_seconds=0)


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


def test_a_trail_file_holding_a_lone_surrogate_is_reconciled_and_its_call_backfilled(
    reconciler: Reconciler, ingest: Callable[..., Any], client: Client, s3: Any, trail_bucket: str
) -> None:
    # A caller can send `"\ud800"` (valid JSON, not UTF-8) in a key or its user agent; the trail file keeps the escape.
    seen = cloudtrail_event(event_time=f"{DAY}T10:00:00Z", request_parameters=_put("seen"), userAgent="\ud800")
    odd = cloudtrail_event(event_time=f"{DAY}T10:00:01Z", request_parameters=_put("odd-\udc80"))
    ingest([seen])
    put_trail_file(s3, trail_bucket, [seen, odd])

    report = reconciler.run(DAY)

    music = report.tables["Music"]
    assert (music.trail_events, music.audited_by_ingest, music.backfilled, music.still_missing) == (2, 1, 1, 0)
    assert report.status == "backfilled"
    assert {entry["item_key"] for entry in history(client)} == {'{"id":"seen"}', '{"id":"odd-\ufffd"}'}


def test_a_run_writing_a_trail_files_backfill_object_again_keeps_what_an_earlier_run_wrote_there(
    reconciler: Reconciler, ingest: Callable[..., Any], client: Client, s3: Any, trail_bucket: str
) -> None:
    lost = cloudtrail_event(event_time=f"{DAY}T10:00:00Z", request_parameters=_put("lost"))
    real = cloudtrail_event(event_time=f"{DAY}T10:00:01Z", request_parameters=_put("real"))
    ingest([real])
    put_trail_file(s3, trail_bucket, [lost, real])
    assert reconciler.run(DAY).tables["Music"].backfilled_now == 1
    ingest([{**real, "sourceIPAddress": "203.0.113.66"}])  # then, before compaction, a forged copy of the other call

    again = reconciler.run(DAY).tables["Music"]

    assert (again.restored_now, again.still_missing, again.backfilled) == (1, 0, 1)
    assert sorted(entry["item_key"] for entry in history(client)) == ['{"id":"lost"}', '{"id":"real"}']
    assert {entry["source_ip"] for entry in history(client)} == {"192.0.2.10"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"not gzip", "Error -3"),
        (gzip.compress(b"\xff\xfe not text"), "can't decode"),
        (gzip.compress(b"x" * 5000), "more than 4096 bytes"),
    ],
)
def test_a_backfill_object_that_is_not_what_a_run_writes_is_never_overwritten(
    s3: Any, audit_bucket: str, trail_bucket: str, engine: TrailEngine, body: bytes, says: str
) -> None:
    # The engine reads the fresh tier first and fails on such an object; were it not to, a rewrite would lose it.
    key = backfill_object_key("audit/", "Music", DAY, f"{TRAIL_PREFIX}us-east-1/2024/05/01/f.json.gz")
    s3.put_object(Bucket=audit_bucket, Key=key, Body=body)
    small = Reconciler(engine, s3, audit_bucket, trail_bucket, TRAIL_PREFIX, max_trail_file_bytes=4096)

    with pytest.raises(ReconcileError, match=f"is not a backfill object a run wrote: .*{says}"):
        small._backfilled_lines(key)


def test_records_deleted_since_the_days_last_run_are_counted_gone_and_written_again(
    reconciler: Reconciler, ingest: Callable[..., Any], client: Client, s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    fast = [cloudtrail_event(event_time=f"{DAY}T10:00:0{n}Z", request_parameters=_put(f"kept-{n}")) for n in range(3)]
    lost = cloudtrail_event(event_time=f"{DAY}T11:00:00Z", request_parameters=_put("lost"))
    ingest(fast)
    put_trail_file(s3, trail_bucket, [*fast, lost])
    first = reconciler.run(DAY).tables["Music"]
    assert (first.audited_by_ingest, first.backfilled, first.gone_since_last_run) == (3, 1, 0)
    # Someone deletes every record of the day: ingest's object and backfill's.
    for key in audit_objects(s3, audit_bucket):
        s3.delete_object(Bucket=audit_bucket, Key=key)
    assert history(client) == []

    again = reconciler.run(DAY)

    music = again.tables["Music"]
    assert (music.gone_since_last_run, music.backfilled_now, music.still_missing) == (4, 4, 0)
    assert again.totals()["GoneRecords"] == 4
    deutzia_app.get_coverage_reader.cache_clear()
    (covered,) = json.loads(client.http.get(f"/audit/coverage?table=Music&since={DAY}&until=2024-05-02").body)["days"]
    assert (covered["status"], covered["gone"]) == ("backfilled", 4)  # whole again, and it says what happened
    assert sorted(entry["event_id"] for entry in history(client)) == sorted(e["eventID"] for e in [*fast, lost])
    third = reconciler.run(DAY).tables["Music"]
    assert (third.gone_since_last_run, third.gone) == (0, 4)  # nothing gone since; the day keeps what happened


def test_a_scheduled_run_checks_again_the_days_of_a_month_and_a_year_before(
    reconciler: Reconciler, s3: Any, audit_bucket: str
) -> None:
    now = datetime(2026, 11, 28, 3, 30, tzinfo=UTC)
    latest = date(2026, 11, 26)  # the day before yesterday: the run's own
    year, month = recheck_days(now)
    assert (year, month) == ((latest - timedelta(days=365)).isoformat(), (latest - timedelta(days=32)).isoformat())
    assert RECHECK_AFTER_DAYS == (32, 365)  # past the 31 days a run goes on with
    assert not {year, month} & set(reconciler.days_to_run(None, now))  # never reconciled: nothing to check again
    s3.put_object(Bucket=audit_bucket, Key=report_key(month), Body=b"{}")
    assert reconciler.days_to_run(None, now)[-1] == month
    s3.put_object(Bucket=audit_bucket, Key=report_key(year), Body=b"{}")
    assert reconciler.days_to_run(None, now)[-2:] == [year, month]
    assert month not in reconciler.days_to_run({"since": "2026-11-01", "until": "2026-11-02"}, now)


def test_backfilled_records_are_compacted_and_still_not_backfilled_again(
    reconciler: Reconciler, client: Client, s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    lost = [cloudtrail_event(event_time=f"{DAY}T11:00:0{n}Z", request_parameters=_put(f"lost-{n}")) for n in range(2)]
    put_trail_file(s3, trail_bucket, lost)
    assert reconciler.run(DAY).tables["Music"].backfilled_now == 2
    _compactor(s3, audit_bucket).run("2024-05-31", lambda: 900.0)
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


def test_audit_records_the_trail_lacks_or_contradicts_leave_the_day_unconfirmed_and_are_named(
    reconciler: Reconciler, ingest: Callable[..., Any], client: Client, s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    # Anyone who may write to the trail's log group can put events there that CloudTrail never logged: a call that
    # never was, or a copy of a real one (its event id) saying someone else made it, or that it touched another item.
    real = [cloudtrail_event(event_time=f"{DAY}T10:00:0{n}Z", request_parameters=_put(f"real-{n}")) for n in range(3)]
    forged = cloudtrail_event(event_time=f"{DAY}T11:00:00Z", request_parameters=_put("forged"), user="mallory")
    later = cloudtrail_event(event_time=f"{DAY}T20:00:00Z", request_parameters=_put("later"))
    someone_else = cloudtrail_event(event_time=real[1]["eventTime"], request_parameters=_put("real-1"), user="bob")
    someone_else["eventID"] = real[1]["eventID"]
    another_item = {**real[2], "requestParameters": _put("elsewhere")}
    items = [{"operation": "Put", "tableName": "Music", "key": {"id": "tx"}}]
    transaction = cloudtrail_event("TransactWriteItems", {"requestItems": items}, event_time=f"{DAY}T10:30:00Z")
    another_operation = {**transaction, "requestParameters": {"requestItems": [{**items[0], "operation": "Delete"}]}}
    ingest([*real, forged, later, transaction])
    ingest([real[0], someone_else, another_item, another_operation])  # real[0] again: a retried delivery
    put_trail_file(s3, trail_bucket, [*real, transaction])

    # A day still going is checked up to a time: a call after it is neither missing nor a stranger to the trail.
    so_far = reconciler.run(DAY, until=f"{DAY}T12:00:00Z").tables["Music"]

    altered = sorted([real[1]["eventID"], real[2]["eventID"], transaction["eventID"]])
    assert (so_far.status, so_far.trail_events, so_far.still_missing) == ("unconfirmed", 4, 0)
    assert (so_far.audited_not_in_trail, so_far.not_in_trail_examples) == (1, [forged["eventID"]])
    assert (so_far.altered, so_far.altered_examples) == (3, altered)

    put_trail_file(s3, trail_bucket, [later])
    day = reconciler.run(DAY)

    assert day.status == "unconfirmed"
    assert (day.tables["Music"].audited_not_in_trail, day.totals()["UnconfirmedEvents"]) == (1, 4)
    stored = stored_report(s3, audit_bucket, "Music")
    assert (stored["not_in_trail_examples"], stored["altered"]) == ([forged["eventID"]], 3)
    deutzia_app.get_coverage_reader.cache_clear()
    response = client.http.get(f"/audit/coverage?table=Music&since={DAY}&until=2024-05-02")
    (covered,) = json.loads(response.body)["days"]
    assert (covered["status"], covered["not_in_trail"], covered["altered"]) == ("unconfirmed", 1, 3)
    # The contradicted calls are restored: GET /audit shows the trail's own records of them, named apart.
    assert (covered["unconfirmed_ids"], covered["restored_ids"]) == ([forged["eventID"]], altered)
    assert stored["restored_examples"] == altered


def test_a_record_that_contradicts_the_trail_is_replaced_by_the_trails_own_at_the_next_compaction(
    reconciler: Reconciler, ingest: Callable[..., Any], client: Client, s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    # Forged copies of real calls in the log group: one naming another caller beside the real record, one naming
    # another source and time where the real call never reached ingest, one naming another item and one another
    # operation (each beside the real record: alone, such a copy agrees with the trail on every column compared).
    real = [cloudtrail_event(event_time=f"{DAY}T10:00:0{n}Z", request_parameters=_put(f"real-{n}")) for n in range(3)]
    beside = {**real[0], "userIdentity": cloudtrail_event(user="mallory")["userIdentity"]}
    instead = {**real[1], "sourceIPAddress": "203.0.113.66", "eventTime": f"{DAY}T09:59:59Z"}
    elsewhere = {**real[2], "requestParameters": _put("elsewhere")}
    items = [{"operation": "Put", "tableName": "Music", "key": {"id": "tx"}}]
    transaction = cloudtrail_event("TransactWriteItems", {"requestItems": items}, event_time=f"{DAY}T10:30:00Z")
    deleted = {**transaction, "requestParameters": {"requestItems": [{**items[0], "operation": "Delete"}]}}
    honest = cloudtrail_event(event_time=f"{DAY}T11:00:00Z", request_parameters=_put("honest"))
    ingest([real[0], real[2], transaction, honest])
    ingest([beside, instead, elsewhere, deleted])
    trail_file = put_trail_file(s3, trail_bucket, [*real, transaction, honest])
    contradicted = sorted(event["eventID"] for event in (*real, transaction))

    day = reconciler.run(DAY)
    first = day.tables["Music"]
    assert day.totals()["RestoredEvents"] == 4  # published each night, and on the dashboard

    assert (first.status, first.altered, first.altered_examples) == ("unconfirmed", 4, contradicted)
    assert (first.restored, first.restored_now, first.backfilled, first.still_missing) == (4, 4, 0, 0)
    (restoring,) = first.backfill_objects
    assert s3.head_object(Bucket=audit_bucket, Key=restoring)["Metadata"]["trail-file"] == trail_file

    def shows_the_trails_own() -> None:
        shown = {(entry["event_id"], entry["item_index"]): entry for entry in history(client)}
        assert len(shown) == 5
        expected = {event["eventID"]: event for event in (*real, transaction, honest)}
        for (event_id, _), entry in shown.items():
            event = expected[event_id]
            assert (entry["principal_name"], entry["source_ip"]) == ("alice", "192.0.2.10")
            assert (entry["event_time"], entry["operation"]) == (event["eventTime"], "Put")
            assert entry["item_key"] != '{"id":"elsewhere"}'

    def forgeries_shown() -> list[dict[str, Any]]:
        # Where only a forged copy matches: the item it named instead, the caller, time and operation it named.
        found = []
        for filters in (
            {"key": json.dumps({"id": "elsewhere"})},
            {"principal": beside["userIdentity"]["arn"]},
            {"operation": "Delete"},
            {"since": f"{DAY}T09:59:59Z", "until": f"{DAY}T10:00:00Z"},
        ):
            response = client.http.get(f"/audit?{urlencode({'table': 'Music', **filters})}")
            found += json.loads(response.body)["entries"]
        return found

    shows_the_trails_own()  # GET /audit prefers the records restored from the trail at once, whatever it is asked
    assert forgeries_shown() == []

    _compactor(s3, audit_bucket).run("2024-05-31", lambda: 900.0)

    shows_the_trails_own()
    assert forgeries_shown() == []

    assert DAY in reconciler.unfinished_days("2024-05-03")  # the next daily run checks the day again
    again = reconciler.run(DAY).tables["Music"]

    assert DAY not in reconciler.unfinished_days("2024-05-03")
    assert (again.status, again.altered, again.altered_examples) == ("backfilled", 0, [])
    assert (again.restored, again.restored_now, again.audited_by_ingest) == (4, 0, 5)
    deutzia_app.get_coverage_reader.cache_clear()
    response = client.http.get(f"/audit/coverage?table=Music&since={DAY}&until=2024-05-02")
    (covered,) = json.loads(response.body)["days"]
    assert (covered["status"], covered["altered"], covered["restored"]) == ("backfilled", 0, 4)
    assert "unconfirmed_ids" not in covered


@dataclass
class _Forgery:
    """A real call and a forged copy of it put in the log group, in the order a test gives, and what then reads,
    compacts and checks them."""

    reconciler: Reconciler
    ingest: Callable[..., Any]
    client: Client
    s3: Any
    audit_bucket: str
    trail_bucket: str

    def delivered(self, real: dict[str, Any], forged: dict[str, Any], first: str) -> None:
        """Both copies ingested, the one named `first` (`real` or `forged`) first."""
        for copy in [real, forged] if first == "real" else [forged, real]:
            self.ingest([copy])

    def compact(self) -> CompactionReport:
        return _compactor(self.s3, self.audit_bucket).run("2024-05-31", lambda: 900.0)

    def check(self, trail: list[dict[str, Any]] | None = None) -> TableReport:
        """The day's check, once `trail` (if given) is in the trail's files."""
        if trail is not None:
            put_trail_file(self.s3, self.trail_bucket, trail)
        return self.reconciler.run(DAY).tables["Music"]

    def history_of(self, item_id: str) -> list[dict[str, Any]]:
        query = urlencode({"table": "Music", "key": json.dumps({"id": item_id})})
        response = self.client.http.get(f"/audit?{query}")
        assert response.status_code == 200, response.body
        return list(json.loads(response.body)["entries"])


@pytest.fixture
def forgery(
    reconciler: Reconciler, ingest: Callable[..., Any], client: Client, s3: Any, audit_bucket: str, trail_bucket: str
) -> _Forgery:
    return _Forgery(reconciler, ingest, client, s3, audit_bucket, trail_bucket)


@pytest.mark.parametrize("first", ["real", "forged"])
def test_a_forged_copy_naming_another_item_that_meets_the_real_record_at_compaction_hides_neither(
    first: str, forgery: _Forgery
) -> None:
    # Compaction keeps one copy of a record, but copies that differ in what they say came one through the log group
    # and not from CloudTrail: the other stays beside the file (a `contested-` object), so neither the item's own
    # history nor reconciliation loses sight of the real call, whichever copy compaction met first.
    real = cloudtrail_event(event_time=f"{DAY}T10:00:00Z", request_parameters=_put("real"))
    forged = {
        **real,
        "requestParameters": _put("elsewhere"),
        "userIdentity": cloudtrail_event(user="mallory")["userIdentity"],
    }
    forgery.delivered(real, forged, first)

    def item(name: str) -> list[str | None]:
        return [entry["principal_name"] for entry in forgery.history_of(name)]

    forgery.compact()

    assert (item("real"), item("elsewhere")) == (["alice"], ["mallory"])
    report = forgery.check([real])
    assert (report.altered, report.altered_examples, report.restored_now) == (1, [real["eventID"]], 1)

    settled = forgery.compact()

    assert (settled.contested, settled.overruled) == (0, 1)  # the trail's record replaced the forged copy
    assert (item("real"), item("elsewhere")) == (["alice"], [])
    assert _keys(forgery.s3, forgery.audit_bucket, "audit/") == []
    assert forgery.check().status == "backfilled"


def _update(names: dict[str, str], expression: str) -> dict[str, Any]:
    return {
        "tableName": "Music",
        "key": {"id": "song"},
        "updateExpression": expression,
        "expressionAttributeNames": names,
    }


@pytest.mark.parametrize("first", ["real", "forged"])
def test_a_forged_copy_that_says_an_update_did_something_else_is_named_and_restored_from_the_trail(
    first: str, forgery: _Forgery
) -> None:
    # A copy of a real update by the same caller on the same item, at the same time, that says it removed another
    # attribute: it changes only what the call did, which no column the trail is compared on says.
    real = cloudtrail_event("UpdateItem", _update({"#t": "title"}, "SET #t = :t"), event_time=f"{DAY}T10:00:00Z")
    forged = {**real, "requestParameters": _update({"#o": "owner"}, "REMOVE #o")}
    forgery.delivered(real, forged, first)

    def did() -> list[tuple[str, list[str]]]:
        return [(entry["update_expression"], entry["attribute_names"]) for entry in forgery.history_of("song")]

    compacted = forgery.compact()

    assert compacted.contested == 1  # the other copy is kept beside the file, for the check to find
    report = forgery.check([real])
    assert (report.altered, report.altered_examples, report.restored_now) == (1, [real["eventID"]], 1)
    assert did() == [("SET #t = :t", ["title"])]  # the trail's own record, at once

    settled = forgery.compact()

    assert (settled.contested, settled.overruled) == (0, 1)
    assert did() == [("SET #t = :t", ["title"])]
    assert forgery.check().status == "backfilled"


def test_a_forged_copy_that_swaps_which_attribute_an_update_set_is_named_and_restored(forgery: _Forgery) -> None:
    # Only the request parameters say it: the same expression, the same attribute names, mapped the other way round.
    expression = "SET #a = :title, #b = :artist"
    real = cloudtrail_event(
        "UpdateItem", _update({"#a": "title", "#b": "artist"}, expression), event_time=f"{DAY}T10:00:00Z"
    )
    forged = {**real, "requestParameters": _update({"#a": "artist", "#b": "title"}, expression)}
    forgery.delivered(real, forged, "forged")
    compacted = forgery.compact()

    report = forgery.check([real])

    assert compacted.contested == 1
    assert (report.altered, report.restored_now) == (1, 1)
    (shown,) = [entry["request_parameters"] for entry in forgery.history_of("song")]
    assert json.loads(shown)["expressionAttributeNames"] == {"#a": "title", "#b": "artist"}


def test_copies_whose_parameters_come_in_another_order_are_the_same_call(
    reconciler: Reconciler, ingest: Callable[..., Any], s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    # The trail's files and its log group may write a call's parameters with their keys in another order. A call big
    # enough to have its records written again from the trail's file (its texts pass OVERSIZED_TEXT_CHARS) then has
    # two copies that hold other request parameters and attribute names in another order, and say the same.
    names = {"#t": "title", "#a": "artist"}
    parameters = _update(names, "SET #t = :t, #a = :a")
    logged = cloudtrail_event(
        "UpdateItem", parameters, event_time=f"{DAY}T10:00:00Z", userAgent="u" * (OVERSIZED_TEXT_CHARS + 100)
    )
    reordered = dict(reversed({**parameters, "expressionAttributeNames": dict(reversed(names.items()))}.items()))
    ingest([logged])
    put_trail_file(s3, trail_bucket, [{**logged, "requestParameters": reordered}])

    first = reconciler.run(DAY).tables["Music"]
    again = reconciler.run(DAY).tables["Music"]  # the trail's copy beside the log group's
    compacted = _compactor(s3, audit_bucket).run("2024-05-31", lambda: 900.0)

    assert (first.refreshed, first.altered, first.status) == (1, 0, "verified")
    assert (again.altered, again.status) == (0, "verified")
    assert (compacted.contested, compacted.overruled) == (0, 0)


def test_a_restored_call_keeps_only_the_items_the_trail_names(
    reconciler: Reconciler, ingest: Callable[..., Any], client: Client, s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    # A forged copy of a transaction naming another first item, and adding an item of its own: the check restores the
    # call, and compaction keeps the trail's items of it alone, so the added item is gone too.
    items = [{"operation": "Put", "tableName": "Music", "key": {"id": name}} for name in ("tx-a", "tx-b")]
    real = cloudtrail_event("TransactWriteItems", {"requestItems": items}, event_time=f"{DAY}T10:30:00Z")
    forged_items = [{**items[0], "key": {"id": "elsewhere"}}, items[1], {**items[1], "key": {"id": "added"}}]
    forged = {**real, "requestParameters": {"requestItems": forged_items}}
    ingest([real])
    ingest([forged])
    compactor = _compactor(s3, audit_bucket)
    compactor.run("2024-05-31", lambda: 900.0)
    put_trail_file(s3, trail_bucket, [real])

    assert reconciler.run(DAY).tables["Music"].restored_now == 1
    compactor.run("2024-05-31", lambda: 900.0)

    assert sorted(entry["item_key"] for entry in history(client)) == ['{"id":"tx-a"}', '{"id":"tx-b"}']
    assert reconciler.run(DAY).tables["Music"].status == "backfilled"  # and no more restoring: the day is at rest
    assert DAY not in reconciler.unfinished_days("2024-05-03")


def test_records_of_a_call_too_big_for_the_log_group_are_written_again_from_the_trail(
    reconciler: Reconciler, ingest: Callable[..., Any], client: Client, s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    # A transaction of 100 items with long keys: over 256 KB, so CloudTrail never sends it to the log group. A copy
    # there with its id, caller, source and time, naming another item, is the only record ingest made of it: it agrees
    # with the trail on every column compared. The check writes the trail's records of such a call all the same.
    items = [{"operation": "Put", "tableName": "Music", "key": {"id": f"{n:03d}" + "k" * 2700}} for n in range(100)]
    real = cloudtrail_event("TransactWriteItems", {"requestItems": items}, event_time=f"{DAY}T10:00:00Z")
    assert len(json.dumps(real["requestParameters"], separators=(",", ":"))) > LOG_GROUP_EVENT_BYTES
    elsewhere = {"operation": "Put", "tableName": "Music", "key": {"id": "elsewhere"}}
    forged = {**real, "requestParameters": {"requestItems": [elsewhere]}}
    honest = cloudtrail_event(event_time=f"{DAY}T11:00:00Z", request_parameters=_put("honest"))
    ingest([forged, honest])
    put_trail_file(s3, trail_bucket, [real, honest])

    def shown() -> tuple[int, list[Any]]:
        forgery = client.http.get(f"/audit?{urlencode({'table': 'Music', 'key': json.dumps({'id': 'elsewhere'})})}")
        return len(history(client)), json.loads(forgery.body)["entries"]

    for earlier in range(1, 30):  # days a run reconciled, with nothing left
        reconciler.run((date(2024, 5, 1) - timedelta(days=earlier)).isoformat())
    late = reconciler.run(DAY, time_left=lambda: 0.0)  # no time to write anything: the next runs go on with the day
    assert (late.refresh_deferred, late.tables["Music"].refreshed) == (1, 0)
    assert DAY in reconciler.unfinished_days("2024-05-03")

    report = reconciler.run(DAY).tables["Music"]

    assert (report.status, report.refreshed, report.altered, report.restored, report.backfilled) == (
        "verified",
        1,
        0,
        0,
        0,
    )
    assert shown() == (101, [])  # the trail's records outrank the forged copy at once
    # Beside the trail's records, the forged copy now contradicts them: a check before compaction names it.
    rerun = reconciler.run(DAY).tables["Music"]
    assert (rerun.refreshed, rerun.altered, rerun.altered_examples) == (0, 1, [real["eventID"]])
    compacted = _compactor(s3, audit_bucket).run("2024-05-31", lambda: 900.0)
    assert (compacted.overruled, compacted.contradicting) == (1, 1)  # and compaction names it (ContestedCopies)
    assert shown() == (101, [])
    again = reconciler.run(DAY)  # compaction folded them in: each later check writes them again, harmlessly
    assert (again.tables["Music"].refreshed, again.tables["Music"].altered) == (1, 0)
    assert again.tables["Music"].status == "backfilled"  # the call once restored
    assert DAY not in reconciler.unfinished_days("2024-05-03")


def test_a_call_is_taken_as_too_big_for_the_log_group_by_all_its_texts_not_its_parameters_alone(
    reconciler: Reconciler, ingest: Callable[..., Any], s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    # Texts over OVERSIZED_TEXT_CHARS between them (request parameters and user agent): written again; under: not.
    def call(hour: int, parameters: int, user_agent: int) -> dict[str, Any]:
        request = {"tableName": "Music", "key": {"id": f"c{hour}"}, "conditionExpression": "x" * parameters}
        return cloudtrail_event(
            request_parameters=request, event_time=f"{DAY}T{hour:02d}:00:00Z", userAgent="u" * user_agent
        )

    half = OVERSIZED_TEXT_CHARS // 2
    over, under = call(10, half + 100, half + 100), call(11, half - 100, half - 100)
    ingest([over]), ingest([under])
    put_trail_file(s3, trail_bucket, [over, under])

    report = reconciler.run(DAY).tables["Music"]

    assert (report.refreshed, report.status) == (1, "verified")
    (written,) = report.backfill_objects
    lines = gzip.decompress(s3.get_object(Bucket=audit_bucket, Key=written)["Body"].read()).decode().splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == [over["eventID"]]


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


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


def test_backfill_left_for_want_of_time_is_deferred_and_the_next_scheduled_run_goes_on_with_the_day(
    reconciler: Reconciler, client: Client, s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    """A run starts a trail file only while time is left; what it did not reach is deferred, and the next daily run,
    after its own day, takes up the earlier days that hold deferred calls until none is left."""
    lost = [cloudtrail_event(event_time=f"{DAY}T1{n}:00:00Z", request_parameters=_put(f"lost-{n}")) for n in range(3)]
    for event in lost:
        put_trail_file(s3, trail_bucket, [event])
    seconds = iter([900.0])  # time for the first file, then none

    day = reconciler.run(DAY, time_left=lambda: next(seconds, 0.0))

    assert (day.status, day.deferred, day.tables["Music"].backfilled_now) == ("incomplete", 2, 1)
    assert stored_report(s3, audit_bucket, "Music")["missing_reasons"] == {DEFERRED_REASON: 2}
    assert stored_report(s3, audit_bucket, None)["deferred"] == 2
    for earlier in range(1, 30):  # days a run reconciled, with nothing left; not 2024-04-01
        reconciler.run((date(2024, 5, 1) - timedelta(days=earlier)).isoformat())
    three_days_later = datetime(2024, 5, 4, 3, 30, tzinfo=UTC)
    assert reconciler.days_to_run({}, three_days_later) == ["2024-05-02", "2024-04-01", DAY]
    assert reconciler.days_to_run({"since": "2024-05-02"}, three_days_later) == ["2024-05-02"]

    again = reconciler.run(DAY, time_left=lambda: 900.0)

    assert (again.status, again.deferred, again.tables["Music"].backfilled_now) == ("backfilled", 0, 2)
    assert reconciler.days_to_run({}, three_days_later) == ["2024-05-02", "2024-04-01"]  # never reconciled
    assert sorted(entry["item_key"] for entry in history(client)) == [f'{{"id":"lost-{n}"}}' for n in range(3)]


def test_get_audit_shows_the_restored_record_before_compaction_folds_it_over_a_compacted_forgery(
    reconciler: Reconciler, ingest: Callable[..., Any], client: Client, s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    real = cloudtrail_event(event_time=f"{DAY}T10:00:00Z")
    ingest([{**real, "userIdentity": cloudtrail_event(user="mallory")["userIdentity"]}])
    _compactor(s3, audit_bucket).run("2024-05-31", lambda: 900.0)  # the forgery, compacted
    put_trail_file(s3, trail_bucket, [real])

    assert reconciler.run(DAY).tables["Music"].restored_now == 1

    assert [entry["principal_name"] for entry in history(client)] == ["alice"]


def test_a_contradicted_call_left_for_want_of_time_stays_named_and_is_restored_by_a_later_run(
    reconciler: Reconciler, ingest: Callable[..., Any], s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    real = cloudtrail_event(event_time=f"{DAY}T10:00:00Z")
    ingest([{**real, "sourceIPAddress": "203.0.113.66"}])
    put_trail_file(s3, trail_bucket, [real])

    hurried = reconciler.run(DAY, time_left=lambda: 0.0)

    music = hurried.tables["Music"]
    assert (music.status, music.altered, music.restored, music.still_missing) == ("unconfirmed", 1, 0, 0)
    assert (hurried.deferred, hurried.restore_deferred) == (0, 1)
    assert DAY in reconciler.unfinished_days("2024-05-03")  # the next daily run goes on with it
    restoring = reconciler.run(DAY)
    assert (restoring.tables["Music"].restored_now, restoring.restore_deferred, restoring.restored_now) == (1, 0, 1)
    assert DAY in reconciler.unfinished_days("2024-05-03")  # checked again once compaction kept the trail's record
    _compactor(s3, audit_bucket).run("2024-05-31", lambda: 900.0)
    confirmed = reconciler.run(DAY)
    assert (confirmed.status, confirmed.restored_now) == ("backfilled", 0)
    assert DAY not in reconciler.unfinished_days("2024-05-03")


class _Clock:
    """Athena's engine's clock and sleep: time passes only while it waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _slow_athena(audit_bucket: str, trail_bucket: str, moto_endpoint: str) -> tuple[DuckDBAthenaClient, TrailEngine]:
    athena = DuckDBAthenaClient(audit_bucket, moto_endpoint, trail_bucket)
    clock = _Clock()
    return athena, AthenaTrailEngine(athena, WORKGROUP, DATABASE, timeout_seconds=60, clock=clock, sleep=clock.sleep)


def test_a_query_that_outlives_its_run_is_left_running_and_a_later_run_of_the_day_reads_its_answer(
    s3: Any, audit_bucket: str, trail_bucket: str, moto_endpoint: str
) -> None:
    # A day of a big account's trail can take Athena longer than one run may wait: stopping the query would leave the
    # day to fail the same way at every run.
    athena, engine = _slow_athena(audit_bucket, trail_bucket, moto_endpoint)
    reconciler = Reconciler(engine, s3, audit_bucket, trail_bucket, TRAIL_PREFIX, tables=frozenset({"Music"}))
    put_trail_file(s3, trail_bucket, [cloudtrail_event(event_time=f"{DAY}T10:00:00Z")])
    athena.running_polls = 1000

    with pytest.raises(ReconcileError, match="did not finish within 60 s; it goes on, and the day's next run reads"):
        reconciler.run(DAY)
    (query,) = athena.executions
    kept = json.loads(
        s3.get_object(Bucket=audit_bucket, Key=f"reports/reconcile/dt={DAY}/query=running.json")["Body"].read()
    )
    assert (kept["execution_id"], athena.stopped) == (query, [])
    with pytest.raises(ReconcileError):  # still running at the next run: waited for again, never started again
        reconciler.run(DAY)
    assert list(athena.executions) == [query]
    assert (
        json.loads(
            s3.get_object(Bucket=audit_bucket, Key=f"reports/reconcile/dt={DAY}/query=running.json")["Body"].read()
        )
        == kept
    )

    athena.executions[query]["polls_left"] = 0  # Athena finished it meanwhile
    day = reconciler.run(DAY)

    assert list(athena.executions) == [query]
    assert (day.status, day.tables["Music"].backfilled_now) == ("backfilled", 1)
    athena.running_polls = 0
    reconciler.run(DAY)  # the day was reconciled since: its next check asks Athena afresh
    assert len(athena.executions) == 2


def _two_days_one_slow(
    s3: Any, audit_bucket: str, trail_bucket: str, moto_endpoint: str, polls: int
) -> tuple[DuckDBAthenaClient, Reconciler]:
    """A reconciler on Athena whose query of DAY answers RUNNING `polls` times (one wait of 60 s polls about 64)."""
    athena, engine = _slow_athena(audit_bucket, trail_bucket, moto_endpoint)
    put_trail_file(s3, trail_bucket, [cloudtrail_event(event_time=f"{DAY}T10:00:00Z")])
    put_trail_file(s3, trail_bucket, [cloudtrail_event(event_time="2024-05-02T10:00:00Z")], date="2024/05/02")
    athena.slow_parameters = {f"'{DAY}'": polls}
    return athena, Reconciler(engine, s3, audit_bucket, trail_bucket, TRAIL_PREFIX, tables=frozenset({"Music"}))


def test_a_run_goes_on_with_the_other_days_and_then_takes_a_day_whose_query_went_on_once_more(
    s3: Any, audit_bucket: str, trail_bucket: str, moto_endpoint: str
) -> None:
    athena, reconciler = _two_days_one_slow(s3, audit_bucket, trail_bucket, moto_endpoint, 100)
    reports: list[str] = []

    done, left = reconciler.run_days(
        [DAY, "2024-05-02", "2024-05-03"], lambda: 900.0, 420.0, done_with=lambda report: reports.append(report.day)
    )

    assert (done, left) == ({"2024-05-02": "backfilled", "2024-05-03": "no_trail_files", DAY: "backfilled"}, [])
    assert reports == ["2024-05-02", "2024-05-03", DAY]
    assert len(athena.executions) == 3  # the slow day's query was started once


def test_a_run_whose_day_still_waits_for_its_query_at_the_end_fails_naming_it_after_the_other_days(
    s3: Any, audit_bucket: str, trail_bucket: str, moto_endpoint: str
) -> None:
    _, reconciler = _two_days_one_slow(s3, audit_bucket, trail_bucket, moto_endpoint, 1000)
    reports: list[str] = []

    with pytest.raises(ReconcileError, match=f"the query of {DAY} outlived .*reconciled: 2024-05-02, 2024-05-03;"):
        reconciler.run_days(
            [DAY, "2024-05-02", "2024-05-03"], lambda: 900.0, 420.0, done_with=lambda report: reports.append(report.day)
        )

    assert reports == ["2024-05-02", "2024-05-03"]


def test_a_running_query_of_another_question_or_one_athena_forgot_or_failed_is_not_taken(
    s3: Any, audit_bucket: str, trail_bucket: str, moto_endpoint: str
) -> None:
    athena, engine = _slow_athena(audit_bucket, trail_bucket, moto_endpoint)
    put_trail_file(s3, trail_bucket, [cloudtrail_event(event_time=f"{DAY}T10:00:00Z")])
    athena.running_polls = 1000
    with pytest.raises(ReconcileError):
        Reconciler(engine, s3, audit_bucket, trail_bucket, TRAIL_PREFIX, tables=frozenset({"Music"})).run(DAY)
    (music_only,) = athena.executions
    athena.running_polls = 0
    both = Reconciler(engine, s3, audit_bucket, trail_bucket, TRAIL_PREFIX, tables=frozenset({"Music", "Books"}))

    assert both.run(DAY).tables["Music"].backfilled_now == 1  # another question: asked afresh
    assert len(athena.executions) == 2
    key = f"reports/reconcile/dt={DAY}/query=running.json"
    for execution_id in ("forgotten-by-athena", "../../not an id"):
        s3.put_object(Bucket=audit_bucket, Key=key, Body=json.dumps({"execution_id": execution_id, "started_at": "9"}))
        both.run(DAY)
    athena.executions[music_only]["Status"] = {"State": "FAILED", "StateChangeReason": "it failed"}
    athena.executions[music_only]["polls_left"] = 0
    s3.put_object(Bucket=audit_bucket, Key=key, Body=json.dumps({"execution_id": music_only, "started_at": "9"}))
    both.run(DAY)
    assert len(athena.executions) == 5


def test_a_summary_that_is_not_one_is_not_taken_up_and_stops_nothing(
    reconciler: Reconciler, s3: Any, audit_bucket: str
) -> None:
    for day in range(1, 31):  # April, reconciled with nothing left
        s3.put_object(Bucket=audit_bucket, Key=report_key(f"2024-04-{day:02d}"), Body=b'{"deferred": 0}')
    s3.put_object(Bucket=audit_bucket, Key=report_key("2024-04-02"), Body=b'{"deferred": "many"}')
    s3.put_object(Bucket=audit_bucket, Key=report_key("2024-04-03"), Body=b"not json")
    s3.put_object(Bucket=audit_bucket, Key=report_key("2024-04-04"), Body=b'{"deferred": 3}')

    assert reconciler.unfinished_days("2024-05-02") == ["2024-04-04", DAY]  # May 1 has no summary


class _ScanLimitedAthena(DuckDBAthenaClient):
    """Athena once a day's trail passes the workgroup's BytesScannedCutoffPerQuery: every query is cancelled."""

    def get_query_execution(self, QueryExecutionId: str) -> Any:  # noqa: N803 - boto3's parameter name
        reason = "Query cancelled! -- Bytes scanned limit was exceeded"
        status = {"State": "CANCELLED", "StateChangeReason": reason}
        return {"QueryExecution": {"QueryExecutionId": QueryExecutionId, "Status": status}}


def test_on_athena_a_day_past_the_scan_limit_fails_the_run_naming_the_parameter_to_raise(
    moto_endpoint: str, s3: Any, audit_bucket: str, trail_bucket: str
) -> None:
    put_trail_file(s3, trail_bucket, [cloudtrail_event(event_time=f"{DAY}T09:00:00Z")])
    engine = AthenaTrailEngine(DuckDBAthenaClient(audit_bucket, moto_endpoint, trail_bucket), WORKGROUP, DATABASE)
    Reconciler(engine, s3, audit_bucket, trail_bucket, TRAIL_PREFIX).run(DAY)
    limited = AthenaTrailEngine(_ScanLimitedAthena(audit_bucket, moto_endpoint, trail_bucket), WORKGROUP, DATABASE)

    with pytest.raises(ReconcileError, match=r"scan limit .*ReconcileBytesScannedCutoffPerQuery.*; raise it"):
        Reconciler(limited, s3, audit_bucket, trail_bucket, TRAIL_PREFIX).run(DAY)

    assert stored_report(s3, audit_bucket, "Music")["status"] == "backfilled"


def _put(item_id: str) -> dict[str, Any]:
    return {"tableName": "Music", "key": {"id": item_id}, "item": ["id"]}


TRAIL_LOG_GROUP = "/deutzia/test/cloudtrail"
EVERY_CALL = [
    {
        "Name": "DynamoDB item calls on the audited tables",
        "FieldSelectors": [
            {"Field": "eventCategory", "Equals": ["Data"]},
            {"Field": "resources.type", "Equals": ["AWS::DynamoDB::Table"]},
        ],
    }
]


@pytest.fixture
def deployed(
    monkeypatch: pytest.MonkeyPatch, audit_bucket: str, trail_bucket: str, moto_endpoint: str, client: Client
) -> Client:
    """The app configured as the template configures reconcile_audit_trail, on the Athena engine's stand-in."""
    monkeypatch.setenv("TRAIL_BUCKET", trail_bucket)
    monkeypatch.setenv("TRAIL_PREFIX", TRAIL_PREFIX)
    cloudtrail = boto3.client("cloudtrail")
    trail = cloudtrail.create_trail(  # as the template makes it: files signed, events to the stack's log group
        Name=f"{trail_bucket}-dynamodb",
        S3BucketName=trail_bucket,
        EnableLogFileValidation=True,
        CloudWatchLogsLogGroupArn=f"arn:aws:logs:us-east-1:123456789012:log-group:{TRAIL_LOG_GROUP}:*",
        CloudWatchLogsRoleArn="arn:aws:iam::123456789012:role/trail-to-logs",
    )["TrailARN"]
    cloudtrail.put_event_selectors(TrailName=trail, AdvancedEventSelectors=EVERY_CALL)  # as the template's, reads too
    cloudtrail.start_logging(Name=trail)
    monkeypatch.setenv("TRAIL_ARN", trail)
    monkeypatch.setenv("AUDIT_READS", "true")
    monkeypatch.setenv("TRAIL_LOG_GROUP", TRAIL_LOG_GROUP)
    engine = AthenaTrailEngine(DuckDBAthenaClient(audit_bucket, moto_endpoint, trail_bucket), WORKGROUP, DATABASE)
    monkeypatch.setattr(deutzia_app, "get_trail_engine", lambda: engine)
    deutzia_app.get_coverage_reader.cache_clear()
    return client


def _scheduled(client: Client, detail: dict[str, str] | None = None) -> Any:
    return client.events.generate_cw_event("Scheduled Event", "aws.events", detail or {}, [])


def test_the_scheduled_function_reconciles_a_range_publishes_metrics_and_coverage_tells_the_days_apart(
    deployed: Client, s3: Any, trail_bucket: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    put_trail_file(s3, trail_bucket, [cloudtrail_event(event_time=f"{DAY}T09:00:00Z")])
    put_trail_file(s3, trail_bucket, [], date="2024/05/02")
    refused = cloudtrail_event(
        "BatchWriteItem",
        {"requestItems": [{"operation": "Put", "tableName": "Music", "key": {"id": str(n)}} for n in range(101)]},
        event_time="2024-05-03T09:00:00Z",
    )
    put_trail_file(s3, trail_bucket, [refused], date="2024/05/03")
    capsys.readouterr()

    payload = deutzia_app.reconcile_audit_trail(
        _scheduled(deployed, {"since": "2024-04-30", "until": "2024-05-03"}),
        LambdaContext("reconcile_audit_trail", 900_000),
    )

    assert payload == {
        "days": {
            "2024-04-30": "no_trail_files",
            "2024-05-01": "backfilled",
            "2024-05-02": "verified",
            "2024-05-03": "incomplete",
        },
        "not_reached": [],
        "next_since": None,
        "trail_problems": [],
    }
    documents = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [document["TrailProblems"] for document in documents if "TrailProblems" in document] == [[0.0]]
    published = [document for document in documents if "BackfilledEvents" in document]
    lines = [reconciler_logger.registered_formatter.format(r) for r in caplog.records if hasattr(r, "reconcile")]
    logged = [json.loads(line)["reconcile"] for line in lines if "\n" not in line]
    assert [(line["day"], line["table"], line["status"]) for line in logged if line["table"] == "Music"] == [
        ("2024-04-30", "Music", "verified"),
        ("2024-05-01", "Music", "backfilled"),
        ("2024-05-02", "Music", "verified"),
        ("2024-05-03", "Music", "incomplete"),
    ]
    assert [(document["BackfilledEvents"], document["MissingEvents"]) for document in published] == [
        ([0.0], [0.0]),
        ([1.0], [0.0]),
        ([0.0], [0.0]),
        ([0.0], [1.0]),
    ]
    assert all(document["service"] == "deutzia-reconcile" for document in published)
    response = deployed.http.get("/audit/coverage?table=Music&since=2024-04-29&until=2024-05-04")
    assert response.status_code == 200
    days = json.loads(response.body)["days"]
    assert [(day["day"], day["status"]) for day in days] == [
        ("2024-04-29", "not_checked"),
        ("2024-04-30", "no_trail_files"),
        ("2024-05-01", "backfilled"),
        ("2024-05-02", "verified"),
        ("2024-05-03", "incomplete"),
    ]
    assert (days[2]["trail_events"], days[2]["backfilled"], days[4]["still_missing"]) == (1, 1, 1)
    assert [(day.get("not_in_trail"), day.get("altered")) for day in days] == [(None, None), (None, None)] + [
        (0, 0)
    ] * 3


def test_the_scheduled_function_takes_the_day_before_yesterday_and_stops_before_its_time_runs_out(
    deployed: Client,
) -> None:
    # chalice.test gives every invocation 3 s: less than a day of reconciliation may need, so no day starts.
    response = deployed.lambda_.invoke("reconcile_audit_trail", _scheduled(deployed))
    day_before_yesterday = datetime.now(UTC).date() - timedelta(days=2)
    # No run reconciled the 31 days before it either (a new stack): the run would go on with them.
    earlier = [(day_before_yesterday - timedelta(days=n)).isoformat() for n in range(31, 0, -1)]
    first = day_before_yesterday.isoformat()
    assert response.payload == {
        "days": {},
        "not_reached": [first, *earlier],
        "next_since": first,
        "trail_problems": [],
    }


def test_the_watch_and_each_run_ask_whether_the_trail_itself_logs_and_name_what_they_find(
    deployed: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    cloudtrail = boto3.client("cloudtrail")
    trail = os.environ["TRAIL_ARN"]
    assert deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload == {"trail_problems": []}
    assert json.loads(deployed.http.get("/audit/coverage?table=Music").body)["trail_problems"] == []
    deutzia_app.get_trail_check.cache_clear()  # the API asks again after a minute; here, at once
    published = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"TrailProblems"' in line]
    assert [document["TrailProblems"] for document in published] == [[0.0]]
    cloudtrail.stop_logging(Name=trail)

    stopped = deployed.lambda_.invoke("reconcile_audit_trail", _scheduled(deployed)).payload

    (problem,) = stopped["trail_problems"]
    assert problem.startswith("the trail is not logging since 20")
    assert "no call is recorded, neither in GET /audit nor in the trail's files" in problem
    assert deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload == {"trail_problems": [problem]}
    # Whoever reads a history is told too, whatever its days: calls since the stop are recorded nowhere.
    coverage = json.loads(deployed.http.get("/audit/coverage?table=Music&since=2024-05-01&until=2024-05-02").body)
    assert coverage["trail_problems"] == [problem]
    published = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"TrailProblems"' in line]
    services = [(document["TrailProblems"], document["service"]) for document in published]
    assert services == [([1.0], "deutzia-reconcile"), ([1.0], "deutzia-trail")]  # the nightly run's and the watch's

    cloudtrail.start_logging(Name=trail)  # started again: the gap is named, calls in it are lost for good
    (gap,) = deployed.lambda_.invoke("reconcile_audit_trail", _scheduled(deployed)).payload["trail_problems"]
    assert gap.startswith("the trail did not log from 20")
    assert "calls in between were never recorded" in gap
    assert deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload == {"trail_problems": [gap]}

    # The day it happened is incomplete, whatever its counts: its calls then were recorded nowhere.
    today = datetime.now(UTC).date().isoformat()
    payload = deutzia_app.reconcile_audit_trail(
        _scheduled(deployed, {"since": today, "until": today}), LambdaContext("reconcile_audit_trail", 900_000)
    )
    assert payload["days"] == {today: "incomplete"}
    response = deployed.http.get(f"/audit/coverage?table=Music&since={today}")
    (day,) = json.loads(response.body)["days"]
    (gap_shown,) = day["not_logging"]
    assert (day["status"], day["still_missing"]) == ("incomplete", 0)
    assert gap_shown.startswith(f"from {today}T")
    assert f" to {today}T" in gap_shown

    cloudtrail.delete_trail(Name=trail.rsplit("/", 1)[1])  # a rerun, now that CloudTrail says nothing, keeps it
    deutzia_app.reconcile_audit_trail(
        _scheduled(deployed, {"since": today, "until": today}), LambdaContext("reconcile_audit_trail", 900_000)
    )
    (day,) = json.loads(deployed.http.get(f"/audit/coverage?table=Music&since={today}").body)["days"]
    assert (day["status"], day["not_logging"]) == ("incomplete", [gap_shown])
    (gone,) = deployed.lambda_.invoke("reconcile_audit_trail", _scheduled(deployed)).payload["trail_problems"]
    assert gone == f"the trail {trail} does not exist: no call is recorded until a trail logs the tables again"
    assert deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload == {"trail_problems": [gone]}


def test_selectors_and_settings_changed_to_undo_the_audit_are_named_by_the_watch_each_run_and_every_history(
    deployed: Client, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cloudtrail = boto3.client("cloudtrail")
    trail = os.environ["TRAIL_ARN"]
    assert deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload == {"trail_problems": []}
    capsys.readouterr()
    # Whoever may change the trail's selectors hides one kind of call on one table, quietly: the trail still logs.
    (selector,) = EVERY_CALL
    hiding = [
        {
            "Name": "everything but deletes on Books",
            "FieldSelectors": [*selector["FieldSelectors"], {"Field": "resources.ARN", "NotEndsWith": ["/Books"]}],
        },
        {
            "Name": "Books, but its deletes",
            "FieldSelectors": [
                *selector["FieldSelectors"],
                {"Field": "resources.ARN", "EndsWith": ["/Books"]},
                {"Field": "eventName", "NotEquals": ["DeleteItem", "BatchWriteItem"]},
            ],
        },
    ]
    cloudtrail.put_event_selectors(TrailName=trail, AdvancedEventSelectors=hiding)
    deutzia_app.get_trail_check.cache_clear()  # the API asks again after a minute; here, at once

    (problem,) = deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload["trail_problems"]

    assert problem.startswith("the trail's event selectors do not log BatchWriteItem, DeleteItem on Books for every ")
    assert "those calls are recorded nowhere" in problem
    published = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"TrailProblems"' in line]
    assert [(document["TrailProblems"], document["service"]) for document in published] == [([1.0], "deutzia-trail")]
    assert deployed.lambda_.invoke("reconcile_audit_trail", _scheduled(deployed)).payload["trail_problems"] == [problem]
    coverage = json.loads(deployed.http.get("/audit/coverage?table=Music&since=2024-05-01&until=2024-05-02").body)
    assert coverage["trail_problems"] == [problem]  # whatever the table read: the audit has a hole
    # Reads left out, where the stack audits them; a stack that audits writes only is told nothing of them.
    writes_only = [
        {**selector, "FieldSelectors": [*selector["FieldSelectors"], {"Field": "readOnly", "Equals": ["false"]}]}
    ]
    cloudtrail.put_event_selectors(TrailName=trail, AdvancedEventSelectors=writes_only)
    problems = deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload["trail_problems"]
    assert [problem.split(" for every caller")[0].rsplit(" on ", 1)[1] for problem in problems] == [
        "Books",
        "Music",
        "Tä'ble",
    ]
    assert all(" GetItem, Query, Scan, TransactGetItems " in problem for problem in problems)
    monkeypatch.setenv("AUDIT_READS", "false")
    assert deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload == {"trail_problems": []}
    cloudtrail.put_event_selectors(TrailName=trail, AdvancedEventSelectors=EVERY_CALL)
    # Its settings changed as quietly: files no longer signed, events sent to another log group.
    cloudtrail.update_trail(
        Name=trail,
        EnableLogFileValidation=False,
        CloudWatchLogsLogGroupArn="arn:aws:logs:us-east-1:123456789012:log-group:elsewhere:*",
        CloudWatchLogsRoleArn="arn:aws:iam::123456789012:role/trail-to-logs",
    )
    unsigned, elsewhere = deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload["trail_problems"]
    assert unsigned.startswith("the trail's log file validation is off: CloudTrail writes no digest files")
    assert elsewhere.startswith(f"the trail sends its events to the log group elsewhere, not {TRAIL_LOG_GROUP}: ")


def test_the_watch_names_who_made_a_change_and_selectors_narrowed_between_two_runs_from_the_event_history(
    deployed: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from botocore.stub import ANY, Stubber

    from chalicelib import trail_changes

    trail = os.environ["TRAIL_ARN"]
    history = boto3.client("cloudtrail")  # moto keeps no event history: CloudTrail's answer, as Stubber plays it
    stubber = Stubber(history)
    hours_ago = {
        hours: f"{datetime.now(UTC) - timedelta(hours=hours):%Y-%m-%dT%H:%M:%SZ}" for hours in (1, 2, 3, 4, 5, 9)
    }
    stop = {
        "eventName": "StopLogging",
        "eventTime": hours_ago[1],
        "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/mallory"},
        "sourceIPAddress": "203.0.113.7",
        "requestParameters": {"name": trail},
    }
    # Between two runs of the watch, mallory narrowed the selectors to hide every delete, then set them back.
    (selector,) = EVERY_CALL
    hiding = {
        **selector,
        "FieldSelectors": [*selector["FieldSelectors"], {"Field": "eventName", "NotEquals": ["DeleteItem"]}],
    }
    narrowed = [
        {
            **stop,
            "eventName": "PutEventSelectors",
            "eventTime": at,
            "requestParameters": {"trailName": trail, "advancedEventSelectors": chosen},
        }
        for at, chosen in ((hours_ago[2], EVERY_CALL), (hours_ago[3], [hiding]), (hours_ago[9], EVERY_CALL))
    ]
    asked = {"StartTime": ANY, "EndTime": ANY, "MaxResults": 50}
    stubber.add_response("lookup_events", {"Events": [{"CloudTrailEvent": json.dumps(event)} for event in narrowed]}, {
        "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "PutEventSelectors"}], **asked
    })  # fmt: skip
    # Stopped five hours ago and started an hour later: a stop the status no longer tells (it tells the latest).
    for name, at in (("StopLogging", hours_ago[5]), ("DeleteTrail", None), ("StartLogging", hours_ago[4])):
        logged = [{**stop, "eventName": name, "eventTime": at}] if at else []
        answer = {"Events": [{"CloudTrailEvent": json.dumps(event)} for event in logged]}
        stubber.add_response("lookup_events", answer, _looked_up(name))
    stubber.add_response("lookup_events", {"Events": [{"CloudTrailEvent": json.dumps(stop)}]}, {
        "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "StopLogging"}], **asked
    })  # fmt: skip
    monkeypatch.setattr(trail_changes, "boto3", SimpleNamespace(client=lambda *_, **__: history))
    monkeypatch.setattr(trail_changes, "SECONDS_BETWEEN_CALLS", 0)
    quiet = deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload  # moto has no history: as before
    assert quiet == {"trail_problems": []}
    boto3.client("cloudtrail").stop_logging(Name=trail)

    with stubber:
        answer = deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload

    stopped, window, hidden = answer["trail_problems"]
    assert stopped.startswith("the trail is not logging since ")
    assert hidden == (
        f"from {hours_ago[5]} to {hours_ago[4]} the trail was stopped (StopLogging by "
        "arn:aws:iam::123456789012:user/mallory): calls in between were recorded nowhere, and no backfill can find them"
    )
    assert window == (
        f"from {hours_ago[3]} to {hours_ago[2]} the trail's event selectors, set by "
        "arn:aws:iam::123456789012:user/mallory, did not log DeleteItem on Books; DeleteItem on Music; DeleteItem on "
        "Tä'ble for every caller: calls in between were recorded nowhere, and no backfill can find them"
    )
    assert answer["trail_changes"] == [
        "StopLogging was last called on the trail by arn:aws:iam::123456789012:user/mallory from 203.0.113.7 at "
        f"{hours_ago[1]}"
    ]
    stubber.assert_no_pending_responses()


HISTORY_DAY = "2024-05-02"


@pytest.fixture
def quiet_day(deployed: Client, s3: Any, trail_bucket: str) -> Callable[[], dict[str, Any]]:
    """HISTORY_DAY, whose trail files hold no call, and how to reconcile it (on its own)."""
    put_trail_file(s3, trail_bucket, [], date="2024/05/02")
    put_trail_file(s3, trail_bucket, [], date="2024/05/03")

    def reconcile() -> dict[str, Any]:
        run = deutzia_app.reconcile_audit_trail(
            _scheduled(deployed, {"since": HISTORY_DAY, "until": HISTORY_DAY}),
            LambdaContext("reconcile_audit_trail", 900_000),
        )
        return dict(run)

    return reconcile


def _history_played(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Stubber playing CloudTrail's event history (moto has none) for what reads it."""
    from types import SimpleNamespace

    from botocore.stub import Stubber

    from chalicelib import trail_changes

    history = boto3.client("cloudtrail")
    monkeypatch.setattr(trail_changes, "boto3", SimpleNamespace(client=lambda *_, **__: history))
    monkeypatch.setattr(trail_changes, "SECONDS_BETWEEN_CALLS", 0)
    return Stubber(history)


def test_a_day_the_selectors_left_a_tables_calls_out_on_is_incomplete_for_that_table_though_its_files_agree(
    deployed: Client, monkeypatch: pytest.MonkeyPatch, quiet_day: Callable[[], dict[str, Any]]
) -> None:
    from botocore.stub import ANY

    trail, day, reconcile = os.environ["TRAIL_ARN"], HISTORY_DAY, quiet_day
    assert reconcile()["days"] == {day: "verified"}  # moto keeps no history: nothing said of the selectors
    stubber = _history_played(monkeypatch)
    at = {"before": "2024-05-01T09:00:00Z", "narrowed": "2024-05-02T10:00:00Z", "restored": "2024-05-02T10:03:00Z"}
    (selector,) = EVERY_CALL
    hiding = {
        **selector,
        "FieldSelectors": [*selector["FieldSelectors"], {"Field": "resources.ARN", "NotEndsWith": ["/Books"]}],
    }
    mallory = {"arn": "arn:aws:iam::123456789012:user/mallory"}
    events = [
        {"eventName": "PutEventSelectors", "eventTime": at[name], "userIdentity": mallory,
         "requestParameters": {"trailName": trail, "advancedEventSelectors": chosen}}
        for name, chosen in (("restored", EVERY_CALL), ("narrowed", [hiding]), ("before", EVERY_CALL))
    ]  # fmt: skip
    stubber.add_response("lookup_events", {"Events": [{"CloudTrailEvent": json.dumps(event)} for event in events]}, {
        "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "PutEventSelectors"}],
        "StartTime": ANY, "EndTime": ANY, "MaxResults": 50,
    })  # fmt: skip
    for never in ("StopLogging", "DeleteTrail", "StartLogging"):  # the trail was never stopped
        stubber.add_response("lookup_events", {"Events": []}, _looked_up(never))

    with stubber:
        payload = reconcile()

    stubber.assert_no_pending_responses()
    assert payload.get("days") == {day: "incomplete"}, payload  # Books' calls for three minutes were recorded nowhere

    def covered(table: str) -> dict[str, Any]:
        answer = deployed.http.get(f"/audit/coverage?table={table}&since={day}&until=2024-05-03")
        (covered_day,) = json.loads(answer.body)["days"]
        return dict(covered_day)

    books = covered("Books")
    assert books["status"] == "incomplete"
    assert books["not_logging"] == [
        f"from {at['narrowed']} to {at['restored']} (its selectors left out every call on Books)"
    ]
    # Only Books: the selectors logged every other table's calls all along.
    assert (covered("Music")["status"], "not_logging" in covered("Music")) == ("verified", False)
    # A later run that cannot read the history (moto has none) keeps what the day's runs learnt.
    assert reconcile()["days"] == {day: "incomplete"}
    assert (covered("Books")["not_logging"], covered("Music")["status"]) == (books["not_logging"], "verified")


def _looked_up(event_name: str) -> dict[str, Any]:
    """The LookupEvents request for `event_name`'s calls over the history, as Stubber expects it."""
    from botocore.stub import ANY

    lookup = [{"AttributeKey": "EventName", "AttributeValue": event_name}]
    return {"LookupAttributes": lookup, "StartTime": ANY, "EndTime": ANY, "MaxResults": 50}


def test_a_stop_the_trails_status_no_longer_tells_still_makes_its_day_incomplete(
    deployed: Client, monkeypatch: pytest.MonkeyPatch, quiet_day: Callable[[], dict[str, Any]]
) -> None:
    trail, day = os.environ["TRAIL_ARN"], HISTORY_DAY
    stubber = _history_played(monkeypatch)
    stubber.add_response("lookup_events", {"Events": []}, _looked_up("PutEventSelectors"))
    # Stopped and started twice within minutes: the status tells the latest stop only, the history both.
    mallory = {"arn": "arn:aws:iam::123456789012:user/mallory"}
    # Deleted and made again under its name: nothing logged between, and the new trail's status has no stop.
    calls = {"StopLogging": ["2024-05-02T10:00:00Z", "2024-05-02T10:04:00Z"], "DeleteTrail": ["2024-05-02T11:00:00Z"],
             "StartLogging": ["2024-05-02T10:02:00Z", "2024-05-02T10:04:30Z", "2024-05-02T11:01:00Z"]}  # fmt: skip
    for name, times in calls.items():
        events = [{"eventName": name, "eventTime": at, "userIdentity": mallory, "requestParameters": {"name": trail}}
                  for at in times]  # fmt: skip
        answer = {"Events": [{"CloudTrailEvent": json.dumps(event)} for event in events]}
        stubber.add_response("lookup_events", answer, _looked_up(name))

    with stubber:
        run = quiet_day()

    stubber.assert_no_pending_responses()
    assert run["days"] == {day: "incomplete"}  # its files and records agree: both lack the calls of those minutes
    (covered,) = json.loads(deployed.http.get(f"/audit/coverage?table=Music&since={day}&until=2024-05-03").body)["days"]
    assert covered["not_logging"] == [
        "from 2024-05-02T10:00:00Z to 2024-05-02T10:02:00Z",
        "from 2024-05-02T10:04:00Z to 2024-05-02T10:04:30Z",
        "from 2024-05-02T11:00:00Z to 2024-05-02T11:01:00Z",
    ]


def test_each_nightly_run_names_a_trail_watch_that_stopped_running(
    deployed: Client, s3: Any, audit_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert deployed.lambda_.invoke("reconcile_audit_trail", _scheduled(deployed)).payload["trail_problems"] == []
    assert deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload == {"trail_problems": []}
    ran = json.loads(s3.get_object(Bucket=audit_bucket, Key=WATCH_HEARTBEAT_KEY)["Body"].read())["checked_at"]
    assert datetime.now(UTC) - datetime.fromisoformat(ran) < timedelta(minutes=1)
    assert deployed.lambda_.invoke("reconcile_audit_trail", _scheduled(deployed)).payload["trail_problems"] == []
    capsys.readouterr()
    # Its schedule disabled, its concurrency set to 0: the watch stops running, and the trail's alarm would wait for
    # the nightly run to name a stopped trail. That run names the watch itself, for the same alarm.
    s3.put_object(Bucket=audit_bucket, Key=WATCH_HEARTBEAT_KEY, Body=json.dumps({"checked_at": "2026-01-01T00:00:00Z"}))

    (problem,) = deployed.lambda_.invoke("reconcile_audit_trail", _scheduled(deployed)).payload["trail_problems"]

    assert problem.startswith("the trail watch (watch_trail) has not run since 2026-01-01T00:00:00Z")
    published = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"TrailProblems"' in line]
    assert [(document["TrailProblems"], document["service"]) for document in published] == [
        ([1.0], "deutzia-reconcile")
    ]


def test_a_nightly_run_names_a_trail_watch_that_never_ran_once_an_earlier_night_did_run(
    deployed: Client, s3: Any, audit_bucket: str
) -> None:
    # A new stack: no heartbeat and no earlier night, and nothing named.
    assert deployed.lambda_.invoke("reconcile_audit_trail", _scheduled(deployed)).payload["trail_problems"] == []
    # The night before ran (its day's summary is there), and the watch never did: its schedule was never enabled.
    night_before = (datetime.now(UTC).date() - timedelta(days=3)).isoformat()
    summary = {"day": night_before, "checked_at": "2026-01-01T03:30:00Z", "status": "verified"}
    s3.put_object(Bucket=audit_bucket, Key=report_key(night_before), Body=json.dumps(summary))

    (problem,) = deployed.lambda_.invoke("reconcile_audit_trail", _scheduled(deployed)).payload["trail_problems"]

    assert problem.startswith(
        "the trail watch (watch_trail) has never run, though the nightly check ran at 2026-01-01T"
    )
    assert deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload == {"trail_problems": []}
    assert deployed.lambda_.invoke("reconcile_audit_trail", _scheduled(deployed)).payload["trail_problems"] == []


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("", 400, "table: is required"),
        ("table=Music&since=2024-05-xx", 400, "since: must be a date"),
        ("table=Music&since=2024-05-02&until=2024-05-01", 400, "until: must be later than since"),
        ("table=Music&since=2020-01-01&until=2024-01-01", 400, "more than 366 days"),
        ("table=Music&table=Books", 400, "table: must be given once"),
        ("table=Music&key=x", 400, "key: is not a parameter"),
        ("table=x", 400, "table: is not a DynamoDB table name"),
        ("table=Unaudited", 404, "not audited"),
    ],
)
def test_coverage_refuses_what_it_cannot_answer_naming_the_parameter(
    deployed: Client, query: str, status: int, says: str
) -> None:
    response = deployed.http.get(f"/audit/coverage?{query}")
    assert response.status_code == status
    assert says in json.loads(response.body)["Message"]


def test_coverage_defaults_to_the_last_30_days_up_to_today(deployed: Client) -> None:
    days = json.loads(deployed.http.get("/audit/coverage?table=Music").body)["days"]
    today = datetime.now(UTC).date()
    assert [day["day"] for day in days] == [(today - timedelta(days=29 - n)).isoformat() for n in range(30)]
    assert {day["status"] for day in days} == {"not_checked"}


def test_a_stop_the_watch_saw_marks_its_day_though_a_later_stop_hid_it_from_cloudtrail(
    deployed: Client, s3: Any, audit_bucket: str
) -> None:
    cloudtrail = boto3.client("cloudtrail")
    trail = os.environ["TRAIL_ARN"]
    today = datetime.now(UTC).date().isoformat()
    cloudtrail.stop_logging(Name=trail)
    deployed.lambda_.invoke("watch_trail", _scheduled(deployed))  # sees it stopped
    time.sleep(1.1)  # CloudTrail's times are in seconds: the next stop starts later
    cloudtrail.start_logging(Name=trail)
    (first,) = deployed.lambda_.invoke("watch_trail", _scheduled(deployed)).payload["trail_problems"]
    kept = s3.list_objects_v2(Bucket=audit_bucket, Prefix=f"reports/trail/not-logging/dt={today}/")["Contents"]
    assert len(kept) == 1  # one stop, its end now known
    time.sleep(1.1)
    cloudtrail.stop_logging(Name=trail)  # a second stop: CloudTrail now tells only this one
    time.sleep(1.1)
    cloudtrail.start_logging(Name=trail)

    payload = deutzia_app.reconcile_audit_trail(
        _scheduled(deployed, {"since": today, "until": today}), LambdaContext("reconcile_audit_trail", 900_000)
    )

    assert payload["days"] == {today: "incomplete"}
    (day,) = json.loads(deployed.http.get(f"/audit/coverage?table=Music&since={today}").body)["days"]
    assert len(day["not_logging"]) == 2  # the first, from the watch's record; the second, from CloudTrail
    assert first.removeprefix("the trail did not log ").split(": calls")[0] in day["not_logging"]
