"""The Athena engine on the wire, through botocore's Stubber: SQL text, ExecutionParameters, polling, paging, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
from botocore.stub import Stubber
from chalice.test import Client

import app as deutzia_app
from chalicelib.athena import AthenaQueryRunner, athena_literal
from chalicelib.query import ENTRY_COLUMNS, FROM_TRAIL_PATH, AuditQuery, Relations, build_audit_sql

WORKGROUP = "deutzia-test"
EXPECTED_FROM = (
    " FROM (SELECT *, row_number() OVER (PARTITION BY event_id, item_index ORDER BY tier) AS duplicate_rank"
    ' FROM (SELECT {columns}, 0 AS tier FROM "deutzia"."audit_compacted" WHERE table_name = ? AND item_key = ?'
    ' UNION ALL SELECT {columns}, CASE WHEN "$path" LIKE ? THEN -1 ELSE 1 END AS tier FROM "deutzia"."audit_fresh"'
    ' WHERE table_name = ? AND (item_key = ? OR "$path" LIKE ?)))'
    " WHERE duplicate_rank = 1 AND item_key = ? ORDER BY event_time DESC, event_id DESC, item_index DESC"
).format(columns=", ".join(ENTRY_COLUMNS))
KEY = json.dumps({"id": "it's"})
# The compacted tier's table and key, the path of objects restored from the trail; the fresh tier's table, and its key
# or that path (the trail's copies whatever key they name); the key again, once de-duplicated.
EXPECTED_PARAMETERS = [
    "'Music'",
    "'{\"id\":\"it''s\"}'",
    athena_literal(FROM_TRAIL_PATH),
    "'Music'",
    "'{\"id\":\"it''s\"}'",
    athena_literal(FROM_TRAIL_PATH),
    "'{\"id\":\"it''s\"}'",
]


class Clock:
    """Time that passes only when the runner sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def athena(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    monkeypatch.setenv("AUDITED_TABLES", "Music")
    athena_client = boto3.client("athena")
    runner = AthenaQueryRunner(athena_client, WORKGROUP, "deutzia", timeout_seconds=5, clock=clock, sleep=clock.sleep)
    monkeypatch.setattr(deutzia_app, "get_query_engine", lambda: runner)
    with Stubber(athena_client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(deutzia_app.app, stage_name="athena-test") as test_client:
        yield test_client


def _get(client: Client, **parameters: str) -> tuple[int, dict[str, Any]]:
    response = client.http.get(f"/audit?{urlencode(parameters)}")
    return response.status_code, json.loads(response.body)


def _row(event_id: str, item_index: int) -> dict[str, Any]:
    values = {name: None for name in ENTRY_COLUMNS}
    values.update(
        event_id=event_id,
        item_index=str(item_index),
        event_time="2024-05-01T10:00:00Z",
        operation="Put",
        item_key='{"id":"it\'s"}',
        attribute_names='["id","note, with comma"]',
        read_only="false",
        success="true",
        table_name="Music",
    )
    return {"Data": [{} if value is None else {"VarCharValue": value} for value in values.values()]}


HEADER = {"Data": [{"VarCharValue": name} for name in ENTRY_COLUMNS]}


def _expect_start(stubber: Stubber, execution_id: str = "q-1") -> None:
    stubber.add_response(
        "start_query_execution",
        {"QueryExecutionId": execution_id},
        {
            "QueryString": _any_sql_ending_with(EXPECTED_FROM),
            "WorkGroup": WORKGROUP,
            "ExecutionParameters": EXPECTED_PARAMETERS,
        },
    )


class _any_sql_ending_with(str):  # noqa: N801 - reads as a matcher in expected parameters
    """Equal to the runner's SQL when its select list names every column and it ends with `tail`."""

    def __new__(cls, tail: str) -> _any_sql_ending_with:
        return super().__new__(cls, tail)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, str) or not other.endswith(str(self)):
            return False
        select_list = other.removeprefix("SELECT ").removesuffix(str(self))
        expected = [
            "json_format(CAST(attribute_names AS JSON)) AS attribute_names" if n == "attribute_names" else n
            for n in ENTRY_COLUMNS
        ]
        return select_list.split(", ") == expected

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(str(self))


def _execution(state: str, **status: Any) -> dict[str, Any]:
    return {"QueryExecution": {"QueryExecutionId": "q-1", "Status": {"State": state, **status}}}


def test_first_page_polls_with_backoff_and_converts_athena_text(client: Client, athena: Stubber, clock: Clock) -> None:
    _expect_start(athena)
    for state in ("QUEUED", "RUNNING", "SUCCEEDED"):
        athena.add_response("get_query_execution", _execution(state), {"QueryExecutionId": "q-1"})
    athena.add_response(
        "get_query_results",
        {"ResultSet": {"Rows": [HEADER, _row("e2", 0), _row("e1", 1)]}, "NextToken": "athena-page-2"},
        {"QueryExecutionId": "q-1", "MaxResults": 3},
    )
    status, body = _get(client, table="Music", key=KEY, limit="2")
    assert status == 200
    assert clock.sleeps == [0.1, 0.2]
    assert [(e["event_id"], e["item_index"]) for e in body["entries"]] == [("e2", 0), ("e1", 1)]
    entry = body["entries"][0]
    assert (entry["read_only"], entry["success"], entry["error_code"]) == (False, True, None)
    assert entry["attribute_names"] == ["id", "note, with comma"]
    assert body["next_token"] is not None


def _first_page_of_one(client: Client, athena: Stubber) -> str:
    """Serve a first page of one entry with more to come; its next_token."""
    _expect_start(athena)
    athena.add_response("get_query_execution", _execution("SUCCEEDED"), {"QueryExecutionId": "q-1"})
    athena.add_response(
        "get_query_results",
        {"ResultSet": {"Rows": [HEADER, _row("e2", 0)]}, "NextToken": "athena-page-2"},
        {"QueryExecutionId": "q-1", "MaxResults": 2},
    )
    _, first = _get(client, table="Music", key=KEY, limit="1")
    return str(first["next_token"])


def _expect_resume_check(athena: Stubber, query: str) -> None:
    execution = {
        "QueryExecutionId": "q-1",
        "Query": query,
        "ExecutionParameters": EXPECTED_PARAMETERS,
        "WorkGroup": WORKGROUP,
        "Status": {"State": "SUCCEEDED"},
    }
    athena.add_response("get_query_execution", {"QueryExecution": execution}, {"QueryExecutionId": "q-1"})


def test_next_page_reads_the_same_execution_without_running_the_query_again(client: Client, athena: Stubber) -> None:
    next_token = _first_page_of_one(client, athena)
    _expect_resume_check(athena, athena_sql())
    athena.add_response(
        "get_query_results",
        {"ResultSet": {"Rows": [_row("e1", 0)]}},
        {"QueryExecutionId": "q-1", "MaxResults": 1, "NextToken": "athena-page-2"},
    )
    status, second = _get(client, table="Music", key=KEY, limit="1", next_token=next_token)
    assert status == 200
    assert [e["event_id"] for e in second["entries"]] == ["e1"]
    assert second["next_token"] is None


def athena_sql() -> str:
    relations = Relations('"deutzia"."audit_compacted"', '"deutzia"."audit_fresh"')
    return build_audit_sql(AuditQuery(table="Music", key='{"id":"it\'s"}'), relations)[0]


def test_a_token_whose_execution_ran_another_query_is_refused(client: Client, athena: Stubber) -> None:
    next_token = _first_page_of_one(client, athena)
    _expect_resume_check(athena, "SELECT * FROM secrets")
    status, body = _get(client, table="Music", key=KEY, limit="1", next_token=next_token)
    assert (status, body["Code"]) == (400, "BadRequestError")
    assert body["Message"].startswith("next_token: ")


def test_query_past_the_deadline_is_stopped_and_answers_504(client: Client, athena: Stubber, clock: Clock) -> None:
    _expect_start(athena)
    for _ in range(9):
        athena.add_response("get_query_execution", _execution("RUNNING"), {"QueryExecutionId": "q-1"})
    athena.add_response("stop_query_execution", {}, {"QueryExecutionId": "q-1"})
    status, body = _get(client, table="Music", key=KEY)
    assert (status, body["Code"]) == (504, "GatewayTimeoutError")
    assert "did not finish within 5 s" in body["Message"]
    assert clock.now == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("athena_status", "http_status"),
    [
        ({"StateChangeReason": "SYNTAX_ERROR: line 1"}, 502),
        ({"StateChangeReason": "capacity", "AthenaError": {"ErrorCategory": 1, "Retryable": True}}, 503),
    ],
)
def test_failed_query_answers_with_its_id_and_logs_the_reason(
    client: Client,
    athena: Stubber,
    athena_status: dict[str, Any],
    http_status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _expect_start(athena)
    athena.add_response("get_query_execution", _execution("FAILED", **athena_status), {"QueryExecutionId": "q-1"})
    status, body = _get(client, table="Music", key=KEY)
    assert status == http_status
    assert "q-1" in body["Message"]
    assert athena_status["StateChangeReason"] not in body["Message"]
    assert athena_status["StateChangeReason"] in caplog.text


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ("CANCELLED", "Query cancelled! -- Bytes scanned limit was exceeded"),
        ("FAILED", "Bytes Scanned limit was exceeded. The query scanned 10000000001 bytes"),
    ],
)
def test_a_query_cancelled_at_the_workgroups_scan_limit_answers_400_saying_what_to_narrow(
    client: Client, athena: Stubber, state: str, reason: str
) -> None:
    """A whole table's history can pass the workgroup's BytesScannedCutoffPerQuery: the caller, not the engine, must
    change something, and is told what."""
    _expect_start(athena)
    athena.add_response("get_query_execution", _execution(state, StateChangeReason=reason), {"QueryExecutionId": "q-1"})
    status, body = _get(client, table="Music", key=KEY)
    assert (status, body["Code"]) == (400, "BadRequestError")
    assert body["Message"] == (
        "key, since, until: Athena cancelled query q-1 at its workgroup's scan limit (BytesScannedCutoffPerQuery); "
        "give a key, or a narrower since and until"
    )


@pytest.mark.parametrize(("code", "http_status"), [("TooManyRequestsException", 503), ("InvalidRequestException", 502)])
def test_refused_start_answers_502_or_503(client: Client, athena: Stubber, code: str, http_status: int) -> None:
    athena.add_client_error("start_query_execution", service_error_code=code, service_message="s3://secret/path")
    status, body = _get(client, table="Music", key=KEY)
    assert status == http_status
    assert code in body["Message"]
    assert "s3://" not in body["Message"]


def test_a_query_whose_object_compaction_deleted_runs_once_more(client: Client, athena: Stubber) -> None:
    vanished = "HIVE_CANNOT_OPEN_SPLIT: Error opening Hive split s3://bucket/audit/x.json.gz: NoSuchKey"
    _expect_start(athena)
    athena.add_response(
        "get_query_execution", _execution("FAILED", StateChangeReason=vanished), {"QueryExecutionId": "q-1"}
    )
    _expect_start(athena, "q-2")
    athena.add_response(
        "get_query_execution",
        {"QueryExecution": {"QueryExecutionId": "q-2", "Status": {"State": "SUCCEEDED"}}},
        {"QueryExecutionId": "q-2"},
    )
    athena.add_response(
        "get_query_results",
        {"ResultSet": {"Rows": [HEADER, _row("e1", 0)]}},
        {"QueryExecutionId": "q-2", "MaxResults": 101},
    )
    status, body = _get(client, table="Music", key=KEY)
    assert status == 200, body
    assert [entry["event_id"] for entry in body["entries"]] == ["e1"]


def test_a_query_that_loses_objects_twice_answers_503(client: Client, athena: Stubber) -> None:
    vanished = "HIVE_FILE_NOT_FOUND: s3://bucket/compacted/x.parquet does not exist"
    for execution_id in ("q-1", "q-2"):
        _expect_start(athena, execution_id)
        athena.add_response(
            "get_query_execution",
            {
                "QueryExecution": {
                    "QueryExecutionId": execution_id,
                    "Status": {"State": "FAILED", "StateChangeReason": vanished},
                }
            },
            {"QueryExecutionId": execution_id},
        )
    status, body = _get(client, table="Music", key=KEY)
    assert status == 503
    assert "s3://" not in body["Message"]
