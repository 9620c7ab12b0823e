"""Reconciliation of the audit records with the trail's own files: the anti-join both engines run, reading a trail file,
formatting its missing events for backfill, and the report of a day and table.

The trail's files are the complete record (CloudWatch Logs drops events over 256 KB; a subscription can fall behind; a
record can end in the failure queue). A UTC day is reconciled by one SQL text, run by Athena in AWS and by DuckDB
locally: the DynamoDB data events in that day's and the next day's trail files (CloudTrail files an event by its
delivery time) whose `eventTime` falls in the day, per table named in `resources`, minus the `(event_id, table_name)`
pairs the audit records hold for that day. Each missing event, and each whose records contradict the trail, comes back
with the file it is in, so backfill reads only those files. Pure: SQL text, bytes in, lines and reports out;
`reconciler` does the I/O.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from chalicelib.cloudtrail import DATA_OPERATIONS, DYNAMODB_EVENT_SOURCE, parse_event_message, stored_lines
from chalicelib.errors import DeutziaError, InvalidRequestError, UnknownTableError
from chalicelib.query import TABLE_NAME_PATTERN, SqlValue, shown
from chalicelib.records import BACKFILL_OBJECT_PREFIX, partition_path
from chalicelib.schema import AUDIT_COLUMNS

# A day's events are in its own trail files and, near midnight, in the next day's.
TRAIL_DELIVERY_DAYS = 2
# A trail file is read whole to backfill from it: at most this much JSON (CloudTrail writes a file every few
# minutes per region; a busy account's files are a few MB).
MAX_TRAIL_FILE_BYTES = 128 * 1024 * 1024
# What a run leaves missing when its time runs out before the trail file that holds it: a later run goes on.
DEFERRED_REASON = "not backfilled by this run, whose time ran out; the next daily runs go on with the day"
# How many names, reasons and examples a report lists (it counts all of them).
MAX_LISTED = 1000
OTHER_REASONS = "other reasons (the report lists 1000)"
# A table's name in a DynamoDB ARN (`...:table/<name>`, also inside index ARNs), as the formatter reads it.
TABLE_ARN_PATTERN = r"arn:aws[a-z-]*:dynamodb:[a-z0-9-]*:[0-9]*:table/([A-Za-z0-9_.-]{3,255})"
_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")

VERIFIED, BACKFILLED, INCOMPLETE, UNCONFIRMED, NO_TRAIL_FILES, NOT_CHECKED = (
    "verified",
    "backfilled",
    "incomplete",
    "unconfirmed",  # nothing missing, but the audit records hold calls the trail's files lack or contradict
    "no_trail_files",
    "not_checked",
)


class CorruptTrailFileError(DeutziaError):
    """A file in the trail bucket that is not a readable CloudTrail log file (its reason says why)."""


@dataclass(frozen=True)
class ReconcileRelations:
    """The relations the SQL names (configured, already-quoted): the raw trail, and the audit records' two tiers."""

    trail: str
    compacted: str
    fresh: str


@dataclass(frozen=True)
class ReconcileWindow:
    """What one reconciliation covers: a UTC day, up to `until` (exclusive; the day's end unless the day is still
    going), for `tables` (None: every table the trail names)."""

    day: str
    until: str
    tables: tuple[str, ...] | None = None

    @classmethod
    def of_day(cls, day: str, tables: Sequence[str] | None = None, until: str | None = None) -> ReconcileWindow:
        """The window of `day` (YYYY-MM-DD); ValueError when it is not a date, or `until` is not within it."""
        start = parse_day(day)
        end = f"{(start + timedelta(days=1)).isoformat()}T00:00:00Z"
        if until is not None and not f"{day}T00:00:00Z" < until <= end:
            raise ValueError(f"until {until} is not within {day}")
        return cls(day, until or end, None if tables is None else tuple(sorted(tables)))

    @property
    def whole_day(self) -> bool:
        return self.until.endswith("T00:00:00Z")

    def trail_dates(self) -> list[str]:
        """The trail's `date` partitions (`yyyy/MM/dd`) that hold the day's events."""
        start = parse_day(self.day)
        return [(start + timedelta(days=offset)).strftime("%Y/%m/%d") for offset in range(TRAIL_DELIVERY_DAYS)]


def parse_day(text: str) -> date:
    """A `YYYY-MM-DD` day; ValueError saying so otherwise."""
    if not _DAY.fullmatch(text):
        raise ValueError(f"{text!r} is not a day (YYYY-MM-DD)")
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise ValueError(f"{text!r} is not a valid date") from None


# What a record says of its call that the trail's own event says the same way, column for column: who made it, with
# which access key, from where, when, which call, and whether it failed. A record that differs on any is not the
# trail's.
CONFIRMED_COLUMNS: Mapping[str, str] = {
    "principal_arn": "useridentity.arn",
    "access_key_id": "useridentity.accesskeyid",
    "source_ip": "sourceipaddress",
    "event_time": "eventtime",
    "event_name": "eventname",
    "error_code": "errorcode",
}
# What every copy of one record says alike, whichever way it came from CloudTrail (its files or its log group): every
# column (the request parameters are written with their keys sorted, as either may write them in another order; the
# attribute names drawn from them are compared as a set for the same reason). Copies that differ on any did not all
# come from CloudTrail.
COPIED_COLUMNS = tuple(column.name for column in AUDIT_COLUMNS if column.name not in ("event_id", "item_index"))
TALLY_FILE, TALLY_NOT_IN_TRAIL, TALLY_ALTERED = "file", "not_in_trail", "altered"
# CloudTrail sends no event over 256 KB to CloudWatch Logs: whatever records the log group gave of such a call, none is
# its own. An event's size is mostly its texts (request parameters, user agent, error message, response elements,
# additional data, as the trail table holds them); its other fields (identity, resources, times) stay well under the
# allowance below, so every call over 256 KB is among those whose texts pass OVERSIZED_TEXT_CHARS. Those under 256 KB
# also taken cost a rewrite of their own records, no more.
LOG_GROUP_EVENT_BYTES = 256 * 1024
OVERSIZED_TEXT_CHARS = LOG_GROUP_EVENT_BYTES - 56 * 1024
_EVENT_TEXTS = ("requestparameters", "useragent", "errormessage", "responseelements", "additionaleventdata")


def build_reconcile_sql(window: ReconcileWindow, relations: ReconcileRelations) -> tuple[str, list[SqlValue]]:
    """SQL and its `?` parameters: one row per (table, trail file) with the file's events of the table, how many of them
    are duplicates of an earlier copy, how many the audit records hold, the missing ids, the ids of those whose records
    contradict it, and of those the records hold that were too big for the log group (all JSON); then per table, what
    the audit records hold up to the window's end that the trail does not, and the records that contradict the trail (a
    CONFIRMED_COLUMNS value not the trail's, or copies of one item that differ on any COPIED_COLUMNS), each counted
    by event with the first MAX_LISTED ids. The trail's files and the records are each read once: Athena inlines every
    use of a WITH query, and bills each reading of the files. Only names from configuration and constants are SQL text;
    the day and tables are parameters."""
    parameters: list[SqlValue] = []

    def values(items: Sequence[str]) -> str:
        parameters.extend(items)
        return ", ".join("?" for _ in items)

    def tables_filter(column: str) -> str:
        return "" if window.tables is None else f" AND {column} IN ({values(window.tables)})"

    def said(source: str) -> str:  # what a copy says of its call that the trail says too, as one comparable text
        columns = ", ".join(f"{source}.{column}" for column in CONFIRMED_COLUMNS)
        return f"json_format(CAST(ARRAY[{columns}] AS JSON))"

    def copy_said(source: str) -> str:  # all a copy says that every copy says alike, as one comparable text
        texts = []
        for column in AUDIT_COLUMNS:
            name = f"{source}.{column.name}"
            if column.name not in COPIED_COLUMNS:
                continue
            if column.glue_type == "array<string>":
                texts.append(f"json_format(CAST(array_sort({name}) AS JSON))")
            else:
                texts.append(name if column.glue_type == "string" else f"CAST({name} AS VARCHAR)")
        return f"json_format(CAST(ARRAY[{', '.join(texts)}] AS JSON))"

    operations = ", ".join(f"'{name}'" for name in sorted(DATA_OPERATIONS))
    confirmed = ", ".join(f"{field} AS {column}" for column, field in CONFIRMED_COLUMNS.items())
    trail = (
        f'SELECT eventid AS event_id, named.table_name, "$path" AS trail_file, {confirmed}, '
        f"{' + '.join(f'coalesce(length({name}), 0)' for name in _EVENT_TEXTS)} AS text_length "
        f"FROM {relations.trail} CROSS JOIN UNNEST(array_distinct(regexp_extract_all("
        f"json_format(CAST(resources AS JSON)), '{TABLE_ARN_PATTERN}', 1))) AS named (table_name) "
        f'WHERE "date" IN ({values(window.trail_dates())}) '
        f"AND eventsource = '{DYNAMODB_EVENT_SOURCE}' AND coalesce(eventcategory, 'Data') = 'Data' "
        f"AND eventname IN ({operations}) "
        f"AND eventtime >= {values([f'{window.day}T00:00:00Z'])} AND eventtime < {values([window.until])}"
        f"{tables_filter('named.table_name')}"
    )
    columns = ", ".join(["event_id", "item_index", "table_name", *COPIED_COLUMNS])
    records = (
        f"SELECT {columns} FROM {relations.compacted} "
        f"WHERE month = {values([window.day[:7]])} AND dt = {values([window.day])}{tables_filter('table_name')} "
        f"AND event_time < {values([window.until])} "
        f"UNION ALL SELECT {columns} FROM {relations.fresh} "
        f"WHERE dt = {values([window.day])}{tables_filter('table_name')} AND event_time < {values([window.until])}"
    )
    sql = (
        f"WITH copies AS (SELECT event_id, table_name, trail_file, text_length, {said('trail_rows')} AS said, "
        "row_number() OVER (PARTITION BY table_name, event_id ORDER BY trail_file) AS copy "
        f"FROM ({trail}) trail_rows), "
        # Per item, then per event: whether copies of an item differ on anything CloudTrail gives them alike, and the
        # least and most of what they say (two copies of a call that say different things cannot both be the trail's).
        "items AS (SELECT table_name, event_id, count(DISTINCT copy_said) > 1 AS split, "
        "min(said) AS least_said, max(said) AS most_said "
        f"FROM (SELECT table_name, event_id, item_index, {said('records')} AS said, "
        f"{copy_said('records')} AS copy_said "
        f"FROM ({records}) records) copied GROUP BY table_name, event_id, item_index), "
        "events AS (SELECT table_name, event_id, bool_or(split) AS split, min(least_said) AS least_said, "
        "max(most_said) AS most_said FROM items GROUP BY table_name, event_id), "
        "joined AS (SELECT coalesce(copies.table_name, events.table_name) AS table_name, "
        "coalesce(copies.event_id, events.event_id) AS event_id, copies.trail_file, copies.copy, "
        "copies.text_length, "
        "events.event_id IS NOT NULL AS audited, "
        "events.event_id IS NOT NULL AND (events.split OR (copies.event_id IS NOT NULL "
        "AND (events.least_said <> events.most_said OR events.least_said <> copies.said))) AS altered "
        "FROM copies FULL OUTER JOIN events "
        "ON copies.event_id = events.event_id AND copies.table_name = events.table_name), "
        # Each joined row once per tally it counts in: its trail file's, and the table's of records the trail lacks or
        # contradicts (an event once, whatever copies of it the trail holds).
        "tallied AS (SELECT joined.*, kinds.kind FROM joined CROSS JOIN UNNEST(ARRAY["
        f"CASE WHEN copy IS NOT NULL THEN '{TALLY_FILE}' END, "
        f"CASE WHEN copy IS NULL THEN '{TALLY_NOT_IN_TRAIL}' END, "
        f"CASE WHEN altered AND coalesce(copy, 1) = 1 THEN '{TALLY_ALTERED}' END]) AS kinds (kind) "
        "WHERE kinds.kind IS NOT NULL) "
        f"SELECT kind, table_name, CASE WHEN kind = '{TALLY_FILE}' THEN trail_file END AS trail_file, "
        f"count_if(kind = '{TALLY_FILE}') AS trail_rows, "
        f"count_if(kind = '{TALLY_FILE}' AND copy > 1) AS duplicates, "
        f"count_if(kind = '{TALLY_FILE}' AND copy = 1) AS events, "
        f"CASE WHEN kind = '{TALLY_FILE}' THEN count_if(copy = 1 AND audited) ELSE count(*) END AS audited, "
        f"CASE WHEN kind = '{TALLY_FILE}' "
        "THEN json_format(CAST(array_agg(event_id) FILTER (WHERE copy = 1 AND NOT audited) AS JSON)) "
        f"ELSE json_format(CAST(slice(array_agg(event_id ORDER BY event_id), 1, {MAX_LISTED}) AS JSON)) "
        "END AS listed, "
        f"CASE WHEN kind = '{TALLY_FILE}' "
        "THEN json_format(CAST(array_agg(event_id) FILTER (WHERE copy = 1 AND altered) AS JSON)) "
        "END AS altered_listed, "
        f"CASE WHEN kind = '{TALLY_FILE}' "
        "THEN json_format(CAST(array_agg(event_id) FILTER (WHERE copy = 1 AND audited AND NOT altered "
        f"AND text_length > {OVERSIZED_TEXT_CHARS}) AS JSON)) END AS oversized_listed "
        "FROM tallied GROUP BY 1, 2, 3 ORDER BY 2, 1, 3"
    )
    return sql, parameters


@dataclass(frozen=True)
class FileTally:
    """One result row. `file`: a table's events in one trail file, and the ids of those the audit records lack
    (`listed`), of those whose records contradict the file (`altered`), and of those the records hold though the
    log group could not carry them (`oversized`). `not_in_trail` and `altered` (`trail_file` None): how many of the
    table's audited events the trail lacks, or contradicts (`audited`), and the first of their ids."""

    kind: str
    table: str
    trail_file: str | None
    trail_rows: int
    duplicates: int
    events: int
    audited: int
    listed: tuple[str, ...]
    altered: tuple[str, ...] = ()
    oversized: tuple[str, ...] = ()


def read_tally(values: Sequence[object]) -> FileTally:
    """A result row of the reconcile SQL, from either engine (Athena gives every value as text)."""
    kind, table, trail_file, trail_rows, duplicates, events, audited, listed, altered, oversized = values
    return FileTally(
        kind=str(kind),
        table=str(table),
        trail_file=None if trail_file in (None, "") else str(trail_file),
        trail_rows=int(str(trail_rows)),
        duplicates=int(str(duplicates)),
        events=int(str(events)),
        audited=int(str(audited)),
        listed=_listed(listed),
        altered=_listed(altered),
        oversized=_listed(oversized),
    )


def _listed(value: object) -> tuple[str, ...]:
    """The event ids of a JSON array the reconcile SQL answers (None or empty: none)."""
    ids = json.loads(str(value)) if value not in (None, "") else []
    return tuple(str(event_id) for event_id in (ids or []))


def read_trail_file(body: bytes, max_bytes: int = MAX_TRAIL_FILE_BYTES) -> list[Any]:
    """The events of a CloudTrail log file (gzip JSON `{"Records": [...]}`), numbers exact as ingest reads them;
    CorruptTrailFileError saying why for anything else (not gzip, cut short, too large, not JSON, not CloudTrail's)."""
    try:
        if body[:2] == b"\x1f\x8b":
            decompressor = zlib.decompressobj(wbits=31)
            text = decompressor.decompress(body, max_bytes + 1)
            if len(text) > max_bytes:
                raise CorruptTrailFileError(f"it holds over {max_bytes} bytes of JSON, past the backfill bound")
            if not decompressor.eof:
                raise CorruptTrailFileError("its gzip data is cut short")
        else:
            text = body
            if len(text) > max_bytes:
                raise CorruptTrailFileError(f"it holds over {max_bytes} bytes of JSON, past the backfill bound")
        document = parse_event_message(text.decode("utf-8"))
    except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
        raise CorruptTrailFileError(f"it is not readable gzip ({exc})") from None
    except UnicodeDecodeError:
        raise CorruptTrailFileError("it is not UTF-8 text") from None
    except RecursionError:
        raise CorruptTrailFileError("its JSON nests too deeply") from None
    except ValueError:
        raise CorruptTrailFileError("it is not JSON") from None
    records = document.get("Records") if isinstance(document, Mapping) else None
    if not isinstance(records, list):
        raise CorruptTrailFileError('it is not a CloudTrail log file (no "Records" list)')
    return records


@dataclass
class Backfill:
    """What backfilling one trail file gives: per table, the stored lines, and each event's own; the events the
    formatter refused (id, reason, event: for quarantine); and why each event that stays missing does."""

    lines: dict[str, list[str]] = field(default_factory=dict)
    events: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    refused: list[tuple[str, str, Any]] = field(default_factory=list)
    still_missing: dict[tuple[str, str], str] = field(default_factory=dict)


def backfill_events(events: list[Any], missing: Mapping[str, set[str]], day: str) -> Backfill:
    """The stored lines of the `missing` events (event id to the tables it is missing from) among `events`, through
    the formatter ingest uses, for those tables and the day only."""
    result = Backfill()
    found: set[str] = set()
    for event in events:
        event_id = event.get("eventID") if isinstance(event, Mapping) else None
        if not isinstance(event_id, str) or event_id not in missing or event_id in found:
            continue
        found.add(event_id)
        tables = missing[event_id]
        try:
            lines = stored_lines(event)
        except Exception as exc:  # whatever a file holds, the formatter's refusal is kept, never raised
            reason = f"the formatter refused it: {type(exc).__name__}: {str(exc)[:300]}"
            result.refused.append((event_id, reason, event))
            for table in tables:
                result.still_missing[(table, event_id)] = reason
            continue
        for (table, dt), line in lines or []:
            if table in tables and dt == day:
                result.lines.setdefault(table, []).append(line)
                result.events.setdefault(table, {}).setdefault(event_id, []).append(line)
        for table in tables:
            if event_id not in result.events.get(table, ()):
                why = "not a DynamoDB data event" if lines is None else f"it gives no record of {table} on {day}"
                result.still_missing[(table, event_id)] = f"the formatter skipped it: {why}"
    for event_id, tables in missing.items():
        if event_id not in found:
            for table in tables:
                result.still_missing[(table, event_id)] = "the trail file no longer holds it"
    return result


def trail_file_name(key: str) -> str:
    """A short, safe name for a trail file (its own name when that is CloudTrail's, else a digest of its key)."""
    name = key.rsplit("/", 1)[-1].removesuffix(".json.gz")
    return name if _SAFE_NAME.fullmatch(name) else hashlib.sha256(key.encode()).hexdigest()[:32]


def backfill_object_key(prefix: str, table: str, day: str, trail_key: str) -> str:
    """Where one trail file's backfilled records of one table and day go: named after the file, so a rerun
    overwrites them, and compaction folds them in like any other fresh object."""
    return f"{partition_path(prefix, table, day)}{BACKFILL_OBJECT_PREFIX}{trail_file_name(trail_key)}.json.gz"


def quarantine_key(day: str, trail_key: str, event_id: str | None = None) -> str:
    """Where a trail file that cannot be read (or one event of it the formatter refused) is kept, with its reason."""
    suffix = f"-{event_id}" if event_id is not None else ""
    return f"quarantine/dt={day}/trail-{trail_file_name(trail_key)}{suffix}"


_SUMMARY = "_day"


def report_key(day: str, table: str | None = None) -> str:
    """A table's report for a day, or (table None) the day's own summary. A table may be named `_day` too: its report
    is `table=_day.json` (a name no table has, as `=` is none of a table name's characters)."""
    name = _SUMMARY if table is None else f"table={table}" if table == _SUMMARY else table
    return f"reports/reconcile/dt={day}/{name}.json"


def running_query_key(day: str) -> str:
    """Where a run keeps the id of the day's query it left running (a name no table's report has)."""
    return f"reports/reconcile/dt={day}/query=running.json"


@dataclass
class TableReport:
    """One day of one table: what the trail holds, what the audit records held, what was backfilled (or restored)
    and what is still missing (and why). `backfilled` and `restored` count every run's of the day, so a rerun keeps
    the status."""

    day: str
    table: str
    status: str = VERIFIED
    checked_at: str = ""
    checked_until: str = ""
    engine: str = ""
    trail_events: int = 0
    audited_by_ingest: int = 0
    backfilled: int = 0
    backfilled_now: int = 0
    still_missing: int = 0
    duplicates_in_trail: int = 0
    audited_not_in_trail: int = 0
    not_in_trail_examples: list[str] = field(default_factory=list)
    altered: int = 0
    altered_examples: list[str] = field(default_factory=list)
    # Of the calls whose records contradicted the trail, those whose trail records backfill wrote beside them (every
    # run of the day, and this run's), for compaction to keep instead.
    restored: int = 0
    restored_now: int = 0
    # This run's restored calls (up to MAX_LISTED): GET /audit shows the trail's own records of them.
    restored_examples: list[str] = field(default_factory=list)
    # Calls the audit records hold though they may be too big for the log group (OVERSIZED_TEXT_CHARS), whose trail
    # records this run wrote again for compaction to keep instead (this run's; not a finding: what ingest recorded of a
    # call too big for the log group came from a forged log event, and an honest call's records come out the same).
    refreshed: int = 0
    missing_reasons: dict[str, int] = field(default_factory=dict)
    missing_examples: list[dict[str, str]] = field(default_factory=list)
    trail_files: list[str] = field(default_factory=list)
    trail_file_count: int = 0
    backfill_objects: list[str] = field(default_factory=list)
    unreadable_trail_files: int = 0
    # Calls the audit records held when the day's last run ended, and hold no more: records deleted since (or the
    # trail files naming them). Backfill writes them again; the count says it happened, `gone` over every run.
    gone_since_last_run: int = 0
    gone: int = 0

    def settle(self) -> None:
        """Set the status from the counts: complete only when nothing is missing and every file was read, and
        confirmed only when the trail's files hold every call the audit records do, as the records have it."""
        if self.still_missing or self.unreadable_trail_files:
            self.status = INCOMPLETE
        elif self.audited_not_in_trail or self.altered:
            self.status = UNCONFIRMED
        elif self.backfilled or self.restored:
            self.status = BACKFILLED
        else:
            self.status = VERIFIED

    def miss(self, event_id: str, trail_file: str, reason: str) -> None:
        self.still_missing += 1
        counted = reason if reason in self.missing_reasons or len(self.missing_reasons) < MAX_LISTED else OTHER_REASONS
        self.missing_reasons[counted] = self.missing_reasons.get(counted, 0) + 1
        if len(self.missing_examples) < MAX_LISTED:
            self.missing_examples.append({"event_id": event_id, "trail_file": trail_file, "reason": reason})

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, body: bytes) -> TableReport:
        document = json.loads(body)
        return cls(**{name: document[name] for name in cls.__dataclass_fields__ if name in document})


@dataclass
class DayReport:
    """The day's summary: which files were read (the day's own, and the next day's, which hold its last calls), what
    could not be, and every table's report. A day without files of its own is not verified: the trail delivered
    nothing for it (it was off, or has not delivered yet)."""

    day: str
    checked_at: str
    checked_until: str
    engine: str
    status: str = VERIFIED
    trail_file_count: int = 0
    day_trail_files: int = 0
    trail_files_by_region: dict[str, int] = field(default_factory=dict)
    next_day_delivered: bool = False
    unreadable_trail_files: dict[str, str] = field(default_factory=dict)
    # Missing calls this run had no time to backfill (DEFERRED_REASON), contradicted calls it had no time to restore,
    # and calls too big for the log group it had no time to write again: the daily runs go on with such a day.
    deferred: int = 0
    restore_deferred: int = 0
    refresh_deferred: int = 0
    # Contradicted calls this run restored: the next daily run checks the day again, to confirm the trail's records are
    # the ones left (compaction keeps them) and stop marking the day's records.
    restored_now: int = 0
    # When the trail did not log during the day (`from ... to ...`, as CloudTrail said at a run): its calls then were
    # recorded nowhere, so the day is incomplete whatever the counts say.
    not_logging: list[str] = field(default_factory=list)
    # When the trail's event selectors left out some audited calls of some tables (each such table's times, each with
    # a note saying which calls): those tables' calls then were recorded nowhere, the other tables' were.
    narrowed: dict[str, list[str]] = field(default_factory=dict)
    tables: dict[str, TableReport] = field(default_factory=dict)

    def settle(self) -> None:
        for report in self.tables.values():  # each as the trail logged it; the summary says when it did not
            report.unreadable_trail_files = len(self.unreadable_trail_files)
            report.settle()
        self.restored_now = sum(report.restored_now for report in self.tables.values())
        statuses = {report.status for report in self.tables.values()}
        if self.not_logging or self.narrowed:  # the day's status is its least complete table's
            self.status = INCOMPLETE
        elif not self.day_trail_files:
            self.status = NO_TRAIL_FILES
        elif self.unreadable_trail_files or INCOMPLETE in statuses:
            self.status = INCOMPLETE
        elif UNCONFIRMED in statuses:
            self.status = UNCONFIRMED
        elif BACKFILLED in statuses:
            self.status = BACKFILLED
        else:
            self.status = VERIFIED

    def summary(self) -> dict[str, Any]:
        """The day's own document (each table's report is stored beside it)."""
        document = {name: value for name, value in asdict(self).items() if name != "tables"}
        document["tables"] = {name: report.status for name, report in sorted(self.tables.items())}
        document["unreadable_trail_files"] = dict(list(sorted(self.unreadable_trail_files.items()))[:MAX_LISTED])
        return document

    def totals(self) -> dict[str, int]:
        """The day's counts over every table (the published metrics)."""
        reports = self.tables.values()
        return {
            "TrailEvents": sum(report.trail_events for report in reports),
            "BackfilledEvents": sum(report.backfilled_now for report in reports),
            "MissingEvents": sum(report.still_missing for report in reports),
            "UnconfirmedEvents": sum(report.audited_not_in_trail + report.altered for report in reports),
            "DuplicateTrailEvents": sum(report.duplicates_in_trail for report in reports),
            "UnreadableTrailFiles": len(self.unreadable_trail_files),
            "GoneRecords": sum(report.gone_since_last_run for report in reports),
            "RestoredEvents": sum(report.restored_now for report in reports),
        }


# GET /audit/coverage answers at most this many days at once, 30 when not told, and names at most this many
# unconfirmed records in all (about 0.8 MB; each day's report names up to MAX_LISTED of each kind).
MAX_COVERAGE_DAYS = 366
DEFAULT_COVERAGE_DAYS = 30
MAX_COVERAGE_UNCONFIRMED_IDS = 20_000
# A day's times without logging, as stored and answered: a few at most (each run learns of one).
MAX_GAPS = 10
MAX_GAP_CHARS = 200


def coverage_of(
    day: str, table: str, summary: Mapping[str, Any] | None, report: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One day of GET /audit/coverage, from the day's summary and the table's report (either may be absent)."""
    if summary is None:
        return {"day": day, "status": NOT_CHECKED}
    entry: dict[str, Any] = {
        "day": day,
        "checked_at": summary.get("checked_at"),
        "checked_until": summary.get("checked_until"),
    }
    gaps = _stored_list(summary.get("not_logging"))
    narrowed = summary.get("narrowed")
    if isinstance(narrowed, Mapping):  # the selectors left out some of this table's calls
        gaps += _stored_list(narrowed.get(table))
    if gaps:  # the trail did not log this table's calls for a while: whatever the counts, incomplete
        entry["not_logging"] = [str(gap)[:MAX_GAP_CHARS] for gap in gaps[:MAX_GAPS]]
    elif summary.get("status") == NO_TRAIL_FILES:
        return {**entry, "status": NO_TRAIL_FILES}
    if report is None:  # the day was checked and the trail names no call on this table
        unreadable = bool(summary.get("unreadable_trail_files")) or "not_logging" in entry
        counts = {"trail_events": 0, "backfilled": 0, "still_missing": 0, "not_in_trail": 0, "altered": 0}
        return {**entry, "status": INCOMPLETE if unreadable else VERIFIED, **counts}
    covered = {
        **entry,
        "status": INCOMPLETE if "not_logging" in entry else report.get("status", NOT_CHECKED),
        "trail_events": report.get("trail_events", 0),
        "backfilled": report.get("backfilled", 0),
        "still_missing": report.get("still_missing", 0),
        "deferred": _deferred(report.get("missing_reasons")),
        "not_in_trail": report.get("audited_not_in_trail", 0),
        "altered": report.get("altered", 0),
    }
    for name in ("gone", "restored"):  # named only on the days they happened
        count = report.get(name)
        if type(count) is int and count > 0:
            covered[name] = count
    # A contradicted call the check restored shows as the trail's own records: named apart, not as unconfirmed.
    restored = set(_ids(report.get("restored_examples")))
    listed = {*_ids(report.get("not_in_trail_examples")), *_ids(report.get("altered_examples"))} - restored
    if listed:
        covered["unconfirmed_ids"] = sorted(listed)[:MAX_LISTED]
    if restored:
        covered["restored_ids"] = sorted(restored)[:MAX_LISTED]
    return covered


def _stored_list(value: object) -> list[object]:
    """A stored list; empty for anything that is not one."""
    return list(value) if isinstance(value, list) else []


def _deferred(reasons: object) -> int:
    """Of a report's missing calls, those a run deferred to the next daily runs for want of time."""
    count = reasons.get(DEFERRED_REASON) if isinstance(reasons, Mapping) else None
    return count if type(count) is int and count > 0 else 0


def bound_unconfirmed_ids(days: list[dict[str, Any]], budget: int = MAX_COVERAGE_UNCONFIRMED_IDS) -> None:
    """Cut the days' `unconfirmed_ids`, and their `restored_ids`, to `budget` each in all, the latest days' first, so an
    answer stays small."""
    for name in ("unconfirmed_ids", "restored_ids"):
        left = budget
        for day in reversed(days):
            listed = day.get(name)
            if listed is None:
                continue
            day[name] = listed[:left]
            left -= len(day[name])


def _ids(value: object) -> list[str]:
    """The event ids a stored report lists (whatever else a list there holds is no id)."""
    return [item for item in value if isinstance(item, str) and is_event_id(item)] if isinstance(value, list) else []


def is_event_id(text: str) -> bool:
    return bool(_EVENT_ID.fullmatch(text))


_COVERAGE_PARAMETERS = ("table", "since", "until")


def parse_coverage_request(
    parameters: Mapping[str, str | Sequence[str]], audited: frozenset[str] | None, today: date
) -> tuple[str, list[str]]:
    """The table and days of a GET /audit/coverage query string: `since` inclusive, `until` exclusive (dates,
    `YYYY-MM-DD`), by default the 30 days up to today included; InvalidRequestError or UnknownTableError."""
    values: dict[str, str] = {}
    for name, given in parameters.items():
        if name not in _COVERAGE_PARAMETERS:
            raise InvalidRequestError(shown(name), "is not a parameter of GET /audit/coverage")
        listed = [given] if isinstance(given, str) else list(given)
        if len(listed) != 1:
            raise InvalidRequestError(name, "must be given once")
        values[name] = listed[0]
    table = values.get("table")
    if table is None:
        raise InvalidRequestError("table", "is required")
    if not re.fullmatch(TABLE_NAME_PATTERN, table):
        raise InvalidRequestError("table", "is not a DynamoDB table name ([A-Za-z0-9_.-], 3 to 255)")
    bounds: dict[str, date] = {}
    for name in ("since", "until"):
        if name in values:
            try:
                bounds[name] = parse_day(values[name])
            except ValueError:
                raise InvalidRequestError(name, "must be a date, YYYY-MM-DD (UTC)") from None
    until = bounds.get("until", today + timedelta(days=1))
    since = bounds.get("since", until - timedelta(days=DEFAULT_COVERAGE_DAYS))
    if since >= until:
        raise InvalidRequestError("until", "must be later than since")
    if (until - since).days > MAX_COVERAGE_DAYS:
        raise InvalidRequestError("since", f"covers more than {MAX_COVERAGE_DAYS} days; ask for a shorter range")
    if audited is not None and table not in audited:
        raise UnknownTableError(f"table {table} is not audited here")
    return table, [(since + timedelta(days=offset)).isoformat() for offset in range((until - since).days)]
