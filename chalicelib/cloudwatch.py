"""Decodes a Kinesis record's data as a CloudWatch Logs subscription payload (gzip JSON), with a reason when it
cannot be: the reason goes with the bytes to quarantine. Pure; the log events' messages are not parsed here.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from chalicelib.errors import UndecodableRecordError

DATA_MESSAGE = "DATA_MESSAGE"
CONTROL_MESSAGE = "CONTROL_MESSAGE"


@dataclass(frozen=True)
class LogEvent:
    """One CloudWatch Logs event: its id, its ingestion time (epoch ms) and its text."""

    id: str
    timestamp: int | None
    message: str


@dataclass(frozen=True)
class LogsPayload:
    """What a subscription filter delivers: the message type and, for data, the log events."""

    message_type: str
    log_group: str
    log_events: tuple[LogEvent, ...]


def decode_logs_payload(data: bytes) -> LogsPayload:
    """The payload in `data`; UndecodableRecordError saying why when it is not gzip, not JSON, or not the shape."""
    if not data:
        raise UndecodableRecordError("empty record data")
    try:
        text = gzip.decompress(data)
    except EOFError:
        raise UndecodableRecordError("truncated gzip data") from None
    except (OSError, zlib.error) as exc:
        raise UndecodableRecordError(f"not gzip data: {exc}") from None
    try:
        document = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UndecodableRecordError(f"gzip data is not JSON: {exc}") from None
    if not isinstance(document, Mapping):
        raise UndecodableRecordError("not a CloudWatch Logs payload: JSON is not an object")
    message_type = document.get("messageType")
    if message_type not in (DATA_MESSAGE, CONTROL_MESSAGE):
        raise UndecodableRecordError(f"not a CloudWatch Logs payload: messageType is {str(message_type)[:40]!r}")
    raw_events = document.get("logEvents")
    if not isinstance(raw_events, list):
        raise UndecodableRecordError("not a CloudWatch Logs payload: logEvents is not a list")
    events = []
    for position, raw in enumerate(raw_events):
        message = raw.get("message") if isinstance(raw, Mapping) else None
        if not isinstance(message, str):
            raise UndecodableRecordError(f"not a CloudWatch Logs payload: log event {position} has no message")
        timestamp = raw.get("timestamp")
        events.append(
            LogEvent(str(raw.get("id", position)), timestamp if isinstance(timestamp, int) else None, message)
        )
    return LogsPayload(str(message_type), str(document.get("logGroup", "")), tuple(events))
