"""The template's named queries, the questions users open first in the Athena console, run as Athena's SQL
(tests/athena_sql.py) over records ingested through the app and trail files as CloudTrail writes them: each is SQL
Athena runs as written, and answers what its name says, no call more or less."""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest

from infra.render import load_template
from tests.athena_sql import athena_problems
from tests.factories import ACCOUNT, cloudtrail_event
from tests.functional.athena_fake import WORKGROUP, DuckDBAthenaClient
from tests.infra.intrinsics import PSEUDO, Resolver

_template = load_template()
# Each named query's SQL, as CloudFormation gives it to Athena.
NAMED_QUERIES = {
    name: Resolver(_template, {}).resolve(resource["Properties"]["QueryString"])
    for name, resource in _template["Resources"].items()
    if resource.get("Type") == "AWS::Athena::NamedQuery"
}
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
_buckets = itertools.count()


def _today() -> date:
    return datetime.now(UTC).date()


def _at(days_ago: int, hour: int = 12) -> str:
    moment = datetime.combine(_today() - timedelta(days=days_ago), time(hour), tzinfo=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _call(event_name: str = "PutItem", days_ago: int = 0, **overrides: Any) -> dict[str, Any]:
    hour = overrides.pop("hour", 12)
    return cloudtrail_event(event_name, event_time=_at(days_ago, hour), **overrides)


def deliver(ingest: Callable[..., Any], *calls: dict[str, Any]) -> None:
    """Each call in a Kinesis record of its own, which reaches the stream a second after it (a call days old is
    late for a record of today's calls, and quarantined)."""
    ingest(*([call] for call in calls))


def _key(item: str, table: str = "Music") -> dict[str, Any]:
    return {"tableName": table, "key": {"id": item}}


def _refused(code: str) -> dict[str, Any]:
    return {"errorCode": code, "errorMessage": f"refused: {code}"}


@pytest.fixture
def trail_bucket(s3: Any) -> str:
    bucket = f"deutzia-named-trail-{next(_buckets)}"
    s3.create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def athena(audit_bucket: str, moto_endpoint: str, trail_bucket: str) -> DuckDBAthenaClient:
    return DuckDBAthenaClient(audit_bucket, moto_endpoint, trail_bucket)


def run(athena: DuckDBAthenaClient, name: str, *edits: tuple[str, str]) -> list[dict[str, str | None]]:
    """The named query's rows, after the edits its description asks for (the table, the key)."""
    sql = NAMED_QUERIES[name]
    for old, new in edits:
        assert old in sql, f"{name} no longer holds {old!r}"
        sql = sql.replace(old, new)
    execution_id = athena.start_query_execution(QueryString=sql, WorkGroup=WORKGROUP, ExecutionParameters=[])
    state = athena.get_query_execution(QueryExecutionId=execution_id["QueryExecutionId"])["QueryExecution"]["Status"]
    assert state["State"] == "SUCCEEDED", state
    rows = athena.get_query_results(QueryExecutionId=execution_id["QueryExecutionId"], MaxResults=1000)["ResultSet"]
    header, *data = [[datum.get("VarCharValue") for datum in row["Data"]] for row in rows["Rows"]]
    return [dict(zip(header, values, strict=True)) for values in data]


def test_every_named_query_is_sql_athena_runs_as_written() -> None:
    assert set(NAMED_QUERIES) >= {"ItemHistoryQuery", "FailedWritesQuery", "TrailCallsQuery"}
    for name, sql in NAMED_QUERIES.items():
        assert athena_problems(sql) == [], name


def test_the_history_of_one_item_is_every_call_on_it_newest_first(
    athena: DuckDBAthenaClient, ingest: Callable[..., Any]
) -> None:
    deliver(
        ingest,
        _call("PutItem", 3, requestParameters=_key("42")),
        _call("UpdateItem", 1, requestParameters=_key("42")),
        _call("GetItem", 2, requestParameters=_key("42")),
        _call("DeleteItem", 1, requestParameters=_key("7")),
        _call("PutItem", 1, requestParameters=_key("42", table="Books"), table="Books"),
    )
    rows = run(athena, "ItemHistoryQuery", ("'MyTable'", "'Music'"))
    assert [(row["event_time"], row["operation"]) for row in rows] == [
        (_at(1), "Update"),
        (_at(2), "Get"),
        (_at(3), "Put"),
    ]
    columns = {"event_time", "principal_arn", "operation", "success", "error_code", "source_ip", "user_agent"}
    assert set(rows[0]) == columns


def test_failed_writes_are_the_writes_refused_in_the_last_seven_days(
    athena: DuckDBAthenaClient, ingest: Callable[..., Any]
) -> None:
    deliver(
        ingest,
        _call("PutItem", 2, **_refused("ConditionalCheckFailedException")),
        _call("GetItem", 1, **_refused("AccessDenied")),  # a read
        _call("UpdateItem", 1),  # worked
        _call("DeleteItem", 9, **_refused("ThrottlingException")),  # before the seven days
    )
    rows = run(athena, "FailedWritesQuery")
    assert [(row["operation"], row["error_code"]) for row in rows] == [("Put", "ConditionalCheckFailedException")]
    assert rows[0]["error_message"] == "refused: ConditionalCheckFailedException"


def test_one_principals_activity_is_its_calls_its_sessions_and_its_access_keys(
    athena: DuckDBAthenaClient, ingest: Callable[..., Any]
) -> None:
    session = {
        "type": "AssumedRole",
        "principalId": "AROAALICE:ops",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/alice-ops/ops",
        "accountId": ACCOUNT,
        "sessionContext": {"sessionIssuer": {"type": "IAMUser", "arn": ALICE}},
    }
    leaked = cloudtrail_event(event_time=_at(1, 9), user="bob")
    leaked["userIdentity"]["accessKeyId"] = "AKIAIOSFODNN7EXAMPLE"
    deliver(
        ingest,
        _call("PutItem", 1, hour=11),
        _call("GetItem", 1, hour=10, userIdentity=session),
        leaked,
        _call("PutItem", 1, hour=8, user="carol"),
    )
    rows = run(athena, "PrincipalActivityQuery")
    assert [row["event_time"] for row in rows] == [_at(1, 11), _at(1, 10), _at(1, 9)]


def test_one_addresss_activity_is_its_calls_of_the_last_thirty_days_on_every_table(
    athena: DuckDBAthenaClient, ingest: Callable[..., Any]
) -> None:
    deliver(
        ingest,
        _call("PutItem", 2, sourceIPAddress="203.0.113.7"),
        _call("PutItem", 29, table="Books", requestParameters=_key("b", "Books"), sourceIPAddress="203.0.113.7"),
        _call("PutItem", 1, sourceIPAddress="203.0.113.70"),
        _call("PutItem", 1, sourceIPAddress="203.0.113.8"),
        _call("PutItem", 31, sourceIPAddress="203.0.113.7"),  # before the thirty days
    )
    rows = run(athena, "SourceIpActivityQuery")
    assert [(row["event_time"], row["table_name"]) for row in rows] == [(_at(2), "Music"), (_at(29), "Books")]


def test_denied_calls_are_those_refused_their_permission_in_the_last_seven_days(
    athena: DuckDBAthenaClient, ingest: Callable[..., Any]
) -> None:
    deliver(
        ingest,
        _call("PutItem", 1, **_refused("AccessDenied")),
        _call("GetItem", 2, **_refused("Client.UnauthorizedOperation")),
        _call("PutItem", 1, hour=9, **_refused("ConditionalCheckFailedException")),
        _call("PutItem", 8, **_refused("AccessDeniedException")),  # before the seven days
    )
    rows = run(athena, "DeniedCallsQuery")
    assert [(row["operation"], row["error_code"]) for row in rows] == [
        ("Put", "AccessDenied"),
        ("Get", "Client.UnauthorizedOperation"),
    ]


def test_every_call_around_a_time_is_every_tables_within_five_minutes_either_side_across_midnight(
    athena: DuckDBAthenaClient, ingest: Callable[..., Any]
) -> None:
    moment = datetime.combine(_today(), time(0, 2), tzinfo=UTC)  # its window begins the day before

    def at(seconds: int, table: str = "Music") -> dict[str, Any]:
        when = (moment + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cloudtrail_event(table=table, requestParameters=_key(str(seconds), table), event_time=when)

    calls = [at(-301), at(-300, "Books"), at(-1), at(0), at(300, "Books"), at(301)]
    deliver(ingest, *calls)
    asked = ("'2026-11-30T09:30:00Z'", f"'{moment:%Y-%m-%dT%H:%M:%SZ}'")
    rows = run(athena, "AroundATimeQuery", asked)
    assert [(row["event_time"], row["table_name"]) for row in rows] == [
        (call["eventTime"], call["requestParameters"]["tableName"]) for call in reversed(calls[1:-1])
    ]


def test_a_tables_reads_are_who_read_which_item(athena: DuckDBAthenaClient, ingest: Callable[..., Any]) -> None:
    deliver(
        ingest,
        _call("GetItem", 1, requestParameters=_key("1")),
        _call("PutItem", 1, requestParameters=_key("2")),
        _call("GetItem", 2, requestParameters=_key("3", "Books"), table="Books"),
    )
    rows = run(athena, "TableReadsQuery", ("'MyTable'", "'Music'"))
    assert [(row["operation"], row["item_key"], row["principal_arn"]) for row in rows] == [("Get", '{"id":"1"}', ALICE)]


def test_yesterdays_calls_in_the_trails_files_are_its_dynamodb_calls_with_their_files(
    athena: DuckDBAthenaClient, s3: Any, trail_bucket: str
) -> None:
    region = PSEUDO["AWS::Region"]
    yesterday = _today() - timedelta(days=1)
    late = _call("UpdateItem", 1, hour=23)
    early = _call("PutItem", 1, hour=0)
    today = _call("DeleteItem", 0, hour=0)
    elsewhere = _call("GetObject", 1, eventSource="s3.amazonaws.com")
    other_region = _call("GetItem", 1)
    files = {
        f"{region}/{yesterday:%Y/%m/%d}": [late, elsewhere],
        f"{region}/{_today():%Y/%m/%d}": [early, today],  # delivered after midnight
        f"us-west-2/{yesterday:%Y/%m/%d}": [other_region],
    }
    paths = {}
    for folder, events in files.items():
        key = f"AWSLogs/{ACCOUNT}/CloudTrail/{folder}/{ACCOUNT}_CloudTrail_trail.json.gz"
        s3.put_object(Bucket=trail_bucket, Key=key, Body=gzip.compress(json.dumps({"Records": events}).encode()))
        paths[folder] = f"s3://{trail_bucket}/{key}"
    rows = run(athena, "TrailCallsQuery")
    assert [(row["eventid"], row["trail_file"]) for row in rows] == [
        (late["eventID"], paths[f"{region}/{yesterday:%Y/%m/%d}"]),
        (early["eventID"], paths[f"{region}/{_today():%Y/%m/%d}"]),
    ]
    assert rows[0]["principal_arn"] == ALICE
