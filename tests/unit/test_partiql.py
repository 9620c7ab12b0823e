"""The table and key a logged PartiQL statement names; no guesses when the statement says more than that."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chalicelib.partiql import read_statement_target, redact_statement


@pytest.mark.parametrize(
    ("statement", "table", "key"),
    [
        ("SELECT * FROM Music WHERE Artist = 'A' AND SongTitle = 'B'", "Music", {"Artist": "A", "SongTitle": "B"}),
        ("UPDATE \"Music\" SET x = ***(Redacted) WHERE id = 'It''s' RETURNING ALL NEW *", "Music", {"id": "It's"}),
        ("DELETE FROM Music WHERE id = 7.50;", "Music", {"id": Decimal("7.50")}),
        ("INSERT INTO Music VALUE {'id': 'a', 'x': ***(Redacted)}", "Music", {"id": "a"}),
        ("select * from music where ID = 'a' and note = ***(Redacted)", "music", {"ID": "a"}),
    ],
)
def test_statements_naming_an_item_give_its_key(statement: str, table: str, key: dict[str, object]) -> None:
    target = read_statement_target(statement)
    assert (target.table_name, target.key) == (table, key)


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM Music",
        "SELECT * FROM Music WHERE a = 'x' OR b = 'y'",
        "SELECT * FROM Music WHERE a IN ['x', 'y']",
        "SELECT * FROM Music WHERE a = ?",
        "SELECT * FROM Music WHERE a > ***(Redacted)",
        'SELECT * FROM "Music"."by-title" WHERE title = \'x\'',
        "SELECT * FROM Music WHERE a = 'x' AND a = 'y'",
        "INSERT INTO Music VALUE {'id': ?}",
    ],
)
def test_statements_naming_no_single_item_give_no_key(statement: str) -> None:
    target = read_statement_target(statement)
    assert target.table_name == "Music"
    assert target.key is None


@pytest.mark.parametrize("statement", ["", "EXPLAIN x", "SELECT * FROM", "garbage \x00 ¤", "'unterminated"])
def test_unreadable_statements_give_nothing(statement: str) -> None:
    target = read_statement_target(statement)
    assert (target.table_name, target.key) == (None, None)


@pytest.mark.parametrize(
    ("statement", "redacted"),
    [
        (
            "SELECT * FROM Music WHERE Artist = 'A' AND SongTitle = 'B' AND plays > 10",
            "SELECT * FROM Music WHERE Artist = 'A' AND SongTitle = 'B' AND plays > ***(Redacted)",
        ),
        (
            "UPDATE Music SET note = 'it''s' WHERE Artist='A'",
            "UPDATE Music SET note = ***(Redacted) WHERE Artist='A'",
        ),
        (
            "INSERT INTO Music VALUE {'Artist': 'A', 'SongTitle': 'B', 'plays': 3}",
            "INSERT INTO Music VALUE {'Artist': 'A', 'SongTitle': 'B', 'plays': ***(Redacted)}",
        ),
        (
            "SELECT * FROM Music WHERE Artist IN ['A', 'B']",
            "SELECT * FROM Music WHERE Artist IN [***(Redacted), ***(Redacted)]",
        ),
        ("SELECT * FROM Music WHERE 'Artist' = 'A'", "SELECT * FROM Music WHERE ***(Redacted) = ***(Redacted)"),
        ("garbage ¤ 'secret'", "***(Redacted)"),
    ],
)
def test_statements_are_redacted_like_cloudtrail_except_key_values(statement: str, redacted: str) -> None:
    assert redact_statement(statement, frozenset({"Artist", "SongTitle"})) == redacted


def test_a_redacted_statement_still_names_its_item() -> None:
    logged = redact_statement(
        "DELETE FROM Music WHERE Artist = 'A' AND SongTitle = 'B' AND v = 2", frozenset({"Artist", "SongTitle"})
    )
    assert read_statement_target(logged).key == {"Artist": "A", "SongTitle": "B"}
