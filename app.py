"""Deutzia's Chalice app: the Kinesis handler that records DynamoDB calls, and the API that serves their history.

Wiring only: each handler parses, calls one function of `chalicelib`, and maps the result or error. Components
are built on first use, never at import, so tests set their environment (and moto) first.
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from chalice.app import (
    BadRequestError,
    Chalice,
    ChaliceViewError,
    CloudWatchEvent,
    Cron,
    IAMAuthorizer,
    KinesisEvent,
    NotFoundError,
    Rate,
    Response,
    SQSEvent,
)

from chalicelib.config import audit_prefix, audited_tables, flag, setting
from chalicelib.errors import (
    ConfigError,
    DeutziaError,
    InvalidRequestError,
    QueryError,
    QueryTimeoutError,
    QueryTooLargeError,
    QueryUnavailableError,
    UnknownTableError,
)
from chalicelib.ingest import BATCH_SIZE, MAXIMUM_BATCHING_WINDOW_SECONDS, process_kinesis_batch
from chalicelib.query import QueryEngine, parse_audit_request
from chalicelib.reconcile import DayReport, parse_coverage_request
from chalicelib.reconciler import CoverageReader, Reconciler, TrailEngine
from chalicelib.replay import KinesisRangeReader, parse_failure_record, replay_failed_batch
from chalicelib.store import S3AuditStore
from chalicelib.trail_status import WATCH_INTERVAL_MINUTES

if TYPE_CHECKING:
    from chalicelib.table_notes import RecentTableNotes
    from chalicelib.trail_status import RecentTrailCheck

app = Chalice(app_name="deutzia")
logger = Logger(service="deutzia-replay")


class BadGatewayError(ChaliceViewError):
    STATUS_CODE = 502


class ServiceUnavailableError(ChaliceViewError):
    STATUS_CODE = 503


class GatewayTimeoutError(ChaliceViewError):
    STATUS_CODE = 504


# Most specific first: a timeout is also a query error.
_HTTP_ERRORS: tuple[tuple[type[DeutziaError], type[ChaliceViewError]], ...] = (
    (InvalidRequestError, BadRequestError),
    (UnknownTableError, NotFoundError),
    (QueryTimeoutError, GatewayTimeoutError),
    (QueryUnavailableError, ServiceUnavailableError),
    (QueryError, BadGatewayError),
)


def _http_error(error: DeutziaError) -> ChaliceViewError:
    """The HTTP error (Chalice's `{"Code", "Message"}` body) for one of ours; 500 for configuration errors."""
    if isinstance(error, QueryTooLargeError):  # the request must change, as for a malformed one: what to change
        return BadRequestError(f"key, since, until: {error}; give a key, or a narrower since and until")
    for kind, http_error in _HTTP_ERRORS:
        if isinstance(error, kind):
            return http_error(str(error))
    return ChaliceViewError(str(error))


@cache
def get_audit_store() -> S3AuditStore:
    return S3AuditStore.from_environment()


@cache
def get_stream_reader() -> KinesisRangeReader:
    return KinesisRangeReader.from_environment()


def _backend() -> str:
    backend = setting("QUERY_BACKEND", "athena")
    if backend not in ("athena", "duckdb"):
        raise ConfigError(f"environment variable QUERY_BACKEND must be athena or duckdb, not {backend!r}")
    return backend


@cache
def get_query_engine() -> QueryEngine:
    if _backend() == "athena":
        from chalicelib.athena import AthenaQueryRunner

        return AthenaQueryRunner.from_environment()
    from chalicelib.duckdb_engine import DuckDBQueryRunner

    return DuckDBQueryRunner.from_environment()


@cache
def get_trail_engine() -> TrailEngine:
    if _backend() == "athena":
        from chalicelib.athena import AthenaTrailEngine

        return AthenaTrailEngine.from_environment()
    from chalicelib.duckdb_engine import DuckDBTrailEngine

    return DuckDBTrailEngine.from_environment()


@cache
def get_coverage_reader() -> CoverageReader:
    return CoverageReader.from_environment()


@cache
def get_table_notes() -> RecentTableNotes:
    from chalicelib.table_notes import table_notes_of_environment

    return table_notes_of_environment()


@cache
def get_trail_check() -> RecentTrailCheck:
    from chalicelib.trail_status import RecentTrailCheck, check_trail_of_environment

    return RecentTrailCheck(check_trail_of_environment)


def _query_parameters() -> dict[str, list[str]]:
    """The request's query string, every value of every name (a repeated name is refused, not last-wins)."""
    request = app.current_request
    parameters = request.query_params if request is not None else None
    return {name: parameters.getlist(name) for name in parameters} if parameters else {}


@app.route("/health", methods=["GET"])
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.route("/audit", methods=["GET"], authorizer=IAMAuthorizer())
def get_audit() -> dict[str, Any]:
    try:
        query, token = parse_audit_request(_query_parameters(), audited_tables())
        page = get_query_engine().fetch_page(query, token)
    except DeutziaError as exc:
        raise _http_error(exc) from exc
    return {
        "table": query.table,
        "key": None if query.key is None else json.loads(query.key),
        "entries": page.entries,
        "next_token": page.next_token,
    }


@app.route("/", methods=["GET"], authorizer=IAMAuthorizer())
def item_history_page() -> Response:
    """The item-history page: one static file, every asset inline; it calls this API's own routes."""
    from chalicelib.ui import page, page_headers

    return Response(body=page().decode("utf-8"), status_code=200, headers=dict(page_headers()))


@app.route("/tables", methods=["GET"], authorizer=IAMAuthorizer())
def get_tables() -> dict[str, Any]:
    """The audited tables: AUDITED_TABLES, or under `*` every table with records."""
    from chalicelib.catalog import table_names
    from chalicelib.config import compacted_prefix

    try:
        if _query_parameters():
            raise InvalidRequestError("query", "GET /tables takes no parameters")
        store = get_audit_store()
        names = table_names(store.client, store.bucket, [audit_prefix(), compacted_prefix()], audited_tables())
    except DeutziaError as exc:
        raise _http_error(exc) from exc
    return {"tables": names}


@app.route("/audit/coverage", methods=["GET"], authorizer=IAMAuthorizer())
def get_audit_coverage() -> dict[str, Any]:
    """Per day: whether the table's history is verified complete against the trail, backfilled, or not checked; the
    trail's problems now; and what DynamoDB says of the table that no call made (Time to Live, replicas, created)."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import UTC, datetime

    try:
        table, days = parse_coverage_request(_query_parameters(), audited_tables(), datetime.now(UTC).date())
        covered = get_coverage_reader().read(table, days)
    except DeutziaError as exc:
        raise _http_error(exc) from exc
    with ThreadPoolExecutor(max_workers=1) as pool:  # DynamoDB and CloudTrail at once: each has its own time
        table_notes = pool.submit(get_table_notes().notes, table)
        trail_problems = get_trail_check().problems()  # now, whatever the days: calls since a stop are recorded nowhere
        notes = table_notes.result()
    return {
        "table": table,
        "since": days[0],
        "until": days[-1],
        "days": covered,
        "trail_problems": trail_problems,
        "table_notes": notes,
    }


@app.on_kinesis_record(
    stream=setting("AUDIT_STREAM"),
    batch_size=BATCH_SIZE,
    starting_position="TRIM_HORIZON",
    maximum_batching_window_in_seconds=MAXIMUM_BATCHING_WINDOW_SECONDS,
    name="ingest_audit_events",
)
def ingest_audit_events(event: KinesisEvent) -> dict[str, Any]:
    return process_kinesis_batch(event.to_dict(), get_audit_store(), audit_prefix(), flag("REPORT_BATCH_ITEM_FAILURES"))


@app.on_sqs_message(queue=setting("INGEST_FAILURE_QUEUE"), batch_size=1, name="replay_failed_batches")
def replay_failed_batches(event: SQSEvent) -> None:
    """Each on-failure record's range, read back from the stream and ingested; raising keeps the message queued."""
    for message in event:
        batch = parse_failure_record(message.body)
        result = replay_failed_batch(batch, get_stream_reader(), get_audit_store(), audit_prefix())
        logger.info("replayed %s", batch.shard_id, extra={"records": result.records, "lost": result.lost})


# How often compaction runs. The fresh tier, which every lookup reads whole, holds up to twice this of ingest's
# objects: those since the last run, and those it replaced, kept for queries still reading them until the next run
# finds their grace over (COMPACTION_GRACE_SECONDS, 240 s by default: keep it under the interval).
COMPACTION_INTERVAL_MINUTES = 5


@app.schedule(Rate(COMPACTION_INTERVAL_MINUTES, unit=Rate.MINUTES), name="compact_audit_records")
def compact_audit_records(event: CloudWatchEvent) -> dict[str, Any]:
    """Fold fresh records into key-sorted Parquet (open days into day files, closed ones into their month's file),
    as far as time allows; publish how many copies of records it left out for saying something else of their call
    than another copy, or than the trail's own records (ContestedCopiesAlarm: one came through the trail's log group,
    not from CloudTrail)."""
    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    from chalicelib.compactor import CompactionReport, S3Compactor, last_closed_day_now, time_left_of

    metrics = Metrics(namespace="Deutzia", service="deutzia-compaction")
    report = CompactionReport()
    try:
        S3Compactor.from_environment().run(last_closed_day_now(), time_left_of(event.context), report)
    finally:  # a run that fails has written what it contested all the same
        metrics.add_metric(name="ContestedCopies", unit=MetricUnit.Count, value=report.contradicting)
        metrics.flush_metrics()
    return {
        "files": report.files,
        "deferred": len(report.deferred),
        "contested": report.contested,
        "overruled": report.overruled,
        "deleted": report.deleted,
        "waiting": report.waiting,
        "summary": report.summary(),
    }


@app.schedule(Cron(30, 3, "*", "*", "?", "*"), name="reconcile_audit_trail")
def reconcile_audit_trail(event: CloudWatchEvent) -> dict[str, Any]:
    """Reconcile the day before yesterday with the trail's files, backfilling what is missing, then go on with earlier
    days a run left calls deferred in; invoked with `"detail": {"since": "YYYY-MM-DD", "until": "YYYY-MM-DD"}`, those
    days (both included). As far as time allows."""
    from datetime import UTC, datetime

    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    from chalicelib.compactor import time_left_of
    from chalicelib.reconciler import NotLogging, reconcile_day_seconds
    from chalicelib.trail_changes import unlogged_times_of_environment
    from chalicelib.trail_status import check_trail_of_environment

    day_seconds = reconcile_day_seconds()
    reconciler = Reconciler.from_environment(get_trail_engine())
    days = reconciler.days_to_run(event.detail, datetime.now(UTC))
    metrics = Metrics(namespace="Deutzia", service="deutzia-reconcile")
    trail = check_trail_of_environment()  # first: a trail that stopped leaves nothing for the days to show
    problems = [*trail.problems, *reconciler.watch_problems(datetime.now(UTC))]
    # Beside watch_trail's, for the same alarm: a watch that stopped running still leaves this nightly check.
    metrics.add_metric(name="TrailProblems", unit=MetricUnit.Count, value=len(problems))
    metrics.flush_metrics()

    def publish(report: DayReport) -> None:
        for name, value in report.totals().items():
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        metrics.flush_metrics()

    # The times the selectors left audited calls out count as the trail's stops do: the days they overlap lack calls;
    # and so do stops the status no longer tells (only the latest), from the event history.
    not_logging: list[NotLogging] = [*trail.not_logging, *unlogged_times_of_environment(datetime.now(UTC))]
    done, left = reconciler.run_days(days, time_left_of(event.context), day_seconds, not_logging, publish)
    next_since = left[0] if left else None
    return {"days": done, "not_reached": left, "next_since": next_since, "trail_problems": problems}


# The trail's own status is read every few minutes: a trail stopped between two nightly reconciliations raises its
# alarm within minutes, not the next night.
@app.schedule(Rate(WATCH_INTERVAL_MINUTES, unit=Rate.MINUTES), name="watch_trail")
def watch_trail(event: CloudWatchEvent) -> dict[str, Any]:
    """Ask CloudTrail whether the trail logs and delivers (GetTrailStatus on TRAIL_ARN), and does what the audit
    needs of it, and its event history whether its selectors left audited calls out between two runs; publish how
    many problems it has (`TrailProblems`, for TrailProblemsAlarm), name them and who made the changes behind them
    (the history's latest StopLogging, UpdateTrail, PutEventSelectors or DeleteTrail on the trail), and keep the
    time it did not log under each recent day it overlaps, for reconciliation (CloudTrail forgets a stop once
    another follows); and when it ran, so that the nightly run names a watch that stopped running."""
    from datetime import UTC, datetime

    from aws_lambda_powertools import Metrics
    from aws_lambda_powertools.metrics import MetricUnit

    from chalicelib.trail_changes import trail_history_of_environment
    from chalicelib.trail_status import WATCH_HEARTBEAT_KEY, check_trail_of_environment, gap_records, watch_heartbeat

    trail = check_trail_of_environment()
    now = datetime.now(UTC)
    history = trail_history_of_environment(trail.causes, now, trail.not_logging)
    problems = trail.problems + history.windows
    metrics = Metrics(namespace="Deutzia", service="deutzia-trail")
    metrics.add_metric(name="TrailProblems", unit=MetricUnit.Count, value=len(problems))
    metrics.flush_metrics()
    store = get_audit_store()
    for key, body in gap_records(trail.not_logging, now).items():  # for the days' reconciliation
        store.put_json(key, body)
    store.put_json(WATCH_HEARTBEAT_KEY, watch_heartbeat(now))
    return {"trail_problems": problems, **({"trail_changes": history.changes} if history.changes else {})}
