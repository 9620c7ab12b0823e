"""GET /audit's query: validating the request, the SQL both engines run, page tokens, the windows of days a query
without a key reads back in, and result rows as entries.

Pure. User input never becomes SQL text: every value is a `?` parameter; the only names in the SQL are the
relation (from configuration) and the schema's columns. The same SQL text runs on Athena and on DuckDB.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chalicelib.bounds import (
    MAX_NUMBER_DIGITS,
    MAX_NUMBER_EXPONENT,
    MIN_NUMBER_EXPONENT,
    is_dynamodb_number,
    valid_unicode,
)
from chalicelib.errors import InvalidRequestError, UnknownTableError
from chalicelib.records import BACKFILL_OBJECT_PREFIX, canonical_key
from chalicelib.schema import AUDIT_COLUMNS

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# What one page's entries may take in the answer, as the API writes them (compact JSON, non-ASCII escaped): a Lambda
# answer holds at most 6 MB, and API Gateway's proxy envelope escapes the body once more (up to twice its size). Each
# record's fields are bounded, not its calls' number: a caller can make every call on an item hundreds of KB, so a
# page of 1,000 would not fit. A page stops before the entry that would pass this (never before its first), and its
# next_token resumes at that entry.
MAX_PAGE_BYTES = 2 * 1024 * 1024
TABLE_NAME_PATTERN = r"^[A-Za-z0-9_.\-]{3,255}$"
OPERATIONS = ("Put", "Update", "Delete", "Get", "ConditionCheck", "Query", "Scan", "Statement")
# What `principal` matches: the caller's ARN, the role a session was assumed from, the caller's principal id (as
# CloudTrail logs it: `AIDA...`, `AROA...:session`), or the access key it signed with (a leaked key's calls).
PRINCIPAL_COLUMNS = ("principal_arn", "session_issuer_arn", "principal_id", "access_key_id")
# What `result` takes: every call that worked (`ok`), that failed (`failed`), that was refused its permission
# (`denied`: whoever tried what they may not, with any of DENIED_CODES, as the stack's DeniedCallsAlarm counts them),
# or that failed with one error code.
RESULTS = ("ok", "failed", "denied")
# What `source_ip` takes: where calls came from, as CloudTrail logs it (an IPv4 or IPv6 address, or the AWS service that
# called, such as `dynamodb.application-autoscaling.amazonaws.com` or `AWS Internal`), matched whole; or a range of IPv4
# addresses in CIDR notation (`203.0.113.0/24`), every address in it.
SOURCE_IP_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.:_ /-]{0,252}$"
DENIED_CODES = ("AccessDenied%", "%UnauthorizedOperation")  # SQL LIKE patterns; the metric filter's, in its syntax
_ERROR_CODE = re.compile(r"[A-Za-z][A-Za-z0-9.:_-]{0,127}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_LIMIT = re.compile(r"[0-9]{1,4}")
_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# A key is a partition key (at most 2,048 bytes) and an optional sort key (1,024), each named in at most 255 bytes;
# binary values travel as base64 text. The key parameter's JSON may escape every character (six each).
MAX_KEY_ATTRIBUTES = 2
MAX_KEY_NAME_BYTES = 255
MAX_KEY_VALUE_CHARS = 4096
MAX_KEY_PARAMETER_CHARS = 32 * 1024
# How much of an unknown parameter's name an error message repeats.
_SHOWN_CHARS = 40
_TOKEN_VERSION = 1
# Characters per SQL parameter: even all `'` (doubled) and quoted, a piece stays within Athena's 1024.
PARAMETER_PIECE = 500

# A query without a key reads back from its newest end in windows of these many days, each older and wider than the
# last, then the rest, until a page is full: the latest entries of a busy table are one day's, not its whole history's.
RECENT_WINDOW_DAYS = (1, 8, 64, 512)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_LAST_SECOND = "9999-12-31T23:59:59Z"

SqlValue = str | int
Position = tuple[str, str, int]


@dataclass(frozen=True)
class AuditQuery:
    """A validated GET /audit request: times as `YYYY-MM-DDTHH:MM:SSZ`, the key canonical."""

    table: str
    key: str | None = None
    since: str | None = None
    until: str | None = None
    principal: str | None = None
    operation: str | None = None
    limit: int = DEFAULT_LIMIT
    result: str | None = None
    source_ip: str | None = None

    def fingerprint(self) -> str:
        """What a page token is bound to: every filter, not the page size (the filters added later only when given,
        so that a token of a query without them stays what it was)."""
        filters = [self.table, self.key, self.since, self.until, self.principal, self.operation, self.result]
        if self.source_ip is not None:
            filters.append(self.source_ip)
        return hashlib.sha256(json.dumps(filters).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PageToken:
    """Where the next page starts: Athena's execution and token, or the last entry's sort key (DuckDB)."""

    fingerprint: str
    execution_id: str | None = None
    athena_token: str | None = None
    after: Position | None = None
    skip: int = 0  # Athena: the rows from `athena_token` on that an earlier page already gave


@dataclass(frozen=True)
class AuditPage:
    """One page of entries, newest first, and the token of the next page."""

    entries: list[dict[str, object]]
    next_token: str | None


class QueryEngine(Protocol):
    """Runs an AuditQuery; Athena in AWS, DuckDB on one machine."""

    def fetch_page(self, query: AuditQuery, token: PageToken | None) -> AuditPage: ...


class _AuditParameters(BaseModel):
    """The query string of GET /audit, as received (every value a string, each given once)."""

    model_config = ConfigDict(extra="forbid")

    table: str = Field(pattern=TABLE_NAME_PATTERN)
    key: str | None = Field(default=None, max_length=MAX_KEY_PARAMETER_CHARS)
    since: str | None = None
    until: str | None = None
    principal: str | None = Field(default=None, min_length=1, max_length=2048)
    operation: str | None = None
    result: str | None = None
    source_ip: str | None = Field(default=None, pattern=SOURCE_IP_PATTERN)
    limit: str = str(DEFAULT_LIMIT)
    next_token: str | None = Field(default=None, min_length=1, max_length=8192)

    @field_validator("key")
    @classmethod
    def _canonical_key(cls, value: str | None) -> str | None:
        return None if value is None else parse_key(value)

    @field_validator("since", "until")
    @classmethod
    def _timestamp(cls, value: str | None) -> str | None:
        return None if value is None else parse_time(value)

    @field_validator("limit")
    @classmethod
    def _limit(cls, value: str) -> str:
        if not _LIMIT.fullmatch(value) or not 1 <= int(value) <= MAX_LIMIT:
            raise ValueError(f"must be a whole number from 1 to {MAX_LIMIT}")
        return value

    @field_validator("operation")
    @classmethod
    def _operation(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for operation in OPERATIONS:
            if operation.lower() == value.lower():
                return operation
        raise ValueError(f"must be one of {', '.join(OPERATIONS)}")

    @field_validator("result")
    @classmethod
    def _result(cls, value: str | None) -> str | None:
        if value is None or value.lower() in RESULTS:
            return None if value is None else value.lower()
        if _ERROR_CODE.fullmatch(value):
            return value
        raise ValueError("must be ok, failed, denied, or an error code such as AccessDenied (letters, digits, . : _ -)")

    @field_validator("source_ip")
    @classmethod
    def _source_ip(cls, value: str | None) -> str | None:
        if value is None or "/" not in value:
            return value
        try:  # a range: written as its network (`203.0.113.7/24` is 203.0.113.0/24)
            return str(ipaddress.IPv4Network(value, strict=False))
        except ValueError:
            raise ValueError(
                "is not a range of IPv4 addresses such as 203.0.113.0/24 (an IPv6 address is matched whole)"
            ) from None


def parse_key(text: str) -> str:
    """An item's key, given as a JSON object of one or two attributes, in canonical form; ValueError saying what is
    wrong. Values are strings or numbers (or typed, `{"N": "7"}`); numbers must be ones DynamoDB can hold."""
    try:
        key = json.loads(text, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, RecursionError):
        raise ValueError('must be a JSON object, such as {"id": "42"}') from None
    if not isinstance(key, dict) or not key:
        raise ValueError('must be a JSON object naming the item\'s key attributes, such as {"id": "42"}')
    if len(key) > MAX_KEY_ATTRIBUTES:
        raise ValueError(f"names {len(key)} attributes; a DynamoDB key has one or two")
    for name, value in key.items():
        printable = shown(name)
        if not name or valid_unicode(name) != name or len(name.encode("utf-8")) > MAX_KEY_NAME_BYTES:
            raise ValueError(f"attribute name {printable} is not a DynamoDB key name (1 to {MAX_KEY_NAME_BYTES} bytes)")
        _check_key_value(printable, value)
    return canonical_key(key)


def _check_key_value(name: str, value: object) -> None:
    if isinstance(value, dict) and len(value) == 1:
        ((descriptor, inner),) = value.items()
        if descriptor in ("S", "B") and isinstance(inner, str):
            value = inner
        elif descriptor == "N" and isinstance(inner, str):
            try:
                value = Decimal(inner)
            except ArithmeticError:
                raise ValueError(f"the value of {name} is not a number") from None
    if isinstance(value, Decimal):
        if not is_dynamodb_number(value):
            raise ValueError(
                f"the value of {name} is not a DynamoDB number: at most {MAX_NUMBER_DIGITS} significant digits, "
                f"magnitude from 1E{MIN_NUMBER_EXPONENT} to below 1E+{MAX_NUMBER_EXPONENT + 1}"
            )
    elif isinstance(value, str):
        if valid_unicode(value) != value:
            raise ValueError(f"the value of {name} holds a lone surrogate, which no DynamoDB string can")
        if len(value) > MAX_KEY_VALUE_CHARS:
            raise ValueError(f"the value of {name} is longer than any DynamoDB key ({MAX_KEY_VALUE_CHARS} characters)")
    else:
        raise ValueError(f"the value of {name} must be a string or a number")


def shown(text: str) -> str:
    """A name from the request, short and printable enough to repeat in an error message."""
    return valid_unicode(text[:_SHOWN_CHARS]) + ("…" if len(text) > _SHOWN_CHARS else "")


INVALID_TIME = "is not a valid date and time"


def parse_time(value: str) -> str:
    """`YYYY-MM-DDTHH:MM:SSZ`, or a date meaning its midnight UTC, as `YYYY-MM-DDTHH:MM:SSZ`."""
    text = value + "T00:00:00Z" if _DATE.fullmatch(value) else value
    if not _TIMESTAMP.fullmatch(text):
        raise ValueError("must be YYYY-MM-DDTHH:MM:SSZ or YYYY-MM-DD (UTC)")
    try:
        datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(INVALID_TIME) from None
    return text


def parse_audit_request(
    parameters: Mapping[str, str | Sequence[str]], audited_tables: frozenset[str] | None
) -> tuple[AuditQuery, PageToken | None]:
    """The query and page token of a GET /audit query string (each name with its value, or its list of values);
    InvalidRequestError or UnknownTableError."""
    values: dict[str, str] = {}
    for name, given in parameters.items():
        if name not in _AuditParameters.model_fields:
            raise InvalidRequestError(shown(name), "is not a parameter of GET /audit")
        listed = [given] if isinstance(given, str) else list(given)
        if len(listed) != 1:
            raise InvalidRequestError(name, "must be given once")
        if valid_unicode(listed[0]) != listed[0]:
            raise InvalidRequestError(name, "is not valid UTF-8 text")
        values[name] = listed[0]
    try:
        fields = _AuditParameters.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        parameter = str(error["loc"][0]) if error["loc"] else "query"
        if error["type"] == "missing":
            raise InvalidRequestError(parameter, "is required") from None
        if parameter == "table" and error["type"] == "string_pattern_mismatch":
            raise InvalidRequestError("table", "is not a DynamoDB table name ([A-Za-z0-9_.-], 3 to 255)") from None
        if parameter == "source_ip" and error["type"] == "string_pattern_mismatch":
            raise InvalidRequestError(
                "source_ip",
                "is not where a call came from: an IP address, an IPv4 range (203.0.113.0/24) or an AWS service's "
                "name, 1 to 253",
            ) from None
        message = error["msg"].removeprefix("Value error, ")
        raise InvalidRequestError(parameter, message) from None
    if fields.since and fields.until and fields.since >= fields.until:
        raise InvalidRequestError("until", "must be later than since")
    if audited_tables is not None and fields.table not in audited_tables:
        raise UnknownTableError(f"table {fields.table} is not audited here")
    query = AuditQuery(
        table=fields.table,
        key=fields.key,
        since=fields.since,
        until=fields.until,
        principal=fields.principal,
        operation=fields.operation,
        limit=int(fields.limit),
        result=fields.result,
        source_ip=fields.source_ip,
    )
    token = decode_page_token(fields.next_token, query) if fields.next_token else None
    return query, token


def encode_page_token(token: PageToken) -> str:
    """An opaque, URL-safe token."""
    document = {"v": _TOKEN_VERSION, "f": token.fingerprint}
    if token.execution_id is not None:
        document["q"] = token.execution_id
    if token.athena_token is not None:
        document["t"] = token.athena_token
    if token.skip:
        document["s"] = token.skip
    text = json.dumps([document, list(token.after) if token.after else None], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_page_token(text: str, query: AuditQuery) -> PageToken:
    """The token a previous page returned; InvalidRequestError when it is not one, or belongs to another query."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        document, after = json.loads(raw)
        fingerprint = document["f"]
        execution_id = document.get("q")
        athena_token = document.get("t")
        skip = document.get("s", 0)
        if document["v"] != _TOKEN_VERSION or not isinstance(fingerprint, str):
            raise ValueError("unknown token version")
        if type(skip) is not int or not 0 <= skip < MAX_LIMIT:
            raise ValueError("bad skip")
        if after is not None:
            event_time, event_id, item_index = after
            if not (
                isinstance(event_time, str)
                and _TIMESTAMP.fullmatch(event_time)
                and parse_time(event_time) == event_time  # a real time (ValueError for `2024-02-30T...`)
                and isinstance(event_id, str)
                and _EVENT_ID.fullmatch(event_id)
                and type(item_index) is int
                and 0 <= item_index < 2**31
            ):
                raise ValueError("bad position")
            after = (event_time, event_id, item_index)
        for value in (execution_id, athena_token):
            if value is not None and not (isinstance(value, str) and len(value) <= 4096):
                raise ValueError("bad execution")
            if value is not None and valid_unicode(value) != value:
                raise ValueError("bad execution")
    except (binascii.Error, ValueError, TypeError, KeyError, AttributeError, RecursionError):
        raise InvalidRequestError("next_token", "is not a token this API returned") from None
    if fingerprint != query.fingerprint():
        raise InvalidRequestError("next_token", "belongs to a query with other parameters") from None
    return PageToken(fingerprint, execution_id, athena_token, after, skip)


def search_windows(query: AuditQuery, after: Position | None, now: datetime) -> list[AuditQuery]:
    """The queries one page of `query` reads, newest first, until it has a page: `query` itself when it names a key
    (one item's history is cheap to read whole), else windows back from its newest end (`until`, the previous
    page's last entry, or `now`; RECENT_WINDOW_DAYS), adjoining, disjoint, and together exactly `query`'s range."""
    if query.key is not None:
        return [query]
    newest = query.until
    if after is not None and after[0] < _LAST_SECOND:
        resumed = _time_text(_time_value(after[0]) + timedelta(seconds=1))  # `after` itself keeps out what was given
        newest = resumed if newest is None else min(newest, resumed)
    anchor = now if newest is None else min(_time_value(newest), now)
    windows = []
    for days in RECENT_WINDOW_DAYS:
        try:
            oldest = _time_text(anchor - timedelta(days=days))
        except OverflowError:  # before year 1: nothing is older
            break
        if query.since is not None and oldest <= query.since:
            break
        windows.append(replace(query, since=oldest, until=newest))
        newest = oldest
    windows.append(replace(query, until=newest))
    return windows


def collect_page(
    query: AuditQuery,
    token: PageToken | None,
    fetch: Callable[[AuditQuery, Position | None, int], list[dict[str, object]]],
    now: datetime,
) -> AuditPage:
    """A page of `query` from an engine's `fetch(window, after, limit)` (at most `limit` entries of one window after
    the position `after`, newest first; it may stop at one more than a page's bytes hold, `until_page_is_full`),
    window by window (search_windows) until it holds one entry more than the page; the next page's token is the
    position of the last entry given."""
    after = token.after if token is not None else None
    entries: list[dict[str, object]] = []
    for window in search_windows(query, after, now):
        entries += fetch(window, after, query.limit + 1 - len(entries))
        if len(entries) > query.limit or entries_that_fit(entries) < len(entries):
            break
    fitting = entries_that_fit(entries[: query.limit])
    next_token = None
    if len(entries) > fitting:
        next_token = encode_page_token(PageToken(query.fingerprint(), after=position_of(entries[fitting - 1])))
    return AuditPage(entries[:fitting], next_token)


def _time_value(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def _time_text(value: datetime) -> str:
    return f"{value.year:04d}-{value:%m-%dT%H:%M:%S}Z"


def entries_that_fit(entries: Sequence[Mapping[str, object]]) -> int:
    """How many of `entries`, from the first, one page holds within MAX_PAGE_BYTES (at least one)."""
    size = 0
    for count, entry in enumerate(entries):
        size += _answer_bytes(entry)
        if size > MAX_PAGE_BYTES and count:
            return count
    return len(entries)


def until_page_is_full(entries: Iterable[dict[str, object]]) -> list[dict[str, object]]:
    """`entries` as far as one past what a page holds (MAX_PAGE_BYTES): a reader stops there, reading no more rows than
    a page can give."""
    taken: list[dict[str, object]] = []
    size = 0
    for entry in entries:
        taken.append(entry)
        size += _answer_bytes(entry)
        if size > MAX_PAGE_BYTES and len(taken) > 1:
            break
    return taken


def _answer_bytes(entry: Mapping[str, object]) -> int:
    """What an entry adds to an answer: its compact JSON and a separator."""
    return len(json.dumps(entry, separators=(",", ":"))) + 1


# The entry's columns in result order; arrays travel as JSON text so both engines return them the same way.
ENTRY_COLUMNS: tuple[str, ...] = (*tuple(column.name for column in AUDIT_COLUMNS), "table_name")
_COLUMN_TYPES = {column.name: column.glue_type for column in AUDIT_COLUMNS}


def _select_list() -> str:
    expressions = []
    for name in ENTRY_COLUMNS:
        if _COLUMN_TYPES.get(name) == "array<string>":
            expressions.append(f"json_format(CAST({name} AS JSON)) AS {name}")
        else:
            expressions.append(name)
    return ", ".join(expressions)


@dataclass(frozen=True)
class Relations:
    """The two tiers' relations (configured, already-quoted names): compacted Parquet and the fresh JSON tail."""

    compacted: str
    fresh: str


# A fresh object reconciliation wrote from a trail file, by its path (`"$path"`: Athena's own column, and the DuckDB
# engine's): the object's name, right after its partition's `dt=`, starts with BACKFILL_OBJECT_PREFIX.
FROM_TRAIL_PATH = f"%/dt=____-__-__/{BACKFILL_OBJECT_PREFIX}%"


def build_audit_sql(
    query: AuditQuery, relations: Relations, after: Position | None = None, limit: int | None = None
) -> tuple[str, list[SqlValue]]:
    """SQL and its `?` parameters: the query's entries from both tiers, each (event_id, item_index) once, newest
    first. Each tier is filtered on its own partitions (compacted: table and month; fresh: table and day) and on the
    key, so each engine prunes partitions and Parquet row groups before reading. A row in both tiers (compaction
    between writing its file and deleting its inputs, or a retried batch) counts once: the copy reconciliation wrote
    from the trail's own files first (a fresh object's `"$path"` names it), then the compacted one, as compaction
    keeps them. Those copies are read whatever the key, caller, operation and time they name, and every filter but the
    partitions' holds again after the de-duplication: a copy the trail contradicts never shows where only it matches
    (another item's history, another caller's calls), since the trail's copy of its call outranks it first. `after`
    and `limit` page without an engine's own cursor."""
    parameters: list[SqlValue] = []

    def bind(value: str) -> str:
        placeholder, values = _placeholder(value)
        parameters.extend(values)
        return placeholder

    def compare(column: str, operator: str, value: str) -> str:
        return f"{column} {operator} {bind(value)}"

    def partitions(tier: str) -> list[str]:
        found = [compare("table_name", "=", query.table)]
        for operator, bound in ((">=", query.since), ("<=", query.until)):
            if bound is not None:
                if tier == "compacted":
                    found.append(compare("month", operator, bound[:7]))
                found.append(compare("dt", operator, bound[:10]))
        return found

    def rows() -> list[str]:
        found = []
        if query.key is not None:
            found.append(compare("item_key", "=", query.key))
        if query.since is not None:
            found.append(compare("event_time", ">=", query.since))
        if query.until is not None:
            found.append(compare("event_time", "<", query.until))
        if query.principal is not None:  # the caller's ARN or id, the role behind a session, or an access key
            callers = [compare(column, "=", query.principal) for column in PRINCIPAL_COLUMNS]
            found.append(f"({' OR '.join(callers)})")
        if query.operation is not None:
            found.append(compare("operation", "=", query.operation))
        if query.result in ("ok", "failed"):  # fixed text, no value: Athena binds parameters as text, not booleans
            found.append("success" if query.result == "ok" else "NOT success")
        elif query.result == "denied":
            found.append(f"({' OR '.join(compare('error_code', 'LIKE', code) for code in DENIED_CODES)})")
        elif query.result is not None:
            found.append(compare("error_code", "=", query.result))
        if query.source_ip is not None:
            found.append(source_ip_condition(query.source_ip, bind, parameters))
        return found

    def fresh() -> str:
        found = partitions("fresh")
        filters = rows()
        if filters:
            found.append(f'({" AND ".join(filters)} OR "$path" LIKE {bind(FROM_TRAIL_PATH)})')
        return " AND ".join(found)

    columns = ", ".join(ENTRY_COLUMNS)
    compacted = " AND ".join(partitions("compacted") + rows())
    tiers = (
        f"SELECT {columns}, 0 AS tier FROM {relations.compacted} WHERE {compacted} "
        f'UNION ALL SELECT {columns}, CASE WHEN "$path" LIKE {bind(FROM_TRAIL_PATH)} THEN -1 ELSE 1 END AS tier '
        f"FROM {relations.fresh} WHERE {fresh()}"
    )
    outer = ["duplicate_rank = 1", *rows()]
    if after is not None:
        outer.append("(event_time < ? OR (event_time = ? AND (event_id < ? OR (event_id = ? AND item_index < ?))))")
        parameters += [after[0], after[0], after[1], after[1], after[2]]
    sql = (
        f"SELECT {_select_list()} FROM ("
        "SELECT *, row_number() OVER (PARTITION BY event_id, item_index ORDER BY tier) AS duplicate_rank "
        f"FROM ({tiers})"
        f") WHERE {' AND '.join(outer)} "
        "ORDER BY event_time DESC, event_id DESC, item_index DESC"
    )
    if limit is not None:
        sql += " LIMIT ?"
        parameters.append(limit)
    return sql, parameters


VIEW_COLUMNS: tuple[str, ...] = (*ENTRY_COLUMNS, "dt")


def build_view_sql(relations: Relations) -> str:
    """The `audit` relation SQL users query: both tiers, each (event_id, item_index) once, the compacted copy first.
    Every column that a copy shares (table, day, key) is in the de-duplication's partition, so an engine can push a
    filter on them below it and still prune partitions and row groups."""
    columns = ", ".join(VIEW_COLUMNS)
    return (
        f"SELECT {columns} FROM ("
        "SELECT *, row_number() OVER (PARTITION BY table_name, dt, item_key, event_id, item_index ORDER BY tier) "
        f"AS duplicate_rank FROM (SELECT {columns}, 0 AS tier FROM {relations.compacted} "
        f"UNION ALL SELECT {columns}, 1 AS tier FROM {relations.fresh})"
        ") WHERE duplicate_rank = 1"
    )


def source_ip_condition(source_ip: str, bind: Callable[[str], str], parameters: list[SqlValue]) -> str:
    """The SQL condition for the calls from `source_ip` (validated): the address (or service) whole, or every address
    of an IPv4 range, in SQL both engines share: the whole octets the range fixes as a LIKE prefix, and the octet it
    splits between two numbers (`203.0.113.0/25`: `203.0.113.%` and the fourth octet from 0 to 127). Text values go
    through `bind`, numbers onto `parameters`, in the order of their `?`."""
    if "/" not in source_ip:
        return f"source_ip = {bind(source_ip)}"
    network = ipaddress.IPv4Network(source_ip)
    octets = str(network.network_address).split(".")
    whole, bits = divmod(network.prefixlen, 8)
    if whole == len(octets):
        return f"source_ip = {bind(str(network.network_address))}"
    found = [f"source_ip LIKE {bind('.'.join([*octets[:whole], '%']) if whole else '%.%.%.%')}"]
    if bits or not whole:  # the octet the range splits (the first, whatever it is, for 0.0.0.0/0)
        first = int(octets[whole])
        found.append(f"TRY_CAST(split_part(source_ip, {bind('.')}, ?) AS INTEGER) BETWEEN ? AND ?")
        parameters += [whole + 1, first, first + 2 ** (8 - bits) - 1]
    return f"({' AND '.join(found)})"


def _placeholder(value: str) -> tuple[str, list[SqlValue]]:
    """`?` for a value, or `concat(?, ?, ...)` of pieces for a long one: Athena takes at most 1024 characters per
    execution parameter (quotes and doubled `'` included), and DynamoDB keys run to 2 KB and more."""
    if len(value) <= PARAMETER_PIECE:
        return "?", [value]
    pieces: list[SqlValue] = [value[i : i + PARAMETER_PIECE] for i in range(0, len(value), PARAMETER_PIECE)]
    return f"concat({', '.join('?' for _ in pieces)})", pieces


def row_to_entry(values: Mapping[str, object]) -> dict[str, object]:
    """One result row as a JSON-ready entry: ints, booleans and arrays restored from either engine's values."""
    entry: dict[str, object] = {}
    for name in ENTRY_COLUMNS:
        value = values.get(name)
        column_type = _COLUMN_TYPES.get(name, "string")
        if value is None:
            entry[name] = [] if column_type == "array<string>" else None
        elif column_type == "int":
            entry[name] = int(str(value))
        elif column_type == "boolean":
            entry[name] = value if isinstance(value, bool) else str(value).lower() == "true"
        elif column_type == "array<string>":
            entry[name] = json.loads(value) if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        else:
            entry[name] = str(value)
    return entry


def position_of(entry: Mapping[str, object]) -> Position:
    """An entry's place in the newest-first order, for the next page's `after`."""
    return (str(entry["event_time"]), str(entry["event_id"]), int(str(entry["item_index"])))
