"""Hostile payloads, one crafted log event each: none may stop the shard, blow memory or hide its neighbours.

Every one is written next to a real call; the real call must be recorded and the hostile event quarantined (with
a reason naming it) or skipped, never retried.
"""

from __future__ import annotations

import gzip
import json
import zlib
from decimal import Decimal
from typing import Any

import pytest

from chalicelib import cloudtrail
from chalicelib.bounds import (
    MAX_ATTRIBUTE_NAMES,
    MAX_DECOMPRESSED_BYTES,
    MAX_EVENT_MESSAGE_CHARS,
    MAX_TEXT_CHARS,
    bounded_text,
    is_dynamodb_number,
    parse_event_time,
)
from chalicelib.cloudtrail import build_audit_records, message_stored_lines, parse_event_message
from chalicelib.cloudwatch import gunzip
from chalicelib.errors import MalformedEventError, UndecodableRecordError
from chalicelib.ingest import process_kinesis_batch
from chalicelib.records import UNKNOWN_PARTITION, canonical_key, compact_json
from tests.factories import cloudtrail_event, kinesis_event, logs_payload
from tests.unit.test_ingest import MemoryStore


def _ingest_beside_a_real_call(hostile: str | dict[str, Any]) -> tuple[MemoryStore, dict[str, Any]]:
    """One Kinesis record holding the hostile event then a real one, and a second record with another real one."""
    store = MemoryStore()
    real, later = cloudtrail_event(), cloudtrail_event(table="Books")
    event = kinesis_event([logs_payload([hostile, real]), logs_payload([later])])
    assert process_kinesis_batch(event, store, "audit/", report_item_failures=True) == {"batchItemFailures": []}
    recorded = {line["event_id"] for line in store.lines()}
    assert {real["eventID"], later["eventID"]} <= recorded
    return store, event


def _quarantine_reason(store: MemoryStore) -> str:
    ((_, reason),) = store.quarantine.values()
    return reason


@pytest.mark.parametrize(
    ("hostile", "reason"),
    [
        ("[" * 5000, "nested too deeply"),
        ('{"a":' * 5000, "nested too deeply"),
        ("x" * (MAX_EVENT_MESSAGE_CHARS + 1), "over"),
        (cloudtrail_event(eventTime="0999-06-01T00:00:00Z"), "eventTime"),
        (cloudtrail_event(eventTime="99999-06-01T00:00:00Z"), "eventTime"),
        (cloudtrail_event(eventTime="2024-13-01T00:00:00Z"), "eventTime"),
        (cloudtrail_event(eventTime="9999-12-31T23:00:00-05:00"), "eventTime"),
        (cloudtrail_event(eventTime="2024-05-01 12:00"), "eventTime"),
        (cloudtrail_event(eventID="x" * 129), "eventID"),
        (cloudtrail_event(eventID="../../etc"), "eventID"),
        (
            cloudtrail_event(
                "BatchGetItem", {"requestItems": [{"tableName": "Music", "key": {"id": n}} for n in range(101)]}
            ),
            "at most 100",
        ),
    ],
)
def test_a_hostile_event_is_quarantined_and_its_neighbours_recorded(hostile: Any, reason: str) -> None:
    store, _ = _ingest_beside_a_real_call(hostile)
    assert reason in _quarantine_reason(store)
    assert len(store.lines()) == 2


@pytest.mark.parametrize(
    "hostile",
    [
        cloudtrail_event(eventName=["PutItem"]),
        cloudtrail_event(eventName={"x": 1}),
        cloudtrail_event(eventSource=["dynamodb.amazonaws.com"]),
        '"just a string"',
        "1" * 5000,
        "not json at all",
    ],
)
def test_an_event_of_no_known_kind_is_skipped_and_its_neighbours_recorded(hostile: Any) -> None:
    store, _ = _ingest_beside_a_real_call(hostile)
    assert store.quarantine == {}
    assert len(store.lines()) == 2


@pytest.mark.parametrize("depth", [1000, 1100, 5000])  # orjson reads 1,000 levels, json writes fewer back
def test_a_data_event_nested_too_deeply_is_quarantined(depth: int) -> None:
    shell = json.dumps(cloudtrail_event(requestParameters={"tableName": "Music", "key": "DEEP"}))
    store, _ = _ingest_beside_a_real_call(shell.replace('"DEEP"', "[" * depth + "1" + "]" * depth))
    assert "nested too deeply" in _quarantine_reason(store)


def test_a_data_event_nested_hundreds_deep_is_recorded_whole() -> None:
    shell = json.dumps(cloudtrail_event(requestParameters={"tableName": "Music", "key": {"id": "k"}, "x": "DEEP"}))
    ((_, line),) = message_stored_lines(shell.replace('"DEEP"', "[" * 900 + "1" + "]" * 900)) or []
    assert json.loads(json.loads(line)["request_parameters"])["x"] == json.loads("[" * 900 + "1" + "]" * 900)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (RecursionError("deep"), "message is JSON nested too deeply"),  # only depth makes the formatter recurse
        (MemoryError(), "formatter failed: MemoryError"),
        (KeyError("x"), "formatter failed: KeyError"),
        (UnicodeError("bad"), "formatter failed: UnicodeError"),
    ],
)
def test_any_formatter_failure_quarantines_the_record_and_keeps_its_neighbours(
    error: BaseException, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    columns = cloudtrail._record_columns

    def formatter(event: Any) -> Any:
        if event["eventID"] == "crash":
            raise error
        return columns(event)

    monkeypatch.setattr(cloudtrail, "_record_columns", formatter)
    store, _ = _ingest_beside_a_real_call(cloudtrail_event(eventID="crash"))
    assert f"log event 0: {reason}" in _quarantine_reason(store)


def test_lone_surrogates_are_stored_as_replacement_characters() -> None:
    hostile = json.dumps(cloudtrail_event(userAgent="x", requestParameters={"tableName": "Music", "key": {"id": "k"}}))
    hostile = hostile.replace('"x"', '"\\ud800agent"').replace('"k"', '"\\udfffkey"')
    store, _ = _ingest_beside_a_real_call(hostile)
    stored = next(line for line in store.lines() if line["user_agent"] != "aws-cli/2.15.0")
    assert stored["user_agent"] == "\ufffdagent"
    assert stored["item_key"] == '{"id":"\ufffdkey"}'


def test_a_huge_number_in_a_key_is_kept_as_logged_never_expanded() -> None:
    hostile = json.dumps(cloudtrail_event(requestParameters={"tableName": "Music", "key": {"id": "N"}}))
    store, _ = _ingest_beside_a_real_call(hostile.replace('"N"', "1e999999"))
    stored = next(line for line in store.lines() if "E+999999" in (line["item_key"] or ""))
    assert stored["item_key"] == '{"id":"1E+999999"}'
    assert len(stored["request_parameters"]) < 200


def test_every_free_text_field_is_bounded_and_marked() -> None:
    long = "u" * 3_000_000
    event = cloudtrail_event(
        userAgent=long,
        errorCode=long,
        errorMessage=long,
        sourceIPAddress=long,
        requestParameters={"tableName": "Music", "key": {"id": long}, "item": [f"a{n}" for n in range(81_000)]},
    )
    (record,) = build_audit_records(event)
    line = record.to_line()
    assert len(line) < 512 * 1024
    for value in (record.user_agent, record.error_code, record.error_message, record.source_ip):
        assert value is not None
        assert len(value) == MAX_TEXT_CHARS
        kept, cut = value.split("…[truncated ")
        assert len(kept) + int(cut.removesuffix(" characters]")) == 3_000_000
    assert len(record.attribute_names) == MAX_ATTRIBUTE_NAMES + 1
    assert record.item_key is None  # longer than any DynamoDB key: no key, rather than a cut one
    assert record.attribute_names[-1] == f"…[{81_000 - MAX_ATTRIBUTE_NAMES} more names]"


def test_gzip_bomb_is_refused_before_it_is_held_in_memory() -> None:
    bomb = gzip.compress(b"\0" * (MAX_DECOMPRESSED_BYTES + 1))
    assert len(bomb) < 100_000
    with pytest.raises(UndecodableRecordError, match="more than"):
        gunzip(bomb, MAX_DECOMPRESSED_BYTES)
    store = MemoryStore()
    event = kinesis_event([bomb, logs_payload([cloudtrail_event()])])
    assert process_kinesis_batch(event, store, "audit/", report_item_failures=True) == {"batchItemFailures": []}
    ((body, reason),) = store.quarantine.values()
    assert body == bomb
    assert "decompresses to more than" in reason
    assert len(store.lines()) == 1


def test_gunzip_reads_every_member_and_refuses_truncated_or_trailing_garbage() -> None:
    two = gzip.compress(b"ab") + gzip.compress(b"cd")
    assert gunzip(two, 10) == b"abcd"
    assert gunzip(gzip.compress(b"x" * 10), 10) == b"x" * 10
    with pytest.raises(UndecodableRecordError, match="more than 9"):
        gunzip(gzip.compress(b"x" * 10), 9)
    with pytest.raises(UndecodableRecordError, match="truncated"):
        gunzip(gzip.compress(b"x" * 1000)[:-12], 10_000)
    with pytest.raises(UndecodableRecordError, match="not gzip"):
        gunzip(gzip.compress(b"x") + b"garbage!", 10_000)
    with pytest.raises(UndecodableRecordError, match="not gzip"):
        gunzip(zlib.compress(b"x"), 10_000)


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("0", True),
        ("1.5", True),
        ("-" + "9" * 38, True),
        ("9" * 39, False),
        ("1" + "0" * 125, True),
        ("1" + "0" * 126, False),
        ("1e125", True),
        ("1e126", False),
        ("1e-130", True),
        ("1e-131", False),
        ("1e999999", False),
        ("NaN", False),
        ("Infinity", False),
        ("12345678901234567890123456789012345678000", True),
    ],
)
def test_dynamodb_number_range(text: str, valid: bool) -> None:
    assert is_dynamodb_number(Decimal(text)) is valid


def test_a_38_digit_number_key_keeps_every_digit() -> None:
    digits = "1234567890123456789012345678901234567.8"
    assert canonical_key({"id": Decimal(digits + "000")}) == '{"id":"' + digits + '"}'
    assert canonical_key({"id": Decimal("-12345678901234567890123456789012345678E+20")}) == (
        '{"id":"-1234567890123456789012345678901234567800000000000000000000"}'
    )


@pytest.mark.parametrize(
    "literal",
    ["12345678901234567890123456789012345678", "-9007199254740993", "1.10", "1e5", "0.1", "18446744073709551617"],
)
def test_a_number_in_a_logged_key_keeps_every_digit_whatever_parser_reads_it(literal: str) -> None:
    shell = json.dumps(cloudtrail_event(requestParameters={"tableName": "Music", "key": {"id": "N"}}))
    message = shell.replace('"N"', literal)
    (record,) = build_audit_records(parse_event_message(message))  # type: ignore[arg-type]
    assert record.item_key == canonical_key({"id": Decimal(literal)})
    assert Decimal(json.loads(record.item_key or "")["id"]) == Decimal(literal)
    ((_, line),) = message_stored_lines(message) or []  # orjson first, as ingest reads it
    assert json.loads(line)["item_key"] == record.item_key


def test_values_remembered_across_events_are_short_ones_only() -> None:
    remembered = (cloudtrail._table_of_arn, cloudtrail._valid_table_name, cloudtrail._normalised_time)
    before = [memo.cache_info().currsize for memo in remembered]
    long_arn = "arn:aws:dynamodb:us-east-1:123456789012:table/" + "T" * 100_000
    resources = [{"type": "AWS::DynamoDB::Table", "ARN": long_arn}]
    (record,) = build_audit_records(
        cloudtrail_event(requestParameters={"tableName": long_arn, "key": {"id": "k"}}, resources=resources)
    )
    assert record.table_name == UNKNOWN_PARTITION
    with pytest.raises(MalformedEventError, match="eventTime"):
        build_audit_records(cloudtrail_event(eventTime="2024-05-01T12:00:00Z" + " " * 100_000))
    assert [memo.cache_info().currsize for memo in remembered] == before
    assert all(memo.cache_info().maxsize == 4096 for memo in remembered)


def test_numbers_outside_dynamodb_range_stay_short_in_keys_and_parameters() -> None:
    assert canonical_key({"id": Decimal("1e999999")}) == '{"id":"1E+999999"}'
    assert canonical_key({"id": Decimal("1e125")}) == '{"id":"1' + "0" * 125 + '"}'
    assert compact_json({"n": Decimal("1e999999"), "m": Decimal("1.10")}) == '{"n":"1E+999999","m":1.1}'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T12:00:00.123Z", "2024-05-01T12:00:00.123000+00:00"),
        ("2024-05-01T23:30:00-01:00", "2024-05-02T00:30:00+00:00"),
        ("2024-05-01T12:00:00", "2024-05-01T12:00:00+00:00"),
        ("0999-06-01T00:00:00Z", None),
        ("1969-12-31T23:59:59Z", None),
        ("2024-02-30T00:00:00Z", None),
        ("2024-05-01", None),
        ("２０２４-05-01T12:00:00Z", None),
        ("9999-12-31T23:59:59-01:00", None),
    ],
)
def test_event_times_are_four_digit_utc_times(text: str, expected: str | None) -> None:
    parsed = parse_event_time(text)
    assert (parsed.isoformat() if parsed else None) == expected


def test_bounded_text_says_exactly_how_much_it_cut() -> None:
    assert bounded_text("abc", 3) == "abc"
    cut = bounded_text("x" * 100, 40)
    assert len(cut) == 40
    kept = cut.split("…")[0]
    assert len(kept) + int(cut.split()[-2]) == 100
