"""Whether CloudTrail's trail itself works: logging, and delivering to its bucket, its log group and its digests.

A trail that stops records no call anywhere: the fast path and the trail's files go quiet together, and a day without
files reads like a quiet day, so no count of reconciliation's can tell. The scheduled `watch_trail` therefore asks
CloudTrail (GetTrailStatus) every few minutes and names what it finds, for the log, a metric and its alarm; each
reconcile run asks too, for the days the trail did not log in; and GET /audit/coverage names it to whoever reads a
history (asking at most once a minute; the watch also asks who made the changes behind them,
chalicelib/trail_changes.py). A trail that logs may still undo the audit: its settings may stop signing its files or
send them and its events elsewhere (GetTrail), and its event selectors decide which tables, calls and callers it logs
(GetEventSelectors), so each check reads both and names what they leave undone (chalicelib/selectors.py for the
selectors). `trail_problems` and `trail_settings_problems` are pure; `check_trail` makes the three calls.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.config import audited_tables, flag
from chalicelib.errors import aws_error_code
from chalicelib.selectors import ANY_TABLE, selector_problems, table_arn, unlogged_calls

logger = Logger(service="deutzia-trail")

# A logging gap that ended this recently is named (by the watch and the daily runs after it), and not after.
GAP_NAMED_FOR = timedelta(days=2)
# How long the API reuses CloudTrail's answer: a stop shows in its answers within this many seconds.
TRAIL_STATUS_REUSE_SECONDS = 60.0
# GetTrailStatus, GetTrail and GetEventSelectors are small answers: one that takes longer is no answer (what it would
# tell is then unknown, and said so); the three, each tried twice, within 18 s, within the API's 25 s for GET
# /audit/coverage (a CloudTrail that does not answer the first is not asked the others).
STATUS_CLIENT_CONFIG = Config(connect_timeout=1, read_timeout=2, retries={"mode": "standard", "total_max_attempts": 2})
# Where the watch keeps each time the trail did not log, under each day it overlaps (`dt=<day>/<start>.json`):
# CloudTrail tells only its latest stop, and a day is reconciled two days on, when a later stop would have hidden an
# earlier one.
GAPS_PREFIX = "reports/trail/not-logging/"
# The days a gap is kept under: today and the days before that the nightly run has not reconciled yet.
GAP_DAYS = 3
# How often the watch runs, where it keeps the time of its last run, and how late that may be before each nightly run
# names the watch itself (three of its runs missed: its schedule disabled, its concurrency 0, or failing).
WATCH_INTERVAL_MINUTES = 5
WATCH_HEARTBEAT_KEY = "reports/trail/watch.json"
WATCH_LATE_AFTER = timedelta(minutes=3 * WATCH_INTERVAL_MINUTES)
_MAX_ERROR_CHARS = 300
_DELIVERIES = (
    ("LatestDeliveryError", "log files to the trail bucket"),
    (
        "LatestCloudWatchLogsDeliveryError",
        "events to the log group, the fast path (calls reach GET /audit only by reconciliation's backfill)",
    ),
    ("LatestDigestDeliveryError", "digest files (`aws cloudtrail validate-logs` cannot prove those hours)"),
)


@dataclass(frozen=True)
class TrailCheck:
    """What is wrong with the trail, for people; and when it did not log, as far as CloudTrail still says (its latest
    stop, to its restart or to now), for the days that overlap it."""

    problems: list[str] = field(default_factory=list)
    not_logging: list[tuple[datetime, datetime]] = field(default_factory=list)
    # The calls that would have made these problems (StopLogging, UpdateTrail, PutEventSelectors, DeleteTrail), for
    # the watch to ask the event history who made them (chalicelib/trail_changes.py).
    causes: list[str] = field(default_factory=list)


def not_logging(status: Mapping[str, object], now: datetime) -> list[tuple[datetime, datetime]]:
    """The latest time the trail did not log, by its GetTrailStatus answer: from its stop to its restart, or to `now`
    while it is stopped (from the start of time when it says no stop); CloudTrail keeps no earlier one. In UTC, as
    every day the audit has is (botocore gives the times in the machine's zone: its day is another west of UTC)."""
    stopped, started = (_in_utc(status.get(name)) for name in ("StopLoggingTime", "StartLoggingTime"))
    if status.get("IsLogging") is not True:  # (a stop CloudTrail's clock puts after ours: from now)
        return [(min(stopped, now) if isinstance(stopped, datetime) else datetime.min.replace(tzinfo=UTC), now)]
    if isinstance(stopped, datetime) and isinstance(started, datetime) and stopped <= started <= now:
        return [(stopped, started)]
    return []


def _in_utc(moment: object) -> datetime | None:
    return moment.astimezone(UTC) if isinstance(moment, datetime) else None


def trail_problems(status: Mapping[str, object], now: datetime) -> list[str]:
    """What is wrong with the trail, by its GetTrailStatus answer, each for people; none when it logs and delivers."""
    problems = []
    stopped = status.get("StopLoggingTime")
    if status.get("IsLogging") is not True:
        since = f" since {_shown(stopped)}" if isinstance(stopped, datetime) else ""
        problems.append(
            f"the trail is not logging{since}: no call is recorded, neither in GET /audit nor in the trail's files, "
            "until it is started again"
        )
    else:
        for start, end in not_logging(status, now):
            if now <= end + GAP_NAMED_FOR:
                problems.append(
                    f"the trail did not log {logging_gap(start, end)}: calls in between were never recorded, and no "
                    "backfill can find them"
                )
    for name, what in _DELIVERIES:
        error = status.get(name)
        if isinstance(error, str) and error:
            problems.append(f"CloudTrail could not deliver {what}: {error[:_MAX_ERROR_CHARS]}")
    return problems


@dataclass(frozen=True)
class TrailDuties:
    """What the trail must do for the audit: log the calls on `tables` (None: on any table, AUDITED_TABLES `*`), reads
    too when `reads` (AUDIT_READS); sign its files (log file validation); deliver them to `bucket` (TRAIL_BUCKET) and
    its events to the log group `log_group` (TRAIL_LOG_GROUP), each checked where known."""

    tables: frozenset[str] | None
    reads: bool
    bucket: str | None = None
    log_group: str | None = None


def check_trail(client: Any, trail: str, now: datetime | None = None, duties: TrailDuties | None = None) -> TrailCheck:
    """The problems and the time not logging of the trail named (or ARN'd) `trail`, and, for `duties`, what its
    settings and event selectors leave undone; a trail that cannot be read is a problem too (its time not logging
    then unknown)."""
    try:
        status = client.get_trail_status(Name=trail)
    except (ClientError, BotoCoreError) as exc:
        code = aws_error_code(exc)
        if code == "TrailNotFoundException":
            return TrailCheck(
                [f"the trail {trail} does not exist: no call is recorded until a trail logs the tables again"],
                causes=["DeleteTrail"],
            )
        return TrailCheck([f"the trail's status cannot be read ({code}): whether it logs is unknown"])
    moment = now or datetime.now(UTC)
    gaps = not_logging(status, moment)
    problems = trail_problems(status, moment)
    causes = ["StopLogging"] if any(moment <= end + GAP_NAMED_FOR for _, end in gaps) else []
    if duties is not None:
        settings, selectors = settings_problems(client, trail, duties), selectors_problems(client, trail, duties)
        problems += settings + selectors
        causes += ["UpdateTrail"] * bool(settings) + ["PutEventSelectors"] * bool(selectors)
    return TrailCheck(problems, gaps, causes)


def trail_settings_problems(settings: Mapping[str, object], duties: TrailDuties) -> list[str]:
    """What the trail's settings (GetTrail) undo of the audit, for people: files no longer signed, events sent to no
    log group or another, files delivered to another bucket. A trail so changed still logs and delivers."""
    problems = []
    if settings.get("LogFileValidationEnabled") is not True:
        problems.append(
            "the trail's log file validation is off: CloudTrail writes no digest files, so `aws cloudtrail "
            "validate-logs` cannot prove its files (nor the days `deutzia evidence` hands over) from then on"
        )
    cut = "the fast path is cut, and calls reach GET /audit only when reconciliation backfills them, two days later"
    group_arn = settings.get("CloudWatchLogsLogGroupArn")
    group = str(group_arn).split(":log-group:", 1)[-1].removesuffix(":*") if group_arn else None
    if group is None:
        problems.append(f"the trail sends its events to no log group: {cut}")
    elif duties.log_group is not None and group != duties.log_group:
        problems.append(
            f"the trail sends its events to the log group {group[:_MAX_ERROR_CHARS]}, not {duties.log_group}: {cut}"
        )
    bucket = settings.get("S3BucketName")
    if duties.bucket is not None and bucket != duties.bucket:
        problems.append(
            f"the trail delivers its files to the bucket {str(bucket)[:_MAX_ERROR_CHARS]}, not {duties.bucket} "
            "(TRAIL_BUCKET): reconciliation reads none of them, so no day is verified and no missed call backfilled"
        )
    return problems


def settings_problems(client: Any, trail: str, duties: TrailDuties) -> list[str]:
    """`trail_settings_problems` of the trail's GetTrail answer; settings that cannot be read are a problem too."""
    try:
        settings = client.get_trail(Name=trail).get("Trail") or {}
    except (ClientError, BotoCoreError) as exc:
        code = aws_error_code(exc)
        if code == "TrailNotFoundException":
            return []  # named already, by its status
        return [f"the trail's settings cannot be read ({code}): whether it signs and sends its events is unknown"]
    return trail_settings_problems(settings, duties)


def selectors_problems(client: Any, trail: str, duties: TrailDuties) -> list[str]:
    """The audited calls the trail's event selectors leave out (GetEventSelectors), for people; selectors that cannot
    be read are a problem too."""
    try:
        answer = client.get_event_selectors(TrailName=trail)
    except (ClientError, BotoCoreError) as exc:
        code = aws_error_code(exc)
        if code == "TrailNotFoundException":
            return []  # named already, by its status
        return [f"the trail's event selectors cannot be read ({code}): whether they log every audited call is unknown"]
    trail_arn = str(answer.get("TrailARN") or trail)
    arns = audited_table_arns(trail_arn, duties)
    if arns is None:
        shown = trail_arn[:_MAX_ERROR_CHARS]
        return [f"the trail's ARN {shown} names no region and account: its selectors are not checked"]
    left_out = unlogged_calls(
        answer.get("EventSelectors") or [], answer.get("AdvancedEventSelectors") or [], arns, duties.reads
    )
    return selector_problems(left_out, any_table=duties.tables is None)


def watch_heartbeat(now: datetime) -> bytes:
    """What the watch keeps at WATCH_HEARTBEAT_KEY each run."""
    return json.dumps({"checked_at": _shown(now)}).encode()


def watch_problem(
    heartbeat: Mapping[str, object] | None, now: datetime, checked_before: datetime | None = None
) -> str | None:
    """What to say when the watch has stopped running: its last run (its heartbeat's `checked_at`) longer ago than
    WATCH_LATE_AFTER, or no run at all though the stack's nightly check ran `checked_before`, more than that ago. None
    while it runs, and before its first run on a new stack (it comes within minutes)."""
    checked_at = heartbeat.get("checked_at") if heartbeat is not None else None
    if checked_at is None:
        if checked_before is None or now - checked_before <= WATCH_LATE_AFTER:
            return None
        return (
            f"the trail watch (watch_trail) has never run, though the nightly check ran at {_shown(checked_before)}: "
            "a trail that stops is named only by the nightly check until it runs (its schedule, concurrency or errors)"
        )
    last = parse_moment(checked_at)
    if last is None:
        return "the trail watch (watch_trail) left a heartbeat that is no time"
    if now - last <= WATCH_LATE_AFTER:
        return None
    return (
        f"the trail watch (watch_trail) has not run since {_shown(last)}: a trail that stops is named only by the "
        "nightly check until it runs again (its schedule, concurrency or errors)"
    )


def parse_moment(text: object) -> datetime | None:
    """A time as the watch and the reports keep it (`YYYY-MM-DDTHH:MM:SSZ`, UTC); None for anything else."""
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def logging_gap(start: datetime, end: datetime) -> str:
    """A time the trail did not log, for people."""
    return f"from {_shown(start)} to {_shown(end)}" if start.year > 1 else f"until {_shown(end)}"


def _shown(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def gap_records(gaps: Sequence[tuple[datetime, datetime]], now: datetime) -> dict[str, bytes]:
    """The objects that keep `gaps` (times the trail did not log), by key: one under each of the last GAP_DAYS days
    each overlaps, named by its start, so a later sight of the same stop (its restart now known) replaces it. A gap
    whose start is unknown, or that ended before those days, is left out."""
    first = now.date() - timedelta(days=GAP_DAYS - 1)
    records: dict[str, bytes] = {}
    for start, end in gaps:
        if start.year == 1 or end.date() < first:
            continue
        body = json.dumps({"from": _shown(start), "to": _shown(end)}).encode()
        day = max(start.date(), first)
        while day <= min(end.date(), now.date()):
            records[f"{GAPS_PREFIX}dt={day.isoformat()}/{_shown(start)}.json"] = body
            day += timedelta(days=1)
    return records


def read_gap(body: bytes) -> tuple[datetime, datetime] | None:
    """The gap an object of gap_records holds; None when it holds none."""
    try:
        document = json.loads(body)
        start, end = (datetime.strptime(document[name], "%Y-%m-%dT%H:%M:%SZ") for name in ("from", "to"))
    except (ValueError, TypeError, KeyError):
        return None
    return (start.replace(tzinfo=UTC), end.replace(tzinfo=UTC)) if start <= end else None


class RecentTrailCheck:
    """The trail's problems for the API's answers: `check`, asked again once its answer is `reuse_seconds` old, so
    every answer says whether the trail logs now without asking CloudTrail (which throttles the account) for each."""

    def __init__(
        self,
        check: Callable[[], TrailCheck],
        reuse_seconds: float = TRAIL_STATUS_REUSE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._reuse_seconds = reuse_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._problems: list[str] = []

    def problems(self) -> list[str]:
        with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self._reuse_seconds:
                self._problems = self._check().problems
                self._checked_at = now
            return list(self._problems)


def audited_table_arns(trail_arn: str, duties: TrailDuties) -> dict[str, str] | None:
    """The ARN of each table the trail must log calls on (under `*`, of a table that stands for any), in the trail's
    partition, region and account; None when `trail_arn` is no trail ARN."""
    tables = sorted(duties.tables) if duties.tables is not None else [ANY_TABLE]
    arns = {table: arn for table in tables if (arn := table_arn(trail_arn, table)) is not None}
    return arns if len(arns) == len(tables) else None


def duties_of_environment() -> TrailDuties:
    """What the environment says the trail must do: log the calls on AUDITED_TABLES (reads too when AUDIT_READS),
    deliver to TRAIL_BUCKET and TRAIL_LOG_GROUP (where set)."""
    return TrailDuties(
        audited_tables(),
        flag("AUDIT_READS"),
        os.environ.get("TRAIL_BUCKET", "").strip() or None,
        os.environ.get("TRAIL_LOG_GROUP", "").strip() or None,
    )


def check_trail_of_environment() -> TrailCheck:
    """`check_trail` of TRAIL_ARN (the stack sets it) for the calls on AUDITED_TABLES (reads too when AUDIT_READS),
    delivered to TRAIL_BUCKET and TRAIL_LOG_GROUP (where set), each problem logged as an error; none checked
    without it."""
    trail = os.environ.get("TRAIL_ARN", "").strip()
    if not trail:
        logger.warning("TRAIL_ARN is not set: whether the trail logs is not checked")
        return TrailCheck()
    check = check_trail(boto3.client("cloudtrail", config=STATUS_CLIENT_CONFIG), trail, duties=duties_of_environment())
    for problem in check.problems:
        logger.error("trail %s: %s", trail, problem)
    return check
