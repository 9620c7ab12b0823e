"""`deutzia sql`: ad hoc SQL on the relation `audit` (and the trail's `cloudtrail_logs`), by Athena in the deployment's
workgroup, or by DuckDB over the local stack. Either way the answer is column names and rows of text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from deutzia_cli.api import DENIED, UNAVAILABLE, USAGE, CliError

_FIRST_POLL_SECONDS = 0.2
_MAX_POLL_SECONDS = 2.0
MAX_ROWS = 100_000


@dataclass(frozen=True)
class SqlAnswer:
    columns: list[str]
    rows: list[list[str | None]]
    scanned_bytes: int | None = None


def local_sql(query: str) -> SqlAnswer:
    """The query on the local stack's DuckDB (`make sql`'s relations)."""
    from chalicelib.errors import DeutziaError, QueryError
    from deutzia_local.settings import LocalSettings
    from deutzia_local.sql import sql_result

    settings = LocalSettings.from_environment()
    settings.apply_to_environment()
    try:
        result = sql_result(settings, query)
    except QueryError as exc:
        raise CliError(str(exc), USAGE) from None
    except DeutziaError as exc:
        raise CliError(str(exc), UNAVAILABLE) from None
    if result is None:
        return SqlAnswer([], [])
    rows = [
        [None if row[name] is None else str(row[name]) for name in result.column_names] for row in result.to_pylist()
    ]
    return SqlAnswer(list(result.column_names), rows)


def athena_sql(client: object, workgroup: str, database: str, query: str, progress: Callable[[str], None]) -> SqlAnswer:
    """The query run by Athena in `workgroup`, polled until it ends (`progress` hears its state)."""
    athena = client  # an Athena client; typed loosely so tests can stub it
    try:
        execution_id = athena.start_query_execution(  # type: ignore[attr-defined]
            QueryString=query, WorkGroup=workgroup, QueryExecutionContext={"Database": database}
        )["QueryExecutionId"]
        delay = _FIRST_POLL_SECONDS
        while True:
            execution = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]  # type: ignore[attr-defined]
            state = execution["Status"]["State"]
            scanned = execution.get("Statistics", {}).get("DataScannedInBytes")
            progress(f"Athena query {execution_id}: {state.lower()}, {scanned or 0:,} bytes scanned")
            if state == "SUCCEEDED":
                break
            if state in ("FAILED", "CANCELLED"):
                reason = execution["Status"].get("StateChangeReason", "no reason given")
                raise CliError(f"Athena query {execution_id} {state.lower()}: {reason}", USAGE)
            time.sleep(delay)
            delay = min(delay * 2, _MAX_POLL_SECONDS)
        columns: list[str] = []
        rows: list[list[str | None]] = []
        for page in athena.get_paginator("get_query_results").paginate(QueryExecutionId=execution_id):  # type: ignore[attr-defined]
            result_rows = page["ResultSet"]["Rows"]
            if not columns:
                columns = [column["Name"] for column in page["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]]
                result_rows = result_rows[1:]  # the header row
            rows += [[cell.get("VarCharValue") for cell in row["Data"]] for row in result_rows]
            if len(rows) >= MAX_ROWS:
                progress(f"the first {MAX_ROWS:,} rows; the rest is in the workgroup's results bucket")
                break
        return SqlAnswer(columns, rows[:MAX_ROWS], scanned)
    except NoCredentialsError:
        raise CliError("no AWS credentials found: run `aws configure` or pass --profile", DENIED) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = DENIED if error.get("Code") == "AccessDeniedException" else UNAVAILABLE
        raise CliError(f"Athena: {error.get('Code')}: {error.get('Message', '')}", code) from None
    except BotoCoreError as exc:
        raise CliError(f"cannot reach Athena: {exc}", UNAVAILABLE) from None
