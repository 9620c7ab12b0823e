"""`deutzia reconcile`: check days against CloudTrail's own files now, backfilling what the fast path missed, as the
nightly run does, and say how each day came out. In AWS it invokes the stack's reconcile function with the days (a
run takes the days it has time for and names the next one, which this follows, invocation after invocation);
locally it runs the local stack's reconciliation. Failures are CliErrors naming what to do.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deutzia_cli.api import DENIED, NOT_FOUND, UNAVAILABLE, USAGE, CliError

# A run lasts at most Lambda's 15 minutes; an invocation waits that long for its answer, and is never retried (a run
# repeated at once would only redo the same days).
INVOKE_READ_TIMEOUT_SECONDS = 15 * 60 + 60
_MAX_REASON_CHARS = 300
_BUSY_CODES = ("TooManyRequestsException", "ReservedFunctionConcurrentInvocationLimitExceeded")


@dataclass(frozen=True)
class Reconciled:
    """Each day's status, and what is wrong with the trail itself (chalicelib.trail_status)."""

    statuses: dict[str, str]
    trail_problems: list[str]


def reconcile_in_aws(
    client: Any, function: str, days: list[str], progress: Callable[[str], None], now: datetime | None = None
) -> Reconciled:
    """Each of `days` (consecutive, oldest first) with the status the stack's reconcile function gave it."""
    statuses: dict[str, str] = {}
    problems: list[str] = []
    since: str | None = days[0]
    while since is not None:
        progress(f"reconciling {since} to {days[-1]} ({len(statuses)} of {len(days)} days done)...")
        answer = _invoke(client, function, _event(since, days[-1], now or datetime.now(UTC), client))
        done = answer.get("days")
        if not isinstance(done, dict) or not all(isinstance(v, str) for v in done.values()) or set(done) - set(days):
            raise CliError(f"{function} answered no days of the range: is it Deutzia's reconcile function?", NOT_FOUND)
        if not done:
            raise CliError(
                f"{function} had no time for {since}: a run starts a day only with time for its query; give the "
                "function a longer timeout, or RECONCILE_QUERY_TIMEOUT_SECONDS a shorter one",
                UNAVAILABLE,
            )
        statuses.update(done)
        said = answer.get("trail_problems")
        problems = [str(problem)[:_MAX_REASON_CHARS] for problem in said] if isinstance(said, list) else []
        following = answer.get("next_since")
        since = following if isinstance(following, str) and following in days and following not in statuses else None
    return Reconciled({day: statuses[day] for day in days if day in statuses}, problems)


def reconcile_locally(days: list[str]) -> Reconciled:
    """Each of `days` with the status the local stack's reconciliation gave it (a day not over yet: up to its
    settle time ago), and what is wrong with the local trail."""
    from chalicelib.errors import DeutziaError
    from chalicelib.reconcile import parse_day
    from deutzia_local.settings import LocalSettings
    from deutzia_local.stack import local_trail_check, new_reconciliation, require_running

    settings = LocalSettings.from_environment()
    try:
        require_running(settings, api=False)
        settings.apply_to_environment()
        reconciliation = new_reconciliation(settings)
        chosen = [parse_day(day) for day in days]
        for day in chosen:  # before any is checked: a day not begun yet stops the whole run
            reconciliation.until(day)
        check = local_trail_check(settings)
        statuses = {day.isoformat(): reconciliation.run_day(day, check.not_logging).status for day in chosen}
        return Reconciled(statuses, check.problems)
    except DeutziaError as exc:
        raise CliError(str(exc), UNAVAILABLE) from None
    except ValueError as exc:
        raise CliError(f"bad request: --since, --until: {exc}", USAGE) from None


def _event(since: str, until: str, now: datetime, client: Any) -> dict[str, Any]:
    """What EventBridge would deliver, naming the days in `detail` (as the README's manual catch-up does)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Deutzia reconcile",
        "source": "deutzia.cli",
        "account": "",
        "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": str(client.meta.region_name or ""),
        "resources": [],
        "detail": {"since": since, "until": until},
    }


def _invoke(client: Any, function: str, event: dict[str, Any]) -> dict[str, Any]:
    try:
        response = client.invoke(
            FunctionName=function, InvocationType="RequestResponse", Payload=json.dumps(event).encode()
        )
        payload = response["Payload"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "Unknown")
        if code in _BUSY_CODES:
            busy = f"{function} is already running (one run at a time): try again when it ends"
            raise CliError(busy, UNAVAILABLE) from None
        if code in ("AccessDeniedException", "AccessDenied"):
            raise CliError(f"not allowed to invoke {function}: it takes lambda:InvokeFunction on it", DENIED) from None
        if code == "ResourceNotFoundException":
            raise CliError(f"no function {function}: see the stack's ReconcileFunctionName output", NOT_FOUND) from None
        raise CliError(f"invoking {function} failed: {code}", UNAVAILABLE) from None
    except BotoCoreError as exc:
        raise CliError(f"invoking {function} failed: {type(exc).__name__}", UNAVAILABLE) from None
    try:
        answer = json.loads(payload)
    except ValueError:
        answer = None
    if response.get("FunctionError"):
        reason = answer if isinstance(answer, dict) else {}
        said = f"{reason.get('errorType', 'error')}: {str(reason.get('errorMessage', ''))[:_MAX_REASON_CHARS]}"
        raise CliError(f"{function} failed: {said} (its log has the rest)", UNAVAILABLE)
    if not isinstance(answer, dict):
        raise CliError(f"{function} answered no days of the range: is it Deutzia's reconcile function?", NOT_FOUND)
    return answer
