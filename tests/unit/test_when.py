"""How `deutzia` reads `--since` and `--until`: UTC as the API takes it, a time with its offset, or a span back from
now; anything else a ValueError that says what it takes, never another error."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.query import parse_time
from deutzia_cli.when import MAX_SPAN_DAYS, api_time

NOW = datetime(2026, 11, 30, 9, 30, 15, 500_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "read"),
    [
        ("2026-11-29", "2026-11-29"),
        ("2026-11-29T08:00:00Z", "2026-11-29T08:00:00Z"),
        ("2026-11-29T08:00Z", "2026-11-29T08:00:00Z"),
        ("2026-11-29T09:00:00+01:00", "2026-11-29T08:00:00Z"),
        ("2026-11-29T09:00+01:00", "2026-11-29T08:00:00Z"),
        ("2026-11-29T00:30:00-05:30", "2026-11-29T06:00:00Z"),
        ("2026-11-30T00:30:00+01:00", "2026-11-29T23:30:00Z"),  # another day in UTC
        ("90s", "2026-11-30T09:28:45Z"),  # to the second, the fraction of now left out
        ("90m", "2026-11-30T08:00:15Z"),
        ("6h", "2026-11-30T03:30:15Z"),
        ("2d", "2026-11-28T09:30:15Z"),
        ("1w", "2026-11-23T09:30:15Z"),
        ("0h", "2026-11-30T09:30:15Z"),
        (f"{MAX_SPAN_DAYS}d", "1926-09-16T09:30:15Z"),
    ],
)
def test_a_time_is_read_as_the_utc_time_it_names(given: str, read: str) -> None:
    assert api_time(given, NOW) == read


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("yesterday", "must be YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ, a time with its offset"),
        ("2024-02-30", "is not a valid date and time"),
        ("2024-02-29T24:00:00Z", "is not a valid date and time"),
        ("2026-11-29T09:00:00", "names no time zone: end it with Z (UTC) or its offset"),
        ("2026-11-29T09:00:00.5Z", "must be a whole second"),
        ("0001-01-01T00:00:00+01:00", "is out of range"),
        (f"{MAX_SPAN_DAYS + 1}d", f"reaches back more than {MAX_SPAN_DAYS:,} days"),
        ("9999999w", "reaches back more than"),
        ("6 h", "must be YYYY-MM-DD"),
        ("-6h", "must be YYYY-MM-DD"),
        ("6H", "must be YYYY-MM-DD"),
        ("\u0666h", "must be YYYY-MM-DD"),  # an Arabic-Indic six: digits are ASCII only
        ("2026-11-29T09:00:00+01:00" + " " * 100, "must be YYYY-MM-DD"),
    ],
)
def test_anything_else_says_what_a_time_may_be(given: str, says: str) -> None:
    with pytest.raises(ValueError, match="^" + says.replace("(", r"\(").replace(")", r"\)")):
        api_time(given, NOW)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(max_size=60)
    | st.from_regex(r"\A[0-9]{1,8}[smhdwSMHDW]\Z")
    | st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat())
)
def test_any_text_is_a_time_the_api_takes_or_a_value_error(text: str) -> None:
    try:
        read: str | Exception = api_time(text, NOW)
    except ValueError as exc:
        read = exc
    if isinstance(read, Exception):
        assert str(read)  # it says why
    else:
        assert parse_time(read) in (read, read + "T00:00:00Z")
