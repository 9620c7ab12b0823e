"""Every limit Deutzia puts on what it reads or stores: payload and event sizes, DynamoDB's number range, times,
and the length of each stored field. One place, so the ingest path, the API and the tests share the same numbers.

Pure. A value past a bound is either refused (the caller says why) or, for free text, cut with a marker that says
how much was cut; the raw event stays complete in the trail's own files.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Context, Decimal

# A Kinesis record holds at most 1 MiB; CloudWatch Logs batches decompress to a few MiB. Past this, it is not one.
MAX_DECOMPRESSED_BYTES = 32 * 1024 * 1024
# CloudWatch Logs takes events of at most 256 KiB; a message four times that is not a CloudTrail event.
MAX_EVENT_MESSAGE_CHARS = 1024 * 1024
# How far an event's time may be from the moment its record reached the stream (Kinesis stamps it; a log event's
# writer cannot): CloudTrail delivers to the log group within minutes, so at most a day before, and a few minutes of
# clock after. Reconciliation checks each day once the next one has ended, so nothing ingest takes escapes it.
MAX_EVENT_AGE_SECONDS = 24 * 3600
MAX_EVENT_CLOCK_SKEW_SECONDS = 300
# DynamoDB's largest multi-item calls (TransactWriteItems, TransactGetItems, BatchGetItem, ExecuteTransaction) take 100.
MAX_ITEMS_PER_EVENT = 100

# What one stored record may hold, per field (characters); longer text is cut with a marker.
MAX_TEXT_CHARS = 8 * 1024
MAX_KEY_CHARS = 16 * 1024
MAX_REQUEST_PARAMETERS_CHARS = 64 * 1024
# PartiQL takes 8,192 characters, but CloudTrail's `***(Redacted)` for each literal can make the logged text longer.
MAX_STATEMENT_CHARS = 64 * 1024
MAX_ARN_CHARS = 2048
# One stored line (UTF-8 bytes): far above what the field bounds allow for one event, and the hard stop behind them.
MAX_LINE_BYTES = 2 * 1024 * 1024
MAX_ATTRIBUTE_NAMES = 256
MAX_ATTRIBUTE_NAME_CHARS = 256
TRUNCATION_MARKER = "…[truncated {} characters]"

# DynamoDB numbers: at most 38 significant digits, magnitudes from 1E-130 to below 1E+126.
MAX_NUMBER_DIGITS = 38
MIN_NUMBER_EXPONENT = -130
MAX_NUMBER_EXPONENT = 125

# CloudTrail writes `2026-11-28T09:36:58Z`; offsets and fractions are read too, but only four-digit years.
_EVENT_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?$")
MIN_EVENT_YEAR = 1970


def is_dynamodb_number(number: Decimal) -> bool:
    """True when DynamoDB could store `number`: finite, at most 38 significant digits, within its exponent range."""
    if not number.is_finite():
        return False
    if number.is_zero():
        return True
    digits = "".join(map(str, number.as_tuple().digits)).rstrip("0")
    return len(digits) <= MAX_NUMBER_DIGITS and MIN_NUMBER_EXPONENT <= number.adjusted() <= MAX_NUMBER_EXPONENT


def exact_normal_form(number: Decimal) -> Decimal:
    """`number` without trailing zeros, never rounded (Decimal's own `normalize` rounds to 28 digits)."""
    return number.normalize(Context(prec=max(1, len(number.as_tuple().digits))))


def bounded_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` as valid Unicode (lone surrogates replaced), cut to `limit` characters with a marker saying how many
    more there were."""
    if len(text) > limit:
        cut = len(text) - limit
        while True:  # the marker's own length decides how much is cut, which its digits then tell
            marker = TRUNCATION_MARKER.format(cut)
            kept = max(0, limit - len(marker))
            if len(text) - kept == cut:
                break
            cut = len(text) - kept
        text = text[:kept] + marker
    return valid_unicode(text)


def valid_unicode(text: str) -> str:
    """`text` with every lone surrogate (valid in JSON escapes, not in UTF-8) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def bounded_names(names: list[str]) -> list[str]:
    """At most MAX_ATTRIBUTE_NAMES names, each bounded; a last entry says how many more there were."""
    if len(names) <= MAX_ATTRIBUTE_NAMES and max(map(len, names), default=0) <= MAX_ATTRIBUTE_NAME_CHARS:
        try:
            "".join(names).encode("utf-8")
        except UnicodeEncodeError:
            return [valid_unicode(name) for name in names]
        return list(names)
    kept = [bounded_text(name, MAX_ATTRIBUTE_NAME_CHARS) for name in names[:MAX_ATTRIBUTE_NAMES]]
    if len(names) > MAX_ATTRIBUTE_NAMES:
        kept.append(f"…[{len(names) - MAX_ATTRIBUTE_NAMES} more names]")
    return kept


def parse_event_time(value: str) -> datetime | None:
    """A CloudTrail `eventTime` as an aware UTC datetime with a four-digit year from 1970; None when it is not one."""
    if not _EVENT_TIME.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed = parsed.astimezone(UTC)
    except OverflowError:
        return None
    return parsed if parsed.year >= MIN_EVENT_YEAR else None
