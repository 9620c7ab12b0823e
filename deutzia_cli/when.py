"""How `deutzia` reads a time (`--since`, `--until`): as GET /audit takes it (`YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ`),
a time with its offset from UTC (`2026-11-30T09:00+01:00`, as a reader in another time zone writes it), or a span back
from now (`90m`, `6h`, `2d`, `1w`: "the last six hours", the first question of an incident). The API takes UTC only:
the others become the UTC time they name, to the second, before any request. Pure.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from chalicelib.query import INVALID_TIME, parse_time

# A span back from now: a whole number of seconds, minutes, hours, days or weeks, at most MAX_SPAN_DAYS.
SPAN = re.compile(r"([0-9]{1,7})([smhdw])")
SPAN_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_SPAN_DAYS = 100 * 366
# The longest text read as a time with an offset (`2026-11-30T09:00:00.000000+01:00` is 32).
_MAX_TIME_CHARS = 40
FORMS = "YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ, a time with its offset (2026-11-30T09:00+01:00), or a span back (6h, 2d)"


def api_time(text: str, now: datetime) -> str:
    """`text` as GET /audit takes a time; ValueError saying what it takes. A UTC day or time stays as written; a time
    with an offset, or `Z`, becomes its UTC time; a span is that long before `now`, to the second."""
    try:
        parse_time(text)
        return text  # a day stays a day: the API, the messages and an evidence bundle's words say it as written
    except ValueError as exc:
        refused = str(exc)
    span = SPAN.fullmatch(text)
    if span is not None:
        seconds = int(span[1]) * SPAN_SECONDS[span[2]]
        if seconds > MAX_SPAN_DAYS * 86400:
            raise ValueError(f"reaches back more than {MAX_SPAN_DAYS:,} days: give a date")
        return _utc_text(now - timedelta(seconds=seconds))
    try:
        parsed = datetime.fromisoformat(text) if len(text) <= _MAX_TIME_CHARS else None
    except ValueError:
        parsed = None
    if parsed is None:  # a UTC time's form with no such day or time (2024-02-30) is told so
        raise ValueError(refused if refused == INVALID_TIME else f"must be {FORMS}")
    if parsed.tzinfo is None:
        raise ValueError("names no time zone: end it with Z (UTC) or its offset, such as +01:00")
    if parsed.microsecond:
        raise ValueError("must be a whole second")
    try:
        return _utc_text(parsed.astimezone(UTC))
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first year
        raise ValueError("is out of range") from None


def _utc_text(moment: datetime) -> str:
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}Z"
