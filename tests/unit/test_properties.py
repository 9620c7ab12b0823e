"""Properties of the decoder and the formatter over arbitrary input (Hypothesis): the handler never raises for what a
payload holds, everything not recorded is quarantined or counted as skipped, and every stored line is bounded,
valid UTF-8 JSON with the record's columns."""

from __future__ import annotations

import gzip
import json
import types
from typing import Any
from unittest import mock

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.bounds import MAX_LINE_BYTES, valid_unicode
from chalicelib.cloudtrail import (
    DATA_OPERATIONS,
    build_audit_records,
    message_stored_lines,
    parse_event_message,
    stored_lines,
)
from chalicelib.cloudwatch import decode_logs_payload
from chalicelib.errors import MalformedEventError, UndecodableRecordError
from chalicelib.ingest import event_lines_of, process_kinesis_batch
from chalicelib.records import canonical_key, compact_json
from chalicelib.schema import COLUMN_NAMES
from tests.factories import cloudtrail_event, kinesis_event, logs_payload
from tests.unit.test_ingest import MemoryStore

# Text as an attacker writes it into JSON: any code point, lone surrogates included (JSON escapes carry them).
hostile_text = st.text(st.characters(blacklist_categories=()), max_size=40) | st.sampled_from(
    ["", "\ud800", "x" * 20_000, "1e999999", "' OR 1=1 --", "<script>alert(1)</script>", "\u0000", "☃"]
)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | hostile_text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(hostile_text, children, max_size=4),
    max_leaves=20,
)
key_values = (
    hostile_text
    | st.integers()
    | st.decimals(allow_nan=False, allow_infinity=False, places=None).map(str).map(float)
    | st.fixed_dictionaries({"S": hostile_text})
    | st.fixed_dictionaries({"N": hostile_text})
    | json_values
)
keys = st.dictionaries(hostile_text, key_values, max_size=3) | json_values
items = st.fixed_dictionaries(
    {},
    optional={
        "operation": st.sampled_from(["Put", "Update", "Delete", "Get", "ConditionCheck", "nonsense"]) | hostile_text,
        "tableName": st.sampled_from(["Music", "Books"]) | hostile_text,
        "TableName": hostile_text,
        "key": keys,
        "Key": keys,
        "items": st.lists(hostile_text, max_size=5) | json_values,
        "statement": hostile_text | st.just("SELECT * FROM Music WHERE id = 'a'"),
        "conditionExpression": hostile_text,
        "expressionAttributeNames": st.dictionaries(hostile_text, hostile_text, max_size=3) | json_values,
    },
)
request_parameters = st.fixed_dictionaries(
    {},
    optional={
        "tableName": st.sampled_from(["Music", "Books"]) | hostile_text,
        "key": keys,
        "item": st.lists(hostile_text, max_size=5) | json_values,
        "requestItems": st.lists(items, max_size=6) | json_values,
        "transactItems": st.lists(items, max_size=3),
        "transactStatements": st.lists(items, max_size=3),
        "statement": hostile_text | st.just("UPDATE Music SET a = ***(Redacted) WHERE id = 'k' AND n = 7"),
        "updateExpression": hostile_text,
        "expressionAttributeNames": st.dictionaries(hostile_text, hostile_text, max_size=3) | json_values,
    },
)
identities = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["IAMUser", "AssumedRole", "AWSService"]) | hostile_text,
        "arn": hostile_text,
        "principalId": hostile_text,
        "userName": hostile_text | json_values,
        "sessionContext": json_values,
    },
)


@st.composite
def cloudtrail_events(draw: st.DrawFn) -> dict[str, Any]:
    """A DynamoDB data event of the real shape with hostile values anywhere a field can hold one."""
    overrides: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "userIdentity": identities | json_values,
                "eventTime": st.sampled_from(["2024-05-01T12:00:00Z", "0999-01-01T00:00:00Z", "2024-02-30T00:00:00Z"])
                | hostile_text
                | json_values,
                "eventID": st.uuids().map(str) | hostile_text | json_values,
                "userAgent": hostile_text | json_values,
                "errorCode": hostile_text,
                "errorMessage": hostile_text | json_values,
                "readOnly": json_values,
                "resources": json_values
                | st.lists(st.fixed_dictionaries({"type": st.just("AWS::DynamoDB::Table"), "ARN": hostile_text})),
            },
        )
    )
    event = cloudtrail_event(draw(st.sampled_from(sorted(DATA_OPERATIONS))), draw(request_parameters))
    event.update(overrides)
    return event


def _refusal(call: Any, *arguments: Any) -> str | None:
    """The reason `call` gives for refusing its input as one of ours, or None when it accepts it."""
    try:
        call(*arguments)
    except (UndecodableRecordError, MalformedEventError) as exc:
        return str(exc)
    return None


@given(st.binary(max_size=2000))
def test_any_bytes_decode_or_say_why(data: bytes) -> None:
    assert _refusal(decode_logs_payload, data) != ""


@given(json_values)
def test_any_gzip_json_decodes_or_says_why(document: Any) -> None:
    assert _refusal(decode_logs_payload, gzip.compress(json.dumps(document).encode())) != ""


log_events = st.fixed_dictionaries(
    {"message": hostile_text}, optional={"id": json_values, "timestamp": json_values, "extra": json_values}
)
payload_documents = st.fixed_dictionaries(
    {"messageType": st.just("DATA_MESSAGE"), "logEvents": st.lists(log_events, max_size=4)},
    optional={"logGroup": json_values, "owner": json_values},
)


@given(payload_documents | json_values)
def test_a_payload_decodes_the_same_whether_orjson_or_json_reads_it(document: Any) -> None:
    data = gzip.compress(json.dumps(document).encode())

    def refuse(_: Any) -> Any:
        raise orjson.JSONDecodeError("refused", "", 0)

    fast = _outcome(decode_logs_payload, data)
    with mock.patch("chalicelib.cloudwatch.orjson.loads", refuse):
        assert _outcome(decode_logs_payload, data) == fast


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cloudtrail_events())
def test_any_data_event_is_recorded_as_bounded_json_lines_or_refused_by_name(event: dict[str, Any]) -> None:
    message = json.dumps(event)
    if _refusal(event_lines_of, message) is not None:
        return
    lines = event_lines_of(message)
    assert lines is not None
    for (table_name, dt), line in lines:
        encoded = line.encode("utf-8")  # never a lone surrogate
        assert len(encoded) <= MAX_LINE_BYTES
        stored = json.loads(encoded)
        assert list(stored) == list(COLUMN_NAMES)
        assert stored["event_id"] == event["eventID"]
        assert len(dt) == 10
        assert dt == stored["event_time"][:10]
        assert table_name.encode("utf-8")


def _outcome(call: Any, message: str) -> Any:
    """What `call` gives for `message`: its lines, or the refusal it raises."""
    try:
        return call(message)
    except Exception as exc:
        return (type(exc).__name__, str(exc))


def _exact_lines(message: str) -> Any:
    return stored_lines(parse_event_message(message))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cloudtrail_events())
def test_the_fast_reading_of_a_message_stores_what_the_exact_parser_stores(event: dict[str, Any]) -> None:
    message = json.dumps(event)
    assert _outcome(message_stored_lines, message) == _outcome(_exact_lines, message)


# Numbers as JSON writes them, beyond what json.dumps writes: trailing zeros, exponents, 40 digits, 1E+400.
number_literals = st.from_regex(r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)


@settings(max_examples=300)
@given(st.lists(number_literals, min_size=4, max_size=4), st.sampled_from(["PutItem", "TransactWriteItems"]))
def test_numbers_are_stored_as_written_whichever_parser_reads_them(numbers: list[str], operation: str) -> None:
    item = {"tableName": "Music", "key": {"id": "N0", "sort": {"N": "N1"}}, "item": ["N2"], "limit": "N3"}
    parameters = item if operation == "PutItem" else {"transactItems": [{"put": item}]}
    message = json.dumps(cloudtrail_event(operation, parameters))
    for index, number in enumerate(numbers):
        message = message.replace(f'"N{index}"', number, 1)
    assert message_stored_lines(message) == _exact_lines(message)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(cloudtrail_events() | hostile_text | json_values.map(json.dumps), min_size=1, max_size=5))
def test_the_handler_never_raises_and_quarantines_what_it_does_not_record(messages: list[Any]) -> None:
    store = MemoryStore()
    event = kinesis_event([logs_payload(messages)])
    assert process_kinesis_batch(event, store, "audit/", report_item_failures=True) == {"batchItemFailures": []}
    recordable = []
    for message in messages:
        text = message if isinstance(message, str) else json.dumps(message)
        try:
            lines = event_lines_of(text)
        except Exception:
            assert store.quarantine, "a refused event must put its Kinesis record in quarantine"
            continue
        recordable += [line for _, line in lines or []]
    assert sorted(json.dumps(line, sort_keys=True) for line in store.lines()) == sorted(
        json.dumps(json.loads(line), sort_keys=True) for line in recordable
    )


@given(st.dictionaries(hostile_text, hostile_text | st.integers(), min_size=1, max_size=2))
def test_canonical_key_is_valid_json_of_strings_and_ignores_order(key: dict[str, Any]) -> None:
    text = canonical_key(key)
    text.encode("utf-8")
    assert canonical_key(dict(reversed(list(key.items())))) == text
    assert all(isinstance(value, str) for value in json.loads(text).values())


def _without_orjson() -> Any:
    """records' orjson, refusing everything: its json fallback writes instead."""

    def refuse(*_: Any, **__: Any) -> bytes:
        raise TypeError("orjson refused")

    stand_in = types.SimpleNamespace(dumps=refuse, OPT_SORT_KEYS=orjson.OPT_SORT_KEYS, Fragment=orjson.Fragment)
    return mock.patch("chalicelib.records.orjson", stand_in)


@given(json_values, st.dictionaries(hostile_text, key_values, max_size=3))
def test_orjson_writes_the_same_text_as_the_json_fallback(value: Any, key: dict[str, Any]) -> None:
    exact = parse_event_message(json.dumps(value))  # numbers as Decimal, as the formatter holds them
    exact_key = parse_event_message(json.dumps(key))
    fast = valid_unicode(compact_json(exact)), canonical_key(exact_key)
    with _without_orjson():
        assert (valid_unicode(compact_json(exact)), canonical_key(exact_key)) == fast


def test_records_of_a_real_put_are_unchanged_by_the_bounds() -> None:
    (record,) = build_audit_records(cloudtrail_event())
    assert record.item_key == '{"id":"item-1"}'
    assert record.attribute_names == ["id", "title"]
