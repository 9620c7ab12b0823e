"""What CloudTrail's event history (LookupEvents, 90 days) tells of the changes made to the trail, for the trail
watch: who made the change behind each problem it finds ("StopLogging was last called on the trail by
arn:aws:iam::...:user/mallory from 203.0.113.7 at ..."), and the times the trail's event selectors left audited calls
out and were set again before a watch could see them; for reconciliation, those times and every time the trail was
stopped (its status tells only the latest stop).

The trail itself logs only the audited tables' data events; CloudTrail logs every call that changes a trail
(StopLogging, UpdateTrail, PutEventSelectors, DeleteTrail) as a management event, whatever trails exist, with the
selectors a PutEventSelectors call set in its request parameters. The watch reads the trail as it is every few
minutes, so selectors narrowed and set back between two runs leave no trace there: only the history has them.
LookupEvents answers at most two requests a second an account, so only the watch and reconciliation ask.
`last_change`, `narrowed_windows` and `stopped_times` are pure; `who_changed`, `calls_on_trail` and
`logging_history` make the calls, and an unreadable history changes no problem (it is logged).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.selectors import ANY_TABLE, MAX_TABLES_NAMED, audited_calls, unlogged_calls
from chalicelib.trail_status import (
    GAP_NAMED_FOR,
    STATUS_CLIENT_CONFIG,
    TrailDuties,
    audited_table_arns,
    duties_of_environment,
    parse_moment,
)

logger = Logger(service="deutzia-trail")

# How far back the event history goes, and how much of it one question reads (newest first).
HISTORY = timedelta(days=90)
MAX_PAGES = 3
PAGE_EVENTS = 50
# LookupEvents answers two requests a second an account: the watch's own calls keep under it.
SECONDS_BETWEEN_CALLS = 0.5
# What a logged value may take in the text (a caller chooses its own session name).
_MAX_SHOWN_CHARS = 300
# The names of selectors as the API spells them, for request parameters logged in another case.
_SELECTOR_NAMES = {
    name.lower(): name
    for name in (
        "Name",
        "FieldSelectors",
        "Field",
        "Equals",
        "StartsWith",
        "EndsWith",
        "NotEquals",
        "NotStartsWith",
        "NotEndsWith",
        "ReadWriteType",
        "IncludeManagementEvents",
        "DataResources",
        "Type",
        "Values",
    )
}


@dataclass(frozen=True)
class TrailChange:
    """One successful call that changed the trail, as its management event tells it."""

    event_name: str
    at: str
    who: str
    source_ip: str
    parameters: Mapping[str, Any]

    def text(self) -> str:
        return f"{self.event_name} was last called on the trail by {self.who} from {self.source_ip} at {self.at}"


def changes(events: Iterable[Mapping[str, Any]], event_name: str, trail_arn: str) -> list[TrailChange]:
    """The successful `event_name` calls on the trail (named by its ARN or its name) among LookupEvents' `Events`,
    oldest first. Events for other trails, refused calls and events that cannot be read are passed over."""
    names = {trail_arn, trail_arn.rsplit("/", 1)[-1]}
    found: list[TrailChange] = []
    for event in events:
        try:
            record = json.loads(str(event.get("CloudTrailEvent") or ""))
        except (ValueError, RecursionError):
            continue
        if not isinstance(record, dict) or record.get("eventName") != event_name or record.get("errorCode"):
            continue
        parameters = record.get("requestParameters")
        if not isinstance(parameters, dict) or not names & {v for v in parameters.values() if isinstance(v, str)}:
            continue
        identity = record.get("userIdentity")
        if not isinstance(identity, dict):
            identity = {}
        who = identity.get("arn") or identity.get("principalId") or identity.get("invokedBy") or "an unknown caller"
        found.append(
            TrailChange(
                event_name,
                str(record.get("eventTime") or "an unknown time")[:_MAX_SHOWN_CHARS],
                str(who)[:_MAX_SHOWN_CHARS],
                str(record.get("sourceIPAddress") or "an unknown address")[:_MAX_SHOWN_CHARS],
                parameters,
            )
        )
    return sorted(found, key=lambda change: change.at)


def last_change(events: Iterable[Mapping[str, Any]], event_name: str, trail_arn: str) -> TrailChange | None:
    """The newest of `changes`; None when there is none."""
    found = changes(events, event_name, trail_arn)
    return found[-1] if found else None


def logged_selectors(parameters: Mapping[str, Any]) -> tuple[list[Any], list[Any]] | None:
    """The (basic, advanced) selectors a PutEventSelectors call set, from its request parameters as logged (names in
    any case); None when they hold neither list."""
    found = {str(name).lower(): value for name, value in parameters.items()}
    basic, advanced = found.get("eventselectors"), found.get("advancedeventselectors")
    if not isinstance(basic, list) and not isinstance(advanced, list):
        return None
    return (
        _as_api(basic) if isinstance(basic, list) else [],
        _as_api(advanced) if isinstance(advanced, list) else [],
    )


def _as_api(value: Any) -> Any:
    if isinstance(value, dict):
        return {_SELECTOR_NAMES.get(str(name).lower(), name): _as_api(inner) for name, inner in value.items()}
    if isinstance(value, list):
        return [_as_api(inner) for inner in value]
    return value


@dataclass(frozen=True)
class Narrowing:
    """A time the trail's event selectors left audited calls out (`left_out`: the calls of each table), from the call
    that set them (`start`, `who`) to the next (`end`, or the time of asking while they still do)."""

    start: str
    end: str
    who: str
    left_out: Mapping[str, Sequence[str]]

    def what(self, any_table: bool = False) -> str:
        tables = sorted(self.left_out)
        what = "; ".join(
            f"{_calls(self.left_out[table])} on {'every table' if any_table else table}"
            for table in tables[:MAX_TABLES_NAMED]
        )
        if len(tables) > MAX_TABLES_NAMED:
            what += f"; and calls on {len(tables) - MAX_TABLES_NAMED} more audited tables"
        return what

    def text(self, any_table: bool = False) -> str:
        """The narrowing as the watch names it."""
        return (
            f"from {self.start} to {self.end} the trail's event selectors, set by {self.who}, did not log "
            f"{self.what(any_table)} for every caller: calls in between were recorded nowhere, and no backfill can "
            "find them"
        )

    def note(self, any_table: bool = False) -> str:
        """What a day's `not_logging` says of it, after the time (`from ... to ...`); who set them, the watch says."""
        return f"its selectors left out {self.what(any_table)}"


def _calls(names: Sequence[str]) -> str:
    """The calls left out of a table, or `every call` when none of its data calls was logged."""
    every = {named for named, _, _ in audited_calls(reads=True)}
    return "every call" if set(names) >= every else ", ".join(names)


def narrowings(
    history: Sequence[TrailChange], table_arns: Mapping[str, str], reads: bool, since: str = ""
) -> list[Narrowing]:
    """Each time the trail's event selectors, as a PutEventSelectors call of `history` (oldest first) set them, left
    out audited calls that the selectors before them logged, until the next call set them again, that time ending at
    `since` or later (`YYYY-MM-DDTHH:MM:SSZ`). What was logged before and then left out, not all that was left out: a
    table added to the stack was logged by no selectors before it, and is no narrowing. The first call's selectors
    are none (what came before is unknown), nor the last's (the trail's now: `current_narrowing`); selectors that
    cannot be read from their event are passed over (logged)."""
    left_out = [_left_out(change, table_arns, reads) for change in history]
    found = []
    for index in range(1, len(history) - 1):
        before, during = left_out[index - 1], left_out[index]
        if before is None or during is None or history[index + 1].at < since:
            continue
        dip = {
            table: dropped
            for table, calls in sorted(during.items())
            if (dropped := [call for call in calls if call not in before.get(table, [])])
        }
        if dip:
            found.append(Narrowing(history[index].at, history[index + 1].at, history[index].who, dip))
    return found


def current_narrowing(
    history: Sequence[TrailChange], table_arns: Mapping[str, str], reads: bool, now: str
) -> Narrowing | None:
    """The audited calls the selectors the last call of `history` set leave out, from that call to `now`; None when
    they leave none out, or cannot be read, or no call is in the history (since when is then unknown)."""
    if not history:
        return None
    left_out = _left_out(history[-1], table_arns, reads)
    return Narrowing(history[-1].at, now, history[-1].who, left_out) if left_out else None


def narrowed_windows(
    history: Sequence[TrailChange],
    table_arns: Mapping[str, str],
    reads: bool,
    since: str = "",
    any_table: bool = False,
) -> list[str]:
    """`narrowings` as the watch names them, for people."""
    return [narrowing.text(any_table) for narrowing in narrowings(history, table_arns, reads, since)]


def _left_out(change: TrailChange, table_arns: Mapping[str, str], reads: bool) -> dict[str, list[str]] | None:
    selectors = logged_selectors(change.parameters)
    if selectors is None:
        logger.warning("the event selectors set at %s cannot be read from their event", change.at)
        return None
    return unlogged_calls(*selectors, table_arns, reads)


def _pages(
    client: Any, event_name: str, start: datetime, end: datetime, sleep: Callable[[float], None], calls: list[int]
) -> Iterator[list[Mapping[str, Any]]]:
    """LookupEvents' pages of `event_name` calls between `start` and `end`, newest first, at most MAX_PAGES, paced
    SECONDS_BETWEEN_CALLS apart across every call of the run (`calls` counts them)."""
    token: str | None = None
    for _ in range(MAX_PAGES):
        if calls:
            sleep(SECONDS_BETWEEN_CALLS)
        calls.append(1)
        asked: dict[str, Any] = {
            "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": event_name}],
            "StartTime": start,
            "EndTime": end,
            "MaxResults": PAGE_EVENTS,
        }
        if token:
            asked["NextToken"] = token
        answer = client.lookup_events(**asked)
        yield answer.get("Events") or []
        token = answer.get("NextToken")
        if not token:
            return


def who_changed(
    client: Any,
    trail_arn: str,
    event_names: Sequence[str],
    now: datetime,
    sleep: Callable[[float], None] = time.sleep,
    calls: list[int] | None = None,
) -> list[str]:
    """For each kind of change (`event_names`, as TrailCheck's `causes`), who last made it on the trail, for people;
    a kind the history holds no call of, within MAX_PAGES pages, is left out, and so is everything when the history
    cannot be read (logged as a warning)."""
    said: list[str] = []
    calls = [] if calls is None else calls
    for event_name in dict.fromkeys(event_names):
        try:
            for page in _pages(client, event_name, now - HISTORY, now, sleep, calls):
                change = last_change(page, event_name, trail_arn)
                if change is not None:
                    said.append(change.text())
                    break
        except (ClientError, BotoCoreError) as exc:
            logger.warning("who changed the trail is unknown: its event history cannot be read (%s)", exc)
            return said
    return said


def calls_on_trail(
    client: Any,
    event_name: str,
    trail_arn: str,
    now: datetime,
    sleep: Callable[[float], None] = time.sleep,
    calls: list[int] | None = None,
) -> list[TrailChange] | None:
    """The `event_name` calls on the trail in the event history (90 days), oldest first (the newest MAX_PAGES pages of
    them); None when the history cannot be read (logged as a warning)."""
    events: list[Mapping[str, Any]] = []
    try:
        for page in _pages(client, event_name, now - HISTORY, now, sleep, [] if calls is None else calls):
            events += page
    except (ClientError, BotoCoreError) as exc:
        logger.warning("the trail's past %s calls are unknown: its event history cannot be read (%s)", event_name, exc)
        return None
    return changes(events, event_name, trail_arn)


@dataclass(frozen=True)
class TrailHistory:
    """What the watch learns from the event history: the times selectors left audited calls out (problems, for the
    alarm), and who made the changes behind the check's problems (beside them)."""

    windows: list[str]
    changes: list[str]


def trail_history_of_environment(
    causes: Sequence[str], now: datetime, known: Sequence[tuple[datetime, datetime]] = ()
) -> TrailHistory:
    """`narrowed_windows`, the stops the trail's status does not tell (`known` are those it does: it tells only the
    latest) and `who_changed` for TRAIL_ARN and the calls the environment audits, each logged as an error; nothing
    without TRAIL_ARN, and no time when the history cannot be read."""
    trail = os.environ.get("TRAIL_ARN", "").strip()
    duties: TrailDuties = duties_of_environment()
    arns = audited_table_arns(trail, duties)
    if not trail or arns is None:
        return TrailHistory([], [])
    client = boto3.client("cloudtrail", config=STATUS_CLIENT_CONFIG)
    calls: list[int] = []
    since = (now - GAP_NAMED_FOR).strftime("%Y-%m-%dT%H:%M:%SZ")  # named as long as a stop the status tells
    history = calls_on_trail(client, "PutEventSelectors", trail, now, calls=calls)
    windows = narrowed_windows(history or [], arns, duties.reads, since, any_table=duties.tables is None)
    logged = logging_history(client, trail, now, calls=calls) if history is not None else None
    if logged is not None:
        windows += unseen_stops(stopped_times(*logged, now.strftime("%Y-%m-%dT%H:%M:%SZ")), known, since)
    said = who_changed(client, trail, causes, now, calls=calls)
    for text in [*windows, *said]:
        logger.error("trail %s: %s", trail, text)
    return TrailHistory(windows, said)


def stopped_times(
    stops: Sequence[TrailChange], starts: Sequence[TrailChange], now: str
) -> list[tuple[str, str, TrailChange]]:
    """Each time the trail was stopped, from a call of `stops` to the next StartLogging call of `starts` (or `now`,
    when none followed), with the call that stopped it, oldest first; a stop while stopped adds no time."""
    times: list[tuple[str, str, TrailChange]] = []
    for stop in stops:
        if times and stop.at < times[-1][1]:
            continue
        after = [start.at for start in starts if start.at > stop.at]
        times.append((stop.at, min(after) if after else now, stop))
    return times


def unseen_stops(
    stopped: Sequence[tuple[str, str, TrailChange]], known: Sequence[tuple[datetime, datetime]], since: str
) -> list[str]:
    """The times of `stopped` ending at `since` or later that no time of `known` (the stops the trail's status tells)
    overlaps, as the watch names them, for people."""
    said = []
    for stopped_at, started_at, change in stopped:
        start, end = parse_moment(stopped_at), parse_moment(started_at)
        if started_at < since or start is None or end is None or any(start < to and end > fr for fr, to in known):
            continue
        said.append(
            f"from {stopped_at} to {started_at} the trail was stopped ({change.event_name} by {change.who}): calls in "
            "between were recorded nowhere, and no backfill can find them"
        )
    return said


def logging_history(
    client: Any,
    trail_arn: str,
    now: datetime,
    sleep: Callable[[float], None] = time.sleep,
    calls: list[int] | None = None,
) -> tuple[list[TrailChange], list[TrailChange]] | None:
    """The calls that stopped the trail (StopLogging, and DeleteTrail: a trail deleted and made again under its name
    logged nothing between) and the StartLogging calls on it (`calls_on_trail`), each oldest first; None when the
    history cannot be read."""
    calls = [] if calls is None else calls
    found: list[list[TrailChange]] = []
    for event_name in ("StopLogging", "DeleteTrail", "StartLogging"):
        read = calls_on_trail(client, event_name, trail_arn, now, sleep, calls)
        if read is None:
            return None
        found.append(read)
    stops, deletions, starts = found
    return sorted([*stops, *deletions], key=lambda change: change.at), starts


# A time the trail did not log: (start, end) when stopped; (start, end, what it left out, the tables it left it out
# of, None for every table) when its selectors left audited calls out.
UnloggedTime = tuple[datetime, datetime] | tuple[datetime, datetime, str, tuple[str, ...] | None]


def unlogged_times_of_environment(now: datetime) -> list[UnloggedTime]:
    """For reconciliation, each time in the event history (90 days) that the trail's selectors left audited calls out,
    past and current, as (start, end, what a day's `not_logging` says of it, the tables whose calls they left out:
    None for every table), and each time it was stopped, as (start, end): those tables' days it overlaps cannot be
    verified complete, though their trail files and records agree (both lack those calls). The trail's status tells
    only its latest stop, so two stops between two watches leave the first in the history only. None without
    TRAIL_ARN, or when the history cannot be read (logged)."""
    trail = os.environ.get("TRAIL_ARN", "").strip()
    duties = duties_of_environment()
    arns = audited_table_arns(trail, duties)
    if not trail or arns is None:
        return []
    client = boto3.client("cloudtrail", config=STATUS_CLIENT_CONFIG)
    calls: list[int] = []
    history = calls_on_trail(client, "PutEventSelectors", trail, now, calls=calls)
    if history is None:  # no history to read (logged): the stops are not asked for either
        return []
    shown_now = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    found = narrowings(history, arns, duties.reads)
    current = current_narrowing(history, arns, duties.reads, shown_now)
    times: list[UnloggedTime] = []
    for narrowing in [*found, *([current] if current else [])]:
        start, end = parse_moment(narrowing.start), parse_moment(narrowing.end)
        if start is not None and end is not None:
            tables = None if ANY_TABLE in narrowing.left_out else tuple(sorted(narrowing.left_out))
            times.append((start, end, narrowing.note(any_table=duties.tables is None), tables))
    logged = logging_history(client, trail, now, calls=calls)
    for stopped_at, started_at, _ in stopped_times(*logged, shown_now) if logged is not None else []:
        start, end = parse_moment(stopped_at), parse_moment(started_at)
        if start is not None and end is not None:
            times.append((start, end))
    return times
