"""`deutzia history --follow`'s polling, pure: what is new as the follow begins, and after."""

from __future__ import annotations

from typing import Any

from deutzia_cli.follow import follow


def _call(second: int) -> dict[str, Any]:
    return {"event_id": f"e-{second}", "item_index": 0, "event_time": f"2026-11-28T12:00:{second:02d}Z"}


def test_a_call_that_reached_the_audit_between_the_history_and_the_follow_is_shown_at_once() -> None:
    history = [_call(5), _call(4)]  # what the history showed: its limit left out the call of second 3
    audit = [_call(6), *history, _call(3)]  # the call of second 6 came after the history was read
    shown: list[str] = []
    reads: list[str] = []

    def read(since: str) -> list[dict[str, Any]]:
        reads.append(since)
        return list(audit)

    def sleep(seconds: float) -> None:
        if len(reads) > 2:
            raise KeyboardInterrupt
        audit.insert(0, _call(7))

    count = follow(read, lambda entry: shown.append(entry["event_id"]), iter(history), "2026-11-28", 2, sleep)
    assert shown == ["e-6", "e-7"]  # never the history's own, nor the older one past its limit; each once
    assert count == 2
    assert reads[0] == "2026-11-28T11:55:05Z"  # the newest shown, less the lookback
    assert reads[-1] == "2026-11-28T11:55:07Z"


def test_with_nothing_shown_the_follow_reads_from_its_start_and_shows_what_came_since() -> None:
    shown: list[str] = []
    audit: list[dict[str, Any]] = []

    def sleep(seconds: float) -> None:
        if audit:
            raise KeyboardInterrupt
        audit.append(_call(1))

    assert (
        follow(lambda since: list(audit), lambda entry: shown.append(entry["event_id"]), [], "2026-11-28", 2, sleep)
        == 1
    )
    assert shown == ["e-1"]
