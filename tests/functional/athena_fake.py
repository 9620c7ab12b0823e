"""An Athena client that really runs the SQL it is given, on DuckDB over the same S3 objects.

moto's Athena runs no SQL; this fills exactly that gap for the shared contract suite, so the Athena runner's
SQL, parameters and paging are checked against real results. Each SQL text must be Athena's own, and runs as sqlglot
translates it to DuckDB's dialect (tests/athena_sql.py); the catalog's tables, named bare or as `"deutzia"."name"`, are
each tier's records and the trail's files. It answers in Athena's shapes: a header row on the first page, every value
as VarCharValue text, at most 1000 rows a page.
"""

from __future__ import annotations

import itertools
from typing import Any

from botocore.exceptions import ClientError
from pyarrow import fs as pafs

from chalicelib.duckdb_engine import AuditObjects, TrailFiles, connect, s3_filesystem
from chalicelib.query import Relations, build_view_sql
from tests.athena_sql import as_duckdb, athena_problems

DATABASE = "deutzia"
WORKGROUP = "deutzia-test"

_ids = itertools.count()
# The tables Athena's catalog holds, as this client registers them.
_CATALOG = {name: f"catalog_{name}" for name in ("audit_compacted", "audit_fresh", "audit", "cloudtrail_logs")}


def _from_literal(literal: str) -> str | int:
    if literal.startswith("'") and literal.endswith("'"):
        return literal[1:-1].replace("''", "'")
    return int(literal)


def _text(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"VarCharValue": "true" if value else "false"}
    return {"VarCharValue": str(value)}


class DuckDBAthenaClient:
    """StartQueryExecution, GetQueryExecution, GetQueryResults and StopQueryExecution, executed on DuckDB."""

    def __init__(self, bucket: str, endpoint_url: str, trail_bucket: str | None = None) -> None:
        self._connection = connect()
        filesystem = s3_filesystem(endpoint_url)
        self._objects = AuditObjects(filesystem, bucket, "audit/", "compacted/")
        self._trail = TrailFiles(filesystem)
        self._trail_bucket = trail_bucket
        self._filesystem = filesystem
        self.executions: dict[str, dict[str, Any]] = {}
        self.stopped: list[str] = []
        # How many times a new execution answers RUNNING before its result (a query that takes a while): every one,
        # or one given a parameter of `slow_parameters` (`"'2024-05-01'"`, as Athena takes it).
        self.running_polls = 0
        self.slow_parameters: dict[str, int] = {}

    def start_query_execution(self, QueryString: str, WorkGroup: str, ExecutionParameters: list[str]) -> Any:
        assert all(1 <= len(literal) <= 1024 for literal in ExecutionParameters), "Athena refuses such parameters"
        execution_id = f"fake-{next(_ids)}"
        parameters = [_from_literal(literal) for literal in ExecutionParameters]
        # Athena finds the tables in its catalog; here each catalog name stands for every record of its tier.
        cursor = self._connection.cursor()
        tiers = self._objects.read()
        cursor.register("catalog_audit_compacted", tiers.compacted)
        cursor.register("catalog_audit_fresh", tiers.fresh)
        view = build_view_sql(Relations(f'"{DATABASE}"."audit_compacted"', f'"{DATABASE}"."audit_fresh"'))
        cursor.execute(f"CREATE TEMPORARY VIEW catalog_audit AS {as_duckdb(view, _CATALOG)}")
        if self._trail_bucket is not None:
            # Partition projection: every file under the trail bucket's AWSLogs/ is a row source; unreadable files
            # fail the query here, as they fail Athena's.
            selector = pafs.FileSelector(f"{self._trail_bucket}/AWSLogs", recursive=True, allow_not_found=True)
            paths = [f"s3://{info.path}" for info in self._filesystem.get_file_info(selector) if info.is_file]
            trail, unreadable = self._trail.read(paths)
            if unreadable:
                path, reason = next(iter(unreadable.items()))
                self.executions[execution_id] = {
                    "QueryExecutionId": execution_id,
                    "Query": QueryString,
                    "ExecutionParameters": ExecutionParameters,
                    "WorkGroup": WorkGroup,
                    "Status": {"State": "FAILED", "StateChangeReason": f"HIVE_CURSOR_ERROR: {path}: {reason}"},
                }
                return {"QueryExecutionId": execution_id}
            cursor.register("catalog_cloudtrail_logs", trail)
        problems = athena_problems(QueryString)
        assert not problems, f"Athena would not run {QueryString!r}: {problems}"
        cursor.execute(as_duckdb(QueryString, _CATALOG), parameters)
        columns = [description[0] for description in cursor.description]
        rows = cursor.fetchall()
        status = {"State": "SUCCEEDED"}
        self.executions[execution_id] = {
            "QueryExecutionId": execution_id,
            "Query": QueryString,
            "ExecutionParameters": ExecutionParameters,
            "WorkGroup": WorkGroup,
            "Status": status,
            "columns": columns,
            "rows": rows,
            "polls_left": next(
                (polls for given, polls in self.slow_parameters.items() if given in ExecutionParameters),
                self.running_polls,
            ),
        }
        return {"QueryExecutionId": execution_id}

    def get_query_execution(self, QueryExecutionId: str) -> Any:
        if QueryExecutionId not in self.executions:
            error = {"Error": {"Code": "InvalidRequestException", "Message": "QueryExecution was not found"}}
            raise ClientError(error, "GetQueryExecution")
        execution = self.executions[QueryExecutionId]
        shown = {k: v for k, v in execution.items() if k not in ("columns", "rows", "polls_left")}
        if execution.get("polls_left"):
            execution["polls_left"] -= 1
            shown["Status"] = {"State": "RUNNING"}
        return {"QueryExecution": shown}

    def get_query_results(self, QueryExecutionId: str, MaxResults: int, NextToken: str | None = None) -> Any:
        assert 1 <= MaxResults <= 1000, "Athena refuses MaxResults outside 1..1000"
        execution = self.executions[QueryExecutionId]
        assert not execution.get("polls_left"), "Athena has no results of a query still running"
        header = [{"Data": [{"VarCharValue": name} for name in execution["columns"]]}]
        rows = header + [{"Data": [_text(value) for value in row]} for row in execution["rows"]]
        start = int(NextToken) if NextToken else 0
        end = start + MaxResults
        response: dict[str, Any] = {"ResultSet": {"Rows": rows[start:end]}}
        if end < len(rows):
            response["NextToken"] = str(end)
        return response

    def stop_query_execution(self, QueryExecutionId: str) -> Any:
        self.stopped.append(QueryExecutionId)
        return {}
