"""Which DynamoDB data calls a trail's event selectors log: for one event (the local stack's recorder plays CloudTrail
with it), and for every call on the audited tables, named where some are left out (the trail watch says so).

Follows CloudTrail: a stopped trail logs nothing; a single-region trail only its own region; a trail without data
selectors no data events; advanced selectors log an event when one of them matches it, and one matches when each of
its field selectors does (positive operators: any of their values; negative operators: none). A trail that logs
and delivers still records nothing of the calls its selectors leave out: an item's history then reads as complete
while calls on it go unrecorded. So the watch asks, for each audited table and each data call (reads too where they
are audited), whether the selectors log it whoever makes it. A field the check cannot try every value of (the
caller's ARN, or a field CloudTrail adds later) counts against the selector that filters on it: such a selector may
leave callers out. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalicelib.cloudtrail import DATA_OPERATIONS, DYNAMODB_EVENT_SOURCE

_Compare = Callable[[str, str], bool]
_POSITIVE: dict[str, _Compare] = {"Equals": str.__eq__, "StartsWith": str.startswith, "EndsWith": str.endswith}
_NEGATIVE: dict[str, _Compare] = {"NotEquals": str.__eq__, "NotStartsWith": str.startswith, "NotEndsWith": str.endswith}

# The calls that only read; the PartiQL ones read or write, as their statements do; the rest write.
READ_OPERATIONS = frozenset({"GetItem", "BatchGetItem", "TransactGetItems", "Query", "Scan"})
STATEMENT_OPERATIONS = frozenset({"ExecuteStatement", "BatchExecuteStatement", "ExecuteTransaction"})
WRITE_OPERATIONS = DATA_OPERATIONS - READ_OPERATIONS - STATEMENT_OPERATIONS
# The fields of a DynamoDB data event the check tries each value of; a selector on any other field may leave out
# some calls of those it otherwise logs.
_KNOWN_FIELDS = frozenset(
    {
        "eventCategory",
        "eventSource",
        "eventType",
        "eventName",
        "readOnly",
        "resources.type",
        "resources.ARN",
        "sessionCredentialFromConsole",
    }
)
# `sessionCredentialFromConsole` is "true" for a call made with a console session's credentials, absent otherwise.
_CONSOLE = ("true", None)
# A table that stands for any table, under AUDITED_TABLES `*`: a name no table is likely to have.
ANY_TABLE = "any-table-c6a1f0"
# How many tables the problems name one by one; the rest are counted in one more.
MAX_TABLES_NAMED = 10


@dataclass(frozen=True)
class TrailSettings:
    """What a trail's selection depends on."""

    name: str
    home_region: str
    is_multi_region: bool
    is_logging: bool
    event_selectors: Sequence[Mapping[str, Any]] = field(default_factory=list)
    advanced_event_selectors: Sequence[Mapping[str, Any]] = field(default_factory=list)


def trail_logs(trail: TrailSettings, event: Mapping[str, Any]) -> bool:
    """True when `trail` would log this DynamoDB data event."""
    if not trail.is_logging:
        return False
    if not trail.is_multi_region and event.get("awsRegion") != trail.home_region:
        return False
    return selectors_log(trail.event_selectors, trail.advanced_event_selectors, event)


def selectors_log(
    basic: Sequence[Mapping[str, Any]], advanced: Sequence[Mapping[str, Any]], event: Mapping[str, Any]
) -> bool:
    """True when a trail with these selectors (the advanced ones, when it has any) logs this data event."""
    if advanced:
        return any(_advanced_matches(selector, event) for selector in advanced)
    return any(_basic_matches(selector, event) for selector in basic)


def unlogged_calls(
    basic: Sequence[Mapping[str, Any]],
    advanced: Sequence[Mapping[str, Any]],
    table_arns: Mapping[str, str],
    reads: bool,
) -> dict[str, list[str]]:
    """For each table (by name, its ARN in `table_arns`) whose data calls these selectors leave out, for some or all
    callers, the calls left out, sorted: the writes, and the reads too when `reads` (a PartiQL call that reads named
    `ExecuteStatement (reads)`). Empty when they log them all."""
    # A selector on a field the check cannot try every value of may leave some callers out: it never counts (and a
    # trail with advanced selectors uses no basic ones, whichever of its advanced ones count).
    if advanced:
        basic, advanced = [], [selector for selector in advanced if _fields(selector) <= _KNOWN_FIELDS]
    calls = audited_calls(reads)
    left_out: dict[str, list[str]] = {}
    for table, arn in table_arns.items():
        named = [
            label
            for label, name, read_only in calls
            if not all(selectors_log(basic, advanced, event) for event in _data_events(arn, name, read_only))
        ]
        if named:
            left_out[table] = sorted(named)
    return left_out


def audited_calls(reads: bool) -> list[tuple[str, str, bool]]:
    """Each data call the trail must log, as (named, the call, read only): the writes, and the reads too when `reads`;
    a PartiQL call that reads is named apart from one that writes (`ExecuteStatement (reads)`)."""
    calls = [(name, name, False) for name in WRITE_OPERATIONS | STATEMENT_OPERATIONS]
    if reads:
        calls += [(name, name, True) for name in READ_OPERATIONS]
        calls += [(f"{name} (reads)", name, True) for name in STATEMENT_OPERATIONS]
    return calls


def selector_problems(left_out: Mapping[str, Sequence[str]], any_table: bool = False) -> list[str]:
    """`unlogged_calls`'s answer for people: one problem a table, the first MAX_TABLES_NAMED by name, the rest
    counted in one more."""
    problems = []
    for table in sorted(left_out)[:MAX_TABLES_NAMED]:
        where = "every table (AUDITED_TABLES is *)" if any_table and table == ANY_TABLE else table
        problems.append(
            f"the trail's event selectors do not log {', '.join(left_out[table])} on {where} for every caller: those "
            "calls are recorded nowhere, neither in GET /audit nor in the trail's files, until the selectors log "
            "them again"
        )
    if len(left_out) > MAX_TABLES_NAMED:
        problems.append(
            f"the trail's event selectors leave out calls on {len(left_out) - MAX_TABLES_NAMED} more audited tables"
        )
    return problems


def table_arn(trail_arn: str, table: str) -> str | None:
    """The ARN of `table` in the trail's partition, region and account (where the stack audits tables); None when
    `trail_arn` is no trail ARN."""
    parts = trail_arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "cloudtrail" or not parts[3] or not parts[4]:
        return None
    return f"arn:{parts[1]}:dynamodb:{parts[3]}:{parts[4]}:table/{table}"


def _data_events(arn: str, name: str, read_only: bool) -> list[dict[str, Any]]:
    """The fields selectors read of the DynamoDB data events `name` on the table `arn`, one for each value of the
    fields the check tries every value of."""
    event: dict[str, Any] = {
        "eventCategory": "Data",
        "eventSource": DYNAMODB_EVENT_SOURCE,
        "eventType": "AwsApiCall",
        "eventName": name,
        "readOnly": read_only,
        "resources": [{"type": "AWS::DynamoDB::Table", "ARN": arn}],
    }
    return [event if console is None else {**event, "sessionCredentialFromConsole": console} for console in _CONSOLE]


def _fields(selector: Mapping[str, Any]) -> set[str]:
    return {str(field_selector.get("Field")) for field_selector in selector.get("FieldSelectors", [])}


def _field_values(name: str, event: Mapping[str, Any]) -> list[str]:
    resources = event.get("resources") or []
    if name == "resources.ARN":
        return [str(resource.get("ARN")) for resource in resources]
    if name == "resources.type":
        return [str(resource.get("type")) for resource in resources]
    if name == "readOnly":
        return ["true" if event.get("readOnly") else "false"]
    if name == "userIdentity.arn":
        return [str((event.get("userIdentity") or {}).get("arn") or "")]
    return [str(event.get(name) or "")]


def _advanced_matches(selector: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    for field_selector in selector.get("FieldSelectors", []):
        values = _field_values(str(field_selector.get("Field")), event)
        for operator, compare in _POSITIVE.items():
            expected = field_selector.get(operator)
            if expected and not _any_match(compare, values, expected):
                return False
        for operator, compare in _NEGATIVE.items():
            expected = field_selector.get(operator)
            if expected and _any_match(compare, values, expected):
                return False
    return True


def _any_match(compare: _Compare, values: Iterable[str], expected: Iterable[object]) -> bool:
    return any(compare(value, str(wanted)) for value in values for wanted in expected)


def _basic_matches(selector: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    read_write = selector.get("ReadWriteType", "All")
    read_only = bool(event.get("readOnly"))
    if (read_write == "ReadOnly" and not read_only) or (read_write == "WriteOnly" and read_only):
        return False
    arns = _field_values("resources.ARN", event)
    for resource in selector.get("DataResources", []):
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        if any(_basic_value_matches(str(value), arn) for value in resource.get("Values", []) for arn in arns):
            return True
    return False


def _basic_value_matches(value: str, arn: str) -> bool:
    """A basic selector's DynamoDB value names one table by its ARN, or every table as `arn:<partition>:dynamodb`
    (not a prefix: `.../table/Music` is not `.../table/MusicArchive`)."""
    return value == arn or value == ":".join(arn.split(":", 3)[:3])
