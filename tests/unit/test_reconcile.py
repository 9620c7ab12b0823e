"""Reconciliation's pure parts: reading a trail file within its bounds, formatting missing events for backfill, the
day's window and SQL, the coverage request and answer, the CloudTrail table's rows, and the local schedule's
windows. Hostile input (any bytes, any JSON) must come back as a reason, never as a crash."""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.columnar import TRAIL_SCHEMA, arrow_type, trail_rows
from chalicelib.errors import ConfigError, InvalidRequestError, UnknownTableError
from chalicelib.reconcile import (
    DEFERRED_REASON,
    MAX_COVERAGE_DAYS,
    MAX_GAP_CHARS,
    MAX_GAPS,
    CorruptTrailFileError,
    DayReport,
    ReconcileRelations,
    ReconcileWindow,
    TableReport,
    backfill_events,
    backfill_object_key,
    bound_unconfirmed_ids,
    build_reconcile_sql,
    coverage_of,
    parse_coverage_request,
    quarantine_key,
    read_trail_file,
    report_key,
    running_query_key,
)
from chalicelib.reconciler import join_stops, reconcile_day_seconds
from chalicelib.schema import TRAIL_COLUMNS
from chalicelib.trail_status import TrailCheck
from deutzia_local.local_reconciliation import LocalReconciliation, describe
from tests.factories import cloudtrail_event
from tests.unit.test_properties import json_values

DAY = "2024-05-01"


def _file(events: list[Any]) -> bytes:
    return gzip.compress(json.dumps({"Records": events}).encode())


def test_a_trail_file_gives_its_events_with_exact_numbers() -> None:
    event = cloudtrail_event(request_parameters={"tableName": "Music", "key": {"id": 1.10}})
    body = gzip.compress(json.dumps({"Records": [event]}).replace("1.1", "1.10").encode())
    (read,) = read_trail_file(body)
    assert str(read["requestParameters"]["key"]["id"]) == "1.10"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x1f\x8b\x08\x00\x00\x00", "cut short"),
        (gzip.compress(b"x" * 2000), "over 1000 bytes"),
        (b"y" * 2000, "over 1000 bytes"),
        (gzip.compress(b"{nope"), "not JSON"),
        (gzip.compress(b"\xff\xfe"), "not UTF-8"),
        (gzip.compress(b'{"Records": {}}'), "not a CloudTrail log file"),
        (gzip.compress(b"[1, 2]"), "not a CloudTrail log file"),
        (b"\x1f\x8bnot gzip at all", "not readable gzip"),
    ],
)
def test_a_file_that_is_not_a_readable_cloudtrail_log_says_why(body: bytes, reason: str) -> None:
    with pytest.raises(CorruptTrailFileError, match=reason):
        read_trail_file(body, max_bytes=1000)


def test_json_nested_past_the_parser_is_a_reason() -> None:
    with pytest.raises(CorruptTrailFileError, match="nests too deeply"):
        read_trail_file(gzip.compress(b"[" * 100_000 + b"]" * 100_000))


def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    with pytest.raises(CorruptTrailFileError, match="past the backfill bound"):
        read_trail_file(bomb, max_bytes=1024 * 1024)


@given(st.binary(max_size=200) | st.builds(lambda v: gzip.compress(json.dumps(v).encode()), json_values))
@settings(max_examples=200, deadline=None)
def test_any_bytes_are_events_or_a_reason(body: bytes) -> None:
    try:
        events = read_trail_file(body)
    except CorruptTrailFileError:
        return
    assert isinstance(events, list)


@given(st.lists(json_values | st.builds(cloudtrail_event), max_size=6))
@settings(max_examples=150, deadline=None)
def test_backfill_of_any_events_is_lines_refusals_or_reasons_never_a_crash(events: list[Any]) -> None:
    ids = [e["eventID"] for e in events if isinstance(e, dict) and isinstance(e.get("eventID"), str)]
    missing = {event_id: {"Music"} for event_id in [*ids, "absent-id"]}
    result = backfill_events(events, missing, "2024-05-01")
    accounted = set(result.events.get("Music", set())) | {event_id for _, event_id in result.still_missing}
    assert accounted == set(missing)
    assert not set(result.events.get("Music", set())) & {event_id for _, event_id in result.still_missing}
    assert all(json.loads(line) for line in result.lines.get("Music", []))


def test_backfill_writes_only_the_missing_tables_and_day_and_says_why_the_rest_stays_missing() -> None:
    lost = cloudtrail_event(event_time=f"{DAY}T10:00:00Z")
    other_day = cloudtrail_event(event_time="2024-05-02T10:00:00Z")
    management = cloudtrail_event(eventName="DescribeTable")
    missing = {e["eventID"]: {"Music"} for e in (lost, other_day, management)} | {"gone": {"Music"}}
    result = backfill_events([lost, other_day, management, lost], missing, DAY)
    assert list(result.events) == ["Music"]
    assert list(result.events["Music"]) == [lost["eventID"]]
    assert [json.loads(line)["event_id"] for line in result.lines["Music"]] == [lost["eventID"]]
    reasons = {event_id: reason for (_, event_id), reason in result.still_missing.items()}
    assert "no record of Music on 2024-05-01" in reasons[other_day["eventID"]]
    assert "not a DynamoDB data event" in reasons[management["eventID"]]
    assert reasons["gone"] == "the trail file no longer holds it"


def test_backfill_names_derive_from_the_trail_file_and_stay_safe() -> None:
    key = "AWSLogs/1/CloudTrail/us-east-1/2024/05/01/1_CloudTrail_us-east-1_20240501T1200Z_abc.json.gz"
    assert backfill_object_key("audit/", "Music", DAY, key) == (
        "audit/table_name=Music/dt=2024-05-01/backfill-1_CloudTrail_us-east-1_20240501T1200Z_abc.json.gz"
    )
    hostile = backfill_object_key("audit/", "Music", DAY, "AWSLogs/x/../<script>.json.gz")
    assert re.fullmatch(r"audit/table_name=Music/dt=2024-05-01/backfill-[0-9a-f]{32}\.json\.gz", hostile)
    assert quarantine_key(DAY, key, "e-1").endswith("_abc-e-1")


def test_a_window_covers_its_day_and_the_next_days_files() -> None:
    window = ReconcileWindow.of_day("2024-12-31")
    assert (window.until, window.whole_day) == ("2025-01-01T00:00:00Z", True)
    assert window.trail_dates() == ["2024/12/31", "2025/01/01"]
    assert not ReconcileWindow.of_day(DAY, until=f"{DAY}T12:00:00Z").whole_day
    for day, until in (
        ("2024-02-30", None),
        ("2024-5-1", None),
        (DAY, "2024-05-02T00:00:01Z"),
        (DAY, f"{DAY}T00:00:00Z"),
    ):
        with pytest.raises(ValueError, match="2024"):
            ReconcileWindow.of_day(day, until=until)


def test_the_sql_takes_the_day_and_tables_as_parameters_never_as_text() -> None:
    tables = ["Music", "x' OR '1'='1"]
    window = ReconcileWindow.of_day(DAY, tables)
    sql, parameters = build_reconcile_sql(window, ReconcileRelations("trail", "compacted", "fresh"))
    assert sql.count("?") == len(parameters)
    assert "OR '1'='1" not in sql
    assert DAY not in sql
    assert parameters.count("x' OR '1'='1") == 3


def test_the_sql_reads_the_trails_files_and_each_tier_once() -> None:
    """Athena inlines every use of a WITH query, and reads (and bills) the trail's files at each: every relation and
    every WITH query must be named once, or a run reads the day's trail more than once."""
    sql, _ = build_reconcile_sql(ReconcileWindow.of_day(DAY), ReconcileRelations("trail_t", "compacted_t", "fresh_t"))
    for relation in ("trail_t", "compacted_t", "fresh_t"):
        assert len(re.findall(rf"\b(?:FROM|JOIN) {relation}\b", sql)) == 1, relation
    queries = re.findall(r"(?:WITH|,) (\w+) AS \(", sql)
    assert len(queries) >= 4
    for name in queries:
        assert len(re.findall(rf"\b(?:FROM|JOIN) {name}\b", sql)) == 1, name


def test_a_day_starts_only_with_time_for_its_query_and_backfill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILE_QUERY_TIMEOUT_SECONDS", raising=False)
    assert reconcile_day_seconds() == 420
    monkeypatch.setenv("RECONCILE_QUERY_TIMEOUT_SECONDS", "600")
    assert reconcile_day_seconds() == 720
    monkeypatch.setenv("RECONCILE_QUERY_TIMEOUT_SECONDS", "781")
    with pytest.raises(ConfigError, match="RECONCILE_QUERY_TIMEOUT_SECONDS must be at most 780"):
        reconcile_day_seconds()


def test_coverage_request_bounds() -> None:
    today = date(2026, 11, 28)
    table, days = parse_coverage_request({"table": "Music"}, None, today)
    assert (table, days[0], days[-1], len(days)) == ("Music", "2026-10-30", "2026-11-28", 30)
    _, days = parse_coverage_request({"table": "Music", "since": "2024-01-01", "until": "2024-12-31"}, None, today)
    assert len(days) == MAX_COVERAGE_DAYS - 1
    with pytest.raises(InvalidRequestError, match="since: covers more than"):
        parse_coverage_request({"table": "Music", "since": "2024-01-01", "until": "2025-01-03"}, None, today)
    with pytest.raises(UnknownTableError):
        parse_coverage_request({"table": "Music"}, frozenset({"Books"}), today)


@given(st.dictionaries(st.sampled_from(["table", "since", "until", "x"]), st.text(max_size=30) | st.lists(st.text())))
@settings(max_examples=200, deadline=None)
def test_any_coverage_query_string_is_days_or_a_named_error(parameters: dict[str, Any]) -> None:
    try:
        _, days = parse_coverage_request(parameters, None, date(2026, 11, 28))
    except (InvalidRequestError, UnknownTableError):
        return
    assert 1 <= len(days) <= MAX_COVERAGE_DAYS


def test_coverage_reads_each_day_from_its_summary_and_the_tables_report() -> None:
    checked = {"checked_at": "t", "checked_until": "u", "status": "verified", "trail_file_count": 3}
    assert coverage_of(DAY, "Music", None, None) == {"day": DAY, "status": "not_checked"}
    assert coverage_of(DAY, "Music", {**checked, "status": "no_trail_files"}, None)["status"] == "no_trail_files"
    assert coverage_of(DAY, "Music", checked, None)["status"] == "verified"
    unreadable = {**checked, "unreadable_trail_files": {"s3://b/k": "why"}}
    assert coverage_of(DAY, "Music", unreadable, None)["status"] == "incomplete"
    report = TableReport(DAY, "Music", status="backfilled", trail_events=4, backfilled=1)
    answer = coverage_of(DAY, "Music", checked, json.loads(report.to_json()))
    assert (answer["status"], answer["trail_events"], answer["backfilled"]) == ("backfilled", 4, 1)
    assert answer["deferred"] == 0
    short = TableReport(DAY, "Music", trail_events=5)
    for n in range(3):
        short.miss(f"e{n}", "s3://b/k", DEFERRED_REASON if n else "its trail file is unreadable")
    short.settle()
    answer = coverage_of(DAY, "Music", checked, json.loads(short.to_json()))
    assert (answer["status"], answer["still_missing"], answer["deferred"]) == ("incomplete", 3, 2)
    for reasons in ({DEFERRED_REASON: "2"}, [DEFERRED_REASON], {DEFERRED_REASON: -1}):  # a report that is not ours
        assert coverage_of(DAY, "Music", checked, {"status": "incomplete", "missing_reasons": reasons})["deferred"] == 0


def test_a_day_is_complete_only_when_nothing_is_missing_and_every_file_was_read() -> None:
    day = DayReport(DAY, "t", "u", "duckdb", trail_file_count=2, day_trail_files=1)
    day.tables["Music"] = TableReport(DAY, "Music", backfilled=2)
    day.tables["Books"] = TableReport(DAY, "Books")
    day.settle()
    assert (day.status, day.tables["Music"].status, day.tables["Books"].status) == (
        "backfilled",
        "backfilled",
        "verified",
    )
    day.unreadable_trail_files["s3://b/k"] = "not JSON"
    day.settle()
    assert (day.status, day.tables["Books"].status) == ("incomplete", "incomplete")
    day.tables["Books"].miss("e", "s3://b/k", "why")
    assert day.totals()["MissingEvents"] == 1
    assert TableReport.from_json(day.tables["Books"].to_json()) == day.tables["Books"]


def test_a_day_the_trail_did_not_log_in_is_incomplete_whatever_its_counts_say() -> None:
    gap = "from 2024-05-01T01:00:00Z to 2024-05-01T04:00:00Z"
    day = DayReport(DAY, "t", "u", "athena", trail_file_count=1, day_trail_files=1, not_logging=[gap])
    day.tables["Music"] = TableReport(DAY, "Music", trail_events=3)
    day.settle()
    assert (day.status, day.tables["Music"].status) == ("incomplete", "verified")  # the table has every logged call
    quiet = DayReport(DAY, "t", "u", "athena", not_logging=[gap])
    quiet.settle()
    assert quiet.status == "incomplete"  # no files: not a quiet day, a day the trail was off
    summary = day.summary()
    assert summary["not_logging"] == [gap]
    report = json.loads(TableReport(DAY, "Music", trail_events=3, status="verified").to_json())
    covered = coverage_of(DAY, "Music", summary, report)
    assert (covered["status"], covered["not_logging"], covered["still_missing"]) == ("incomplete", [gap], 0)
    uncalled = coverage_of(DAY, "Books", summary, None)
    assert (uncalled["status"], uncalled["not_logging"]) == ("incomplete", [gap])
    hostile = coverage_of(DAY, "Music", {**summary, "not_logging": ["x" * 5000] * 50}, None)
    assert (len(hostile["not_logging"]), max(map(len, hostile["not_logging"]))) == (MAX_GAPS, MAX_GAP_CHARS)
    assert len(f"{gap} (its selectors left out BatchWriteItem, DeleteItem on {'t' * 40})") <= MAX_GAP_CHARS


def test_a_day_the_selectors_left_a_tables_calls_out_on_is_incomplete_for_that_table_only() -> None:
    left_out = "from 2024-05-01T01:00:00Z to 2024-05-01T01:03:00Z (its selectors left out DeleteItem on Books)"
    day = DayReport(DAY, "t", "u", "athena", trail_file_count=1, day_trail_files=1, narrowed={"Books": [left_out]})
    day.tables["Music"] = TableReport(DAY, "Music", trail_events=3)
    day.settle()
    assert day.status == "incomplete"  # the day's least complete table's
    summary = day.summary()
    music = coverage_of(DAY, "Music", summary, json.loads(day.tables["Music"].to_json()))
    assert (music["status"], "not_logging" in music) == ("verified", False)
    books = coverage_of(DAY, "Books", summary, None)  # no call of Books in the trail's files: they left them all out
    assert (books["status"], books["not_logging"]) == ("incomplete", [left_out])
    stopped = {**summary, "not_logging": ["from 2024-05-01T05:00:00Z to 2024-05-01T06:00:00Z"]}
    assert coverage_of(DAY, "Books", stopped, None)["not_logging"] == [*stopped["not_logging"], left_out]
    for hostile in ({"Books": "not a list"}, ["Books"], {"Books": [{"x": 1}] * 50}):
        covered = coverage_of(DAY, "Books", {**summary, "narrowed": hostile}, None)
        assert len(covered.get("not_logging", [])) <= MAX_GAPS


def test_makes_reconcile_line_says_what_was_gone_and_when_the_trail_did_not_log() -> None:
    gap = "from 2024-05-01T01:00:00Z to 2024-05-01T04:00:00Z"
    day = DayReport(DAY, "t", "u", "duckdb", trail_file_count=3, day_trail_files=1, not_logging=[gap])
    day.tables["Music"] = TableReport(
        DAY, "Music", trail_events=4, gone_since_last_run=2, gone=2, backfilled=2, refreshed=1
    )
    day.settle()
    said = describe(day)
    assert said.startswith(f"{DAY}: incomplete (trail files: 1 of its own and 2 of the next day; checked until u)")
    assert "Music: backfilled: 4 calls in the trail" in said
    assert "; 2 records gone since the day's last run, written again" in said
    assert "; 1 too big for the log group, their records written again from the trail's files" in said
    assert f"  the trail did not log {gap}: calls then were recorded nowhere" in said
    left_out = f"{gap} (its selectors left out DeleteItem on Books)"
    day.narrowed = {"Books": [left_out]}
    said = describe(day)
    assert f"  Books: the trail did not log {left_out}: those calls then were recorded nowhere" in said


def test_every_trail_column_type_is_an_arrow_type_and_bad_types_are_refused() -> None:
    for column in TRAIL_COLUMNS:
        assert isinstance(arrow_type(column.glue_type), pa.DataType)
    for bad in ("struct<a>", "array<string", "map<string,string>", "struct<a:string", "stringy"):
        with pytest.raises(ValueError, match=r"Hive type|struct|array"):
            arrow_type(bad)


@given(st.lists(json_values, max_size=5))
@settings(max_examples=150, deadline=None)
def test_any_events_become_rows_of_the_cloudtrail_table(events: list[Any]) -> None:
    table = trail_rows(events, "s3://b/k", "us-east-1", "2024/05/01")
    assert table.schema == TRAIL_SCHEMA
    assert table.num_rows == sum(isinstance(event, dict) for event in events)


def test_a_lone_surrogate_in_a_trail_event_is_read_as_ingest_stores_it() -> None:
    # Valid JSON (`"\ud800"`), not valid UTF-8: in any field, the file's rows are read, the character as U+FFFD.
    event = {"eventID": "e-1", "userAgent": "\ud800agent", "requestParameters": {"key": {"id": "\udc80"}}}
    table = trail_rows([event, {"USERAGENT": "\ud800"}], "s3://b/k", "us-east-1", "2024/05/01")
    assert table.column("useragent").to_pylist() == ["\ufffdagent", "\ufffd"]
    assert table.column("requestparameters").to_pylist()[0] == '{"key":{"id":"\ufffd"}}'


class _Recorder:
    def __init__(self) -> None:
        self.windows: list[tuple[str, str | None]] = []
        self.not_logging: list[Any] = []

    def run(self, day: str, until: str | None = None, not_logging: Any = ()) -> DayReport:
        self.windows.append((day, until))
        self.not_logging.append(not_logging)
        return DayReport(day, "t", until or "end", "duckdb")


def test_the_local_schedule_takes_yesterday_whole_and_today_up_to_its_settle_time() -> None:
    recorder = _Recorder()
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    local = LocalReconciliation(recorder, 30, 10, clock=lambda: now)  # type: ignore[arg-type]
    local.run_recent()
    assert recorder.windows == [("2026-11-27", None), ("2026-11-28", "2026-11-28T11:59:50Z")]
    recorder.windows.clear()
    just_after_midnight = datetime(2026, 11, 28, 0, 0, 5, tzinfo=UTC)
    LocalReconciliation(recorder, 30, 10, clock=lambda: just_after_midnight).run_recent()  # type: ignore[arg-type]
    assert recorder.windows == [("2026-11-27", "2026-11-27T23:59:55Z")]
    recorder.windows.clear()
    within_its_first_second = datetime(2026, 11, 28, 0, 0, 10, 999999, tzinfo=UTC)  # the window counts in seconds
    LocalReconciliation(recorder, 30, 10, clock=lambda: within_its_first_second).run_recent()  # type: ignore[arg-type]
    assert recorder.windows == [("2026-11-27", None)]
    with pytest.raises(ValueError, match="not within"):
        ReconcileWindow.of_day((now.date() + timedelta(days=1)).isoformat(), until="2026-11-28T11:59:50Z")
    # A day not begun the settle time ago (today just after midnight, or any later day) is refused by name, unread.
    for day, when in [(now.date(), "2026-11-28T00:00:10Z"), (now.date() + timedelta(days=1), "2026-11-29T00:00:10Z")]:
        with pytest.raises(ValueError, match=f"^{day} cannot be checked before {when} .*DEUTZIA_RECONCILE_SETTLE"):
            LocalReconciliation(recorder, 30, 10, clock=lambda: just_after_midnight).run_day(day)  # type: ignore[arg-type]
    assert recorder.windows == [("2026-11-27", None)]  # neither was read
    with pytest.raises(ValueError, match="cannot be checked before"):
        LocalReconciliation(recorder, 30, 10, clock=lambda: within_its_first_second).until(now.date())  # type: ignore[arg-type]
    settled = datetime(2026, 11, 28, 0, 0, 11, tzinfo=UTC)
    assert LocalReconciliation(recorder, 30, 10, clock=lambda: settled).until(now.date()) == "2026-11-28T00:00:01Z"  # type: ignore[arg-type]

    # The trail's status is asked once a run, and each day hears when the trail did not log.
    gap = [(now - timedelta(hours=3), now - timedelta(hours=1))]
    asked: list[int] = []

    def trail_check() -> TrailCheck:
        asked.append(1)
        return TrailCheck(["the trail did not log"], gap)

    recorder = _Recorder()
    LocalReconciliation(recorder, 30, 10, clock=lambda: now, trail_check=trail_check).run_recent()  # type: ignore[arg-type]
    assert (len(asked), recorder.not_logging) == (1, [gap, gap])


def test_a_report_lists_a_bounded_number_of_reasons_and_examples_and_counts_them_all() -> None:
    report = TableReport(DAY, "Music")
    for n in range(2500):
        report.miss(f"e{n}", "s3://b/k", f"reason {n}")
    assert report.still_missing == 2500
    assert len(report.missing_examples) == 1000
    assert len(report.missing_reasons) == 1001
    assert sum(report.missing_reasons.values()) == 2500


def test_coverage_names_the_unconfirmed_records_of_a_day_within_a_bound_for_the_whole_answer() -> None:
    summary = {"status": "unconfirmed", "checked_at": "2024-05-03T03:30:00Z", "checked_until": "2024-05-02T00:00:00Z"}
    report = {
        "status": "unconfirmed",
        "audited_not_in_trail": 2,
        "not_in_trail_examples": ["b", "a", "<script>", 7],
        "altered": 1,
        "altered_examples": ["c", "a"],
    }
    day = coverage_of("2024-05-01", "Music", summary, report)
    assert (day["not_in_trail"], day["altered"], day["unconfirmed_ids"]) == (2, 1, ["a", "b", "c"])
    assert "restored_ids" not in day
    # A contradicted call the check restored is named apart: GET /audit shows the trail's own records of it.
    restored = coverage_of("2024-05-01", "Music", summary, {**report, "restored_examples": ["c", "<b>", 3]})
    assert (restored["unconfirmed_ids"], restored["restored_ids"]) == (["a", "b"], ["c"])
    assert "unconfirmed_ids" not in coverage_of("2024-05-01", "Music", summary, {"status": "verified"})
    days = [
        {"day": "1", "unconfirmed_ids": ["a", "b"], "restored_ids": ["x"]},
        {"day": "2"},
        {"day": "3", "unconfirmed_ids": ["c", "d"], "restored_ids": ["y", "z"]},
    ]
    bound_unconfirmed_ids(days, 3)
    assert [day.get("unconfirmed_ids") for day in days] == [["a"], None, ["c", "d"]]  # the latest days first
    assert [day.get("restored_ids") for day in days] == [["x"], None, ["y", "z"]]
    bound_unconfirmed_ids(days, 2)
    assert [day.get("restored_ids") for day in days] == [[], None, ["y", "z"]]


@given(st.from_regex(r"[A-Za-z0-9_.-]{3,255}", fullmatch=True) | st.sampled_from(["_day", "_day.json", "query"]))
def test_no_table_reports_where_the_days_summary_or_its_running_query_is_kept(table: str) -> None:
    day = "2024-05-01"
    assert report_key(day, table) not in (report_key(day), running_query_key(day))
    assert report_key(day, table).startswith(f"reports/reconcile/dt={day}/")


def test_a_stop_told_by_the_status_the_watch_and_the_history_is_one_stop() -> None:
    at = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    told = [
        (at + timedelta(seconds=1), at + timedelta(minutes=3)),  # the status
        (at, at + timedelta(minutes=3, seconds=1)),  # the history
        (at + timedelta(hours=2), at + timedelta(hours=3)),  # another stop
        (at, at + timedelta(hours=5), "its selectors left out DeleteItem on Books", ("Books",)),  # no stop: a narrowing
    ]
    assert join_stops(told) == [
        (at, at + timedelta(minutes=3, seconds=1)),
        (at + timedelta(hours=2), at + timedelta(hours=3)),
    ]
