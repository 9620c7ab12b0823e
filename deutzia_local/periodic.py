"""Runs one step of a local component every few seconds until stopped, on a thread of its own or in the caller's:
the way the crawler, the failure-queue replayer and the Kinesis poller play AWS's own schedules and pollers. A
failing step is logged and tried again; a poller's step that found work runs again at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class Periodic:
    """Runs `step` every `interval` seconds on a daemon thread named `name`; with `again_when_busy`, a step that
    returns a true value runs again without waiting."""

    def __init__(
        self,
        name: str,
        interval: float,
        step: Callable[[], object],
        logger: logging.Logger,
        again_when_busy: bool = False,
    ) -> None:
        self._name = name
        self._interval = interval
        self._step = step
        self._logger = logger
        self._again_when_busy = again_when_busy
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread.ident is not None:  # run() in the caller's thread has no thread of its own to wait for
            self._thread.join(timeout=30)

    def run(self) -> None:
        """The loop itself, in the calling thread, until `stop()`; the first step runs at once."""
        busy = True
        while not self.stopping.is_set():
            if not busy and self.stopping.wait(self._interval):
                return
            try:
                found_work = self._step()
                busy = self._again_when_busy and bool(found_work)
            except Exception:
                self._logger.exception("%s failed; trying again in %g s", self._name, self._interval)
                busy = False
