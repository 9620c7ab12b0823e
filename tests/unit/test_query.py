"""GET /audit's parameters, SQL and page tokens: validation names the parameter, values never become SQL."""

from __future__ import annotations

import pytest

from chalicelib.errors import InvalidRequestError, UnknownTableError
from chalicelib.query import (
    AuditQuery,
    PageToken,
    build_audit_sql,
    decode_page_token,
    encode_page_token,
    parse_audit_request,
    row_to_entry,
)


def test_full_request_is_parsed_and_normalised() -> None:
    query, token = parse_audit_request(
        {
            "table": "Music",
            "key": '{"id": 7.0}',
            "since": "2024-05-01",
            "until": "2024-05-02T10:00:00Z",
            "principal": "arn:aws:iam::123456789012:user/alice",
            "operation": "put",
            "limit": "5",
        },
        None,
    )
    assert query == AuditQuery(
        table="Music",
        key='{"id":"7"}',
        since="2024-05-01T00:00:00Z",
        until="2024-05-02T10:00:00Z",
        principal="arn:aws:iam::123456789012:user/alice",
        operation="Put",
        limit=5,
    )
    assert token is None


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({}, "table"),
        ({"table": "ab"}, "table"),
        ({"table": "Music' OR '1'='1"}, "table"),
        ({"table": "Music", "key": "{not json"}, "key"),
        ({"table": "Music", "key": "[1, 2]"}, "key"),
        ({"table": "Music", "key": '"id"'}, "key"),
        ({"table": "Music", "key": "{}"}, "key"),
        ({"table": "Music", "since": "yesterday"}, "since"),
        ({"table": "Music", "since": "2024-02-30"}, "since"),
        ({"table": "Music", "until": "2024-05-01T10:00:00+02:00"}, "until"),
        ({"table": "Music", "since": "2024-05-02", "until": "2024-05-01"}, "until"),
        ({"table": "Music", "limit": "0"}, "limit"),
        ({"table": "Music", "limit": "1001"}, "limit"),
        ({"table": "Music", "limit": "ten"}, "limit"),
        ({"table": "Music", "operation": "Drop; --"}, "operation"),
        ({"table": "Music", "principal": ""}, "principal"),
        ({"table": "Music", "next_token": "not-a-token"}, "next_token"),
        ({"table": "Music", "keys": '{"id": "1"}'}, "keys"),
    ],
)
def test_malformed_parameters_are_refused_by_name(parameters: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_audit_request(parameters, None)
    assert caught.value.parameter == named
    assert str(caught.value).startswith(f"{named}: ")


def test_table_outside_the_audited_tables_is_unknown() -> None:
    with pytest.raises(UnknownTableError, match="Books"):
        parse_audit_request({"table": "Books"}, frozenset({"Music"}))


def test_malformed_table_name_is_refused_even_when_every_table_is_served() -> None:
    with pytest.raises(InvalidRequestError, match="table"):
        parse_audit_request({"table": "../../etc"}, None)


def test_sql_carries_every_value_as_a_parameter() -> None:
    hostile = "x' OR '1'='1"
    query = AuditQuery(
        table="Music", key=hostile, since="2024-05-01T00:00:00Z", principal=hostile, operation="Put", limit=10
    )
    sql, parameters = build_audit_sql(query, '"db"."audit"', after=("2024-05-02T00:00:00Z", hostile, 3), limit=11)
    assert hostile not in sql
    assert "'" not in sql
    assert sql.count("?") == len(parameters)
    assert parameters == [
        "Music",
        hostile,
        "2024-05-01",
        "2024-05-01T00:00:00Z",
        hostile,
        hostile,
        "Put",
        "2024-05-02T00:00:00Z",
        "2024-05-02T00:00:00Z",
        hostile,
        hostile,
        3,
        11,
    ]
    assert 'FROM "db"."audit" WHERE table_name = ?' in sql
    assert sql.endswith("ORDER BY event_time DESC, event_id DESC, item_index DESC LIMIT ?")


def test_page_token_round_trips_and_is_bound_to_its_query() -> None:
    query = AuditQuery(table="Music", key='{"id":"1"}')
    token = PageToken(query.fingerprint(), execution_id="q-1", athena_token="abc")
    assert decode_page_token(encode_page_token(token), query) == token
    keyset = PageToken(query.fingerprint(), after=("2024-05-01T00:00:00Z", "e", 2))
    assert decode_page_token(encode_page_token(keyset), AuditQuery(table="Music", key='{"id":"1"}', limit=5)) == keyset
    with pytest.raises(InvalidRequestError, match="other parameters"):
        decode_page_token(encode_page_token(token), AuditQuery(table="Music", key='{"id":"2"}'))


def test_result_rows_from_either_engine_become_the_same_entry() -> None:
    athena_row = {"item_index": "2", "read_only": "false", "success": "true", "attribute_names": '["a","b"]'}
    duckdb_row = {"item_index": 2, "read_only": False, "success": True, "attribute_names": '["a","b"]'}
    assert row_to_entry(athena_row) == row_to_entry(duckdb_row)
    entry = row_to_entry(athena_row)
    assert (entry["item_index"], entry["read_only"], entry["attribute_names"]) == (2, False, ["a", "b"])
    assert row_to_entry({})["attribute_names"] == []


def test_a_long_value_travels_as_pieces_within_athenas_parameter_limit() -> None:
    from chalicelib.athena import athena_literal

    key = '{"pk":"' + "'" * 1200 + '"}'
    sql, parameters = build_audit_sql(AuditQuery(table="Music", key=key), "audit")
    assert "item_key = concat(?, ?, ?)" in sql
    assert "".join(str(p) for p in parameters[1:4]) == key
    assert all(len(athena_literal(p)) <= 1024 for p in parameters)
