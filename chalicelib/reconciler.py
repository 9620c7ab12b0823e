"""Runs reconciliation of one UTC day: lists the day's trail files, has the engine (Athena, or DuckDB locally) run the
anti-join, backfills what is missing from the files that hold it (and restores the calls whose records contradict them),
quarantines what cannot be read or formatted, and stores a report per table and one for the day under
`reports/reconcile/dt=<day>/`.

Backfilled records enter the fresh tier under names derived from their trail file, so a rerun overwrites them and
compaction folds them in, keeping them over any other copy of the same record. A report carries over the backfill of
earlier runs of the same day, so a second run that finds nothing missing keeps the day's status. A write that fails
raises: the day's reports are written last, so a failed run leaves the previous ones. Backfill stops starting trail
files when the run's time runs short and defers the rest; a scheduled run goes on with earlier days left without a
report or with deferred calls. A day's query that outlives the run's wait is left running in Athena, and the day's next
run reads its answer instead of asking again.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.config import LAMBDA_MAX_SECONDS, audit_prefix, audited_tables, number, setting
from chalicelib.errors import (
    ConfigError,
    DeutziaError,
    QueryStillRunningError,
    QueryTooLargeError,
    QueryUnavailableError,
    StoreError,
)
from chalicelib.reconcile import (
    DEFERRED_REASON,
    MAX_GAPS,
    MAX_LISTED,
    MAX_TRAIL_FILE_BYTES,
    TALLY_ALTERED,
    TALLY_NOT_IN_TRAIL,
    CorruptTrailFileError,
    DayReport,
    FileTally,
    ReconcileWindow,
    TableReport,
    backfill_events,
    backfill_object_key,
    bound_unconfirmed_ids,
    coverage_of,
    is_event_id,
    parse_day,
    quarantine_key,
    read_trail_file,
    report_key,
    running_query_key,
)
from chalicelib.records import compact_json, encode_lines
from chalicelib.store import UPLOAD_CHECKSUM, ascii_metadata
from chalicelib.trail_status import (
    GAPS_PREFIX,
    WATCH_HEARTBEAT_KEY,
    logging_gap,
    parse_moment,
    read_gap,
    watch_problem,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# A time the trail did not log: (start, end); or, when it logged only some audited calls, (start, end, what it left out,
# the tables it left them out of: None for every table).
NotLogging = tuple[datetime, datetime] | tuple[datetime, datetime, str, tuple[str, ...] | None]

logger = Logger(service="deutzia-reconcile")

# Days one on-demand run may cover (a catch-up of a month takes a few runs, each within Lambda's 15 minutes).
MAX_DAYS_PER_RUN = 31


@dataclass(frozen=True)
class EngineResult:
    """The engine's answer: the SQL's rows, and the trail files it could not read (path to reason; the local
    engine reads each file itself, Athena reports none)."""

    tallies: list[FileTally]
    unreadable: dict[str, str] = field(default_factory=dict)


_ByFile = dict[str, dict[str, set[str]]]  # trail file, event id, the tables it counts for


class _Wanted(NamedTuple):
    """The calls whose trail records a run writes: missing from the audit records, contradicted by them, and held by
    them though they may be too big for the log group (OVERSIZED_TEXT_CHARS)."""

    missing: _ByFile
    altered: _ByFile
    oversized: _ByFile


# Athena's query execution ids (UUIDs): anything else kept as one is not taken.
_EXECUTION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class TrailEngine(Protocol):
    """Runs the reconcile SQL of a window over the trail's files (`s3://` paths of the days' files, as listed).
    `running`: the id of the window's query an earlier run left running (QueryStillRunningError), to wait for or read
    instead of starting it again; an engine whose queries never outlive a run ignores it."""

    name: str

    def tally(
        self, window: ReconcileWindow, trail_files: Sequence[str], running: str | None = None
    ) -> EngineResult: ...


class ReconcileError(DeutziaError):
    """A day could not be reconciled (the engine failed, or a write did); the day's earlier reports stay."""


class QueryLeftRunningError(ReconcileError):
    """The day's query outlived the run's wait and goes on: a later run of the day reads its answer."""


def last_verifiable_day(now: datetime) -> str:
    """The day the daily run reconciles: the day before yesterday, whose files CloudTrail has delivered (a day's
    last events arrive in the next day's files)."""
    return (now.astimezone(UTC).date() - timedelta(days=2)).isoformat()


# How long a run waits for the reconcile query (RECONCILE_QUERY_TIMEOUT_SECONDS overrides it; Athena's engine).
RECONCILE_TIMEOUT_SECONDS = 300.0
# Backfill starts a trail file only while this much time is left: reading, formatting and writing one (at most
# MAX_TRAIL_FILE_BYTES of JSON), then the reports.
BACKFILL_RESERVE_SECONDS = 90.0
# Besides the query and backfill's reserve, a day needs this long: listing its trail files, reading earlier reports.
_DAY_MARGIN_SECONDS = 30.0
# A scheduled run also goes on with any of this many days before its own that no run reconciled (a failed run, a new
# stack) or that an earlier run left deferred calls in.
GO_ON_DAYS = 31
# A scheduled run checks again the days this many days before its own (past the days it goes on with): each day is
# checked again a month and a year after, so records deleted since are found, and backfilled again.
RECHECK_AFTER_DAYS = (GO_ON_DAYS + 1, 365)


def reconcile_day_seconds() -> float:
    """How much time a run must have left to start a day: its query's deadline, backfill's reserve and a margin (420 s
    by default). ConfigError when RECONCILE_QUERY_TIMEOUT_SECONDS leaves a 15-minute invocation no room for them."""
    needed = number("RECONCILE_QUERY_TIMEOUT_SECONDS", RECONCILE_TIMEOUT_SECONDS) + BACKFILL_RESERVE_SECONDS
    needed += _DAY_MARGIN_SECONDS
    if needed > LAMBDA_MAX_SECONDS:
        most = LAMBDA_MAX_SECONDS - BACKFILL_RESERVE_SECONDS - _DAY_MARGIN_SECONDS
        raise ConfigError(
            f"environment variable RECONCILE_QUERY_TIMEOUT_SECONDS must be at most {most:g}: a day's run needs "
            f"{BACKFILL_RESERVE_SECONDS + _DAY_MARGIN_SECONDS:g} s besides, within Lambda's {LAMBDA_MAX_SECONDS:g}"
        )
    return needed


def requested_days(detail: object, now: datetime) -> list[str]:
    """The days a run reconciles: `detail`'s `since` to `until` (both included; either alone means that day), or
    else the day before yesterday. ConfigError naming what is wrong with a request."""
    if not isinstance(detail, dict) or not ({"since", "until"} & detail.keys()):
        return [last_verifiable_day(now)]
    since = str(detail.get("since") or detail.get("until"))
    until = str(detail.get("until") or since)
    try:
        return days_between(since, until)
    except ValueError as exc:
        raise ConfigError(f"the run's detail must give since and until as days, YYYY-MM-DD: {exc}") from None


def recheck_days(now: datetime) -> list[str]:
    """The days a scheduled run checks again: RECHECK_AFTER_DAYS before the day it reconciles, oldest first."""
    latest = parse_day(last_verifiable_day(now))
    return [(latest - timedelta(days=back)).isoformat() for back in sorted(RECHECK_AFTER_DAYS, reverse=True)]


def days_between(since: str, until: str) -> list[str]:
    """The days from `since` to `until`, both included; ValueError for a reversed or too long range."""
    first, last = parse_day(since), parse_day(until)
    if last < first:
        raise ValueError(f"{until} is before {since}")
    count = (last - first).days + 1
    if count > MAX_DAYS_PER_RUN:
        raise ValueError(f"{count} days; one run reconciles at most {MAX_DAYS_PER_RUN}")
    return [(first + timedelta(days=offset)).isoformat() for offset in range(count)]


class Reconciler:
    """Reconciles days of the audit bucket against the trail bucket, with `engine`."""

    def __init__(
        self,
        engine: TrailEngine,
        s3: S3Client,
        audit_bucket: str,
        trail_bucket: str,
        trail_prefix: str,
        fresh_prefix: str = "audit/",
        tables: frozenset[str] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_trail_file_bytes: int = MAX_TRAIL_FILE_BYTES,
    ) -> None:
        self._engine = engine
        self._s3 = s3
        self._audit_bucket = audit_bucket
        self._trail_bucket = trail_bucket
        self._trail_prefix = trail_prefix.strip("/") + "/"
        self._fresh_prefix = fresh_prefix
        self._tables = tables
        self._clock = clock
        self._max_file_bytes = max_trail_file_bytes

    @classmethod
    def from_environment(cls, engine: TrailEngine) -> Reconciler:
        """A reconciler on $AUDIT_BUCKET and $TRAIL_BUCKET (files under $TRAIL_PREFIX), for $AUDITED_TABLES."""
        trail_prefix = setting("TRAIL_PREFIX")
        if not trail_prefix.strip("/").endswith("CloudTrail"):
            raise ConfigError("environment variable TRAIL_PREFIX must be AWSLogs/<account>/CloudTrail/")
        return cls(
            engine,
            boto3.client("s3"),
            setting("AUDIT_BUCKET"),
            setting("TRAIL_BUCKET"),
            trail_prefix,
            audit_prefix(),
            audited_tables(),
        )

    def run(
        self,
        day: str,
        until: str | None = None,
        time_left: Callable[[], float] | None = None,
        not_logging: Sequence[NotLogging] = (),
    ) -> DayReport:
        """Reconcile `day` (up to `until` when the day is still going); ReconcileError when it cannot be done. With
        `time_left` (seconds), backfill stops starting trail files BACKFILL_RESERVE_SECONDS before the end, and what
        it did not reach is deferred (DayReport.deferred) to the next daily runs. `not_logging`: when the trail did
        not log (trail_status), or logged only some audited calls (a note saying which: trail_changes), kept in the
        day's summary where it overlaps the day, with what earlier runs kept."""
        window = ReconcileWindow.of_day(day, None if self._tables is None else sorted(self._tables), until)
        by_region = self._list_trail_files(window)
        files = [path for paths in by_region.values() for path in paths]
        day_report = DayReport(
            day=day,
            checked_at=self._clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
            checked_until=window.until,
            engine=self._engine.name,
            trail_file_count=len(files),
            day_trail_files=sum(f"/{window.trail_dates()[0]}/" in path for path in files),
            trail_files_by_region={region: len(paths) for region, paths in sorted(by_region.items())},
            next_day_delivered=any(f"/{window.trail_dates()[-1]}/" in path for path in files),
        )
        day_report.not_logging, day_report.narrowed = self._not_logging(day, not_logging)
        running = self._running_query(day)
        try:
            result = self._engine.tally(window, files, running[0] if running else None)
        except QueryStillRunningError as exc:
            started = running[1] if running and running[0] == exc.execution_id else day_report.checked_at
            document = {"execution_id": exc.execution_id, "started_at": started}
            self._put(running_query_key(day), json.dumps(document).encode(), {})
            raise QueryLeftRunningError(
                f"reconciling {day}: {exc}, and the day's next run reads its answer instead of starting it again "
                "(the next daily runs take up the day)"
            ) from exc
        except QueryTooLargeError as exc:
            raise ReconcileError(
                f"reconciling {day}: {exc}: the day's trail is more than the stack's "
                "ReconcileBytesScannedCutoffPerQuery lets one run read; raise it (a run reads the day's and the next "
                "day's trail files)"
            ) from exc
        except DeutziaError as exc:
            raise ReconcileError(f"reconciling {day}: {exc}") from exc
        wanted = self._tally(day_report, result.tallies)
        for path, reason in sorted(result.unreadable.items()):
            self._unreadable(day_report, path, reason)
        self._backfill(day_report, wanted, time_left or (lambda: math.inf))
        day_report.settle()
        self._store_reports(day_report)
        return day_report

    def run_days(
        self,
        days: Sequence[str],
        time_left: Callable[[], float],
        day_seconds: float,
        not_logging: Sequence[NotLogging] = (),
        done_with: Callable[[DayReport], None] = lambda report: None,
    ) -> tuple[dict[str, str], list[str]]:
        """Reconcile `days` in order while a day's time (`day_seconds`) is left, handing each report to `done_with`:
        each day's status, and the days not reached. A day whose query outlives its wait goes on in Athena: the other
        days come first, then it once more (its query may be done by then), and QueryLeftRunningError at the end names
        the days still waiting for theirs (the next runs read those answers)."""
        done: dict[str, str] = {}
        left_running: list[str] = []
        pending = list(days)
        while pending and time_left() >= day_seconds:
            day = pending.pop(0)
            try:
                report = self.run(day, time_left=time_left, not_logging=not_logging)
            except QueryLeftRunningError:
                if day not in left_running:
                    left_running.append(day)
                    pending.append(day)
                continue
            done_with(report)
            done[day] = report.status
        waiting = [day for day in left_running if day not in done]
        if waiting:
            not_reached = [day for day in pending if day not in waiting]
            raise QueryLeftRunningError(
                f"the query of {', '.join(waiting)} outlived the run's wait and goes on in Athena; the next runs read "
                f"its answer (reconciled: {', '.join(done) or 'none'}; not reached: {', '.join(not_reached) or 'none'})"
            )
        return done, pending

    def _tally(self, day_report: DayReport, tallies: list[FileTally]) -> _Wanted:
        """Each table's counts into its report; the events whose trail records to write, by trail file, event id and
        tables."""
        missing: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        altered: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        oversized: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        files: dict[str, set[str]] = defaultdict(set)
        tables = set(self._tables or ()) | {tally.table for tally in tallies}
        held_before: dict[str, int] = {}
        for table in sorted(tables):
            previous = self._previous_report(day_report.day, table)
            if previous is not None:  # the trail's calls the records held when the day's last run ended
                held_before[table] = max(0, _count(previous.trail_events) - _count(previous.still_missing))
            day_report.tables[table] = TableReport(
                day=day_report.day,
                table=table,
                checked_at=day_report.checked_at,
                checked_until=day_report.checked_until,
                engine=day_report.engine,
                backfilled=_count(previous.backfilled) if previous is not None else 0,
                restored=_count(previous.restored) if previous is not None else 0,
                gone=_count(previous.gone) if previous is not None else 0,
            )
        for tally in tallies:
            report = day_report.tables[tally.table]
            if tally.kind == TALLY_NOT_IN_TRAIL:
                report.audited_not_in_trail += tally.audited
                report.not_in_trail_examples = [event_id[:128] for event_id in tally.listed[:MAX_LISTED]]
                continue
            if tally.kind == TALLY_ALTERED:
                report.altered += tally.audited
                report.altered_examples = [event_id[:128] for event_id in tally.listed[:MAX_LISTED]]
                continue
            if tally.trail_file is None:  # a file's row always names its file
                continue
            files[tally.table].add(tally.trail_file)
            report.trail_events += tally.events
            report.duplicates_in_trail += tally.duplicates
            report.audited_by_ingest += tally.audited
            for event_id in tally.listed:
                if is_event_id(event_id):
                    missing[tally.trail_file][event_id].add(tally.table)
                else:
                    report.miss(event_id[:128], tally.trail_file, "its eventID is not a CloudTrail event id")
            for event_id in tally.altered:
                if is_event_id(event_id):
                    altered[tally.trail_file][event_id].add(tally.table)
            for event_id in tally.oversized:
                if is_event_id(event_id):
                    oversized[tally.trail_file][event_id].add(tally.table)
        for table, report in day_report.tables.items():
            # Records the last run saw are gone (deleted, or their trail files are): this run backfills the calls again.
            report.gone_since_last_run = max(0, held_before.get(table, 0) - report.audited_by_ingest)
            report.gone += report.gone_since_last_run
            # What earlier runs backfilled is audited now; it counts as backfilled, not as ingest's.
            report.audited_by_ingest = max(0, report.audited_by_ingest - report.backfilled)
            report.trail_file_count = len(files[table])
            report.trail_files = sorted(files[table])[:MAX_LISTED]
        return _Wanted(_plain(missing), _plain(altered), _plain(oversized))

    def _backfill(self, day_report: DayReport, wanted: _Wanted, time_left: Callable[[], float]) -> None:
        """Write the trail's records of the missing events, of those whose records contradict the trail, and of those
        too big for the log group (which compaction then keeps instead of any other copy), file by file while time is
        left."""
        for path in sorted(wanted.missing.keys() | wanted.altered.keys() | wanted.oversized.keys()):
            events = wanted.missing.get(path, {})
            contradicted = wanted.altered.get(path, {})
            oversized = wanted.oversized.get(path, {})
            if time_left() < BACKFILL_RESERVE_SECONDS:
                for event_id, tables in events.items():
                    for table in tables:
                        day_report.tables[table].miss(event_id, path, DEFERRED_REASON)
                        day_report.deferred += 1
                day_report.restore_deferred += sum(len(tables) for tables in contradicted.values())
                day_report.refresh_deferred += sum(len(tables) for tables in oversized.values())
                continue
            key = self._trail_key(path)
            if key is None:
                for event_id, tables in events.items():
                    for table in tables:
                        day_report.tables[table].miss(event_id, path, "its file is outside the trail bucket")
                continue
            try:
                trail_events = read_trail_file(self._get(self._trail_bucket, key), self._max_file_bytes)
            except CorruptTrailFileError as exc:
                self._unreadable(day_report, path, str(exc))
                for event_id, tables in events.items():
                    for table in tables:
                        day_report.tables[table].miss(event_id, path, f"its trail file is unreadable: {exc}")
                continue
            rewritten = {**oversized, **contradicted}
            again = {event_id: events.get(event_id, set()) | tables for event_id, tables in rewritten.items()}
            result = backfill_events(trail_events, {**events, **again}, day_report.day)
            for table, lines in sorted(result.lines.items()):
                object_key = backfill_object_key(self._fresh_prefix, table, day_report.day, key)
                earlier = self._backfilled_lines(object_key)  # an earlier run's, if compaction has not folded them
                kept = set(earlier)
                merged = [*earlier, *(line for line in lines if line not in kept)]
                if len(merged) > len(earlier):  # else the object holds them all already
                    self._put(object_key, encode_lines(merged), {"trail-file": path}, "application/gzip")
                report = day_report.tables[table]
                written = result.events[table]
                restored_ids = [event_id for event_id in written if table in contradicted.get(event_id, ())]
                restored = len(restored_ids)
                too_big = [
                    event_id
                    for event_id in written
                    if table in oversized.get(event_id, ()) and table not in contradicted.get(event_id, ())
                ]
                # A call too big for the log group whose trail records wait in the object already is not written again:
                # compaction replaces every other record of it with those when it folds the object in.
                refreshed = sum(any(line not in kept for line in written[event_id]) for event_id in too_big)
                report.backfilled += len(written) - restored - len(too_big)
                report.backfilled_now += len(written) - restored - len(too_big)
                report.restored += restored
                report.restored_now += restored
                report.restored_examples = sorted({*report.restored_examples, *restored_ids})[:MAX_LISTED]
                report.refreshed += refreshed
                if len(report.backfill_objects) < MAX_LISTED:
                    report.backfill_objects.append(object_key)
            for event_id, reason, event in result.refused:
                body = compact_json(event).encode("utf-8", "surrogatepass")
                self._put(quarantine_key(day_report.day, key, event_id), body, {"reason": reason, "trail-file": path})
            for (table, event_id), reason in sorted(result.still_missing.items()):
                if table in events.get(event_id, ()):  # a contradicted call not restored stays counted as altered
                    day_report.tables[table].miss(event_id, path, reason)

    def days_to_run(self, detail: object, now: datetime) -> list[str]:
        """requested_days; a scheduled run (no since or until) then goes on with the unfinished days before its own,
        and last checks again the days reconciled before of recheck_days, so records deleted since are found."""
        days = requested_days(detail, now)
        if isinstance(detail, dict) and {"since", "until"} & detail.keys():
            return days
        again = [day for day in recheck_days(now) if self._summary(day) is not None]
        return days + self.unfinished_days(days[0]) + again

    def unfinished_days(self, before: str, days: int = GO_ON_DAYS) -> list[str]:
        """The days among the `days` before `before` that no run has reconciled (its run failed, or none was due:
        the stack is new), whose last run left calls to backfill, restore or write again (DayReport.deferred,
        restore_deferred, refresh_deferred),
        or restored some (restored_now: checked again once compaction kept the trail's records), oldest first."""
        first = parse_day(before) - timedelta(days=days)
        candidates = [(first + timedelta(days=offset)).isoformat() for offset in range(days)]
        with ThreadPoolExecutor(max_workers=COVERAGE_READS) as pool:
            summaries = list(pool.map(self._summary, candidates))
        return [
            day
            for day, summary in zip(candidates, summaries, strict=True)
            if summary is None
            or sum(
                _count(summary.get(name))
                for name in ("deferred", "restore_deferred", "refresh_deferred", "restored_now")
            )
            > 0
        ]

    def _not_logging(self, day: str, gaps: Sequence[NotLogging]) -> tuple[list[str], dict[str, list[str]]]:
        """The times the trail did not log during `day` (for every table), and those it logged only some audited calls
        of some tables (with a note saying which, under each of those tables): those an earlier run stored, those the
        trail watch kept under the day, and those of `gaps` that overlap it (CloudTrail's status tells only its latest
        stop, so what was once learnt is kept; a stop the status, the watch and the event history each tell is one)."""
        start = datetime.combine(parse_day(day), datetime.min.time(), UTC)
        end = start + timedelta(days=1)
        overlapping = [gap for gap in [*self._watched_gaps(day), *gaps] if gap[0] < end and gap[1] > start]
        found = [logging_gap(since, to) for since, to in join_stops(overlapping)]  # a stop told twice, once
        narrowed: dict[str, list[str]] = {}
        for gap in overlapping:
            if len(gap) == 2:
                continue
            text = f"{logging_gap(gap[0], gap[1])} ({gap[2]})"
            if gap[3] is None:  # every table's calls
                found.append(text)
            for table in gap[3] or ():
                narrowed.setdefault(table, []).append(text)
        summary = self._summary(day) or {}
        earlier, earlier_narrowed = summary.get("not_logging"), summary.get("narrowed")
        whole = _latest_ends([str(gap) for gap in earlier] if isinstance(earlier, list) else [], found)
        for table, kept in earlier_narrowed.items() if isinstance(earlier_narrowed, dict) else ():
            if isinstance(kept, list) and (self._tables is None or table in self._tables):
                narrowed[str(table)] = [*map(str, kept), *narrowed.get(str(table), [])]
        by_table = {table: _latest_ends([], texts) for table, texts in sorted(narrowed.items())[:MAX_GAPS]}
        return whole, by_table

    def _watched_gaps(self, day: str) -> list[tuple[datetime, datetime]]:
        """The times the trail watch saw the trail not logging, kept under `day` (at most MAX_GAPS of them)."""
        gaps = []
        for key in itertools.islice(self._list(self._audit_bucket, f"{GAPS_PREFIX}dt={day}/"), MAX_GAPS):
            try:
                gap = read_gap(self._get(self._audit_bucket, key))
            except (_NotFoundError, CorruptTrailFileError):  # replaced or swollen since listed: no gap it can tell
                continue
            if gap is not None:
                gaps.append(gap)
        return gaps

    def _backfilled_lines(self, key: str) -> list[str]:
        """The lines of a backfill object an earlier run wrote (none when it is gone: compaction folded it in). A
        rewrite keeps them: its trail file may have given other calls then. ReconcileError for an object that is not
        what a run writes: overwriting it could lose what it holds."""
        try:
            body = self._get(self._audit_bucket, key)
        except _NotFoundError:
            return []
        decompressor = zlib.decompressobj(wbits=31)
        try:
            data = decompressor.decompress(body, self._max_file_bytes)
            if decompressor.unconsumed_tail:
                raise ValueError(f"it holds more than {self._max_file_bytes} bytes")
            return data.decode("utf-8").splitlines()
        except (zlib.error, ValueError) as exc:
            raise ReconcileError(
                f"s3://{self._audit_bucket}/{key} is not a backfill object a run wrote: {exc}"
            ) from exc

    def watch_problems(self, now: datetime) -> list[str]:
        """The trail watch's own problem, when it has stopped running (its heartbeat is late) or never ran though an
        earlier night's check did (the summary of the day that night reconciled), logged as an error."""
        heartbeat = self._stored_document(WATCH_HEARTBEAT_KEY)
        checked_before = None
        if heartbeat is None:  # the night before's day: the nightly run reconciles the day before yesterday
            earlier = self._summary((now.astimezone(UTC).date() - timedelta(days=3)).isoformat()) or {}
            checked_before = parse_moment(earlier.get("checked_at"))
        problem = watch_problem(heartbeat, now, checked_before)
        if problem is None:
            return []
        logger.error(problem)
        return [problem]

    def _running_query(self, day: str) -> tuple[str, str] | None:
        """The id of the day's query an earlier run left running, and when that run started; None when there is
        none, or a run since has reconciled the day (its answer is older than the day's report)."""
        document = self._stored_document(running_query_key(day)) or {}
        execution_id, started = document.get("execution_id"), document.get("started_at")
        if (
            not isinstance(execution_id, str)
            or not _EXECUTION_ID.fullmatch(execution_id)
            or not isinstance(started, str)
        ):
            return None
        summary = self._summary(day)
        if summary and str(summary.get("checked_at", "")) >= started:
            return None
        return execution_id, started

    def _summary(self, day: str) -> dict[str, Any] | None:
        """The day's stored summary; None when no run stored one, {} when it cannot be read (it is not taken up)."""
        return self._stored_document(report_key(day))

    def _stored_document(self, key: str) -> dict[str, Any] | None:
        """A JSON object this function stored; None when there is none, {} when it cannot be read as one."""
        try:
            document = json.loads(self._get(self._audit_bucket, key))
        except _NotFoundError:
            return None
        except (ValueError, CorruptTrailFileError):
            logger.warning("s3://%s/%s is unreadable; it is left alone", self._audit_bucket, key)
            return {}
        return document if isinstance(document, dict) else {}

    def _unreadable(self, day_report: DayReport, path: str, reason: str) -> None:
        """A trail file that cannot be read: kept under quarantine/ (when its size allows) and reported."""
        day_report.unreadable_trail_files[path] = reason
        logger.error("trail file %s is unreadable: %s", path, reason)
        key = self._trail_key(path)
        if key is None:
            return
        try:
            body = self._get(self._trail_bucket, key)
        except CorruptTrailFileError:
            return
        self._put(quarantine_key(day_report.day, key), body, {"reason": reason, "trail-file": path})

    def _store_reports(self, day_report: DayReport) -> None:
        for table, report in sorted(day_report.tables.items()):
            self._put(report_key(day_report.day, table), report.to_json(), {}, "application/json")
            counts = {name: value for name, value in vars(report).items() if not isinstance(value, (list, dict))}
            logger.info(f"reconciled {day_report.day} {table}: {report.status}", extra={"reconcile": counts})
        summary = json.dumps(day_report.summary(), indent=1, sort_keys=True).encode()
        self._put(report_key(day_report.day), summary, {}, "application/json")

    def _previous_report(self, day: str, table: str) -> TableReport | None:
        try:
            return TableReport.from_json(self._get(self._audit_bucket, report_key(day, table)))
        except _NotFoundError:
            return None
        except (ValueError, TypeError, CorruptTrailFileError):
            logger.warning("the earlier report of %s %s is unreadable; starting it afresh", day, table)
            return None

    def _list_trail_files(self, window: ReconcileWindow) -> dict[str, list[str]]:
        """The window's trail files (`s3://` paths) by region: every region folder under the trail prefix."""
        by_region: dict[str, list[str]] = {}
        for region_prefix in self._list(self._trail_bucket, self._trail_prefix, delimiter=True):
            region = region_prefix[len(self._trail_prefix) :].strip("/")
            paths = [
                f"s3://{self._trail_bucket}/{key}"
                for date in window.trail_dates()
                for key in self._list(self._trail_bucket, f"{region_prefix}{date}/")
                if key.endswith(".json.gz")
            ]
            if paths:
                by_region[region] = sorted(paths)
        return by_region

    def _trail_key(self, path: str) -> str | None:
        """The key of an `s3://` path in the trail bucket under the trail prefix; None for anything else."""
        bucket_prefix = f"s3://{self._trail_bucket}/"
        if not path.startswith(bucket_prefix):
            return None
        key = path[len(bucket_prefix) :]
        return key if key.startswith(self._trail_prefix) and ".." not in key.split("/") else None

    def _list(self, bucket: str, prefix: str, delimiter: bool = False) -> Iterator[str]:
        """Keys (or, with `delimiter`, the folders) under `prefix`."""
        arguments: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if delimiter:
            arguments["Delimiter"] = "/"
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(**arguments):
                if delimiter:
                    yield from (entry["Prefix"] for entry in page.get("CommonPrefixes", []))
                else:
                    yield from (entry["Key"] for entry in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise ReconcileError(f"listing s3://{bucket}/{prefix} failed: {_reason(exc)}") from exc

    def _get(self, bucket: str, key: str) -> bytes:
        return get_object(self._s3, bucket, key, self._max_file_bytes)

    def _put(self, key: str, body: bytes, metadata: dict[str, str], content_type: str = "application/json") -> None:
        try:
            self._s3.put_object(
                Bucket=self._audit_bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata={name: ascii_metadata(value) for name, value in metadata.items()},
                ChecksumAlgorithm=UPLOAD_CHECKSUM,
            )
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"S3 PutObject to {self._audit_bucket}/{key} failed: {_reason(exc)}") from exc


def _plain(by_file: Mapping[str, Mapping[str, set[str]]]) -> _ByFile:
    return {path: dict(events) for path, events in by_file.items()}


class _NotFoundError(DeutziaError):
    """The object is not there."""


def get_object(s3: S3Client, bucket: str, key: str, max_bytes: int) -> bytes:
    """An object's bytes; _NotFoundError when it is absent, CorruptTrailFileError when it is over `max_bytes`,
    ReconcileError when S3 fails."""
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
        if response["ContentLength"] > max_bytes:
            response["Body"].close()
            raise CorruptTrailFileError(f"it is {response['ContentLength']} bytes, past the bound of {max_bytes}")
        return response["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            raise _NotFoundError(key) from exc
        raise ReconcileError(f"reading s3://{bucket}/{key} failed: {_reason(exc)}") from exc
    except BotoCoreError as exc:
        raise ReconcileError(f"reading s3://{bucket}/{key} failed: {_reason(exc)}") from exc


# Reports read at once by GET /audit/coverage (two small objects per day).
COVERAGE_READS = 16
MAX_REPORT_BYTES = 1024 * 1024


class CoverageReader:
    """GET /audit/coverage's reading: each day's summary and the table's report, as stored by reconciliation."""

    def __init__(self, s3: S3Client, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    @classmethod
    def from_environment(cls) -> CoverageReader:
        return cls(boto3.client("s3"), setting("AUDIT_BUCKET"))

    def read(self, table: str, days: Sequence[str]) -> list[dict[str, Any]]:
        """One entry per day, in order; QueryUnavailableError when the reports cannot be read."""
        with ThreadPoolExecutor(max_workers=COVERAGE_READS) as pool:
            covered = list(pool.map(lambda day: self._day(table, day), days))
        bound_unconfirmed_ids(covered)
        return covered

    def _day(self, table: str, day: str) -> dict[str, Any]:
        summary = self._document(report_key(day))
        report = self._document(report_key(day, table)) if summary is not None else None
        return coverage_of(day, table, summary, report)

    def _document(self, key: str) -> dict[str, Any] | None:
        try:
            document = json.loads(get_object(self._s3, self._bucket, key, MAX_REPORT_BYTES))
        except _NotFoundError:
            return None
        except ReconcileError as exc:
            logger.warning("cannot read the report %s: %s", key, exc)
            raise QueryUnavailableError("the reconciliation reports cannot be read right now") from exc
        except (ValueError, CorruptTrailFileError):
            logger.error("the report %s is not a report", key)
            return None
        return document if isinstance(document, dict) else None


def join_stops(gaps: Sequence[NotLogging]) -> list[tuple[datetime, datetime]]:
    """The stops among `gaps` (those that name no calls), those that overlap joined into one: the trail's status, the
    watch and the event history each tell a stop, at times a second apart."""
    joined: list[tuple[datetime, datetime]] = []
    for since, to in sorted((gap[0], gap[1]) for gap in gaps if len(gap) == 2):
        if joined and since <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], to))
        else:
            joined.append((since, to))
    return joined


def _latest_ends(kept: Sequence[str], found: Sequence[str]) -> list[str]:
    """Each time once, by its start, with the end learnt last (one stop, its latest end); at most MAX_GAPS."""
    by_start = {gap.split(" to ", 1)[0]: gap for gap in [*kept, *found]}
    return list(by_start.values())[:MAX_GAPS]


def _count(value: object) -> int:
    """A stored count; 0 for anything that is not one."""
    return value if type(value) is int else 0


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__
