"""Who made the change behind a trail's problem: the latest management event CloudTrail keeps for it in the account's
event history (LookupEvents, 90 days), named by the trail watch beside the problems it finds ("StopLogging was last
called on the trail by arn:aws:iam::...:user/mallory from 203.0.113.7 at ...").

The trail itself logs only the audited tables' data events; CloudTrail logs every call that changes a trail
(StopLogging, UpdateTrail, PutEventSelectors, DeleteTrail) as a management event, whatever trails exist. LookupEvents
answers at most two requests a second an account, so only the watch asks, and only for the kinds of change its
problems point to. `last_change` is pure; `who_changed` makes the calls, and says nothing when the history cannot be
read (the problems stand without it).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.trail_status import STATUS_CLIENT_CONFIG

logger = Logger(service="deutzia-trail")

# How far back the event history goes, and how much of it one kind of change reads (newest first).
HISTORY = timedelta(days=90)
MAX_PAGES = 3
PAGE_EVENTS = 50
# LookupEvents answers two requests a second an account: the watch's own calls keep under it.
SECONDS_BETWEEN_CALLS = 0.5
# What a logged value may take in the text (a caller chooses its own session name).
_MAX_SHOWN_CHARS = 300


@dataclass(frozen=True)
class TrailChange:
    """One call that changed the trail, as its management event tells it."""

    event_name: str
    at: str
    who: str
    source_ip: str

    def text(self) -> str:
        return f"{self.event_name} was last called on the trail by {self.who} from {self.source_ip} at {self.at}"


def last_change(events: Iterable[Mapping[str, Any]], event_name: str, trail_arn: str) -> TrailChange | None:
    """The newest successful `event_name` call on the trail (by its ARN or its name) among LookupEvents' `Events`;
    None when none is. Events for other trails, refused calls and events that cannot be read are passed over."""
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
            )
        )
    return max(found, key=lambda change: change.at, default=None)


def who_changed(
    client: Any,
    trail_arn: str,
    event_names: Sequence[str],
    now: datetime,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """For each kind of change (`event_names`, as TrailCheck's `causes`), who last made it on the trail, for people;
    a kind the history holds no call of, within MAX_PAGES pages, is left out, and so is everything when the history
    cannot be read (logged as a warning)."""
    said: list[str] = []
    calls = 0
    for event_name in dict.fromkeys(event_names):
        token: str | None = None
        for _ in range(MAX_PAGES):
            if calls:
                sleep(SECONDS_BETWEEN_CALLS)
            calls += 1
            asked: dict[str, Any] = {
                "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": event_name}],
                "StartTime": now - HISTORY,
                "EndTime": now,
                "MaxResults": PAGE_EVENTS,
            }
            if token:
                asked["NextToken"] = token
            try:
                answer = client.lookup_events(**asked)
            except (ClientError, BotoCoreError) as exc:
                logger.warning("who changed the trail is unknown: its event history cannot be read (%s)", exc)
                return said
            change = last_change(answer.get("Events") or [], event_name, trail_arn)
            if change is not None:
                said.append(change.text())
                break
            token = answer.get("NextToken")
            if not token:
                break
    return said


def who_changed_of_environment(event_names: Sequence[str], now: datetime) -> list[str]:
    """`who_changed` on TRAIL_ARN, each change logged as an error beside the problem it explains; none asked for no
    cause."""
    trail = os.environ.get("TRAIL_ARN", "").strip()
    if not event_names or not trail:
        return []
    changes = who_changed(boto3.client("cloudtrail", config=STATUS_CLIENT_CONFIG), trail, event_names, now)
    for change in changes:
        logger.error("trail %s: %s", trail, change)
    return changes
