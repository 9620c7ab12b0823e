"""Values shown on a terminal cannot act: escape sequences, bidi overrides and zero-width characters are written as
`\\uXXXX`, in the `deutzia` command's tables and in `make sql`'s and the demo's. An entry's caller and call are named as
people name them."""

from __future__ import annotations

import json
import re
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.shown import MAX_ATTRIBUTES_CHARS, attributes_text, operation_text, visible_text, who
from deutzia_local.demo import format_table

ERASE_THE_LINE_ABOVE = "\x1b[1A\x1b[2K"


def test_escape_sequences_and_bidi_overrides_are_written_out() -> None:
    assert visible_text("mallory" + ERASE_THE_LINE_ABOVE) == "mallory\\u001b[1A\\u001b[2K"
    assert visible_text("invoice\u202egpj.exe") == "invoice\\u202egpj.exe"
    assert visible_text("a\u200bb\ufeff\x07\x9b") == "a\\u200bb\\ufeff\\u0007\\u009b"


@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_text_shown_holds_no_control_or_format_character(text: str) -> None:
    shown = visible_text(text)
    assert not [c for c in shown if unicodedata.category(c) == "Cc" or c in "\u061c\u200e\u200f\u202a\u202e\u2066"]
    assert not re.search("[\u202a-\u202e\u2066-\u2069\u200b-\u200f]", shown)
    if not re.search("[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]", text):
        assert shown == text  # printable text, any script, is shown as it is


def test_make_sqls_tables_show_what_a_value_holds() -> None:
    table = format_table(["user_agent"], [["evil" + ERASE_THE_LINE_ABOVE]])
    assert "\x1b" not in table
    assert table.splitlines()[-1] == "evil\\u001b[1A\\u001b[2K"


def test_the_caller_is_named_with_the_role_a_session_was_assumed_from() -> None:
    session = {
        "principal_type": "AssumedRole",
        "principal_name": "bob",
        "principal_arn": "arn:aws:sts::111122223333:assumed-role/admin-role/bob",
        "session_issuer_arn": "arn:aws:iam::444455556666:role/ops/admin-role",
    }
    assert who(session) == "bob (admin-role)"
    assert who({**session, "principal_name": None}) == f"{session['principal_arn']} (admin-role)"
    assert who({**session, "session_issuer_arn": None}) == "bob"
    assert who({"principal_type": "IAMUser", "principal_name": "alice"}) == "alice"
    assert who({"principal_type": "Unknown", "principal_id": "AKIAEXAMPLE"}) == "AKIAEXAMPLE"
    service = {"principal_type": "AWSService", "invoked_by": "dynamodb.application-autoscaling.amazonaws.com"}
    assert who(service) == "dynamodb.application-autoscaling.amazonaws.com"
    assert who({}) == "?"


def test_the_call_is_named_beside_the_operation_when_it_is_not_the_operations_own() -> None:
    assert operation_text({"operation": "Put", "event_name": "PutItem"}) == "Put"
    assert operation_text({"operation": "Update", "event_name": "TransactWriteItems"}) == "Update (TransactWriteItems)"
    statement = {"operation": "Statement", "event_name": "ExecuteStatement"}
    assert operation_text(statement) == "Statement (ExecuteStatement)"


def _update(expression: str, names: object, spelled: str = "expressionAttributeNames") -> dict[str, object]:
    parameters = {"key": {"id": "7"}, spelled: names, "tableName": "Music", "updateExpression": expression}
    return {"operation": "Update", "update_expression": expression, "request_parameters": json.dumps(parameters)}


def test_a_line_shows_what_each_call_named_of_the_items_attributes_and_its_condition() -> None:
    names = {"#r": "Rating", "#p": "play count", "#t": "Tags"}
    update = _update("SET #r = :r, #p = #p + :one REMOVE #t ADD #missing :x", names)
    assert attributes_text(update) == 'SET Rating = :r, "play count" = "play count" + :one REMOVE Tags ADD #missing :x'
    assert attributes_text(_update("SET #r = :r", names, "ExpressionAttributeNames")) == "SET Rating = :r"
    assert attributes_text(_update("SET Rating = :r", {})) == "SET Rating = :r"
    put = {"operation": "Put", "attribute_names": ["Artist", "SongTitle", "x = 1, y", 'say "hi"']}
    assert attributes_text(put) == 'Artist, SongTitle, "x = 1, y", "say \\"hi\\""'
    statement = "UPDATE Music SET Rating=***(Redacted) WHERE Artist=***(Redacted)"
    assert attributes_text({"operation": "Statement", "statement": statement}) == statement
    # The condition a write or a condition check made: why a call failed with ConditionalCheckFailedException.
    conditioned = {
        **_update("SET #y = :y", {"#y": "Year", "#a": "Album Title"}),
        "condition_expression": "size(#a) > :n",
    }
    assert attributes_text(conditioned) == 'SET Year = :y; condition size("Album Title") > :n'
    delete = {**_update("", {"#r": "Rating"}), "operation": "Delete", "condition_expression": "attribute_exists(#r)"}
    assert attributes_text(delete) == "condition attribute_exists(Rating)"
    assert attributes_text({**put, "condition_expression": "attribute_not_exists(Artist)"}).endswith(
        '"say \\"hi\\""; condition attribute_not_exists(Artist)'
    )
    assert attributes_text({"operation": "Get", "condition_expression": "x = :x"}) == ""
    for other in ("Get", "Delete", "ConditionCheck", "Query", "Scan", None):
        assert attributes_text({"operation": other, "attribute_names": ["a"], "statement": "x"}) == ""
    # An update whose stored parameters were cut short, or that logged the attribute names only.
    cut = {**_update("SET #r = :r", names), "request_parameters": '{"expressionAttributeNames":{"#r":"Rat'}
    assert attributes_text(cut) == "SET #r = :r"
    assert attributes_text({"operation": "Update", "attribute_names": ["Rating"]}) == "Rating"
    deep = {**_update("SET #r = :r", names), "request_parameters": "[" * 100_000}
    assert attributes_text(deep) == "SET #r = :r"
    # What the page's JSON.parse refuses, or a name that is not text: the placeholder stays, as on the page.
    assert attributes_text(_update("SET #n = :n", {"#n": 7})) == "SET #n = :n"
    constant = {**cut, "request_parameters": '{"expressionAttributeNames":{"#r":"Rating"},"limit":NaN}'}
    assert attributes_text(constant) == "SET #r = :r"
    long = attributes_text({"operation": "Put", "attribute_names": [f"attribute{n}" for n in range(100)]})
    assert len(long) == MAX_ATTRIBUTES_CHARS + 1
    assert long.endswith("…")


_NAME = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


def _read_back(shown: str) -> list[str]:
    """A put's names from its line: each bare or a JSON string, separated by `, `."""
    tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[A-Za-z0-9_-]+|, ', shown)
    assert "".join(tokens) == shown
    return [json.loads(token) if token.startswith('"') else token for token in tokens if token != ", "]


@given(st.lists(_NAME, max_size=8))
def test_a_puts_names_read_back_whatever_they_hold(names: list[str]) -> None:
    shown = attributes_text({"operation": "Put", "attribute_names": names})
    if len(shown) <= MAX_ATTRIBUTES_CHARS:
        assert _read_back(shown) == names


@given(
    st.dictionaries(st.from_regex(r"#[A-Za-z0-9_]{1,4}", fullmatch=True), _NAME, max_size=4),
    st.text(max_size=80),
    st.one_of(st.none(), st.text(max_size=200)),
    st.sampled_from(["Put", "Update", "Delete", "Get", "ConditionCheck", "Query", "Scan", "Statement", None]),
    st.one_of(st.none(), st.text(max_size=300)),
)
def test_an_update_shows_each_name_for_its_placeholder_and_never_fails(
    names: dict[str, str], expression: str, parameters: str | None, operation: str | None, condition: str | None
) -> None:
    shown = attributes_text(_update("REMOVE " + ", ".join(names), names)) if names else ""
    if names and len(shown) <= MAX_ATTRIBUTES_CHARS:  # each name in its placeholder's place, read back whole
        assert shown.startswith("REMOVE ")
        assert _read_back(shown.removeprefix("REMOVE ")) == list(names.values())
    # Whatever a record holds, its line is at most MAX_ATTRIBUTES_CHARS and an ellipsis, never an error.
    anything = {
        "operation": operation,
        "update_expression": expression,
        "condition_expression": condition,
        "statement": expression,
        "attribute_names": list(names.values()),
        "request_parameters": parameters,
    }
    assert len(attributes_text(anything)) <= MAX_ATTRIBUTES_CHARS + 1
