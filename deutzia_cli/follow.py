"""`deutzia history --follow`: the calls of a history as they reach the audit, oldest first, like `tail -f`, until
interrupted. Each poll asks for the entries since the newest one shown, less FOLLOW_LOOKBACK: an entry that reaches the
audit late (ingest retried its batch, or its shard was behind) is shown when it arrives, once; one later than that (a
backfill, hours on) only by `deutzia history`. The polling is pure but for `read`, `show` and `sleep`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

# How late an entry may reach the audit after the newest one shown and still be shown.
FOLLOW_LOOKBACK = timedelta(minutes=5)
# Seconds between polls: each is a query (an Athena query in AWS) for every table followed.
MIN_FOLLOW_INTERVAL = 2.0
DEFAULT_FOLLOW_INTERVAL = 10.0

Entry = Mapping[str, Any]


def entry_id(entry: Entry) -> tuple[str, str]:
    """What makes an entry one: its call and its place in the call."""
    return str(entry.get("event_id")), str(entry.get("item_index"))


def _moment(text: object) -> datetime | None:
    """A time as the API writes it (or a day, meaning its midnight UTC); None for anything else."""
    for form in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d"):
        try:
            return datetime.strptime(str(text), form).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def follow(
    read: Callable[[str], Iterable[Entry]],
    show: Callable[[Entry], None],
    shown: Iterable[Entry],
    start: str,
    interval: float,
    sleep: Callable[[float], None] | None = None,
) -> int:
    """Poll `read(since)` (the entries from `since` on, any order) every `interval` seconds, handing each entry that
    reached the audit since the follow began to `show`, oldest first. `shown` are the history's last entries, shown
    already; what else the audit held then (older entries past the history's limit) is not new, and is not shown.
    `start` is the time to read from when the history showed nothing. A call newer than the history's newest that
    reached the audit after it was read is shown at once. Ends when interrupted (Ctrl-C); returns how many entries it
    showed."""
    shown = list(shown)
    times = [moment for entry in shown if (moment := _moment(entry.get("event_time"))) is not None]
    newest = max(times, default=None) or _moment(start) or datetime.now(UTC)
    seen: dict[tuple[str, str], datetime] = {}
    count = 0
    wait = sleep or time.sleep

    def poll() -> list[tuple[datetime, Entry]]:
        since = (newest - FOLLOW_LOOKBACK).strftime("%Y-%m-%dT%H:%M:%SZ")
        return [
            (moment, entry)
            for entry in read(since)
            if entry_id(entry) not in seen and (moment := _moment(entry.get("event_time"))) is not None
        ]

    def reveal(found: list[tuple[datetime, Entry]]) -> None:
        nonlocal newest, seen, count
        for moment, entry in sorted(found, key=lambda pair: pair[0]):
            show(entry)
            seen[entry_id(entry)] = moment
            newest = max(newest, moment)
            count += 1
        # What is older than the next poll reads can never come back: forget it, so the set stays small.
        seen = {key: moment for key, moment in seen.items() if moment >= newest - FOLLOW_LOOKBACK}

    try:
        # What the audit holds as the follow begins is new only where it is newer than the history shown (a call that
        # reached the audit since it was read); older ones are shown, or past the history's limit.
        found, shown_ids = poll(), {entry_id(entry) for entry in shown}
        fresh = [(moment, entry) for moment, entry in found if moment > newest and entry_id(entry) not in shown_ids]
        seen.update((entry_id(entry), moment) for moment, entry in found)
        reveal(fresh)
        while True:
            wait(interval)
            reveal(poll())
    except KeyboardInterrupt:
        return count
