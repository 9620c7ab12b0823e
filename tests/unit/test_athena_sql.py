"""Every SQL text Deutzia gives Athena is Athena's own (tests/athena_sql.py): GET /audit's under any filters, the
`audit` view's, reconciliation's; the check itself refuses what Athena would not run; and the local engine keeps
Athena's time zone."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.query import OPERATIONS, AuditQuery, Relations, build_audit_sql, build_view_sql
from chalicelib.reconcile import ReconcileRelations, ReconcileWindow, build_reconcile_sql
from tests.athena_sql import as_duckdb, athena_problems

RELATIONS = Relations('"deutzia"."audit_compacted"', '"deutzia"."audit_fresh"')
_TIMES = st.sampled_from([None, "2026-01-01T00:00:00Z", "2026-11-30T09:30:00Z"])


_QUERIES = st.builds(
    AuditQuery,
    table=st.just("Music"),
    key=st.sampled_from([None, '{"id":"42"}']),
    since=_TIMES,
    until=_TIMES,
    principal=st.sampled_from([None, "arn:aws:iam::123456789012:user/alice", "AKIAIOSFODNN7EXAMPLE"]),
    operation=st.sampled_from([None, *OPERATIONS]),
    result=st.sampled_from([None, "ok", "failed", "denied", "ConditionalCheckFailedException"]),
    source_ip=st.sampled_from([None, "203.0.113.7", "203.0.113.0/24", "10.0.0.0/8", "0.0.0.0/0", "2001:db8::1"]),
)


@given(
    query=_QUERIES,
    after=st.sampled_from([None, ("2026-11-30T09:30:00Z", "e1", 0)]),
    limit=st.sampled_from([None, 1, 1000]),
)
@settings(max_examples=60, deadline=None)
def test_get_audits_sql_is_athenas_under_any_filters(
    query: AuditQuery, after: tuple[str, str, int] | None, limit: int | None
) -> None:
    sql, _ = build_audit_sql(query, RELATIONS, after=after, limit=limit)
    assert athena_problems(sql) == []


def test_the_views_and_reconciliations_sql_is_athenas() -> None:
    assert athena_problems(build_view_sql(RELATIONS)) == []
    relations = ReconcileRelations('"deutzia"."cloudtrail_logs"', RELATIONS.compacted, RELATIONS.fresh)
    for tables in (None, ["Music", "Books"]):
        sql, _ = build_reconcile_sql(ReconcileWindow.of_day("2026-11-29", tables), relations)
        assert athena_problems(sql) == []


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        ("SELECT x::INT FROM t", "not written as Athena writes it: 'X :: INT FROM T' is written back as 'CAST"),
        ("SELECT [1, 2] FROM t", "not written as Athena writes it"),
        ("SELECT * EXCLUDE (a) FROM t", "not written as Athena writes it"),
        ("SELECT a FROM t WHERE a ILIKE ?", "not written as Athena writes it"),
        ("SELECT {'a': 1}", "not written as Athena writes it"),
        ("SELECT a FROM t QUALIFY row_number() OVER () = 1", "not Athena's SQL"),
        ("SELECT list_slice(a, 1, 2) FROM t", "calls LIST_SLICE, which Athena engine version 3 lacks"),
        ("SELECT strftime(a, '%Y') FROM t", "calls STRFTIME"),
        ("SELECT regexp_matches(a, 'x') FROM t", "calls REGEXP_MATCHES"),
        ("SELECT 1; SELECT 2", "2 statements, not one"),
        ("SELECT a FROM t WHERE", "not Athena's SQL"),
    ],
)
def test_what_athena_would_not_run_is_named(sql: str, problem: str) -> None:
    problems = athena_problems(sql)
    assert len(problems) == 1
    assert problems[0].startswith(problem)


def test_athenas_own_spellings_pass() -> None:
    for sql in (
        "SELECT a FROM t WHERE a IS NOT NULL AND NOT b",
        "SELECT json_format(CAST(ARRAY[a] AS JSON)), count_if(b), slice(c, 1, 2) FROM t trail_rows",
        "SELECT date_format(current_date - interval '7' day, '%Y-%m-%d')",
        "SELECT kinds.kind FROM t CROSS JOIN UNNEST(ARRAY['a', 'b']) AS kinds (kind)",
    ):
        assert athena_problems(sql) == [], sql


def test_duckdbs_translation_names_the_catalogs_tables_as_given() -> None:
    sql = as_duckdb(
        'SELECT a FROM audit JOIN "deutzia"."audit_fresh" f ON audit.a = f.a WHERE dt >= '
        "date_format(current_date - interval '7' day, '%Y-%m-%d')",
        {"audit": "catalog_audit", "audit_fresh": "catalog_audit_fresh"},
    )
    assert sql == (
        "SELECT a FROM catalog_audit AS audit JOIN catalog_audit_fresh AS f ON audit.a = f.a "
        "WHERE dt >= STRFTIME(CURRENT_DATE - INTERVAL '7' DAY, '%Y-%m-%d')"
    )


def test_the_local_engine_keeps_athenas_time_zone_on_a_machine_in_another() -> None:
    """`current_date` is the UTC day on DuckDB, as on Athena, on every cursor, and a query cannot change it."""
    script = (
        "from chalicelib.duckdb_engine import connect\n"
        "connection = connect()\n"
        "for each in (connection, connection.cursor()):\n"
        "    print(each.sql(\"SELECT current_setting('TimeZone'), CAST(current_date AS VARCHAR)\").fetchall()[0])\n"
        "try:\n"
        "    connection.execute(\"SET TimeZone = 'Pacific/Honolulu'\")\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    environment = {**os.environ, "TZ": "Pacific/Honolulu"}
    shown = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True, check=True)
    today = datetime.now(UTC).date().isoformat()  # Honolulu's day is another from 14:00 to midnight there
    assert shown.stdout.splitlines() == [f"('UTC', '{today}')", f"('UTC', '{today}')", "InvalidInputException"]
