"""Reconciliation end to end, on a stack of its own that loses what AWS loses: half of the log deliveries dropped on
purpose, and (as CloudTrail does) no event over 256 KB sent to the log group at all. `make reconcile` must then
leave every call in GET /audit exactly once, say so in its report, change nothing when run again, and
GET /audit/coverage must tell the checked, unchecked and trail-less days apart. `make compact` on the same stack (which
compacts only when told) honours COMPACTION_MAX_INPUT_BYTES and says what it did when it refuses."""

from __future__ import annotations

import gzip
import json
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Stack, running_stack, settled_today

TABLE = "E2eLedger"
CALLS = 30


@pytest.fixture(scope="module")
def lossy() -> Iterator[Stack]:
    with running_stack(
        DEUTZIA_LOCAL_LOG_DROP_RATE="0.5",
        DEUTZIA_RECONCILE_SETTLE_SECONDS="1",
        DEUTZIA_COMPACT_INTERVAL="86400",  # the audit objects stay put between the two runs compared
    ) as stack:
        yield stack


def _trail_event_ids(stack: Stack) -> set[str]:
    return {event["eventID"] for event in _trail_events(stack) if _names(event, TABLE)}


def _audit_objects(stack: Stack) -> dict[str, str]:
    listed = stack.client("s3").list_objects_v2(Bucket="deutzia-audit", Prefix="audit/").get("Contents", [])
    return {entry["Key"]: entry["ETag"] for entry in listed}


def _report(stack: Stack, day: str) -> dict[str, Any]:
    key = f"reports/reconcile/dt={day}/{TABLE}.json"
    document: dict[str, Any] = json.loads(stack.client("s3").get_object(Bucket="deutzia-audit", Key=key)["Body"].read())
    return document


def _get(stack: Stack, path: str, **parameters: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{stack.api_url}{path}?{urllib.parse.urlencode(parameters)}", timeout=30) as answer:
        body: dict[str, Any] = json.loads(answer.read())
    return body


def test_make_reconcile_backfills_what_the_log_group_never_got_and_a_rerun_changes_nothing(lossy: Stack) -> None:
    dynamodb = lossy.client("dynamodb")
    dynamodb.create_table(
        TableName=TABLE,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for n in range(CALLS):
        dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": f"entry-{n}"}, "sk": {"S": "v1"}})
    # 100 items with the longest keys DynamoDB takes: CloudTrail logs each key, so the event is over 256 KB.
    updates = [
        {
            "Update": {
                "TableName": TABLE,
                "Key": {"pk": {"S": f"{n:03d}" + "p" * 2045}, "sk": {"S": "s" * 1024}},
                "UpdateExpression": "SET #state = :state",
                "ConditionExpression": "attribute_not_exists(#locked)",
                "ExpressionAttributeNames": {"#state": "state", "#locked": "locked"},
                "ExpressionAttributeValues": {":state": {"S": "settled"}},
            }
        }
        for n in range(100)
    ]
    dynamodb.transact_write_items(TransactItems=updates)
    deadline = time.monotonic() + 60
    while len(trail := _trail_event_ids(lossy)) < CALLS + 1:
        assert time.monotonic() < deadline, f"the trail files hold {len(trail)} of {CALLS + 1} calls"
        time.sleep(1)
    time.sleep(3)  # what the fast path delivers, it has delivered by now
    before = len(lossy.audit(table=TABLE)["entries"])
    assert before < CALLS + 100, "the transaction (over 256 KB) must not have reached the log group"

    first = lossy.run(["make", "--no-print-directory", "reconcile"], timeout=120)

    assert first.returncode == 0, first.stdout + first.stderr
    assert f"{TABLE}: backfilled" in first.stdout, first.stdout
    entries = lossy.audit(table=TABLE)["entries"]
    assert len(entries) == CALLS + 100
    assert len({(entry["event_id"], entry["item_index"]) for entry in entries}) == len(entries)
    assert {entry["event_id"] for entry in entries} == trail
    today = datetime.now(UTC).date()
    report = _report(lossy, today.isoformat())
    assert (report["status"], report["still_missing"], report["trail_events"]) == ("backfilled", 0, CALLS + 1)
    assert report["backfilled"] + report["audited_by_ingest"] == CALLS + 1
    assert report["backfilled"] >= 1
    assert report["backfill_objects"]
    objects = _audit_objects(lossy)

    # The rerun as `deutzia reconcile` runs it on the local stack: the same reconciliation, the day's status shown.
    deutzia = str(Path(sys.executable).parent / "deutzia")
    second = lossy.run([deutzia, "reconcile", "--since", today.isoformat()], {**lossy.env, "COLUMNS": "200"}, 120)

    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{today} │ backfilled" in second.stdout
    assert "1 day complete after backfill" in " ".join(second.stderr.split())
    assert _audit_objects(lossy) == objects
    again = _report(lossy, today.isoformat())
    moving = ("checked_at", "checked_until", "backfilled_now", "backfill_objects")
    assert {k: v for k, v in again.items() if k not in moving} == {k: v for k, v in report.items() if k not in moving}
    assert again["backfilled_now"] == 0
    assert len(lossy.audit(table=TABLE)["entries"]) == CALLS + 100

    since = (today - timedelta(days=3)).isoformat()
    coverage = _get(lossy, "/audit/coverage", table=TABLE, since=since, until=(today + timedelta(days=1)).isoformat())
    assert [(day["day"], day["status"]) for day in coverage["days"]] == [
        ((today - timedelta(days=3)).isoformat(), "not_checked"),
        ((today - timedelta(days=2)).isoformat(), "not_checked"),
        ((today - timedelta(days=1)).isoformat(), "no_trail_files"),
        (today.isoformat(), "backfilled"),
    ]
    # The raw trail is SQL too, as in Athena: the anti-join by hand finds nothing missing now.
    ids = ", ".join(f"'{event_id}'" for event_id in sorted(trail))
    query = (
        "select count(*) as calls, count(*) filter (where not exists (select 1 from audit a "
        f"where a.event_id = t.eventid)) as missing from cloudtrail_logs t where eventid in ({ids})"
    )
    assert lossy.sql_rows(query) == [{"calls": str(CALLS + 1), "missing": "0"}]
    untouched = _get(lossy, "/audit/coverage", table="E2eNeverCalled")
    assert untouched["days"][-1]["status"] == "verified"


def test_records_put_in_the_log_group_that_the_trail_lacks_or_contradicts_are_named_and_marked(lossy: Stack) -> None:
    # Whoever may write to the trail's log group can forge calls there: ingest records them as any other, and
    # reconciliation against CloudTrail's own files must name them.
    table = "E2eForged"
    lossy.create_table(table)
    dynamodb = lossy.client("dynamodb")
    for n in range(2):
        dynamodb.put_item(TableName=table, Item={"id": {"S": f"real-{n}"}})
    deadline = time.monotonic() + 60
    while len(real := [event for event in _trail_events(lossy) if _names(event, table)]) < 2:
        assert time.monotonic() < deadline, f"the trail files hold {len(real)} of 2 calls"
        time.sleep(1)
    forged = {**real[0], "eventID": str(uuid.uuid4()), "requestID": uuid.uuid4().hex}
    forged["requestParameters"] = {"tableName": table, "key": {"id": {"S": "never-written"}}}
    someone_else = {**real[1], "userIdentity": {**real[1]["userIdentity"], "arn": "arn:aws:iam::123456789012:user/eve"}}
    logs = lossy.client("logs")
    logs.create_log_stream(logGroupName="/deutzia/local/cloudtrail", logStreamName="forger")
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName="/deutzia/local/cloudtrail",
        logStreamName="forger",
        logEvents=[{"timestamp": now, "message": json.dumps(event)} for event in (forged, someone_else)],
    )
    deadline = time.monotonic() + 30
    while forged["eventID"] not in {entry["event_id"] for entry in lossy.audit(table=table)["entries"]}:
        assert time.monotonic() < deadline, "the forged call never reached GET /audit"
        time.sleep(0.5)
    time.sleep(2)  # past the stack's settle time, so that today is checked up to after them

    run = lossy.run(["make", "--no-print-directory", "reconcile"], timeout=120)

    assert run.returncode == 2, run.stdout + run.stderr  # make's code for the command's 1: records unconfirmed
    assert f"{table}: unconfirmed" in run.stdout, run.stdout
    assert "1 audited calls not in the trail, 1 contradicting it: " in run.stdout
    assert "1 restored from the trail's files" in run.stdout
    today = datetime.now(UTC).date().isoformat()
    coverage = _get(lossy, "/audit/coverage", table=table, since=today)
    (day,) = coverage["days"]
    assert (day["status"], day["not_in_trail"], day["altered"]) == ("unconfirmed", 1, 1)
    assert (day["unconfirmed_ids"], day["restored_ids"]) == ([forged["eventID"]], [someone_else["eventID"]])
    # Compaction keeps the trail's own record of the contradicted call: GET /audit shows who really made it.
    compacted = lossy.run(["make", "--no-print-directory", "compact"], timeout=120)
    assert compacted.returncode == 0, compacted.stdout + compacted.stderr
    shown = [entry for entry in lossy.audit(table=table)["entries"] if entry["event_id"] == real[1]["eventID"]]
    assert [entry["principal_arn"] for entry in shown] == [real[1]["userIdentity"].get("arn")]  # not eve's


def _trail_events(stack: Stack) -> list[dict[str, Any]]:
    s3 = stack.client("s3")
    events = []
    for entry in s3.list_objects_v2(Bucket="deutzia-trail", Prefix="AWSLogs/").get("Contents", []):
        body = gzip.decompress(s3.get_object(Bucket="deutzia-trail", Key=entry["Key"])["Body"].read())
        events += json.loads(body)["Records"]
    return events


def _names(event: dict[str, Any], table: str) -> bool:
    return any(resource["ARN"].endswith(f"table/{table}") for resource in event.get("resources", []))


def test_make_compact_honours_the_input_bound_and_says_what_it_did_when_it_refuses(lossy: Stack) -> None:
    table = "E2eBacklog"
    lossy.create_table(table)
    for n in range(3):
        lossy.client("dynamodb").put_item(TableName=table, Item={"id": {"S": f"b-{n}"}})
    deadline = time.monotonic() + 60
    while len(entries := lossy.audit(table=table)["entries"]) < 3:  # half the log deliveries are lost on purpose
        assert time.monotonic() < deadline, f"{len(entries)} of 3 calls after reconciling for a minute"
        lossy.run(["make", "--no-print-directory", "reconcile"], timeout=120)
        time.sleep(1)
    s3 = lossy.client("s3")
    fresh = s3.list_objects_v2(Bucket="deutzia-audit", Prefix=f"audit/table_name={table}/")["Contents"]
    bound = str(max(item["Size"] for item in fresh) - 1)  # the biggest object is more than a run may hold
    history = sorted(entry["event_id"] for entry in entries)

    refused = lossy.run(
        ["make", "--no-print-directory", "compact"], env={**lossy.env, "COMPACTION_MAX_INPUT_BYTES": bound}
    )

    assert refused.returncode == 2, refused.stdout + refused.stderr  # make's own code for a recipe that failed
    assert "compact] Error 1" in refused.stderr  # the command's: what it did counts, but not everything was done
    assert refused.stdout.startswith("compacted "), refused.stdout
    assert "refused" in refused.stdout
    assert "error: compaction refused" in refused.stderr
    assert table in refused.stderr
    assert sorted(entry["event_id"] for entry in lossy.audit(table=table)["entries"]) == history

    done = lossy.run(
        ["make", "--no-print-directory", "compact"], env={**lossy.env, "COMPACTION_GRACE_SECONDS": "0.001"}
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert s3.list_objects_v2(Bucket="deutzia-audit", Prefix=f"audit/table_name={table}/").get("Contents", []) == []
    assert sorted(entry["event_id"] for entry in lossy.audit(table=table)["entries"]) == history


def test_a_trail_stopped_with_the_aws_cli_is_named_by_every_reconciliation_until_it_logs_again() -> None:
    with running_stack() as own:  # its trail stops: no other test's calls go unrecorded
        own.create_table(TABLE)
        keys = {"AccessKeyId": "testing", "SecretAccessKey": "testing"}
        today = settled_today()
        deutzia = str(Path(sys.executable).parent / "deutzia")
        stopped = own.aws_cli(keys, "cloudtrail", "stop-logging", "--name", "deutzia-local")
        assert stopped.returncode == 0, stopped.stderr
        own.client("dynamodb").put_item(TableName=TABLE, Item={"id": {"S": "unlogged"}})

        run = own.run([deutzia, "reconcile", "--since", today], {**own.env, "COLUMNS": "200"}, 120)

        assert run.returncode == 1, run.stdout + run.stderr
        assert f"{today} │ incomplete" in run.stdout  # its calls since the stop are recorded nowhere
        said = " ".join(run.stderr.split())
        assert "The trail: the trail is not logging since " in said
        assert "no call is recorded, neither in GET /audit nor in the trail's files" in said
        made = own.run(["make", "--no-print-directory", "reconcile", f"DATE={today}"], timeout=120)
        assert made.returncode != 0  # make says 2 for a recipe that exits 1
        assert "the trail: the trail is not logging since " in made.stdout
        assert f"{today}: incomplete" in made.stdout
        assert f"  the trail did not log from {today}T" in made.stdout  # the day's own line says why
        # Whoever reads a history is told, whatever its days: its calls since the stop are recorded nowhere.
        history = own.run(
            [deutzia, "history", "--table", TABLE, "--since", "2024-01-01"], {**own.env, "COLUMNS": "200"}
        )
        assert history.returncode == 0, history.stderr
        assert "The trail: the trail is not logging since " in " ".join(history.stderr.split())

        assert own.aws_cli(keys, "cloudtrail", "start-logging", "--name", "deutzia-local").returncode == 0
        again = own.run([deutzia, "reconcile", "--since", today], {**own.env, "COLUMNS": "200"}, 120)
        assert again.returncode == 1
        assert "The trail: the trail did not log from " in " ".join(again.stderr.split())
        coverage = _get(own, "/audit/coverage", table=TABLE, since=today)
        (day,) = coverage["days"]
        assert day["status"] == "incomplete"
        (gap,) = day["not_logging"]  # the stop the first run saw, now with its end
        assert gap.startswith(f"from {today}T")
        # A day not begun yet is refused by name before any day is read, whatever the days before it.
        tomorrow = (date.fromisoformat(today) + timedelta(days=1)).isoformat()
        early = own.run([deutzia, "reconcile", "--since", today, "--until", tomorrow], {**own.env, "COLUMNS": "200"})
        assert early.returncode == 2, early.stdout + early.stderr
        said = " ".join(early.stderr.split())
        assert f"bad request: --since, --until: {tomorrow} cannot be checked before {tomorrow}T00:00:10Z" in said
        assert "Traceback" not in early.stderr
        assert early.stdout == ""
        made_early = own.run(["make", "--no-print-directory", "reconcile", f"DATE={tomorrow}"], timeout=120)
        assert f"error: DATE: {tomorrow} cannot be checked before" in made_early.stderr
