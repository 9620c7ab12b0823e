"""Plays the schedule of `compact_audit_records`: compacts the local audit bucket every few seconds (and once for
`make compact`), with the deployed function's compactor and its limits.

One difference, on purpose: locally today's partitions count as closed, so the demo and the tests see both tiers
within seconds; in AWS a day is compacted once it has ended and settled (COMPACTION_SETTLE_SECONDS).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from chalicelib.compactor import CompactionReport, S3Compactor, time_left_of
from deutzia_local.periodic import Periodic

logger = logging.getLogger("deutzia.compaction")


class LocalCompaction:
    """Runs `compactor` over every partition up to today, every `interval` seconds, one run at a time."""

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
            today = datetime.now(UTC).date().isoformat()
            report = self._compactor.run(today, time_left_of(None))
        if report.files:
            logger.info(report.summary())
        return report
