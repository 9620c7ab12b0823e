"""Values shown on a terminal cannot act: escape sequences, bidi overrides and zero-width characters are written as
`\\uXXXX`, in the `deutzia` command's tables and in `make sql`'s and the demo's. An entry's caller and call are named as
people name them."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.shown import operation_text, visible_text, who
from deutzia_local.sql import format_table

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
