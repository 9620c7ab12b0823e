"""`deutzia reconcile` in AWS: the stack's reconcile function invoked (botocore's Stubber plays Lambda) with the days,
run after run until every day is done, each refusal one line and its exit code; and the days it takes."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

import deutzia_cli.api
from deutzia_cli.api import DENIED, NOT_FOUND, UNAVAILABLE, USAGE, CliError
from deutzia_cli.main import main
from deutzia_cli.reconcile import reconcile_in_aws

FUNCTION = "deutzia-ReconcileAuditTrail-abc"
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def _lambda() -> tuple[Any, Stubber]:
    client = boto3.client("lambda", region_name="eu-west-1")
    return client, Stubber(client)


def _answer(body: object, error: str | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode()
    response: dict[str, Any] = {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(data), len(data))}
    if error:
        response["FunctionError"] = error
    return response


def _days(first: str, count: int) -> list[str]:
    start = datetime.strptime(first, "%Y-%m-%d")
    return [(start + timedelta(days=offset)).strftime("%Y-%m-%d") for offset in range(count)]


def test_each_run_takes_the_days_it_has_time_for_and_the_next_goes_on_from_where_it_stopped() -> None:
    client, stubber = _lambda()
    days = _days("2026-11-01", 3)
    expected = {"FunctionName": FUNCTION, "InvocationType": "RequestResponse", "Payload": ANY}
    first = {"days": {days[0]: "verified", days[1]: "backfilled"}, "not_reached": [days[2]], "next_since": days[2]}
    stubber.add_response("invoke", _answer(first), expected)
    last = {"days": {days[2]: "incomplete"}, "next_since": None, "trail_problems": ["the trail is not logging"]}
    stubber.add_response("invoke", _answer(last), expected)
    heard: list[str] = []
    with stubber:
        reconciled = reconcile_in_aws(client, FUNCTION, days, heard.append, NOW)
    assert reconciled.statuses == {days[0]: "verified", days[1]: "backfilled", days[2]: "incomplete"}
    assert reconciled.trail_problems == ["the trail is not logging"]  # as the last run found the trail
    assert heard == [
        "reconciling 2026-11-01 to 2026-11-03 (0 of 3 days done)...",
        "reconciling 2026-11-03 to 2026-11-03 (2 of 3 days done)...",
    ]


def test_the_event_is_what_eventbridge_delivers_naming_the_days() -> None:
    client, stubber = _lambda()
    sent: list[dict[str, Any]] = []
    original = client.invoke

    def invoke(**arguments: Any) -> Any:
        sent.append(json.loads(arguments["Payload"]))
        return original(**arguments)

    client.invoke = invoke
    stubber.add_response("invoke", _answer({"days": {"2026-11-01": "verified"}, "next_since": None}))
    with stubber:
        reconcile_in_aws(client, FUNCTION, ["2026-11-01"], lambda _: None, NOW)
    (event,) = sent
    assert event["detail"] == {"since": "2026-11-01", "until": "2026-11-01"}
    assert (event["time"], event["region"], event["resources"]) == ("2026-11-28T09:00:00Z", "eu-west-1", [])
    assert {"version", "id", "detail-type", "source", "account"} <= event.keys()  # Chalice's CloudWatchEvent reads all


@pytest.mark.parametrize(
    ("response", "code", "says"),
    [
        (_answer({"errorType": "QueryTimeoutError", "errorMessage": "x" * 5000}, "Unhandled"), UNAVAILABLE, "failed"),
        (_answer({"days": {}, "next_since": "2026-11-01"}), UNAVAILABLE, "had no time for 2026-11-01"),
        (_answer({"days": {"1999-01-01": "verified"}}), NOT_FOUND, "is it Deutzia's reconcile function"),
        (_answer(["not", "an", "answer"]), NOT_FOUND, "is it Deutzia's reconcile function"),
    ],
)
def test_a_run_that_fails_or_answers_nothing_useful_is_one_line_never_a_loop(
    response: dict[str, Any], code: int, says: str
) -> None:
    client, stubber = _lambda()
    stubber.add_response("invoke", response)
    with stubber, pytest.raises(CliError, match=says) as failure:
        reconcile_in_aws(client, FUNCTION, ["2026-11-01"], lambda _: None, NOW)
    assert failure.value.code == code
    assert len(str(failure.value)) < 500  # the function's own message, cut


@pytest.mark.parametrize(
    ("error", "code", "says"),
    [
        ("TooManyRequestsException", UNAVAILABLE, r"already running \(one run at a time\)"),
        ("AccessDeniedException", DENIED, "lambda:InvokeFunction"),
        ("ResourceNotFoundException", NOT_FOUND, "ReconcileFunctionName output"),
        ("ServiceException", UNAVAILABLE, "failed: ServiceException"),
    ],
)
def test_lambdas_refusals_say_what_to_do(error: str, code: int, says: str) -> None:
    client, stubber = _lambda()
    stubber.add_client_error("invoke", service_error_code=error, http_status_code=429)
    with stubber, pytest.raises(CliError, match=says) as failure:
        reconcile_in_aws(client, FUNCTION, ["2026-11-01"], lambda _: None, NOW)
    assert failure.value.code == code


class _Session:
    def __init__(self, client: Any) -> None:
        self.lambda_client = client
        self.configs: list[Any] = []

    def client(self, name: str, config: Any = None) -> Any:
        assert name == "lambda"
        self.configs.append(config)
        return self.lambda_client


def _run(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    saved = sys.argv
    sys.argv = ["deutzia", "reconcile", *arguments]
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    finally:
        sys.argv = saved
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_invokes_the_stacks_function_shows_each_day_and_fails_when_one_is_incomplete(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client, stubber = _lambda()
    session = _Session(client)
    asked: list[tuple[Any, ...]] = []

    def outputs(*arguments: Any) -> tuple[_Session, dict[str, str]]:
        asked.append(arguments)
        return session, {"ReconcileFunctionName": FUNCTION}

    monkeypatch.setattr(deutzia_cli.api, "session_and_outputs", outputs)
    stubber.add_response("invoke", _answer({"days": {"2024-05-01": "verified", "2024-05-02": "incomplete"}}))
    with stubber:
        code, out, err = _run(["--since", "2024-05-01", "--until", "2024-05-02", "--stack", "deutzia"], capsys)
    assert asked == [("deutzia", None, None)]
    assert code == 1
    assert "2024-05-01 │ verified" in out
    assert "2024-05-02 │ incomplete" in out
    said = " ".join(err.split())
    assert "Checked against CloudTrail's own files, 2024-05-01 to 2024-05-02: 1 day verified complete, 1 day" in said
    assert "error: not every day is complete and confirmed" in said
    (config,) = session.configs
    assert (config.read_timeout, config.retries) == (960, {"mode": "standard", "max_attempts": 1})  # never re-run

    stubber.add_response("invoke", _answer({"days": {"2024-05-01": "backfilled"}, "trail_problems": []}))
    with stubber:
        code, out, _ = _run(["--since", "2024-05-01", "--function", FUNCTION, "--format", "json"], capsys)
    assert (code, json.loads(out)) == (0, {"days": {"2024-05-01": "backfilled"}, "trail_problems": []})

    # Every day complete, but the trail itself stopped: the days only show what it logged.
    stopped = "the trail is not logging since 2024-05-02T10:00:00Z: no call is recorded"
    stubber.add_response("invoke", _answer({"days": {"2024-05-01": "verified"}, "trail_problems": [stopped]}))
    with stubber:
        code, out, err = _run(["--since", "2024-05-01", "--function", FUNCTION], capsys)
    assert code == 1
    assert f"The trail: {stopped}" in " ".join(err.split())


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--since", "2024-05-32", "--stack", "s"], "--since, --until: '2024-05-32' is not a valid date"),
        (["--since", "2024-05-02", "--until", "2024-05-01", "--stack", "s"], "2024-05-01 is before 2024-05-02"),
        (["--since", "2024-01-01", "--until", "2024-03-01", "--stack", "s"], "61 days; one run reconciles at most 31"),
        (["--since", "2024-5-1"], "'2024-5-1' is not a day (YYYY-MM-DD)"),  # before the local stack is looked for
    ],
)
def test_days_it_cannot_take_are_refused_before_anything_is_invoked(
    arguments: list[str], says: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deutzia_cli.api, "session_and_outputs", lambda *_: pytest.fail("nothing may be invoked"))
    code, out, err = _run(arguments, capsys)
    assert (code, out) == (USAGE, "")
    assert says in err


def test_a_day_cloudtrail_may_not_have_delivered_whole_is_refused_naming_the_latest_it_takes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deutzia_cli.api, "session_and_outputs", lambda *_: pytest.fail("nothing may be invoked"))
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    latest = (datetime.now(UTC).date() - timedelta(days=2)).isoformat()
    code, _, err = _run(["--since", yesterday, "--function", FUNCTION], capsys)
    assert code == USAGE
    assert f"{yesterday} is too recent; the latest day to check is {latest}" in err
