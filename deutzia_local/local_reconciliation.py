"""Plays the schedule of `reconcile_audit_trail`: reconciles the local trail's files with the audit records every
few seconds (and once for `make reconcile`), with the deployed function's reconciler on the DuckDB engine.

One difference, on purpose: locally today is reconciled while it goes on, up to a few seconds ago (the settle
time, which lets the fast path deliver first), so the demo and the tests see a backfill within seconds; in AWS the
daily run takes the day before yesterday, once CloudTrail has delivered all of it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta

from chalicelib.reconcile import INCOMPLETE, UNCONFIRMED, DayReport
from chalicelib.reconciler import Reconciler
from chalicelib.trail_status import TrailCheck
from deutzia_local.periodic import Periodic

logger = logging.getLogger("deutzia.reconcile")
# How many ids of records the trail does not confirm a day's line names.
_SHOWN_IDS = 10


class LocalReconciliation:
    """Runs `reconciler` over yesterday and today, every `interval` seconds, one run at a time."""

    def __init__(
        self,
        reconciler: Reconciler,
        interval: float,
        settle_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        trail_check: Callable[[], TrailCheck] = TrailCheck,
    ) -> None:
        self._reconciler = reconciler
        self._trail_check = trail_check
        self._settle = timedelta(seconds=settle_seconds)
        self._clock = clock
        self._lock = threading.Lock()
        self._schedule = Periodic("reconciliation", interval, self.run_recent, logger)

    def start(self) -> None:
        self._schedule.start()

    def stop(self) -> None:
        self._schedule.stop()

    def run_recent(self) -> list[DayReport]:
        """Yesterday and today (today up to the settle time ago)."""
        today = self._clock().date()
        days = [today - timedelta(days=1)] + ([today] if self._begun(today) else [])
        not_logging = self._trail_check().not_logging
        return [self.run_day(day, not_logging) for day in days]

    def until(self, day: date) -> str | None:
        """How far `day` can be checked now: None when it has ended (settle time included), else the settle time
        ago; ValueError naming the day and when it can be, for a day that has not begun that long ago."""
        checked_until = (self._clock() - self._settle).replace(microsecond=0)  # as the window states it
        start = datetime.combine(day, datetime.min.time(), UTC)
        if checked_until <= start:
            settle = f"{self._settle.total_seconds():g} s"
            raise ValueError(
                f"{day.isoformat()} cannot be checked before {(start + self._settle).strftime('%Y-%m-%dT%H:%M:%SZ')} "
                f"(a day is checked up to {settle} ago, the settle time: DEUTZIA_RECONCILE_SETTLE_SECONDS)"
            )
        return None if checked_until >= start + timedelta(days=1) else checked_until.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _begun(self, day: date) -> bool:
        try:
            self.until(day)
        except ValueError:
            return False
        return True

    def run_day(self, day: date, not_logging: Sequence[tuple[datetime, datetime]] | None = None) -> DayReport:
        """One day, up to `until(day)` (ValueError for a day not begun the settle time ago). `not_logging`: when the
        trail did not log (by default, asked now)."""
        until = self.until(day)
        gaps = self._trail_check().not_logging if not_logging is None else not_logging
        with self._lock:
            report = self._reconciler.run(day.isoformat(), until, not_logging=gaps)
        backfilled = sum(table.backfilled_now for table in report.tables.values())
        if backfilled or report.status in (INCOMPLETE, UNCONFIRMED):
            logger.warning(describe(report))
        return report


def describe(report: DayReport) -> str:
    """A day's report in one line per table, for people."""
    next_day = report.trail_file_count - report.day_trail_files
    files = f"{report.day_trail_files} of its own and {next_day} of the next day"
    lines = [f"{report.day}: {report.status} (trail files: {files}; checked until {report.checked_until})"]
    for name, table in sorted(report.tables.items()):
        line = (
            f"  {name}: {table.status}: {table.trail_events} calls in the trail, {table.audited_by_ingest} audited by "
            f"ingest, {table.backfilled} backfilled ({table.backfilled_now} now), {table.still_missing} missing"
        )
        if table.gone_since_last_run:
            line += f"; {table.gone_since_last_run} records gone since the day's last run, written again"
        if table.audited_not_in_trail or table.altered:
            unconfirmed = sorted({*table.not_in_trail_examples, *table.altered_examples})
            shown = ", ".join(unconfirmed[:_SHOWN_IDS]) + (", ..." if len(unconfirmed) > _SHOWN_IDS else "")
            line += (
                f"; {table.audited_not_in_trail} audited calls not in the trail, {table.altered} contradicting it: "
                f"{shown}"
            )
        if table.restored_now:
            line += f"; {table.restored_now} restored from the trail's files (compaction keeps those records)"
        if table.refreshed:
            line += (
                f"; {table.refreshed} too big for the log group, their records written again from the trail's files "
                "(compaction keeps those)"
            )
        lines.append(line)
    for path, reason in sorted(report.unreadable_trail_files.items()):
        lines.append(f"  unreadable trail file {path}: {reason}")
    lines.extend(f"  the trail did not log {gap}: calls then were recorded nowhere" for gap in report.not_logging)
    lines.extend(
        f"  {table}: the trail did not log {gap}: those calls then were recorded nowhere"
        for table, gaps in report.narrowed.items()
        for gap in gaps
    )
    return "\n".join(lines)
