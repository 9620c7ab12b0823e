"""Whether the trail itself logs and delivers, from its GetTrailStatus answer (botocore's Stubber plays CloudTrail)."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import trail_status
from chalicelib.trail_status import (
    GAP_DAYS,
    GAP_NAMED_FOR,
    GAPS_PREFIX,
    TRAIL_STATUS_REUSE_SECONDS,
    WATCH_LATE_AFTER,
    RecentTrailCheck,
    TrailCheck,
    TrailDuties,
    check_trail,
    check_trail_of_environment,
    gap_records,
    logging_gap,
    not_logging,
    read_gap,
    trail_problems,
    trail_settings_problems,
    watch_heartbeat,
    watch_problem,
)

NOW = datetime(2026, 11, 28, 3, 30, tzinfo=UTC)
TRAIL = "arn:aws:cloudtrail:eu-west-1:123456789012:trail/deutzia-dynamodb"
STARTED = NOW - timedelta(days=200)
_FIELDS = [
    "IsLogging",
    "StartLoggingTime",
    "StopLoggingTime",
    "LatestDeliveryError",
    "LatestCloudWatchLogsDeliveryError",
    "LatestDigestDeliveryError",
]


def test_a_trail_that_logs_and_delivers_has_no_problem() -> None:
    assert trail_problems({"IsLogging": True, "StartLoggingTime": STARTED, "LatestDeliveryTime": NOW}, NOW) == []


def test_a_stopped_trail_says_since_when_and_what_it_means() -> None:
    stopped = NOW - timedelta(hours=5)
    (problem,) = trail_problems({"IsLogging": False, "StartLoggingTime": STARTED, "StopLoggingTime": stopped}, NOW)
    assert problem == (
        "the trail is not logging since 2026-11-27T22:30:00Z: no call is recorded, neither in GET /audit nor in the "
        "trail's files, until it is started again"
    )
    assert trail_problems({}, NOW)[0].startswith("the trail is not logging: ")  # no answer of logging is no logging


def test_a_gap_in_logging_is_named_by_the_runs_after_it_and_then_no_more() -> None:
    stopped, started = NOW - timedelta(hours=30), NOW - timedelta(hours=26)
    status = {"IsLogging": True, "StopLoggingTime": stopped, "StartLoggingTime": started}
    (problem,) = trail_problems(status, NOW)
    assert problem.startswith("the trail did not log from 2026-11-26T21:30:00Z to 2026-11-27T01:30:00Z: ")
    assert trail_problems(status, started + GAP_NAMED_FOR + timedelta(seconds=1)) == []
    # Stopped again since: not logging now, which says so itself.
    (again,) = trail_problems({**status, "IsLogging": False, "StopLoggingTime": started + timedelta(hours=1)}, NOW)
    assert again.startswith("the trail is not logging since 2026-11-27T02:30:00Z")


@pytest.mark.parametrize(
    ("field", "says"),
    [
        ("LatestDeliveryError", "CloudTrail could not deliver log files to the trail bucket: "),
        ("LatestCloudWatchLogsDeliveryError", "CloudTrail could not deliver events to the log group, the fast path"),
        ("LatestDigestDeliveryError", "CloudTrail could not deliver digest files"),
    ],
)
def test_each_delivery_error_is_named_and_cut(field: str, says: str) -> None:
    (problem,) = trail_problems({"IsLogging": True, field: "AccessDenied" + "x" * 5000}, NOW)
    assert problem.startswith(says)
    assert "AccessDenied" in problem
    assert len(problem) < 500


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("TrailNotFoundException", f"the trail {TRAIL} does not exist: no call is recorded until a trail logs"),
        ("AccessDeniedException", "the trail's status cannot be read (AccessDeniedException): whether it logs is"),
    ],
)
def test_a_trail_that_cannot_be_read_is_a_problem_too(code: str, says: str) -> None:
    client = boto3.client("cloudtrail", region_name="eu-west-1")
    stubber = Stubber(client)
    stubber.add_client_error("get_trail_status", service_error_code=code, expected_params={"Name": TRAIL})
    with stubber:
        check = check_trail(client, TRAIL, NOW)
    (problem,) = check.problems
    assert problem.startswith(says)
    assert check.not_logging == []  # since when is unknown
    assert check.causes == (["DeleteTrail"] if code == "TrailNotFoundException" else [])


def test_the_status_is_read_once_by_the_trails_arn() -> None:
    client = boto3.client("cloudtrail", region_name="eu-west-1")
    stubber = Stubber(client)
    stubber.add_response("get_trail_status", {"IsLogging": True, "StartLoggingTime": STARTED}, {"Name": TRAIL})
    with stubber:
        assert check_trail(client, TRAIL, NOW) == TrailCheck([], [])
    stubber.assert_no_pending_responses()
    stopped = {"IsLogging": False, "StopLoggingTime": NOW, "StartLoggingTime": STARTED}
    restarted = {"IsLogging": True, "StopLoggingTime": NOW - timedelta(days=1), "StartLoggingTime": NOW}
    long_ago = {
        "IsLogging": True,
        "StopLoggingTime": NOW - timedelta(days=9),
        "StartLoggingTime": NOW - timedelta(days=8),
    }
    for status, causes in ((stopped, ["StopLogging"]), (restarted, ["StopLogging"]), (long_ago, [])):
        stubber.add_response("get_trail_status", status, {"Name": TRAIL})
        with stubber:
            assert check_trail(client, TRAIL, NOW).causes == causes


_NO_DELETES = [
    {
        "Name": "writes but deletes",
        "FieldSelectors": [
            {"Field": "eventCategory", "Equals": ["Data"]},
            {"Field": "resources.type", "Equals": ["AWS::DynamoDB::Table"]},
            {"Field": "eventName", "NotEquals": ["DeleteItem"]},
            {"Field": "readOnly", "Equals": ["false"]},
        ],
    }
]


# The trail's settings as the stack makes them: files signed, sent to its bucket and events to its log group.
_SETTINGS = {
    "Name": "deutzia-dynamodb",
    "TrailARN": TRAIL,
    "S3BucketName": "deutzia-trailbucket-1",
    "LogFileValidationEnabled": True,
    "CloudWatchLogsLogGroupArn": "arn:aws:logs:eu-west-1:123456789012:log-group:/deutzia/audit/cloudtrail:*",
}
_DUTIES = TrailDuties(frozenset({"Orders"}), True, "deutzia-trailbucket-1", "/deutzia/audit/cloudtrail")


def _stubbed(selectors: dict[str, Any] | Exception, trail: dict[str, Any] = _SETTINGS) -> tuple[Any, Stubber]:
    client = boto3.client("cloudtrail", region_name="eu-west-1")
    stubber = Stubber(client)
    stubber.add_response("get_trail_status", {"IsLogging": True, "StartLoggingTime": STARTED}, {"Name": TRAIL})
    stubber.add_response("get_trail", {"Trail": trail}, {"Name": TRAIL})
    if isinstance(selectors, Exception):
        stubber.add_client_error(
            "get_event_selectors", service_error_code=str(selectors), expected_params={"TrailName": TRAIL}
        )
    else:
        stubber.add_response("get_event_selectors", selectors, {"TrailName": TRAIL})
    return client, stubber


def test_a_trail_that_logs_is_checked_for_the_audited_calls_its_selectors_leave_out() -> None:
    client, stubber = _stubbed({"TrailARN": TRAIL, "AdvancedEventSelectors": _NO_DELETES})
    with stubber:
        check = check_trail(client, TRAIL, NOW, duties=TrailDuties(frozenset({"Orders", "Users"}), reads=False))
    assert check.problems == [
        f"the trail's event selectors do not log DeleteItem on {table} for every caller: those calls are recorded "
        "nowhere, neither in GET /audit nor in the trail's files, until the selectors log them again"
        for table in ("Orders", "Users")
    ]
    client, stubber = _stubbed({"TrailARN": TRAIL, "AdvancedEventSelectors": _NO_DELETES})
    with stubber:  # reads audited too: every read is left out as well, on any table under `*`
        (problem,) = check_trail(client, TRAIL, NOW, duties=TrailDuties(None, reads=True)).problems
    assert problem.startswith("the trail's event selectors do not log BatchExecuteStatement (reads), BatchGetItem, ")
    assert "DeleteItem, " in problem
    assert "on every table (AUDITED_TABLES is *) for every caller" in problem
    client, stubber = _stubbed(Exception("AccessDeniedException"))
    with stubber:
        (problem,) = check_trail(client, TRAIL, NOW, duties=TrailDuties(frozenset({"Orders"}), reads=True)).problems
    assert problem == (
        "the trail's event selectors cannot be read (AccessDeniedException): whether they log every audited call is "
        "unknown"
    )
    stubber.assert_no_pending_responses()


def test_a_trail_that_logs_is_checked_for_settings_that_undo_the_audit() -> None:
    assert trail_settings_problems(_SETTINGS, _DUTIES) == []
    unsigned = trail_settings_problems({**_SETTINGS, "LogFileValidationEnabled": False}, _DUTIES)
    assert unsigned == [
        "the trail's log file validation is off: CloudTrail writes no digest files, so `aws cloudtrail validate-logs` "
        "cannot prove its files (nor the days `deutzia evidence` hands over) from then on"
    ]
    (unsent,) = trail_settings_problems({**_SETTINGS, "CloudWatchLogsLogGroupArn": None}, _DUTIES)
    assert unsent.startswith("the trail sends its events to no log group: the fast path is cut, and calls reach GET ")
    elsewhere = {**_SETTINGS, "CloudWatchLogsLogGroupArn": "arn:aws:logs:eu-west-1:1:log-group:quiet:*"}
    (sent_elsewhere,) = trail_settings_problems(elsewhere, _DUTIES)
    assert sent_elsewhere.startswith(
        "the trail sends its events to the log group quiet, not /deutzia/audit/cloudtrail:"
    )
    (moved,) = trail_settings_problems({**_SETTINGS, "S3BucketName": "other"}, _DUTIES)
    assert moved.startswith(
        "the trail delivers its files to the bucket other, not deutzia-trailbucket-1 (TRAIL_BUCKET)"
    )
    # Where the stack does not say which bucket or log group, only that there is one.
    assert trail_settings_problems({**elsewhere, "S3BucketName": "other"}, TrailDuties(None, reads=False)) == []
    assert len(trail_settings_problems({}, _DUTIES)) == 3
    client, stubber = _stubbed({"TrailARN": TRAIL, "AdvancedEventSelectors": _NO_DELETES}, elsewhere)
    with stubber:  # the settings, then the selectors
        problems = check_trail(client, TRAIL, NOW, duties=_DUTIES).problems
    client, stubber = _stubbed({"TrailARN": TRAIL, "AdvancedEventSelectors": _NO_DELETES}, elsewhere)
    with stubber:  # and the calls that would have made them, for the watch to ask who made them
        assert check_trail(client, TRAIL, NOW, duties=_DUTIES).causes == ["UpdateTrail", "PutEventSelectors"]
    assert [problem.split(":")[0] for problem in problems] == [
        "the trail sends its events to the log group quiet, not /deutzia/audit/cloudtrail",
        "the trail's event selectors do not log BatchExecuteStatement (reads), BatchGetItem, DeleteItem, "
        "ExecuteStatement (reads), ExecuteTransaction (reads), GetItem, Query, Scan, TransactGetItems on Orders for "
        "every caller",
    ]


def test_the_environment_says_which_calls_the_trail_must_log(monkeypatch: pytest.MonkeyPatch) -> None:
    client, stubber = _stubbed({"TrailARN": TRAIL, "AdvancedEventSelectors": _NO_DELETES})
    monkeypatch.setattr(trail_status.boto3, "client", lambda *_, **__: client)
    monkeypatch.setenv("TRAIL_ARN", TRAIL)
    monkeypatch.setenv("AUDITED_TABLES", "Orders")
    monkeypatch.setenv("AUDIT_READS", "false")
    with stubber:
        (problem,) = check_trail_of_environment().problems
    assert problem.startswith("the trail's event selectors do not log DeleteItem on Orders for every caller")


def test_when_the_trail_did_not_log_is_its_latest_stop_to_its_restart_or_to_now() -> None:
    stopped, started = NOW - timedelta(days=20), NOW - timedelta(days=19)
    assert not_logging({"IsLogging": True, "StopLoggingTime": stopped, "StartLoggingTime": started}, NOW) == [
        (stopped, started)  # however long ago: a day reconciled later still learns of it
    ]
    assert not_logging({"IsLogging": False, "StopLoggingTime": stopped, "StartLoggingTime": STARTED}, NOW) == [
        (stopped, NOW)
    ]
    ((start, end),) = not_logging({"IsLogging": False}, NOW)  # never logging: all of time up to now
    assert (logging_gap(start, end), logging_gap(stopped, started)) == (
        "until 2026-11-28T03:30:00Z",
        "from 2026-11-08T03:30:00Z to 2026-11-09T03:30:00Z",
    )
    assert not_logging({"IsLogging": True, "StartLoggingTime": STARTED}, NOW) == []


_VALUES = st.none() | st.booleans() | st.integers() | st.text(max_size=50) | st.datetimes(timezones=st.just(UTC))


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=len(_FIELDS)), st.datetimes(timezones=st.just(UTC)))
def test_any_status_answer_gives_bounded_problems_and_gaps_that_end_by_now(
    status: dict[str, Any], now: datetime
) -> None:
    problems = trail_problems(status, now)
    assert all(isinstance(problem, str) and len(problem) < 600 for problem in problems)
    assert len(problems) <= 4
    for start, end in not_logging(status, now):
        assert start <= end <= now
        assert logging_gap(start, end)


def test_the_api_asks_cloudtrail_again_only_once_its_answer_is_a_minute_old() -> None:
    answers = [TrailCheck(), TrailCheck(["the trail is not logging"]), TrailCheck()]
    asked: list[int] = []
    now = [1000.0]

    def check() -> TrailCheck:
        asked.append(1)
        return answers[len(asked) - 1]

    recent = RecentTrailCheck(check, clock=lambda: now[0])
    assert (recent.problems(), len(asked)) == ([], 1)
    now[0] += TRAIL_STATUS_REUSE_SECONDS - 0.1
    assert (recent.problems(), len(asked)) == ([], 1)  # still the answer of a moment ago
    now[0] += 0.1
    assert (recent.problems(), len(asked)) == (["the trail is not logging"], 2)
    recent.problems().append("changed by a caller")
    assert recent.problems() == ["the trail is not logging"]  # each caller gets its own list


def test_without_trail_arn_the_trail_is_not_checked_and_the_log_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("TRAIL_ARN", raising=False)
    assert check_trail_of_environment() == TrailCheck()
    assert "TRAIL_ARN is not set: whether the trail logs is not checked" in caplog.text


def test_the_watch_keeps_a_stop_under_each_recent_day_it_overlaps_named_by_its_start() -> None:
    now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    ongoing = (datetime(2026, 11, 20, 8, 30, tzinfo=UTC), now)  # stopped 9 days ago, still stopped
    records = gap_records([ongoing], now)
    days = [now.date() - timedelta(days=n) for n in range(GAP_DAYS - 1, -1, -1)]
    assert list(records) == [f"{GAPS_PREFIX}dt={day}/2026-11-20T08:30:00Z.json" for day in days]
    assert {read_gap(body) for body in records.values()} == {ongoing}
    restarted = (ongoing[0], datetime(2026, 11, 29, 11, 0, tzinfo=UTC))  # seen again: the same keys, its end known
    assert {key: read_gap(body) for key, body in gap_records([restarted], now).items()} == dict.fromkeys(
        records, restarted
    )
    within = (datetime(2026, 11, 29, 9, 0, tzinfo=UTC), datetime(2026, 11, 29, 9, 5, tzinfo=UTC))
    assert list(gap_records([within], now)) == [f"{GAPS_PREFIX}dt=2026-11-29/2026-11-29T09:00:00Z.json"]
    old = (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 26, 23, 0, tzinfo=UTC))  # reconciled days: kept there
    unknown = (datetime.min.replace(tzinfo=UTC), now)  # a trail that never logged: no start to name it by
    assert gap_records([old, unknown], now) == {}


def test_a_stop_seen_in_the_machines_zone_is_kept_under_its_utc_days() -> None:
    """botocore gives StopLoggingTime and StartLoggingTime in the machine's zone: in Honolulu a stop at 04:00 UTC is on
    the day before. Its gap is UTC's, and kept under the UTC days it overlaps, stopped and then restarted alike (the
    second sight replaces the first)."""
    honolulu = timezone(timedelta(hours=-10))
    now = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
    stopped, started = datetime(2026, 11, 30, 4, 0, tzinfo=UTC), datetime(2026, 11, 30, 4, 30, tzinfo=UTC)
    local = {"StopLoggingTime": stopped.astimezone(honolulu), "StartLoggingTime": started.astimezone(honolulu)}
    ongoing = not_logging({**local, "IsLogging": False}, now)
    assert ongoing == [(stopped, now)]
    assert all(moment.utcoffset() == timedelta(0) for moment in ongoing[0])
    restarted = not_logging({**local, "IsLogging": True}, now)
    assert restarted == [(stopped, started)]
    key = f"{GAPS_PREFIX}dt=2026-11-30/2026-11-30T04:00:00Z.json"
    assert list(gap_records(ongoing, now)) == list(gap_records(restarted, now)) == [key]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"from": "2026-11-29T09:00:00Z"}',
        b'{"from": 1, "to": 2}',
        b'{"from": "2026-11-29T10:00:00Z", "to": "2026-11-29T09:00:00Z"}',
        b'{"from": "2026-02-30T00:00:00Z", "to": "x"}',
    ],
)
def test_an_object_that_holds_no_gap_is_read_as_none(body: bytes) -> None:
    assert read_gap(body) is None


def test_a_cloudtrail_that_does_not_answer_leaves_the_status_unknown_within_the_apis_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployed = trail_status.STATUS_CLIENT_CONFIG
    tries = deployed.retries["total_max_attempts"]  # the first try included (`max_attempts` would not count it)
    # The deployed bound: three calls (the status, the settings, the selectors), each at most two tries of 1 s to
    # connect and 2 s to answer, within the API's 25 s.
    assert 3 * (deployed.connect_timeout + deployed.read_timeout) * tries <= 18
    silent = socket.create_server(("127.0.0.1", 0))  # takes the connection, never answers
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDTRAIL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("TRAIL_ARN", "arn:aws:cloudtrail:us-east-1:123456789012:trail/audit")
        monkeypatch.setenv("AUDITED_TABLES", "Orders")
        quick = Config(connect_timeout=1, read_timeout=0.5, retries={"mode": "standard", "total_max_attempts": 1})
        monkeypatch.setattr(trail_status, "STATUS_CLIENT_CONFIG", quick)
        started = time.monotonic()
        check = check_trail_of_environment()
        assert time.monotonic() - started < 30  # not botocore's default of 60 s to answer: the config is the one used
        assert check.problems == ["the trail's status cannot be read (ReadTimeoutError): whether it logs is unknown"]
    finally:
        silent.close()


def test_a_watch_that_stopped_running_is_named_by_how_long_ago_it_ran() -> None:
    ran = json.loads(watch_heartbeat(NOW - timedelta(minutes=7)))
    assert watch_problem(ran, NOW) is None  # a run missed or late: not yet
    assert watch_problem(ran, NOW - timedelta(minutes=7) + WATCH_LATE_AFTER) is None
    late = watch_problem(ran, NOW + WATCH_LATE_AFTER)
    assert late is not None
    assert late.startswith("the trail watch (watch_trail) has not run since 2026-11-28T03:23:00Z")
    assert watch_problem(None, NOW) is None  # a new stack: its first run comes within minutes
    assert watch_problem({}, NOW) is None
    # No run at all, though a nightly check ran more than WATCH_LATE_AFTER ago: the stack is not new.
    assert watch_problem(None, NOW, NOW - WATCH_LATE_AFTER) is None
    never = watch_problem(None, NOW, NOW - timedelta(days=1))
    assert never is not None
    assert never.startswith("the trail watch (watch_trail) has never run, though the nightly check ran at 2026-11-27T")
    assert watch_problem(ran, NOW, NOW - timedelta(days=1)) is None  # it runs: the night before says nothing


@given(st.dictionaries(st.text(max_size=20), st.none() | st.integers() | st.text(max_size=40), max_size=3))
def test_a_heartbeat_of_any_shape_gives_a_short_answer_or_none(heartbeat: dict[str, Any]) -> None:
    problem = watch_problem(heartbeat, NOW)
    assert problem is None or len(problem) < 300
