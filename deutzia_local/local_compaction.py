"""Plays the schedule of `compact_audit_records`: compacts the local audit bucket every few seconds (and once for
`make compact`), with the deployed function's compactor, its limits and its days: today folds into a day file, a
day that has ended and settled (COMPACTION_SETTLE_SECONDS) into its month's file.
"""

from __future__ import annotations

import logging
import threading

from chalicelib.compactor import CompactionReport, S3Compactor, last_closed_day_now, time_left_of
from deutzia_local.periodic import Periodic

logger = logging.getLogger("deutzia.compaction")


class LocalCompaction:
    """Runs `compactor` over every partition, every `interval` seconds, one run at a time."""

    def __init__(self, compactor: S3Compactor, interval: float) -> None:
        self._compactor = compactor
        self._lock = threading.Lock()
        self._schedule = Periodic("compaction", interval, self.run_once, logger)

    def start(self) -> None:
        self._schedule.start()

    def stop(self) -> None:
        self._schedule.stop()

    def run_once(self) -> CompactionReport:
        """One run, as one invocation of the deployed function would do it (15 minutes at most)."""
        with self._lock:
            report = self._compactor.run(last_closed_day_now(), time_left_of(None))
        if report.files:
            logger.info(report.summary())
        return report
