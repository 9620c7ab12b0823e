"""`deutzia history`, `coverage` and `evidence`: an item's history and a table's verified days, as a readable table
(or JSON / CSV for pipes: stdout carries only data; progress and errors go to stderr), or both in one zip with
checksums for an auditor. Errors are one line and an exit code: 2 a bad option or request, 3 no permission or
credentials, 4 a table that is not audited, 5 the API unreachable or failing.
"""

from __future__ import annotations

import csv
import functools
import heapq
import itertools
import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from chalicelib.schema import COLUMN_NAMES
from chalicelib.shown import attributes_text, operation_text, who
from deutzia_cli.api import UNAVAILABLE, USAGE, CliError, Target, resolve
from deutzia_cli.follow import DEFAULT_FOLLOW_INTERVAL, MIN_FOLLOW_INTERVAL
from deutzia_cli.views import (
    HISTORY_COLUMNS,
    json_text,
    plain,
    print_coverage,
    print_rows,
    terminal,
    writable_whatever_the_encoding,
)
from deutzia_cli.when import api_time

# Entries per request when paging (the API's own maximum).
PAGE = 1000
# `--table '*'`: every audited table's history, merged newest first; at most this many tables (each a query a page).
EVERY_TABLE = "*"
MAX_EVERY_TABLE = 50
# GET /audit's filters, each an option of every command that reads a history.
HISTORY_FILTERS = ("table", "key", "since", "until", "principal", "operation", "result", "source_ip")
# What makes a spreadsheet read a cell as a formula (OWASP's list for CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Every column of the record and its table: the most asked first, in the order they always had, then the rest in
# the record's own order. The page's CSV has the same (a test compares them).
_FIRST_CSV_COLUMNS = (
    "event_time",
    "principal_arn",
    "operation",
    "event_name",
    "item_key",
    "success",
    "error_code",
    "error_message",
    "source_ip",
    "user_agent",
    "event_id",
    "item_index",
)
CSV_COLUMNS = (
    *_FIRST_CSV_COLUMNS,
    *(name for name in COLUMN_NAMES if name not in _FIRST_CSV_COLUMNS),
    "table_name",
)

_target_options = [
    click.option("--endpoint", help="The API's URL (the stack's EndpointURL output, or the local stack's)."),
    click.option("--stack", help="A deployed Deutzia stack: its outputs say where the API is."),
    click.option("--profile", help="The AWS profile whose credentials sign the requests."),
    click.option("--region", help="The AWS region of the stack or API."),
]


def _with_target(function: Any) -> Any:
    """The target options on a command, resolved into one `target` argument before the command runs."""

    @functools.wraps(function)
    def with_target(
        *args: Any, endpoint: str | None, stack: str | None, profile: str | None, region: str | None, **kwargs: Any
    ) -> Any:
        return function(*args, target=resolve(endpoint, stack, profile, region), **kwargs)

    wrapped: Any = with_target
    for option in reversed(_target_options):
        wrapped = option(wrapped)
    return wrapped


def _api_time(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """An option's time as GET /audit takes it (`deutzia_cli.when`), read once, when the command starts."""
    if value is None:
        return None
    try:
        return api_time(value, datetime.now(UTC))
    except ValueError as exc:
        raise CliError(f"bad request: --{parameter.name}: {exc}", USAGE) from None


def _api_day(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """An option's day: the UTC day of a span back (`7d`) or of a time; anything else as written, for the command to
    check as a day and say what is wrong with it."""
    try:
        return None if value is None else api_time(value, datetime.now(UTC))[:10]
    except ValueError:
        return value


def _history_filters(function: Any) -> Any:
    """GET /audit's filters as options, for every command that reads a history."""
    options = [
        click.option(
            "--table",
            required=True,
            help="The audited table; for history, '*' reads every audited table's, merged newest first.",
        ),
        click.option(
            "--key",
            help="The item's key as JSON, e.g. '{\"id\": \"42\"}'; without it, the table's calls of its last 7 days "
            "(unless --since).",
        ),
        click.option(
            "--since",
            callback=_api_time,
            help="From this time, included: YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC), a time with its offset "
            "(2026-11-30T09:00+01:00), or a span back from now (90m, 6h, 2d, 1w).",
        ),
        click.option("--until", callback=_api_time, help="Up to this time, excluded (written as --since)."),
        click.option(
            "--principal",
            help="Only calls by this IAM ARN (or the role behind a session), principal id, or access key id.",
        ),
        click.option(
            "--operation", help="Only this operation: Put, Update, Delete, Get, ConditionCheck, Query, Scan, Statement."
        ),
        click.option(
            "--result",
            help="Only the calls that worked (ok), that failed (failed), that were refused their permission (denied), "
            "or that failed with this error code (e.g. ConditionalCheckFailedException).",
        ),
        click.option(
            "--source-ip",
            help="Only calls from this IP address (or AWS service, as CloudTrail names it), e.g. a finding's, or from "
            "any address of an IPv4 range (203.0.113.0/24).",
        ),
    ]

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        # The API's own reading of the filters, before the API is looked for: a bad --key says so even with no stack.
        from chalicelib.errors import InvalidRequestError
        from chalicelib.query import parse_audit_request

        filters = _query(**{name: kwargs[name] for name in HISTORY_FILTERS})
        if filters["table"] == EVERY_TABLE:  # each audited table's name, checked by the API
            filters["table"] = "any"
        try:
            parse_audit_request(filters, None)
        except InvalidRequestError as exc:  # named as the option is: --source-ip, not source_ip
            option = exc.parameter.replace("_", "-")
            raise CliError(f"bad request: --{option}{str(exc).removeprefix(exc.parameter)}", USAGE) from None
        return function(*args, **kwargs)

    wrapped: Any = checked
    for option in reversed(options):
        wrapped = option(wrapped)
    return wrapped


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Who changed this DynamoDB item, when, from where, and did it work."""


@cli.command()
@_history_filters
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="How many entries at most.")
@click.option("--all", "everything", is_flag=True, help="Every entry, following the pages.")
@click.option("--format", "output", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--page-size", type=click.IntRange(1, PAGE), default=PAGE, hidden=True)
@click.option("--follow", is_flag=True, help="Then show new calls as they reach the audit, oldest first, until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(MIN_FOLLOW_INTERVAL),
    default=DEFAULT_FOLLOW_INTERVAL,
    show_default=True,
    help="Seconds between two reads with --follow (each is a query for every table followed).",
)
@_with_target
def history(
    table: str,
    key: str | None,
    since: str | None,
    until: str | None,
    principal: str | None,
    operation: str | None,
    result: str | None,
    source_ip: str | None,
    limit: int,
    everything: bool,
    output: str,
    page_size: int,
    follow: bool,
    interval: float,
    target: Target,
) -> None:
    """An item's history (or a table's recent calls), newest first; with --table '*', every audited table's; with
    --follow, its last entries, then new ones as they come."""
    if follow and (until or everything or output == "csv"):
        raise CliError("--follow shows calls as they come: it takes no --until, --all or --format csv", USAGE)
    since = _recent_since(key, since, until, "every table's" if table == EVERY_TABLE else "the table's")
    parameters = _query(
        table=table,
        key=key,
        since=since,
        until=until,
        principal=principal,
        operation=operation,
        result=result,
        source_ip=source_ip,
    )
    tables = _every_table(target) if table == EVERY_TABLE else [table]
    entries = _merged_entries(target, parameters, tables, None if everything else limit, page_size)
    if follow:
        _follow(target, parameters, tables, list(entries), output, interval, page_size)
    elif output == "json":
        _write_json(entries)
    elif output == "csv":
        _write_csv(CSV_COLUMNS, ([entry.get(name) for name in CSV_COLUMNS] for entry in entries))
    else:
        rows = list(entries)
        days, cut = coverage_days(since, until, datetime.now(UTC).date())
        answers = {
            name: _coverage_or_error(target, name, days)
            for name in tables
            if len(tables) == 1 or any(entry.get("table_name") == name for entry in rows)
        }  # every table's: the tables a merged history shows
        found = [answer for answer in answers.values() if isinstance(answer, dict)]
        unconfirmed = frozenset().union(*(marked_ids(answer, "unconfirmed_ids") for answer in found))
        restored = frozenset().union(*(marked_ids(answer, "restored_ids") for answer in found)) - unconfirmed
        merged = table == EVERY_TABLE
        title = f"{f'every audited table ({len(tables)})' if merged else table} {key or '(recent calls)'}, newest first"
        filtered = filters_in_words({name: value for name, value in parameters.items() if name not in ("table", "key")})
        if filtered:  # a history pasted into an incident's notes says which calls it shows
            title += f": only the calls {filtered}"
        columns = [  # one item's key is in the title; a merged history names each line's table
            name for name in HISTORY_COLUMNS if (key is None or name != "key") and (merged or name != "table")
        ]
        lines = []
        for entry in rows:
            result = "ok" if entry.get("success") else f"[red]failed: {plain(entry.get('error_code') or 'error')}[/red]"
            if entry.get("event_id") in unconfirmed:
                result += f"\n[yellow]{UNCONFIRMED_NOTE}[/yellow]"
            elif entry.get("event_id") in restored:
                result += f"\n[blue]{RESTORED_NOTE}[/blue]"
            cells = {
                "time": plain(entry.get("event_time")),
                "table": plain(entry.get("table_name") or ""),
                "who": plain(who(entry)),
                "operation": plain(operation_text(entry)),
                "key": plain(entry.get("item_key") or "-"),
                "attributes": plain(attributes_text(entry)),
                "result": result,
                "from": plain(entry.get("source_ip") or ""),
            }
            lines.append([cells[name] for name in columns])
        print_rows(terminal(), plain(title), columns, lines, whole=("time",))
        terminal(stderr=True).print(f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}")
        for name, answer in answers.items():
            shown = [entry for entry in rows if not merged or entry.get("table_name") == name]
            prefix = f"{name}: " if merged else ""
            if isinstance(answer, CliError):
                terminal(stderr=True).print(plain(f"{prefix}coverage unavailable: {answer}"))
            else:
                _print_coverage_line(answer, cut, str(shown[-1].get("event_time")) if shown else None, prefix)


def _follow(
    target: Target,
    parameters: dict[str, str],
    tables: Sequence[str],
    last: list[dict[str, Any]],
    output: str,
    interval: float,
    page_size: int,
) -> None:
    """The history's `last` entries, oldest first, then each new one as it comes (`deutzia_cli.follow`): as JSON Lines,
    or as one line each, its table first when every table's is followed."""
    from deutzia_cli.follow import follow

    console = terminal(soft_wrap=True)

    def show(entry: Mapping[str, Any]) -> None:
        if output == "json":
            sys.stdout.write(json_text(entry) + "\n")
            sys.stdout.flush()
            return
        failed = not entry.get("success")
        cells = [
            entry.get("event_time"),
            *([entry.get("table_name")] if len(tables) > 1 or parameters["table"] == EVERY_TABLE else []),
            who(entry),
            operation_text(entry),
            entry.get("item_key") or "-",
            attributes_text(entry),
            f"failed: {entry.get('error_code') or 'error'}" if failed else "ok",
            entry.get("source_ip") or "",
        ]
        console.print("  ".join(plain(cell) for cell in cells), style="red" if failed else None)

    for entry in reversed(last):
        show(entry)
    terminal(stderr=True).print(f"following: new calls every {interval:g} s (Ctrl-C ends)")

    def read(since: str) -> Iterator[dict[str, Any]]:
        return _merged_entries(target, {**parameters, "since": since}, tables, None, page_size, progress=False)

    start = parameters.get("since") or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    follow(read, show, last, start, interval)


def _coverage_or_error(target: Target, table: str, days: dict[str, str]) -> dict[str, Any] | CliError:
    """GET /audit/coverage's answer for the table, or why it is unknown: the history stands without it."""
    try:
        answer = target.get("/audit/coverage", {"table": table, **days})
    except CliError as exc:
        return exc
    if not isinstance(answer, dict) or not isinstance(answer.get("days"), list):
        return CliError("the API's answer holds no days", UNAVAILABLE)
    return answer


def _every_table(target: Target) -> list[str]:
    """The audited tables (GET /tables), at most MAX_EVERY_TABLE of them: each is one query per page."""
    answer = target.get("/tables", {})
    tables = answer.get("tables") if isinstance(answer, dict) else None
    if not isinstance(tables, list) or not all(isinstance(name, str) for name in tables):
        raise CliError("the API's answer to GET /tables holds no list of tables", UNAVAILABLE)
    if len(tables) > MAX_EVERY_TABLE:
        raise CliError(
            f"--table '*' reads at most {MAX_EVERY_TABLE} tables and {len(tables)} are audited: name one, or ask"
            " `deutzia sql` (one query over every table)",
            USAGE,
        )
    return [str(name) for name in tables]


@cli.command()
@click.option("--table", required=True, help="The audited table, or '*': each audited table's days, side by side.")
@click.option(
    "--since", callback=_api_day, help="The first day (YYYY-MM-DD, or a span back from now: 7d); default: 30 days ago."
)
@click.option(
    "--until", callback=_api_day, help="The day after the last (YYYY-MM-DD, or 0d: today); default: tomorrow."
)
@click.option("--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@_with_target
def coverage(
    table: str,
    since: str | None,
    until: str | None,
    output: str,
    target: Target,
) -> None:
    """Per day, whether the table's history is verified complete against the trail's own files; with --table '*',
    how many days of each audited table are in each state, and each table's line."""
    days = {name: value for name, value in (("since", since), ("until", until)) if value}
    if table == EVERY_TABLE:
        _every_tables_coverage(target, days, output)
        return
    answer = target.get("/audit/coverage", {"table": table, **days})
    if output == "json":
        click.echo(json.dumps(answer, indent=1))
        return
    print_coverage(terminal(), f"{table}: coverage", answer["days"])
    _print_coverage_line(answer, False)


def _every_tables_coverage(target: Target, days: dict[str, str], output: str) -> None:
    """Each audited table's coverage: as JSON, `{"tables": {<table>: <its answer>}}`; else a table of how many days of
    each are in each state (a table whose coverage could not be read says why), then each table's line."""
    answers = {name: _coverage_or_error(target, name, days) for name in _every_table(target)}
    if output == "json":
        found = {name: answer for name, answer in answers.items() if isinstance(answer, dict)}
        click.echo(json.dumps({"tables": found}, indent=1))
        failed = [f"{name}: {answer}" for name, answer in answers.items() if isinstance(answer, CliError)]
        if failed:
            raise CliError(f"the coverage of {'; '.join(failed)}", UNAVAILABLE)
        return
    rows = []
    for name, answer in answers.items():
        if isinstance(answer, CliError):
            rows.append([plain(name), f"[red]{plain(answer)}[/red]", *[""] * len(COVERAGE_LABELS)])
            continue
        counted = [sum(day.get("status") == status for day in answer["days"]) for status in COVERAGE_LABELS]
        problems = answer.get("trail_problems")
        cells = [str(count) if count else "" for count in counted]
        rows.append([plain(name), *cells, str(len(problems)) if isinstance(problems, list) and problems else ""])
    columns = ["table", *COVERAGE_LABELS.values(), "trail problems"]
    print_rows(terminal(), "every audited table: days by status", columns, rows, whole=("table",))
    for name, answer in answers.items():
        if isinstance(answer, dict):
            _print_coverage_line(answer, False, None, f"{name}: ")


@cli.command()
@click.option(
    "--since", required=True, callback=_api_day, help="The first UTC day to check (YYYY-MM-DD, or a span back: 2d)."
)
@click.option("--until", callback=_api_day, help="The last day, included (default: --since); at most 31 days.")
@click.option("--stack", help="A deployed Deutzia stack: invokes its reconcile function; without it, the local stack.")
@click.option("--function", "function", help="The reconcile function (default: the stack's ReconcileFunctionName).")
@click.option("--profile", help="The AWS profile whose credentials invoke the function.")
@click.option("--region", help="The AWS region of the stack.")
@click.option("--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def reconcile(
    since: str,
    until: str | None,
    stack: str | None,
    function: str | None,
    profile: str | None,
    region: str | None,
    output: str,
) -> None:
    """Check days against CloudTrail's own files now, backfilling what is missing, as the nightly run does."""
    from chalicelib.reconcile import INCOMPLETE, UNCONFIRMED
    from chalicelib.reconciler import days_between, last_verifiable_day
    from deutzia_cli.reconcile import INVOKE_READ_TIMEOUT_SECONDS, reconcile_in_aws, reconcile_locally

    try:
        days = days_between(since, until or since)
    except ValueError as exc:
        raise CliError(f"bad request: --since, --until: {exc}", USAGE) from None
    if stack or function:
        from botocore.config import Config

        from deutzia_cli.api import session_and_outputs

        latest = last_verifiable_day(datetime.now(UTC))
        if days[-1] > latest:  # its last calls may not be in CloudTrail's files yet: they would seem forged
            too_recent = f"{days[-1]} is too recent; the latest day to check is {latest}"
            raise CliError(f"bad request: --until: {too_recent}", USAGE)
        session, outputs = session_and_outputs(stack, profile, region)
        function = function or outputs.get("ReconcileFunctionName")
        if not function:
            raise CliError("give --function, or a --stack with a ReconcileFunctionName output", USAGE)
        config = Config(read_timeout=INVOKE_READ_TIMEOUT_SECONDS, retries={"mode": "standard", "max_attempts": 1})
        status = terminal(stderr=True).status("reconciling...")
        status.start()
        try:
            reconciled = reconcile_in_aws(session.client("lambda", config=config), function, days, status.update)
        finally:
            status.stop()
    else:
        reconciled = reconcile_locally(days)
    statuses = reconciled.statuses
    if output == "json":
        click.echo(json.dumps({"days": statuses, "trail_problems": reconciled.trail_problems}, indent=1))
    else:
        rows = [[day, plain(day_status)] for day, day_status in statuses.items()]
        print_rows(terminal(), None, ["day", "status"], rows, whole=("day",))
    answer = {
        "since": days[0],
        "until": days[-1],
        "days": [{"day": d, "status": s} for d, s in statuses.items()],
        "trail_problems": reconciled.trail_problems,  # the days only show what the trail logged
    }
    _print_coverage_line(answer, False)
    if reconciled.trail_problems or any(day_status in (INCOMPLETE, UNCONFIRMED) for day_status in statuses.values()):
        raise CliError("not every day is complete and confirmed: `deutzia coverage` and the day's report say why", 1)


# GET /audit/coverage's day statuses, as people read them, in this order (the page names them the same).
COVERAGE_LABELS = {
    "verified": "verified complete",
    "backfilled": "complete after backfill",
    "incomplete": "incomplete",
    "unconfirmed": "with records the trail does not confirm",
    "no_trail_files": "without trail files",
    "not_checked": "not checked yet",
}
MAX_COVERAGE_DAYS = 366
# How many of the trail's problems a coverage line names (there are at most five kinds).
MAX_TRAIL_PROBLEMS = 5
# How many of the table's notes (GET /audit/coverage's `table_notes`: at most three) a coverage line names.
MAX_TABLE_NOTES = 3


def coverage_days(since: str | None, until: str | None, today: date) -> tuple[dict[str, str], bool]:
    """The days a history's `since`/`until` cover, as GET /audit/coverage takes them (until's day included, at most
    the last 366; the API's 30 days by default), and whether the range was cut to them."""
    first, last = _day_of(since), _day_of(until)
    end = (last if last is not None else today) + timedelta(days=1)
    days: dict[str, str] = {}
    if last is not None:
        days["until"] = end.isoformat()
    cut = first is not None and first < end - timedelta(days=MAX_COVERAGE_DAYS)
    if first is not None:
        days["since"] = max(first, end - timedelta(days=MAX_COVERAGE_DAYS)).isoformat()
    return days, cut


def _day_of(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text[:10]) if text else None
    except ValueError:
        return None


def coverage_line(answer: dict[str, Any], cut: bool, oldest: str | None = None) -> tuple[str, bool]:
    """One line saying how complete the history is over the answer's days, and whether calls are missing; then what
    DynamoDB says of the table that no call made. When the table was created is said only where it splits what is
    shown: after the `oldest` entry's time (with no entry shown, after a day the trail holds calls of), those entries
    or calls are of an earlier table."""
    counts: dict[str, int] = {}
    missing, strangers, deleted, restored = [], [], [], []
    for day in answer["days"]:
        status = str(day.get("status"))
        counts[status] = counts.get(status, 0) + 1
        gaps = day.get("not_logging")
        if status == "incomplete" and isinstance(gaps, list) and gaps:  # calls recorded nowhere: no count of them
            missing.append(f"{day.get('day')} (the trail did not log {'; '.join(str(gap) for gap in gaps[:3])})")
        elif status == "incomplete":
            deferred = _count(day, "deferred")
            later = f", {deferred} to be backfilled by the next daily runs" if deferred else ""
            missing.append(f"{day.get('day')} ({day.get('still_missing', 'some')} missing{later})")
        elif status == "unconfirmed":
            strangers.append(f"{day.get('day')} ({_count(day, 'not_in_trail') + _count(day, 'altered') or 'some'})")
        if _count(day, "gone"):
            deleted.append(f"{day.get('day')} ({_count(day, 'gone')})")
        if _count(day, "restored"):
            restored.append(f"{day.get('day')} ({_count(day, 'restored')})")
    order = [*COVERAGE_LABELS, *(status for status in counts if status not in COVERAGE_LABELS)]
    parts = [
        f"{counts[status]} day{'' if counts[status] == 1 else 's'} {COVERAGE_LABELS.get(status, status)}"
        for status in order
        if status in counts
    ]
    line = f"Checked against CloudTrail's own files, {answer.get('since')} to {answer.get('until')}"
    line += f" (the range's last {MAX_COVERAGE_DAYS} days): " if cut else ": "
    line += ", ".join(parts) + "."
    for days, what in (
        (missing, "Calls still missing"),
        (strangers, "Records CloudTrail's own files lack or contradict"),
        (deleted, "Records deleted after a check, written again from the trail's files,"),
        (restored, "Records that contradicted the trail's files, replaced by the files' own,"),
    ):
        if days:
            more = f" and {len(days) - 10} more days" if len(days) > 10 else ""
            line += f" {what} on {', '.join(days[:10])}{more}."
    problems = answer.get("trail_problems")
    problems = [str(problem) for problem in problems[:MAX_TRAIL_PROBLEMS]] if isinstance(problems, list) else []
    for problem in problems:  # now, whatever the days: what the trail does not log is recorded nowhere
        line += f" The trail: {problem}."
    for note in table_notes(answer, oldest if oldest is not None else _end_of_first_called_day(answer)):
        line += f" The table: {note}."
    return line, bool(missing or strangers or deleted or restored or problems)


def _end_of_first_called_day(answer: dict[str, Any]) -> str:
    """With no entry shown, where a creation splits the days: after the first day whose calls the trail holds (those
    are of an earlier table when it was created on a later day); `~`, after any time, when no day has calls."""
    called = [str(day.get("day")) for day in answer["days"] if isinstance(day, dict) and _count(day, "trail_events")]
    return f"{min(called)}T23:59:59Z" if called else "~"


def table_notes(answer: dict[str, Any], oldest: str) -> list[str]:
    """The texts of a coverage answer's `table_notes`, but a `created` note whose time is not after `oldest` (an
    ISO 8601 time or day: both compare as text)."""
    notes = answer.get("table_notes")
    return [
        note["text"]
        for note in (notes[:MAX_TABLE_NOTES] if isinstance(notes, list) else [])
        if isinstance(note, dict)
        and isinstance(note.get("text"), str)
        and (note.get("kind") != "created" or (isinstance(note.get("time"), str) and note["time"] > oldest))
    ]


# Beside a record reconciliation found the trail's own files lack or contradict, and beside one it restored from those
# files (the page says the same).
UNCONFIRMED_NOTE = "unconfirmed: CloudTrail's own files lack or contradict this record"
RESTORED_NOTE = "restored: CloudTrail's own record of this call, which replaced a copy that contradicted it"


def marked_ids(answer: dict[str, Any], name: str) -> frozenset[str]:
    """The event ids a coverage answer's days name under `name` (`unconfirmed_ids`, `restored_ids`)."""
    return frozenset(
        str(event_id)
        for day in answer["days"]
        if isinstance(day, dict) and isinstance(day.get(name), list)
        for event_id in day[name]
    )


def _count(day: dict[str, Any], name: str) -> int:
    value = day.get(name)
    return value if type(value) is int else 0


def _print_coverage_line(answer: dict[str, Any], cut: bool, oldest: str | None = None, prefix: str = "") -> None:
    line, missing = coverage_line(answer, cut, oldest)
    terminal(stderr=True).print(plain(prefix + line), style="red" if missing else None)


@cli.command()
@_history_filters
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The zip to write (never replaced)."
)
@_with_target
def evidence(out: Path, target: Target, **filters: str | None) -> None:
    """An item's whole history and the coverage of its days in one zip, with checksums, for an auditor to keep; with
    --table '*', every audited table's, and each table's coverage."""
    from deutzia_cli.evidence import write_bundle

    merged = filters["table"] == EVERY_TABLE
    filters["since"] = _recent_since(
        filters["key"], filters["since"], filters["until"], "every table's" if merged else "the table's"
    )
    parameters = _query(**filters)
    table, key, since, until = parameters["table"], filters["key"], filters["since"], filters["until"]
    if out.exists():  # before reading the whole history
        raise _exists(out)
    tables = _every_table(target) if merged else [table]
    days, cut = coverage_days(since, until, datetime.now(UTC).date())
    covered: dict[str, dict[str, Any]] = {}
    for name in tables:  # every table's, those without an entry too: that they hold none is evidence as well
        answer = _coverage_or_error(target, name, days)
        if isinstance(answer, CliError):
            raise CliError(f"the coverage of {name}: {answer}", UNAVAILABLE)
        covered[name] = answer
    lines = {name: coverage_line(answer, cut)[0] for name, answer in covered.items()}
    generated = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest: dict[str, Any] = {"generated_at": generated, "api": target.url, "query": parameters}
    manifest.update({"tables": tables, "coverage": lines} if merged else {"coverage": lines[table]})
    if target.trail_arn:
        manifest["trail_arn"] = target.trail_arn
    first = next(iter(covered.values()), {"since": days.get("since"), "until": days.get("until")})
    readme = EVIDENCE_README.format(
        what=f"the item {key}" if key else "every item",
        where=f"every audited DynamoDB table ({len(tables)}: {', '.join(tables)})"
        if merged
        else f"the DynamoDB table {table}",
        per="per table and day" if merged else "per day",
        only=_only(parameters),
        generated=generated,
        api=target.url,
        coverage="\n".join(f"{name}: {line}" for name, line in lines.items()) if merged else lines[table],
        validate=_validate_logs_command(target, first.get("since"), _day_after(first.get("until"))),
    )
    try:
        bundle = write_bundle(
            out,
            _merged_entries(target, parameters, tables, None),
            CSV_COLUMNS,
            lambda entry: [_spreadsheet_safe(entry.get(name)) for name in CSV_COLUMNS],
            {"tables": covered} if merged else covered[table],
            manifest,
            readme,
        )
    except FileExistsError:  # made meanwhile
        raise _exists(out) from None
    said = " ".join(f"{name}: {line}" for name, line in lines.items()) if merged else lines[table]
    terminal(stderr=True).print(plain(f"wrote {out}: {bundle.entries} entries. {said}"))


EVIDENCE_README = """Deutzia evidence: the history of {what} in {where}, as GET /audit answered it on
{generated} ({api}).{only}

history.json   every entry, exactly as the API answered it, newest first
history.csv    the same entries as CSV (a text cell a spreadsheet would run as a formula starts with ')
coverage.json  {per}, whether the history is complete against CloudTrail's own files, the records
               those files lack or contradict (unconfirmed_ids), and those restored from them (restored_ids)
manifest.json  the query, when it ran, how many entries it gave, and the SHA-256 of the three files above
SHA256SUMS     the SHA-256 of the four files above: `sha256sum -c SHA256SUMS` checks them

{coverage}

A day marked verified or backfilled holds every call on the table that CloudTrail's own files for that day hold,
and no record those files lack or contradict; a day marked unconfirmed holds such records, named in coverage.json.
Those files are provably CloudTrail's, and none was taken away: with log file validation on (Deutzia's trail has it),

  {validate}

checks each one against the digest files CloudTrail signed, and names any file changed or deleted since CloudTrail
delivered it. It needs read access to the trail's bucket and to the stack's KMS key (the files are encrypted with it:
the stack's AuditorPrincipalArns parameter names who may decrypt them); the stack's AuditorPolicyArn output is the
policy that allows the rest.
"""


def _only(parameters: Mapping[str, str]) -> str:
    """Which calls the bundle holds when the query's filters narrowed them, in words, for whoever reads it without its
    manifest (empty when none did)."""
    words = filters_in_words(parameters)
    return f"\nIt holds only the calls {words}: the query's filters (manifest.json)." if words else ""


def filters_in_words(parameters: Mapping[str, str]) -> str:
    """The query's filters as words that follow "the calls" (`from 2026-11-20, by AKIA...`); empty when none."""
    results = {"ok": "that worked", "failed": "that failed", "denied": "that were refused their permission"}
    where = parameters.get("source_ip", "")
    parts = [
        text
        for name, text in (
            ("since", f"from {parameters.get('since')}"),
            ("until", f"before {parameters.get('until')}"),
            ("principal", f"by {parameters.get('principal')}"),
            ("operation", f"of the operation {parameters.get('operation')}"),
            ("source_ip", f"from the address{'es of' if '/' in where else ''} {where}"),
        )
        if name in parameters
    ]
    result = parameters.get("result")
    if result is not None:
        parts.append(results.get(result.lower(), f"that failed with {result}"))
    return ", ".join(parts)


def _validate_logs_command(target: Target, first: object, after: str) -> str:
    """`aws cloudtrail validate-logs` for the coverage's days: with the trail's ARN when a stack named it."""
    trail = f"--trail-arn {target.trail_arn}" if target.trail_arn else "--trail-arn <the stack's TrailArn output>"
    region = f" --region {target.region}" if target.trail_arn and target.region else ""
    return f"aws cloudtrail validate-logs {trail}{region} --start-time {first}T00:00:00Z --end-time {after}T00:00:00Z"


# Without a key, a history is the table's calls of the last RECENT_DAYS days (up to --until's day), unless --since
# says otherwise: the whole table's history costs what the table holds. The page does the same.
RECENT_DAYS = 7


def _recent_since(key: str | None, since: str | None, until: str | None, whose: str = "the table's") -> str | None:
    """`since`, or for a table's calls without one, the first of its RECENT_DAYS last days (said on stderr)."""
    if key or since:
        return since
    end = (_day_of(until) or datetime.now(UTC).date()) + (timedelta(days=1) if not until else timedelta())
    first = (end - timedelta(days=RECENT_DAYS)).isoformat()
    terminal(stderr=True).print(f"{whose} calls since {first} (--since for earlier ones)")
    return first


def _query(**filters: str | None) -> dict[str, str]:
    """GET /audit's parameters: the filters that were given."""
    return {name: value for name, value in filters.items() if value is not None}


def _exists(out: Path) -> CliError:
    return CliError(f"{out} exists; choose another --out (evidence is never overwritten)", USAGE)


def _day_after(day: object) -> str:
    try:
        return (date.fromisoformat(str(day)) + timedelta(days=1)).isoformat()
    except ValueError:
        return str(day)


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="The local port.")
@_with_target
def ui(port: int, target: Target) -> None:
    """The item-history page on 127.0.0.1, signing its calls with your credentials (Ctrl-C stops it)."""
    import threading

    from deutzia_cli.ui import serve

    try:
        server = serve(target, port)
    except OSError as exc:
        raise CliError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}; choose another --port", USAGE) from None
    click.echo(f"the item-history page: http://127.0.0.1:{server.server_port}/  (calls {target.url}; Ctrl-C stops it)")
    try:
        threading.Event().wait()
    finally:
        server.shutdown()


@cli.command()
@click.argument("query")
@click.option("--format", "output", type=click.Choice(["table", "csv"]), default="table", show_default=True)
@click.option("--workgroup", help="The Athena workgroup (default: the stack's AthenaWorkGroupName output).")
@click.option("--database", help="The Glue database (default: the stack's GlueDatabaseName output).")
@click.option("--stack", help="A deployed Deutzia stack; without it (and --workgroup), the local stack's DuckDB.")
@click.option("--profile", help="The AWS profile whose credentials run the query.")
@click.option("--region", help="The AWS region of the stack.")
def sql(
    query: str,
    output: str,
    workgroup: str | None,
    database: str | None,
    stack: str | None,
    profile: str | None,
    region: str | None,
) -> None:
    """SQL on `audit` (and `cloudtrail_logs`): Athena in the deployment, DuckDB on the local stack."""
    from deutzia_cli.api import session_and_outputs
    from deutzia_cli.sql import athena_sql, local_sql

    status = terminal(stderr=True).status("running the query...")
    if stack or workgroup:
        session, outputs = session_and_outputs(stack, profile, region)
        workgroup = workgroup or outputs.get("AthenaWorkGroupName")
        database = database or outputs.get("GlueDatabaseName") or "deutzia"
        if not workgroup:
            raise CliError("give --workgroup, or a --stack with an AthenaWorkGroupName output", USAGE)
        status.start()
        try:
            answer = athena_sql(session.client("athena"), workgroup, database, query, status.update)
        finally:
            status.stop()
    else:
        answer = local_sql(query)
    if output == "csv":
        _write_csv(answer.columns, answer.rows)
    elif answer.columns:  # a statement that answers no rows has no columns either
        rows = (["NULL" if cell is None else plain(cell) for cell in row] for row in answer.rows)
        print_rows(terminal(), None, [plain(column) for column in answer.columns], rows)
    scanned = "" if answer.scanned_bytes is None else f", {answer.scanned_bytes:,} bytes scanned"
    terminal(stderr=True).print(f"{len(answer.rows)} row{'' if len(answer.rows) == 1 else 's'}{scanned}")


def _write_csv(columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """CSV on stdout. A text cell a spreadsheet would run as a formula (a caller picks its own user agent, an item
    its own key) starts with `'`, so opening the file runs nothing; JSON keeps every value as it is."""
    writer = csv.writer(sys.stdout)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_spreadsheet_safe(cell) for cell in row])


def _spreadsheet_safe(cell: object) -> object:
    """The cell as the page writes it too: nothing for null, `true`/`false`, a list as compact JSON."""
    if cell is None:
        return ""
    if isinstance(cell, bool):
        return "true" if cell else "false"
    if isinstance(cell, list):
        return json.dumps(cell, separators=(",", ":"), ensure_ascii=False)
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell


def _merged_entries(
    target: Target,
    parameters: dict[str, str],
    tables: Sequence[str],
    limit: int | None,
    page_size: int = PAGE,
    progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Each table's entries newest first, merged newest first, until `limit` (None: all), with progress on stderr
    (unless not). Each table's pages are read as the merge reaches them, so `limit` entries read at most `limit` of
    each."""
    status = terminal(stderr=True, quiet=not progress).status("reading the history...")
    shown = [0]

    def counted(entries: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for entry in entries:
            shown[0] += 1
            status.update(f"reading the history... {shown[0]} entries")
            yield entry

    status.start()
    try:
        streams = [counted(_entries(target, {**parameters, "table": name}, limit, page_size)) for name in tables]
        merged = heapq.merge(*streams, key=lambda entry: str(entry.get("event_time")), reverse=True)
        yield from itertools.islice(merged, limit)
    finally:
        status.stop()


def _entries(
    target: Target, parameters: dict[str, str], limit: int | None, page_size: int = PAGE
) -> Iterator[dict[str, Any]]:
    """Entries newest first, following `next_token` until `limit` (None: all)."""
    shown = 0
    token: str | None = None
    while limit is None or shown < limit:
        size = page_size if limit is None else min(page_size, limit - shown)
        page = target.get("/audit", {**parameters, "limit": str(size), **({"next_token": token} if token else {})})
        for entry in page["entries"]:
            yield entry
            shown += 1
        token = page.get("next_token")
        if not token or not page["entries"]:
            return


def _write_json(entries: Iterator[dict[str, Any]]) -> None:
    """A JSON array, written as the pages arrive."""
    sys.stdout.write("[")
    for number, entry in enumerate(entries):
        sys.stdout.write(("," if number else "") + "\n" + json_text(entry))
    sys.stdout.write("\n]\n")


def main() -> None:
    """The console script: CliError becomes one line on stderr and its exit code."""
    writable_whatever_the_encoding()
    try:
        cli.main(standalone_mode=False)
    except CliError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(USAGE)
    except click.exceptions.Abort:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
