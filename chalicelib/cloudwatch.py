"""Decodes a Kinesis record's data as a CloudWatch Logs subscription payload (gzip JSON), with a reason when it
cannot be: the reason goes with the bytes to quarantine. Pure; the log events' messages are not parsed here.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import NamedTuple

import orjson

from chalicelib.bounds import MAX_DECOMPRESSED_BYTES
from chalicelib.errors import UndecodableRecordError

DATA_MESSAGE = "DATA_MESSAGE"
CONTROL_MESSAGE = "CONTROL_MESSAGE"


class LogEvent(NamedTuple):
    """One CloudWatch Logs event: its id, its ingestion time (epoch ms) and its text."""

    id: str
    timestamp: int | None
    message: str


class LogsPayload(NamedTuple):
    """What a subscription filter delivers: the message type and, for data, the log events."""

    message_type: str
    log_group: str
    log_events: tuple[LogEvent, ...]


def decode_logs_payload(data: bytes) -> LogsPayload:
    """The payload in `data`; UndecodableRecordError saying why when it is not gzip, not JSON, or not the shape."""
    if not data:
        raise UndecodableRecordError("empty record data")
    text = gunzip(data, MAX_DECOMPRESSED_BYTES)
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:  # lone surrogates in a message, depth: json reads what JSON allows
        document = _json_document(text)
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
        message = raw.get("message") if type(raw) is dict else None  # parsed JSON: every object is a dict
        if not isinstance(message, str):
            raise UndecodableRecordError(f"not a CloudWatch Logs payload: log event {position} has no message")
        # Only values both parsers read alike: an id that is text, a time that is a 64-bit count of milliseconds.
        identifier, timestamp = raw.get("id"), raw.get("timestamp")
        events.append(
            LogEvent(
                identifier if type(identifier) is str else str(position),
                timestamp if type(timestamp) is int and 0 <= timestamp < 2**63 else None,
                message,
            )
        )
    log_group = document.get("logGroup")
    return LogsPayload(str(message_type), log_group if type(log_group) is str else "", tuple(events))


def _json_document(text: bytes) -> object:
    try:
        return json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UndecodableRecordError(f"gzip data is not JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise UndecodableRecordError("gzip data is JSON nested too deeply") from None


def gunzip(data: bytes, limit: int) -> bytes:
    """The gzip data (every member) decompressed; UndecodableRecordError once it would exceed `limit` bytes, before
    more than that is held in memory."""
    pieces: list[bytes] = []
    size = 0
    remaining = data
    while remaining:
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            piece = decompressor.decompress(remaining, limit - size + 1)
        except zlib.error as exc:
            raise UndecodableRecordError(f"not gzip data: {exc}") from None
        size += len(piece)
        if size > limit or decompressor.unconsumed_tail:
            raise UndecodableRecordError(f"gzip data decompresses to more than {limit} bytes")
        if not decompressor.eof:
            raise UndecodableRecordError("truncated gzip data")
        pieces.append(piece)
        remaining = decompressor.unused_data
    return b"".join(pieces)
