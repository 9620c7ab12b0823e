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
from deutzia_local.settings import LocalSettings
from deutzia_local.stack import require_running


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
