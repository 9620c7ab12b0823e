"""Whether CloudTrail's trail itself works: logging, and delivering to its bucket, its log group and its digests.

A trail that stops records no call anywhere: the fast path and the trail's files go quiet together, and a day without
files reads like a quiet day, so no count of reconciliation's can tell. Each reconcile run therefore asks CloudTrail
(GetTrailStatus) and names what it finds, for the log, a metric and its alarm. `trail_problems` is pure;
`check_trail` makes the one call.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.config import setting

logger = Logger(service="deutzia-reconcile")

# A logging gap that ended this recently is named (by the daily runs after it), and not after.
GAP_NAMED_FOR = timedelta(days=2)
_MAX_ERROR_CHARS = 300
_DELIVERIES = (
    ("LatestDeliveryError", "log files to the trail bucket"),
    (
        "LatestCloudWatchLogsDeliveryError",
        "events to the log group, the fast path (calls reach GET /audit only by reconciliation's backfill)",
    ),
    ("LatestDigestDeliveryError", "digest files (`aws cloudtrail validate-logs` cannot prove those hours)"),
)


def trail_problems(status: Mapping[str, object], now: datetime) -> list[str]:
    """What is wrong with the trail, by its GetTrailStatus answer, each for people; none when it logs and delivers."""
    problems = []
    stopped, started = status.get("StopLoggingTime"), status.get("StartLoggingTime")
    if status.get("IsLogging") is not True:
        since = f" since {_shown(stopped)}" if isinstance(stopped, datetime) else ""
        problems.append(
            f"the trail is not logging{since}: no call is recorded, neither in GET /audit nor in the trail's files, "
            "until it is started again"
        )
    elif (
        isinstance(stopped, datetime)
        and isinstance(started, datetime)
        and stopped <= started <= now <= started + GAP_NAMED_FOR
    ):
        problems.append(
            f"the trail did not log from {_shown(stopped)} to {_shown(started)}: calls in between were never "
            "recorded, and no backfill can find them"
        )
    for field, what in _DELIVERIES:
        error = status.get(field)
        if isinstance(error, str) and error:
            problems.append(f"CloudTrail could not deliver {what}: {error[:_MAX_ERROR_CHARS]}")
    return problems


def check_trail(client: Any, trail: str, now: datetime | None = None) -> list[str]:
    """`trail_problems` of the trail named (or ARN'd) `trail`; a trail that cannot be read is a problem too."""
    try:
        status = client.get_trail_status(Name=trail)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "Unknown")
        if code == "TrailNotFoundException":
            return [f"the trail {trail} does not exist: no call is recorded until a trail logs the tables again"]
        return [f"the trail's status cannot be read ({code}): whether it logs is unknown"]
    except BotoCoreError as exc:
        return [f"the trail's status cannot be read ({type(exc).__name__}): whether it logs is unknown"]
    return trail_problems(status, now or datetime.now(UTC))


def _shown(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_trail_of_environment() -> list[str]:
    """`check_trail` of TRAIL_ARN (the stack sets it), each problem logged as an error; none checked without it."""
    trail = setting("TRAIL_ARN", "")
    if not trail:
        logger.warning("TRAIL_ARN is not set: whether the trail logs is not checked")
        return []
    problems = check_trail(boto3.client("cloudtrail"), trail)
    for problem in problems:
        logger.error("trail %s: %s", trail, problem)
    return problems
