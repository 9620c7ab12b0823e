"""What DynamoDB says of an audited table now that its items' histories cannot show: changes no caller's call makes,
so no trail logs them. Time to Live deletes expired items by itself; a global table's replicas in other regions write
to it by replication (the stack's trail logs its own region); a table created again, restored from a backup or to a
point in time, or imported, starts with items no call put, and entries before it are of an earlier table of the same
name; a table deleted took its items with it. Read with DescribeTable and DescribeTimeToLive for GET /audit/coverage,
each answer kept a minute; a table that cannot be described is said so, not guessed. The notes themselves are pure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import aws_error_code
from chalicelib.shown import shown_name
from chalicelib.trail_status import STATUS_CLIENT_CONFIG

logger = Logger(service="deutzia-api", child=True)

# How long an answer serves every request for the same table: settings change rarely, and DynamoDB throttles
# control-plane calls per account.
NOTES_REUSE_SECONDS = 60.0
# Tables whose answers are kept at once (under `*` a request may name any table).
MAX_TABLES_KEPT = 256
MAX_NOTE_CHARS = 500
MAX_REGIONS_NAMED = 10

# The kinds of note, in the order an answer lists them.
EXPIRY, REPLICAS, CREATED, GONE, UNREAD = "expiry", "replicas", "created", "gone", "unread"
_EXPIRING = ("ENABLED", "ENABLING", "DISABLING")
_REPLICATING = ("CREATING", "UPDATING", "ACTIVE", "INACCESSIBLE_ENCRYPTION_CREDENTIALS", "ARCHIVING", "ARCHIVED")


def _note(kind: str, text: str, at: datetime | None = None) -> dict[str, Any]:
    bounded = text if len(text) <= MAX_NOTE_CHARS else text[: MAX_NOTE_CHARS - 1] + "…"
    return {"kind": kind, "time": None if at is None else _iso(at), "text": bounded}


def _iso(at: datetime) -> str:
    utc = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"  # the year in four digits, whatever it is


def expiry_note(table: str, description: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """From DescribeTimeToLive's `TimeToLiveDescription`: whether Time to Live deletes the table's items, and after
    which attribute's time; None when it is off (or the answer says nothing readable)."""
    status = description.get("TimeToLiveStatus") if isinstance(description, Mapping) else None
    attribute = description.get("AttributeName") if isinstance(description, Mapping) else None
    if status not in _EXPIRING:
        return None
    after = f"once the time in {shown_name(attribute)} has passed" if isinstance(attribute, str) else "once expired"
    state = " (its Time to Live is being turned off)" if status == "DISABLING" else ""
    return _note(
        EXPIRY,
        f"DynamoDB's Time to Live deletes items of {table} {after}{state}, by itself: no call makes those deletions,"
        " so no trail logs them, and an item's history can end without its Delete",
    )


def description_notes(table: str, region: str, description: Mapping[str, Any]) -> list[dict[str, Any]]:
    """From DescribeTable's `Table`: the replicas in other regions of a global table, and when the table as it is
    now was created (restored from a backup or to a point in time, if so)."""
    notes = []
    replicas = description.get("Replicas")
    regions = sorted(
        {
            str(replica["RegionName"])
            for replica in (replicas if isinstance(replicas, list) else [])
            if isinstance(replica, Mapping)
            and isinstance(replica.get("RegionName"), str)
            and replica["RegionName"] != region
            and replica.get("ReplicaStatus", "ACTIVE") in _REPLICATING
        }
    )
    if regions:
        named = ", ".join(regions[:MAX_REGIONS_NAMED]) + (
            f" and {len(regions) - MAX_REGIONS_NAMED} more" if len(regions) > MAX_REGIONS_NAMED else ""
        )
        notes.append(
            _note(
                REPLICAS,
                f"{table} is a global table with replicas in {named}: what calls there write reaches it by"
                f" replication, with no call here, and the stack's trail logs {region} only, so those writes are in"
                " no history here (each region's own trail logs its calls)",
            )
        )
    created = description.get("CreationDateTime")
    if isinstance(created, datetime):
        notes.append(_created_note(table, created, description.get("RestoreSummary")))
    return notes


def _created_note(table: str, created: datetime, restore: object) -> dict[str, Any]:
    text = f"{table} as it is now was created at {_iso(created)}"
    if isinstance(restore, Mapping):
        source, point = restore.get("SourceBackupArn"), restore.get("RestoreDateTime")
        if isinstance(source, str):
            text += f", restored from the backup {source}"
        elif isinstance(restore.get("SourceTableArn"), str):
            text += f", restored from {restore['SourceTableArn']}"
        else:
            text += ", restored"
        if isinstance(point, datetime):
            text += f" as it was at {_iso(point)}"
        text += ": each item it holds then is the restored copy, with no call"
    else:
        text += " (or imported)"
    return _note(CREATED, text + f"; entries before then are of an earlier table named {table}, deleted since", created)


def gone_note(table: str, region: str) -> dict[str, Any]:
    return _note(
        GONE,
        f"{table} does not exist now in {region}: deleting a table takes its items with it, with no call for each,"
        " and CloudTrail's event history names who deleted it for 90 days (aws cloudtrail lookup-events"
        f" --lookup-attributes AttributeKey=ResourceName,AttributeValue={table})",
    )


def unread_note(table: str, reason: str) -> dict[str, Any]:
    return _note(
        UNREAD,
        f"what DynamoDB says of {table} (its Time to Live, replicas, when it was created) could not be read"
        f" ({reason}), so changes no call makes are not named",
    )


def read_table_notes(client: Any, table: str) -> list[dict[str, Any]]:
    """The notes on `table` from DynamoDB now: DescribeTable, then (when it answered) DescribeTimeToLive."""
    region = str(client.meta.region_name)
    try:
        description = client.describe_table(TableName=table).get("Table") or {}
    except (ClientError, BotoCoreError) as error:
        if aws_error_code(error) == "ResourceNotFoundException":
            return [gone_note(table, region)]
        return [_unread(table, "DescribeTable", aws_error_code(error))]
    notes = description_notes(table, region, description)
    try:
        expiry = expiry_note(table, client.describe_time_to_live(TableName=table).get("TimeToLiveDescription"))
    except (ClientError, BotoCoreError) as error:
        return [_unread(table, "DescribeTimeToLive", aws_error_code(error)), *notes]
    return [expiry, *notes] if expiry else notes


def _unread(table: str, call: str, reason: str) -> dict[str, Any]:
    logger.warning("%s of %s failed: %s", call, table, reason)
    return unread_note(table, f"{call}: {reason}")


class RecentTableNotes:
    """Each table's notes for the API's answers, read again once `reuse_seconds` old; at most MAX_TABLES_KEPT kept
    (the oldest answers go first)."""

    def __init__(
        self,
        read: Callable[[str], list[dict[str, Any]]],
        reuse_seconds: float = NOTES_REUSE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._reuse_seconds = reuse_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def notes(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            kept = self._kept.get(table)
            if kept is not None and self._clock() - kept[0] < self._reuse_seconds:
                return [dict(note) for note in kept[1]]
        found = self._read(table)  # not under the lock: one slow table holds no other
        with self._lock:
            self._kept.pop(table, None)
            self._kept[table] = (self._clock(), found)
            while len(self._kept) > MAX_TABLES_KEPT:
                del self._kept[next(iter(self._kept))]
        return [dict(note) for note in found]


def table_notes_of_environment() -> RecentTableNotes:
    """Notes read through DynamoDB in the function's own region (AWS_ENDPOINT_URL locally), each try as short as the
    trail's status, which GET /audit/coverage reads beside them (at once), within its 25 s."""
    client = boto3.client("dynamodb", config=STATUS_CLIENT_CONFIG)
    return RecentTableNotes(lambda table: read_table_notes(client, table))
