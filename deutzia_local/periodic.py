"""A background thread that runs one step of a local component every few seconds until stopped: the way the
crawler and the failure-queue replayer play AWS's own schedules. A failing step is logged and tried again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class Periodic:
    """Runs `step` every `interval` seconds on a daemon thread named `name`."""

    def __init__(self, name: str, interval: float, step: Callable[[], object], logger: logging.Logger) -> None:
        self._name = name
        self._interval = interval
        self._step = step
        self._logger = logger
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self.stopping.wait(self._interval):
            try:
                self._step()
            except Exception:
                self._logger.exception("%s failed; trying again in %g s", self._name, self._interval)
