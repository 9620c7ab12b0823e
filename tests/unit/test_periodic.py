"""The loop behind the local stack's crawler, replayer and poller: every step runs, a failing one is retried, a
busy poller goes again at once, and stop() ends it whether it runs on its own thread or the caller's."""

from __future__ import annotations

import logging
import threading
import time

from deutzia_local.periodic import Periodic

logger = logging.getLogger("test.periodic")


def test_every_step_runs_and_a_failing_one_is_tried_again() -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("S3 unavailable")

    schedule = Periodic("steps", 0.01, step, logger)
    schedule.start()
    deadline = time.monotonic() + 10
    while len(calls) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    schedule.stop()
    assert len(calls) >= 5


def test_a_busy_step_runs_again_without_waiting_and_an_idle_one_waits_until_stopped() -> None:
    calls: list[float] = []
    idle = threading.Event()

    def step() -> bool:
        calls.append(time.monotonic())
        if len(calls) == 3:
            idle.set()
        return len(calls) < 3  # busy twice, then idle

    schedule = Periodic("poller", 30.0, step, logger, again_when_busy=True)
    runner = threading.Thread(target=schedule.run)  # as `python -m deutzia_local poll` runs it, in its own thread
    runner.start()
    assert idle.wait(20)  # the first step runs at once, and so do the two after a busy one: no 30 s wait
    schedule.stop()  # the idle wait ends at once
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert len(calls) == 3
