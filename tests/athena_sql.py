"""Athena's SQL, checked as Athena's and run on DuckDB: what no test could do while the only engine here was DuckDB.

Every SQL text Deutzia gives Athena (GET /audit's, reconciliation's, the `audit` view's, the named queries') must be
written in Athena's own dialect (engine version 3, Trino's SQL): sqlglot reads it as Athena's, and writes it back
token for token (a DuckDB spelling it reads leniently, `x::INT`, `[1, 2]`, `* EXCLUDE`, `ILIKE`, is written back
otherwise), and every function it calls is one Athena has. The text is then translated to DuckDB's dialect by sqlglot,
so the Athena stand-in runs Athena's meaning of it (`date_format`, `interval '7' day`), not whatever DuckDB makes of
the same characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

# The functions Deutzia's SQL may call: Athena engine version 3's, which are Trino's (trino.io/docs/current/functions,
# as Athena's "Athena engine version 3 functions" page points there). Add one only from that documentation.
ATHENA_FUNCTIONS = frozenset(
    {
        # aggregate
        "ARRAY_AGG", "AVG", "BOOL_AND", "BOOL_OR", "COUNT", "COUNT_IF", "MAX", "MAX_BY", "MIN", "MIN_BY", "SUM",
        # array
        "ARRAY_DISTINCT", "ARRAY_JOIN", "ARRAY_SORT", "CARDINALITY", "CONTAINS", "ELEMENT_AT", "SLICE",
        # conditional and conversion
        "COALESCE", "IF", "NULLIF", "CAST", "TRY_CAST",
        # date and time
        "DATE_FORMAT", "DATE_PARSE", "FROM_ISO8601_TIMESTAMP", "TO_ISO8601",
        # JSON
        "JSON_EXTRACT_SCALAR", "JSON_FORMAT", "JSON_PARSE",
        # regular expressions and strings
        "REGEXP_EXTRACT", "REGEXP_EXTRACT_ALL", "REGEXP_LIKE", "CONCAT", "LENGTH", "LOWER", "SPLIT_PART",
        "STARTS_WITH", "STRPOS", "SUBSTR", "UPPER",
        # window
        "DENSE_RANK", "RANK", "ROW_NUMBER",
        # the relation of an array's elements
        "UNNEST",
    }
)  # fmt: skip
_DIALECT = sqlglot.Dialect.get_or_raise("athena")
_CALLED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def athena_problems(sql: str) -> list[str]:
    """What in `sql` Athena would not run as written: nothing when it is one statement in Athena's own dialect."""
    try:
        statements = sqlglot.parse(sql, read=_DIALECT)
    except sqlglot.errors.ParseError as exc:
        return [f"not Athena's SQL: {str(exc).splitlines()[0]}"]
    if len(statements) != 1 or statements[0] is None:
        return [f"{len(statements)} statements, not one"]
    statement = statements[0]
    problems = []
    written_back = statement.sql(dialect=_DIALECT)
    if _tokens(sql) != _tokens(written_back) or _negations(sql) != _negations(written_back):
        problems.append(f"not written as Athena writes it: {_first_difference(sql, written_back)}")
    for name in sorted(_functions(statement) - ATHENA_FUNCTIONS):
        problems.append(f"calls {name}, which Athena engine version 3 lacks")
    return problems


def as_duckdb(sql: str, tables: Mapping[str, str]) -> str:
    """Athena's `sql` in DuckDB's dialect, each table it names (bare or `"database"."name"`) as `tables` maps it."""
    statement = sqlglot.parse_one(sql, read=_DIALECT)
    for table in statement.find_all(exp.Table):
        if table.name in tables:
            table.replace(exp.to_table(tables[table.name]).as_(table.alias_or_name))
    return statement.sql(dialect="duckdb")


def _functions(statement: exp.Expression) -> set[str]:
    names = set()
    for node in statement.find_all(exp.Func):
        if isinstance(node, exp.If) and isinstance(node.parent, exp.Case):
            continue  # a CASE's WHEN branch
        if isinstance(node, (exp.Binary, exp.Connector, exp.Predicate)) and not isinstance(node, exp.Anonymous):
            continue  # an operator
        called = _CALLED.match(node.sql(dialect=_DIALECT))
        if called:
            names.add(called.group(1).upper())
    return names


def _tokens(sql: str) -> list[tuple[TokenType, str]]:
    # `AS` before an alias is optional, and `x IS NOT NULL` is written back as `NOT x IS NULL` (its NOTs are counted
    # apart).
    return [
        (token.token_type, token.text.upper())
        for token in _DIALECT.tokenize(sql)
        if token.token_type not in (TokenType.ALIAS, TokenType.NOT)
    ]


def _negations(sql: str) -> int:
    return sum(token.token_type == TokenType.NOT for token in _DIALECT.tokenize(sql))


def _first_difference(sql: str, written_back: str) -> str:
    ours, theirs = _tokens(sql), _tokens(written_back)
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs)))
    written, back = (" ".join(text for _, text in tokens[at : at + 6]) for tokens in (ours, theirs))
    return f"{written!r} is written back as {back!r}"
