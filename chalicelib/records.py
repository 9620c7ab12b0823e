"""The audit record, the canonical item key, and how records become S3 objects.

Pure: builds keys, lines and object names from data; the caller does the writing. Object names are deterministic
in their input (shard id and the batch's first and last sequence numbers), so a retried batch overwrites its own
objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import quote

import orjson
from zlib_ng import zlib_ng

from chalicelib.bounds import exact_normal_form, is_dynamodb_number, valid_unicode
from chalicelib.schema import COLUMN_NAMES

# Hive's name for a partition whose value is unknown; used when an item's table cannot be identified.
UNKNOWN_PARTITION = "__HIVE_DEFAULT_PARTITION__"

# DynamoDB's typed attribute values (`{"S": "x"}`), unwrapped when an event carries them instead of plain scalars.
_TYPE_DESCRIPTORS = frozenset({"S", "N", "B"})
# zlib's window bits for a gzip container (its header's time is always 0).
_GZIP = 16 + 15


@dataclass(slots=True)
class AuditRecord:
    """One item touched by one DynamoDB call; fields are the `audit` table's columns, plus its partition."""

    table_name: str
    event_id: str
    item_index: int
    event_time: str
    event_name: str
    operation: str
    item_key: str | None
    attribute_names: list[str] = field(default_factory=list)
    read_only: bool | None = None
    success: bool = True
    error_code: str | None = None
    error_message: str | None = None
    principal_type: str | None = None
    principal_arn: str | None = None
    principal_id: str | None = None
    principal_name: str | None = None
    session_issuer_arn: str | None = None
    access_key_id: str | None = None
    account_id: str | None = None
    invoked_by: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    aws_region: str | None = None
    recipient_account_id: str | None = None
    request_id: str | None = None
    shared_event_id: str | None = None
    vpc_endpoint_id: str | None = None
    table_arn: str | None = None
    condition_expression: str | None = None
    update_expression: str | None = None
    statement: str | None = None
    event_version: str | None = None
    request_parameters: str | None = None

    @property
    def dt(self) -> str:
        """The UTC date partition, from `event_time`."""
        return self.event_time[:10]

    def to_line(self) -> str:
        """The record as one compact JSON line, without its partition columns."""
        # getattr, not dataclasses.asdict: asdict deep-copies every field.
        return record_line({name: getattr(self, name) for name in COLUMN_NAMES})


def record_line(values: Mapping[str, object]) -> str:
    """One record's column values as its compact JSON line."""
    try:
        return orjson.dumps(values).decode("utf-8")
    except TypeError:  # a lone surrogate: JSON can carry it, UTF-8 cannot
        return valid_unicode(json.dumps(values, separators=(",", ":"), ensure_ascii=False))


def normalise_number(value: int | float | Decimal) -> str:
    """Write a number the way DynamoDB stores it: no exponent, no trailing zeros after the point. A number DynamoDB
    cannot hold (`1e999999`) keeps its compact form: it is never expanded into digits."""
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not is_dynamodb_number(number):
        return str(number)
    if number.is_zero():
        return "0"
    return format(exact_normal_form(number), "f")


def scalar_text(value: object) -> str:
    """The string form of one key attribute value (numbers normalised, strings unchanged)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return normalise_number(value)
    if isinstance(value, Mapping) and len(value) == 1:
        ((descriptor, inner),) = value.items()
        if descriptor in _TYPE_DESCRIPTORS:
            if descriptor == "N" and isinstance(inner, str):
                try:
                    return normalise_number(Decimal(inner))
                except ArithmeticError:
                    return inner
            return scalar_text(inner)
    if value is None:
        return "null"
    return compact_json(value)


def canonical_key(key: Mapping[str, object]) -> str:
    """The key as sorted compact JSON of string values: `{"id": 7}` and `{"id": "7"}` give the same text."""
    values = {str(name): scalar_text(value) for name, value in key.items()}
    try:  # orjson sorts by UTF-8 bytes, which is code point order: the same text as json's sort_keys
        return orjson.dumps(values, option=orjson.OPT_SORT_KEYS).decode("utf-8")
    except TypeError:  # a lone surrogate
        return valid_unicode(json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False))


def compact_json(value: object, sort_keys: bool = False) -> str:
    """Compact JSON that keeps non-ASCII text and writes exact decimals as numbers; with `sort_keys`, every object's
    keys in code point order, so the same value reads the same whatever order it was written in."""
    try:
        return orjson.dumps(value, default=_orjson_default, option=orjson.OPT_SORT_KEYS if sort_keys else 0).decode(
            "utf-8"
        )
    except TypeError:  # lone surrogates, nesting past orjson's 254 levels, integers past 64 bits: json writes them
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default, sort_keys=sort_keys)


def _orjson_default(value: object) -> object:
    written = _json_default(value)
    return orjson.Fragment(repr(written)) if type(written) is float else written  # json's spelling (`1e-07`)


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        if not is_dynamodb_number(value):
            return str(value)  # `1E+999999` stays that short text, never a million digits
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def partition_path(prefix: str, table_name: str, dt: str) -> str:
    """`<prefix>table_name=<t>/dt=<d>/`, the table name percent-encoded (a valid DynamoDB name is unchanged)."""
    return f"{prefix}table_name={quote(table_name, safe='')}/dt={dt}/"


# The name of every fresh object reconciliation writes from the trail's own files starts with this (ingest's start
# with a Kinesis shard id): of two copies of one record, compaction keeps the trail's.
BACKFILL_OBJECT_PREFIX = "backfill-"


def is_backfill_key(key: str) -> bool:
    """True for a fresh object reconciliation wrote from a trail file."""
    return key.rsplit("/", 1)[-1].startswith(BACKFILL_OBJECT_PREFIX)


# The name of every fresh object compaction writes with the copies of records it did not keep because they say something
# else of their call than the copy it kept (one of them did not come from CloudTrail): they stay beside the compacted
# file, in sight of GET /audit and reconciliation, until reconciliation restores the trail's own copy.
CONTESTED_OBJECT_PREFIX = "contested-"


def is_contested_key(key: str) -> bool:
    """True for a fresh object compaction wrote with contested copies of records."""
    return key.rsplit("/", 1)[-1].startswith(CONTESTED_OBJECT_PREFIX)


def build_object_key(prefix: str, table_name: str, dt: str, shard_id: str, first: str, last: str) -> str:
    """The deterministic S3 key of the records one batch (a shard's sequence numbers `first` to `last`) contributes
    to one partition."""
    return f"{partition_path(prefix, table_name, dt)}{shard_id}-{first}-{last}.json.gz"


def build_quarantine_key(dt: str, shard_id: str, sequence_number: str) -> str:
    """The S3 key under which an undecodable Kinesis record is kept, byte for byte."""
    return f"quarantine/dt={dt}/{shard_id}-{sequence_number}"


def encode_lines(lines: Iterable[str]) -> bytes:
    """Gzip JSON Lines, byte-identical for identical input (no time in the header), so a retry rewrites the same object.
    zlib-ng at level 6: any gzip reader reads it, in half of zlib's time, at zlib's size within 2 % (the fresh tier is
    what every lookup reads whole, so a faster level that writes more, zlib's 1 or ISA-L's, would cost every lookup)."""
    return zlib_ng.compress("".join(line + "\n" for line in lines).encode("utf-8"), 6, wbits=_GZIP)
