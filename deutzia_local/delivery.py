"""Delivers recorded events the way CloudTrail does: each to the trail's log group within about a second (one bare
event per log event), and every few seconds as gzip `{"Records": [...]}` files in the trail bucket under
`AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/`. Events wait in memory until a delivery succeeds: a failed
delivery is retried on the next tick, never dropped.

It also loses what AWS loses, so reconciliation has something to find: like CloudTrail, it never sends an event over
256 KB to the log group (the trail file still has it), and with `log_drop_rate` it leaves that fraction of events
out of the log group on purpose (DEUTZIA_LOCAL_LOG_DROP_RATE), as a subscription that falls behind would.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import random
import secrets
import string
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger("deutzia.delivery")

_MAX_BATCH_EVENTS = 10_000
_ATTEMPTS_ON_STOP = 20
_MAX_BATCH_BYTES = 1_000_000
# CloudTrail sends no event larger than this to CloudWatch Logs.
MAX_LOG_EVENT_BYTES = 256 * 1024
_ALPHANUMERIC = string.ascii_letters + string.digits
# An event waiting for delivery, with the time it was recorded (the log event's timestamp, in ms).
_Pending = tuple[int, dict[str, Any]]


def trail_file_key(account_id: str, region: str, delivered: datetime) -> str:
    """The S3 key CloudTrail gives a log file delivered at `delivered` (UTC)."""
    suffix = "".join(secrets.choice(_ALPHANUMERIC) for _ in range(16))
    day = delivered.strftime("%Y/%m/%d")
    stamp = delivered.strftime("%Y%m%dT%H%MZ")
    return f"AWSLogs/{account_id}/CloudTrail/{region}/{day}/{account_id}_CloudTrail_{region}_{stamp}_{suffix}.json.gz"


class TrailDelivery:
    """A background thread that delivers submitted events to CloudWatch Logs and to the trail bucket."""

    def __init__(
        self,
        logs: Any,
        s3: Any,
        log_group: str,
        trail_bucket: str,
        logs_interval: float = 0.5,
        files_interval: float = 5.0,
        log_drop_rate: float = 0.0,
    ) -> None:
        self._logs = logs
        self._s3 = s3
        self._log_group = log_group
        self._trail_bucket = trail_bucket
        self._logs_interval = logs_interval
        self._files_interval = files_interval
        self._log_drop_rate = log_drop_rate
        self._random = random.Random()  # noqa: S311 - which deliveries a test drops, not a secret
        self.dropped_from_logs = 0
        self._lock = threading.Condition()
        self._for_logs: list[_Pending] = []
        self._for_files: list[_Pending] = []
        self._streams: set[str] = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="trail-delivery", daemon=True)

    def submit(self, event: dict[str, Any]) -> None:
        with self._lock:
            received = (int(time.time() * 1000), event)
            self._for_logs.append(received)
            self._for_files.append(received)
            self._lock.notify()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Deliver what is waiting, then stop."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        last_files = time.monotonic()
        while True:
            with self._lock:
                if not self._stopping:
                    self._lock.wait(self._logs_interval)
                stopping = self._stopping
            self._deliver_logs()
            if stopping or time.monotonic() - last_files >= self._files_interval:
                self._deliver_files()
                last_files = time.monotonic()
            if stopping:
                self._finish()
                return

    def _finish(self) -> None:
        """On stop, retry what failed for a while; what still cannot be delivered is named, never dropped silently."""
        for _ in range(_ATTEMPTS_ON_STOP):
            with self._lock:
                if not self._for_logs and not self._for_files:
                    return
            time.sleep(self._logs_interval)
            self._deliver_logs()
            self._deliver_files()
        with self._lock:
            waiting = {event["eventID"] for _, event in self._for_logs + self._for_files}
        if waiting:
            logger.error("stopped with %d events undelivered: %s", len(waiting), sorted(waiting))

    def _deliver_logs(self) -> None:
        self._drain(self._for_logs, self._put_log_events, f"log group {self._log_group}")

    def _deliver_files(self) -> None:
        self._drain(self._for_files, self._put_trail_file, f"trail bucket {self._trail_bucket}")

    def _drain(self, buffer: list[_Pending], deliver: Callable[[str, str, list[_Pending]], None], where: str) -> None:
        """Deliver what `buffer` holds, one call per account and region; what fails goes back, first in line."""
        with self._lock:
            pending = buffer[:]
            buffer.clear()
        by_origin: dict[tuple[str, str], list[_Pending]] = defaultdict(list)
        for timestamp, event in pending:
            by_origin[(str(event["recipientAccountId"]), str(event["awsRegion"]))].append((timestamp, event))
        failed: list[_Pending] = []
        for (account_id, region), events in by_origin.items():
            try:
                deliver(account_id, region, events)
            except Exception:
                logger.exception("delivery to %s failed; retrying", where)
                failed += events
        if failed:
            with self._lock:
                buffer[:0] = failed

    def _put_log_events(self, account_id: str, region: str, events: list[_Pending]) -> None:
        stream = f"{account_id}_CloudTrail_{region}"
        if stream not in self._streams:
            with contextlib.suppress(self._logs.exceptions.ResourceAlreadyExistsException):
                self._logs.create_log_stream(logGroupName=self._log_group, logStreamName=stream)
            self._streams.add(stream)
        batch: list[dict[str, Any]] = []
        size = 0
        for timestamp, event in sorted(events, key=lambda pair: pair[0]):
            message = json.dumps(event, separators=(",", ":"))
            if len(message.encode()) > MAX_LOG_EVENT_BYTES or self._random.random() < self._log_drop_rate:
                self.dropped_from_logs += 1
                logger.info("event %s left out of the log group (only the trail file has it)", event["eventID"])
                continue
            if batch and (len(batch) == _MAX_BATCH_EVENTS or size + len(message) + 26 > _MAX_BATCH_BYTES):
                self._logs.put_log_events(logGroupName=self._log_group, logStreamName=stream, logEvents=batch)
                batch, size = [], 0
            batch.append({"timestamp": timestamp, "message": message})
            size += len(message) + 26
        if batch:
            self._logs.put_log_events(logGroupName=self._log_group, logStreamName=stream, logEvents=batch)

    def _put_trail_file(self, account_id: str, region: str, events: list[_Pending]) -> None:
        key = trail_file_key(account_id, region, datetime.now(UTC))
        body = gzip.compress(json.dumps({"Records": [event for _, event in events]}).encode())
        self._s3.put_object(Bucket=self._trail_bucket, Key=key, Body=body, ContentType="application/json")
