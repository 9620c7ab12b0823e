"""GET /audit and reconciliation on Athena: runs the shared SQL with ExecutionParameters, waits under a deadline,
pages results.

The only module that talks to Athena. For one item's history, a page token carries the query execution id and
Athena's own token, so later pages read the same results instead of running the query again; the execution is
checked to be this query's before its results are served. A query without a key reads back from its newest end, a
window of days at a time (`search_windows`), each window a query of its own that stops at the page's size, and its
token is the position of the last entry given: a table's latest entries scan their days, not the table's history.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import boto3
from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from chalicelib.config import number, setting
from chalicelib.errors import (
    ConfigError,
    InvalidRequestError,
    QueryError,
    QueryStillRunningError,
    QueryTimeoutError,
    QueryTooLargeError,
    QueryUnavailableError,
)
from chalicelib.query import (
    ENTRY_COLUMNS,
    AuditPage,
    AuditQuery,
    PageToken,
    Position,
    Relations,
    SqlValue,
    build_audit_sql,
    collect_page,
    encode_page_token,
    entries_that_fit,
    row_to_entry,
    until_page_is_full,
)
from chalicelib.reconcile import ReconcileRelations, ReconcileWindow, build_reconcile_sql, read_tally
from chalicelib.reconciler import RECONCILE_TIMEOUT_SECONDS, EngineResult

if TYPE_CHECKING:
    from mypy_boto3_athena import AthenaClient
    from mypy_boto3_athena.type_defs import DatumTypeDef, GetQueryResultsInputTypeDef

_Response = TypeVar("_Response")
logger = logging.getLogger("deutzia.athena")

# API Gateway gives a request 29 s; the answer must leave it in time.
DEFAULT_TIMEOUT_SECONDS = 25.0
_ATHENA_MAX_RESULTS = 1000
# What one GetQueryResults answer is asked to hold at most, by the largest row seen so far (the first answer: a few
# hundred rows). A caller can make each of their calls' rows hundreds of KB (parameters, names and texts, each at its
# bound): 1,000 of those read at once would take most of the API function's memory.
_RESULTS_BUDGET_BYTES = 32 * 1024 * 1024
_FIRST_RESULTS = 200
_FIRST_POLL_SECONDS = 0.1
_MAX_POLL_SECONDS = 1.0
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_]{1,255}$")
# How Athena reports a listed object that is gone when it is read.
# Athena's reason for a query that passed the workgroup's BytesScannedCutoffPerQuery ("Bytes scanned limit was
# exceeded"), in whichever case and state (CANCELLED, or FAILED) it comes.
_SCAN_LIMIT_SIGN = "bytes scanned limit"
_VANISHED_FILE_SIGNS = ("HIVE_CANNOT_OPEN_SPLIT", "HIVE_FILE_NOT_FOUND", "NoSuchKey", "does not exist")
# The states of an execution a later call may still wait for, or read.
_GOING_ON = frozenset({"QUEUED", "RUNNING", "SUCCEEDED"})
_THROTTLING_CODES = frozenset({"TooManyRequestsException", "ThrottlingException", "ServiceUnavailable"})


def athena_literal(value: SqlValue) -> str:
    """A value as Athena's ExecutionParameters want it: strings quoted, with `'` doubled."""
    if isinstance(value, int):
        return str(value)
    return "'" + value.replace("'", "''") + "'"


class AthenaWorkgroup:
    """Runs statements in one Athena workgroup: starts one with its ExecutionParameters, waits for it within a
    deadline (stopping it past that, or leaving it running for a later call to read), and maps Athena's errors to
    ours, with reasons logged, never answered."""

    def __init__(
        self,
        client: AthenaClient,
        workgroup: str,
        timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._workgroup = workgroup
        self._timeout = timeout_seconds
        self._clock = clock
        self._sleep = sleep

    def _start(self, sql: str, execution_parameters: list[str]) -> str:
        response = self._call(
            "StartQueryExecution",
            lambda: self._client.start_query_execution(
                QueryString=sql, WorkGroup=self._workgroup, ExecutionParameters=execution_parameters
            ),
        )
        return response["QueryExecutionId"]

    def _run(
        self, sql: str, execution_parameters: list[str], deadline: float, running: str | None = None, stop: bool = True
    ) -> str:
        """Start the statement (or, `running`, wait for that execution of it) and wait for it; its execution id once
        it succeeded. Past the deadline it is stopped, or with `stop` False left running (QueryStillRunningError)."""
        execution_id = running or self._start(sql, execution_parameters)
        try:
            self._wait(execution_id, deadline, stop)
        except _FileVanishedError:  # compaction swapped an audit object under the query: its rows are in the new one
            execution_id = self._start(sql, execution_parameters)
            self._wait(execution_id, deadline, stop)
        return execution_id

    def _rows(self, execution_id: str) -> Iterator[list[str | None]]:
        """Every result row's values, after the header row, read as the caller takes them, each answer sized by the
        rows before it (`_results_wanted`)."""
        token: str | None = None
        header_pending = True
        largest = 0
        while True:
            arguments: GetQueryResultsInputTypeDef = {
                "QueryExecutionId": execution_id,
                "MaxResults": _results_wanted(largest),
            }
            if token is not None:
                arguments["NextToken"] = token
            response = self._call("GetQueryResults", functools.partial(self._client.get_query_results, **arguments))
            rows = response.get("ResultSet", {}).get("Rows", [])
            if header_pending and rows:
                rows, header_pending = rows[1:], False
            for row in rows:
                values = _row_values(row.get("Data", []))
                largest = max(largest, _row_bytes(values))
                yield values
            token = response.get("NextToken")
            if not token:
                return

    def _wait(self, execution_id: str, deadline: float, stop: bool = True) -> None:
        delay = _FIRST_POLL_SECONDS
        while True:
            execution = self._call(
                "GetQueryExecution", lambda: self._client.get_query_execution(QueryExecutionId=execution_id)
            )["QueryExecution"]
            status = execution.get("Status", {})
            state = status.get("State")
            if state == "SUCCEEDED":
                return
            if state in ("FAILED", "CANCELLED"):
                # The reason can name buckets, paths and tables: it goes to the log, the caller gets the id.
                reason = str(status.get("StateChangeReason", ""))
                logger.error("Athena query %s %s: %s", execution_id, state.lower(), reason)
                if _SCAN_LIMIT_SIGN in reason.lower():
                    raise QueryTooLargeError(
                        f"Athena cancelled query {execution_id} at its workgroup's scan limit "
                        "(BytesScannedCutoffPerQuery)"
                    )
                if any(sign in reason for sign in _VANISHED_FILE_SIGNS):
                    raise _FileVanishedError(f"Athena query {execution_id} failed; retry later")
                if status.get("AthenaError", {}).get("Retryable"):
                    raise QueryUnavailableError(f"Athena query {execution_id} failed; retry later")
                raise QueryError(f"Athena query {execution_id} {state.lower()}; its reason is in the function's log")
            remaining = deadline - self._clock()
            if remaining <= 0:
                late = f"Athena query {execution_id} did not finish within {self._timeout:g} s"
                if not stop:
                    raise QueryStillRunningError(f"{late}; it goes on", execution_id)
                self._stop(execution_id)
                raise QueryTimeoutError(late)
            self._sleep(min(delay, remaining))
            delay = min(delay * 2, _MAX_POLL_SECONDS)

    def _state_of(self, execution_id: str, sql: str, execution_parameters: list[str]) -> str | None:
        """The state of an execution that ran exactly this statement in this workgroup; "OTHER" for one that ran
        another, None when Athena knows no execution of that id."""
        try:
            execution = self._client.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRequestException":
                return None
            raise self._engine_error("GetQueryExecution", exc) from exc
        except BotoCoreError as exc:
            raise self._engine_error("GetQueryExecution", exc) from exc
        same_query = (
            execution.get("Query") == sql
            and list(execution.get("ExecutionParameters", [])) == execution_parameters
            and execution.get("WorkGroup", self._workgroup) == self._workgroup
        )
        return str(execution.get("Status", {}).get("State")) if same_query else "OTHER"

    def _stop(self, execution_id: str) -> None:
        # Best effort: the query is abandoned either way, and the workgroup's own limits end it.
        with contextlib.suppress(ClientError, BotoCoreError):
            self._client.stop_query_execution(QueryExecutionId=execution_id)

    def _call(self, operation: str, call: Callable[[], _Response]) -> _Response:
        try:
            return call()
        except (ClientError, BotoCoreError) as exc:
            raise self._engine_error(operation, exc) from exc

    @staticmethod
    def _engine_error(operation: str, exc: Exception) -> QueryError:
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "Unknown")
            message = exc.response.get("Error", {}).get("Message", "")
            if code in _THROTTLING_CODES:
                return QueryUnavailableError(f"Athena {operation} throttled: {code}")
            logger.error("Athena %s failed: %s: %s", operation, code, message)
            return QueryError(f"Athena {operation} failed: {code}")
        if isinstance(exc, ParamValidationError):  # refused before it was sent: a request Athena would never take
            logger.error("Athena %s refused the request: %s", operation, exc)
            return QueryError(f"Athena {operation} refused the request")
        return QueryUnavailableError(f"Athena {operation} unreachable: {type(exc).__name__}")


class AthenaQueryRunner(AthenaWorkgroup):
    """QueryEngine on Athena, in one workgroup, over `"<database>"."<table>"`."""

    def __init__(
        self,
        client: AthenaClient,
        workgroup: str,
        database: str,
        table: str = "audit",
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for variable, name in (("ATHENA_DATABASE", database), ("ATHENA_TABLE", table)):
            if not _IDENTIFIER.match(name):
                raise ConfigError(f"environment variable {variable} is not an Athena identifier: {name!r}")
        super().__init__(client, workgroup, timeout_seconds, clock, sleep)
        # The relation users query is a view over two tiers; GET /audit reads the tiers themselves, so that each is
        # pruned by its own partitions (Athena does not push a key filter through the view's de-duplication).
        self._relations = Relations(
            compacted=f'"{database}"."{table}_compacted"', fresh=f'"{database}"."{table}_fresh"'
        )

    @classmethod
    def from_environment(cls) -> AthenaQueryRunner:
        """A runner configured by ATHENA_WORKGROUP, ATHENA_DATABASE, ATHENA_TABLE and QUERY_TIMEOUT_SECONDS."""
        return cls(
            boto3.client("athena"),
            workgroup=setting("ATHENA_WORKGROUP"),
            database=setting("ATHENA_DATABASE"),
            table=setting("ATHENA_TABLE", "audit"),
            timeout_seconds=number("QUERY_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS),
        )

    def fetch_page(self, query: AuditQuery, token: PageToken | None) -> AuditPage:
        deadline = self._clock() + self._timeout
        if query.key is None:  # read back in windows, each its own query, resumed by position
            if token is not None and token.after is None:
                raise InvalidRequestError("next_token", "is not a token of this query engine")
            return collect_page(
                query,
                token,
                lambda window, after, limit: self._entries(window, after, limit, deadline),
                datetime.now(UTC),
            )
        sql, parameters = build_audit_sql(query, self._relations)
        execution_parameters = [athena_literal(value) for value in parameters]
        if token is None:
            execution_id = self._run(sql, execution_parameters, deadline)
        else:
            execution_id = self._resume(token, sql, execution_parameters)
        return self._read_page(query, execution_id, token)

    def _entries(
        self, query: AuditQuery, after: Position | None, limit: int, deadline: float
    ) -> list[dict[str, object]]:
        """At most `limit` entries of `query` after the position `after`, newest first, by `deadline`."""
        sql, parameters = build_audit_sql(query, self._relations, after=after, limit=limit)
        execution_id = self._run(sql, [athena_literal(value) for value in parameters], deadline)
        return until_page_is_full(
            row_to_entry(dict(zip(ENTRY_COLUMNS, values, strict=True))) for values in self._rows(execution_id)
        )

    def _resume(self, token: PageToken, sql: str, execution_parameters: list[str]) -> str:
        """The execution a page token names, after checking it ran exactly this query."""
        if token.execution_id is None or (token.athena_token is None and not token.skip):
            raise InvalidRequestError("next_token", "is not a token of this query engine")
        state = self._state_of(token.execution_id, sql, execution_parameters)
        if state is None:
            raise InvalidRequestError("next_token", "names a query Athena does not know")
        if state != "SUCCEEDED":
            raise InvalidRequestError("next_token", "does not belong to this query")
        return token.execution_id

    def _read_page(self, query: AuditQuery, execution_id: str, start: PageToken | None) -> AuditPage:
        """Up to `query.limit` rows from `start` on, reading more than once when Athena's page is smaller, and
        stopping early when the next row would not fit in the answer; the next page resumes at the first row not
        given (Athena's token of the rows it is among, and how many of those this page gave)."""
        entries: list[dict[str, object]] = []
        token, skip = (start.athena_token, start.skip) if start else (None, 0)
        largest = 0
        while True:
            header = token is None  # the result set starts with a header row
            wanted = max(skip + 1 + header, _results_wanted(largest))  # the rows given before are read again
            arguments: GetQueryResultsInputTypeDef = {
                "QueryExecutionId": execution_id,
                "MaxResults": min(skip + query.limit - len(entries) + header, wanted, _ATHENA_MAX_RESULTS),
            }
            if token is not None:
                arguments["NextToken"] = token
            response = self._call("GetQueryResults", functools.partial(self._client.get_query_results, **arguments))
            rows = [_row_values(row.get("Data", [])) for row in response.get("ResultSet", {}).get("Rows", [])[header:]]
            largest = max([largest, *map(_row_bytes, rows)])
            given = len(entries)
            entries += [row_to_entry(dict(zip(ENTRY_COLUMNS, values, strict=True))) for values in rows[skip:]]
            fitting = entries_that_fit(entries)
            if fitting < len(entries):
                resume = PageToken(query.fingerprint(), execution_id, token, skip=skip + fitting - given)
                return AuditPage(entries[:fitting], encode_page_token(resume))
            skip, token = 0, response.get("NextToken")
            if not token or len(entries) >= query.limit:
                break
        next_token = None
        if token:
            next_token = encode_page_token(PageToken(query.fingerprint(), execution_id, token))
        return AuditPage(entries, next_token)


class _FileVanishedError(QueryUnavailableError):
    """An object the query listed was gone when read (compaction swapped it); running the query again works."""


def _row_values(data: Sequence[DatumTypeDef]) -> list[str | None]:
    return [cell.get("VarCharValue") for cell in data]


def _row_bytes(values: Sequence[str | None]) -> int:
    return sum(len(value) for value in values if value is not None)


def _results_wanted(largest_row: int) -> int:
    """How many rows to ask GetQueryResults for: _FIRST_RESULTS before any row is seen, then as many as
    _RESULTS_BUDGET_BYTES holds of the largest row seen so far, from 1 to Athena's 1,000."""
    if not largest_row:
        return _FIRST_RESULTS
    return max(1, min(_ATHENA_MAX_RESULTS, _RESULTS_BUDGET_BYTES // largest_row))


# A reconcile query reads a day of the trail: minutes, not the API's seconds.


class AthenaTrailEngine(AthenaWorkgroup):
    """TrailEngine on Athena: the reconcile SQL over the CloudTrail table and the audit records' two tiers, with
    partition projection choosing the days' trail files (the listed files are not needed)."""

    name = "athena"

    def __init__(
        self,
        client: AthenaClient,
        workgroup: str,
        database: str,
        trail_table: str = "cloudtrail_logs",
        audit_table: str = "audit",
        timeout_seconds: float = RECONCILE_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        names = (("ATHENA_DATABASE", database), ("ATHENA_TRAIL_TABLE", trail_table), ("ATHENA_TABLE", audit_table))
        for variable, name in names:
            if not _IDENTIFIER.match(name):
                raise ConfigError(f"environment variable {variable} is not an Athena identifier: {name!r}")
        super().__init__(client, workgroup, timeout_seconds, clock, sleep)
        self._relations = ReconcileRelations(
            trail=f'"{database}"."{trail_table}"',
            compacted=f'"{database}"."{audit_table}_compacted"',
            fresh=f'"{database}"."{audit_table}_fresh"',
        )

    @classmethod
    def from_environment(cls) -> AthenaTrailEngine:
        """An engine configured by ATHENA_WORKGROUP, ATHENA_DATABASE, ATHENA_TRAIL_TABLE, ATHENA_TABLE and
        RECONCILE_QUERY_TIMEOUT_SECONDS."""
        return cls(
            boto3.client("athena"),
            workgroup=setting("ATHENA_WORKGROUP"),
            database=setting("ATHENA_DATABASE"),
            trail_table=setting("ATHENA_TRAIL_TABLE", "cloudtrail_logs"),
            audit_table=setting("ATHENA_TABLE", "audit"),
            timeout_seconds=number("RECONCILE_QUERY_TIMEOUT_SECONDS", RECONCILE_TIMEOUT_SECONDS),
        )

    def tally(self, window: ReconcileWindow, trail_files: Sequence[str], running: str | None = None) -> EngineResult:
        """The window's tallies. A query past the timeout is left running (QueryStillRunningError names it), and a
        later call given its id as `running` waits for it, or reads its answer, instead of starting it again: a day
        whose query takes longer than one run is reconciled by the next. An id that is not this query's, or of one
        that failed, is not taken: the query starts afresh."""
        sql, parameters = build_reconcile_sql(window, self._relations)
        execution_parameters = [athena_literal(value) for value in parameters]
        if running is not None and self._state_of(running, sql, execution_parameters) not in _GOING_ON:
            running = None
        execution_id = self._run(sql, execution_parameters, self._clock() + self._timeout, running, stop=False)
        return EngineResult([read_tally(values) for values in self._rows(execution_id)])
