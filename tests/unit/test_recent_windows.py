"""A query without a key reads back from its newest end in windows of days: the windows cover exactly the query's
range, newest first, and the pages built from them give every entry once, in order, reading no older window than a
page needs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.errors import InvalidRequestError
from chalicelib.query import (
    RECENT_WINDOW_DAYS,
    AuditQuery,
    PageToken,
    Position,
    collect_page,
    decode_page_token,
    encode_page_token,
    search_windows,
)

NOW = datetime(2026, 11, 29, 12, 0, 7, 250000, tzinfo=UTC)
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)


def _text(value: datetime) -> str:
    return f"{value.year:04d}-{value:%m-%dT%H:%M:%S}Z"


# Times from year 1 (where a window would start before any date) to the last second of 9999, at whole seconds.
_times = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1, 1, 20)),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2026, 12, 31)),
    st.datetimes(min_value=datetime(9999, 12, 20), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.sampled_from([NOW.replace(tzinfo=None), datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59)]),
).map(lambda value: _text(value.replace(tzinfo=UTC)))


def _entry(number: int, event_time: str) -> dict[str, object]:
    return {"event_id": f"e{number:05d}", "item_index": number % 3, "event_time": event_time}


def _inside(entry: dict[str, object], query: AuditQuery, after: Position | None) -> bool:
    position = (str(entry["event_time"]), str(entry["event_id"]), int(str(entry["item_index"])))
    return (
        (query.since is None or position[0] >= query.since)
        and (query.until is None or position[0] < query.until)
        and (after is None or position < after)
    )


def _newest_first(entries: list[dict[str, object]]) -> list[dict[str, object]]:
    return sorted(entries, key=lambda e: (e["event_time"], e["event_id"], e["item_index"]), reverse=True)


@settings(max_examples=300, deadline=None)
@given(since=st.none() | _times, until=st.none() | _times, after_time=st.none() | _times)
def test_windows_cover_the_query_exactly_newest_first(
    since: str | None, until: str | None, after_time: str | None
) -> None:
    query = AuditQuery(table="Music", since=since, until=until)
    after = None if after_time is None else (after_time, "e", 0)
    windows = search_windows(query, after, NOW)
    assert 1 <= len(windows) <= len(RECENT_WINDOW_DAYS) + 1
    assert windows[-1].since == since  # the last reaches the query's start
    resumed = None if after_time in (None, "9999-12-31T23:59:59Z") else _text(_parse(after_time) + timedelta(seconds=1))
    newest = min(filter(None, [until, resumed]), default=None)
    assert windows[0].until == newest
    for newer, older in itertools.pairwise(windows):
        assert older.until == newer.since  # adjoining: each entry is in exactly one window
    for window in windows[:-1]:
        assert window.since is not None
        assert window.until is None or window.since < window.until
        assert (window.table, window.key, window.principal, window.operation) == ("Music", None, None, None)


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def test_the_first_window_is_the_last_day_and_widens_by_eight() -> None:
    windows = search_windows(AuditQuery(table="Music"), None, NOW)
    assert [(w.since, w.until) for w in windows] == [
        ("2026-11-28T12:00:07Z", None),
        ("2026-11-21T12:00:07Z", "2026-11-28T12:00:07Z"),
        ("2026-09-26T12:00:07Z", "2026-11-21T12:00:07Z"),
        ("2025-07-05T12:00:07Z", "2026-09-26T12:00:07Z"),
        (None, "2025-07-05T12:00:07Z"),
    ]


def test_a_query_naming_a_key_or_a_range_within_a_day_is_one_window() -> None:
    keyed = AuditQuery(table="Music", key='{"id":"1"}')
    assert search_windows(keyed, ("2024-01-01T00:00:00Z", "e", 0), NOW) == [keyed]
    narrow = AuditQuery(table="Music", since="2024-05-01T00:00:00Z", until="2024-05-01T20:00:00Z")
    assert search_windows(narrow, None, NOW) == [narrow]


def test_the_next_page_reads_back_from_the_last_entry_given() -> None:
    windows = search_windows(AuditQuery(table="Music"), ("2024-05-01T10:00:00Z", "e", 0), NOW)
    assert (windows[0].since, windows[0].until) == ("2024-04-30T10:00:01Z", "2024-05-01T10:00:01Z")


@settings(max_examples=200, deadline=None)
@given(
    times=st.lists(_times, max_size=40),
    since=st.none() | _times,
    until=st.none() | _times,
    limit=st.integers(1, 12),
)
def test_pages_give_every_entry_once_in_order_reading_only_the_windows_they_need(
    times: list[str], since: str | None, until: str | None, limit: int
) -> None:
    entries = [_entry(number, event_time) for number, event_time in enumerate(times)]
    query = AuditQuery(table="Music", since=since, until=until, limit=limit)
    expected = _newest_first([entry for entry in entries if _inside(entry, query, None)])
    seen: list[dict[str, object]] = []
    token: PageToken | None = None
    read: list[AuditQuery] = []

    def fetch(window: AuditQuery, after: Position | None, wanted: int) -> list[dict[str, object]]:
        assert wanted >= 1
        read.append(window)
        return _newest_first([entry for entry in entries if _inside(entry, window, after)])[:wanted]

    for _ in range(len(entries) + 1):
        read.clear()
        page = collect_page(query, token, fetch, NOW)
        assert len(page.entries) <= limit
        seen += page.entries
        # A window is read only when the newer ones held no more than the page: one entry more ends the search.
        after = token.after if token else None
        assert sum(len([e for e in entries if _inside(e, window, after)]) for window in read[:-1]) <= limit
        if page.next_token is None:
            break
        token = decode_page_token(page.next_token, query)
    assert seen == expected


@pytest.mark.parametrize("event_time", ["2024-02-30T00:00:00Z", "2023-02-29T10:00:00Z", "2024-05-01T24:00:00Z"])
def test_a_token_resuming_at_a_time_that_never_was_is_refused(event_time: str) -> None:
    query = AuditQuery(table="Music")
    token = encode_page_token(PageToken(query.fingerprint(), after=(event_time, "e1", 0)))
    with pytest.raises(InvalidRequestError, match="next_token"):
        decode_page_token(token, query)
