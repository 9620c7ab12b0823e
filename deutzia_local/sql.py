"""Ad hoc SQL over the local audit records: DuckDB with the relations Athena has (`audit`, the view over both tiers
that users query, the tiers `audit_compacted` and `audit_fresh`, and the raw trail `cloudtrail_logs`, read only when
a query names it), over the same S3 objects the API reads.
Read-only: the connection can touch no file (no COPY TO, ATTACH, EXPORT or extension install) and cannot be
reconfigured; results travel as Arrow, so every type prints.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
from pyarrow import fs as pafs

from chalicelib.duckdb_engine import AuditObjects, TrailFiles, connect, s3_filesystem
from chalicelib.errors import QueryError
from chalicelib.query import Relations, build_view_sql
from chalicelib.shown import visible_text
from deutzia_local.settings import LocalSettings
from deutzia_local.stack import require_running

_MAX_WIDTH = 60


def run_sql(settings: LocalSettings, query: str) -> str:
    """The query's result as an aligned text table; QueryError with DuckDB's message when it fails."""
    result = sql_result(settings, query)
    if result is None:
        return "ok"
    rows = [[_cell(row[name]) for name in result.column_names] for row in result.to_pylist()]
    return format_table(result.column_names, rows) + f"\n({len(rows)} row{'s' if len(rows) != 1 else ''})"


def sql_result(settings: LocalSettings, query: str) -> pa.Table | None:
    """The query's result as Arrow (None for a statement without one); QueryError with DuckDB's message."""
    if not query.strip():
        raise QueryError('no SQL given: make sql Q="select ... from audit"')
    require_running(settings, api=False)
    connection = connect()
    tiers = AuditObjects.from_environment(settings.aws_endpoint).read()
    connection.register("audit_compacted", tiers.compacted)
    connection.register("audit_fresh_objects", tiers.fresh)
    # Athena's `"$path"` is hidden from `select *`; the fresh rows carry it here as a column of their own.
    connection.execute('CREATE VIEW audit_fresh AS SELECT * EXCLUDE ("$path") FROM audit_fresh_objects')
    connection.execute(f"CREATE VIEW audit AS {build_view_sql(Relations('audit_compacted', 'audit_fresh'))}")
    if "cloudtrail_logs" in query.lower():
        connection.register("cloudtrail_logs", _trail(settings))
    try:
        relation = connection.sql(query)
        result = relation.to_arrow_table() if relation is not None else None
    except duckdb.Error as exc:
        raise QueryError(f"SQL failed: {exc}") from exc
    return result


def _trail(settings: LocalSettings) -> pa.Table:
    """Every event in the local trail's files, as rows of Athena's CloudTrail table (unreadable files left out)."""
    filesystem = s3_filesystem(settings.aws_endpoint)
    selector = pafs.FileSelector(f"{settings.trail_bucket}/AWSLogs", recursive=True, allow_not_found=True)
    paths = [f"s3://{info.path}" for info in filesystem.get_file_info(selector) if info.is_file]
    rows, _unreadable = TrailFiles(filesystem).read([path for path in paths if "/CloudTrail/" in path])
    return rows


def _cell(value: object) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= _MAX_WIDTH else text[: _MAX_WIDTH - 1] + "…"


def format_table(columns: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, with a rule under the header; every cell as text that cannot act on a
    terminal (`visible_text`)."""
    columns = [visible_text(column) for column in columns]
    rows = [[visible_text(cell) for cell in row] for row in rows]
    widths = [max([len(column)] + [len(row[i]) for row in rows]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
