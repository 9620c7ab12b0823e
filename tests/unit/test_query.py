"""GET /audit's parameters, SQL and page tokens: validation names the parameter, values never become SQL."""

from __future__ import annotations

import ipaddress

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.errors import InvalidRequestError, UnknownTableError
from chalicelib.query import (
    FROM_TRAIL_PATH,
    MAX_PAGE_BYTES,
    AuditQuery,
    PageToken,
    Relations,
    SqlValue,
    build_audit_sql,
    decode_page_token,
    encode_page_token,
    entries_that_fit,
    parse_audit_request,
    row_to_entry,
    source_ip_condition,
    until_page_is_full,
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
        ({"table": "Music", "key": '{"a":' + "[" * 3000}, "key"),
        ({"table": "Music", "key": '{"id": 1e999999}'}, "key"),
        ({"table": "Music", "key": '{"id": ' + "1" * 5000 + "}"}, "key"),
        ({"table": "Music", "key": '{"id": 1e126}'}, "key"),
        ({"table": "Music", "key": '{"id": 1e-131}'}, "key"),
        ({"table": "Music", "key": '{"id": ' + "1" * 39 + "}"}, "key"),
        ({"table": "Music", "key": '{"id": {"N": "1e999"}}'}, "key"),
        ({"table": "Music", "key": '{"id": {"N": "seven"}}'}, "key"),
        ({"table": "Music", "key": '{"a": 1, "b": 2, "c": 3}'}, "key"),
        ({"table": "Music", "key": '{"id": null}'}, "key"),
        ({"table": "Music", "key": '{"id": true}'}, "key"),
        ({"table": "Music", "key": '{"id": [1]}'}, "key"),
        ({"table": "Music", "key": '{"id": {"a": 1, "b": 2}}'}, "key"),
        ({"table": "Music", "key": '{"": 1}'}, "key"),
        ({"table": "Music", "key": '{"' + "n" * 256 + '": 1}'}, "key"),
        ({"table": "Music", "key": '{"id": "' + "v" * 4097 + '"}'}, "key"),
        ({"table": "Music", "key": '{"id": "' + "v" * 40_000 + '"}'}, "key"),
        ({"table": "Music", "key": '{"a":"\ud800"}'}, "key"),
        ({"table": "Music", "key": '{"a":"\\ud800"}'}, "key"),
        ({"table": "Music", "principal": "arn:\ud800"}, "principal"),
        ({"table": "Music", "result": ""}, "result"),
        ({"table": "Music", "result": "1x"}, "result"),
        ({"table": "Music", "result": "Access Denied"}, "result"),
        ({"table": "Music", "result": "A" * 129}, "result"),
        ({"table": "Music", "result": "ok\n"}, "result"),
        ({"table": "Music", "result": "\u0130k"}, "result"),
        ({"table": "Music", "limit": "5.0"}, "limit"),
        ({"table": "Music", "limit": " 5 "}, "limit"),
        ({"table": "Music", "limit": "+5"}, "limit"),
        ({"table": "Music", "limit": "\u0665"}, "limit"),
        ({"table": "Music", "limit": "00001"}, "limit"),
        ({"table": "Music", "since": "\uff12\uff10\uff12\uff14-05-01"}, "since"),
        ({"table": "Music", "since": "2024-05-01\n"}, "since"),
        ({"table": ["abc", "Music"]}, "table"),
        ({"table": "Music", "limit": ["5", "5"]}, "limit"),
        ({"table": "Music", "source_ip": "2001:db8::/32"}, "source_ip"),
        ({"table": "Music", "source_ip": "10.0.0.0/33"}, "source_ip"),
        ({"table": "Music", "source_ip": "10.0.0.0/"}, "source_ip"),
        ({"table": "Music", "source_ip": "10.0.0.0/-1"}, "source_ip"),
        ({"table": "Music", "source_ip": "10.0.0/8"}, "source_ip"),
        ({"table": "Music", "source_ip": "AWS Internal/8"}, "source_ip"),
        ({"table": "Music", "source_ip": "10.0.0.0/8/8"}, "source_ip"),
        ({"table": "Music", "source_ip": "10.0.0.0\\8"}, "source_ip"),
    ],
)
def test_malformed_parameters_are_refused_by_name(parameters: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_audit_request(parameters, None)
    assert caught.value.parameter == named
    assert str(caught.value).startswith(f"{named}: ")


@pytest.mark.parametrize(
    ("given", "read"),
    [
        ("ok", "ok"),
        ("OK", "ok"),
        ("Failed", "failed"),
        ("DENIED", "denied"),
        ("AccessDenied", "AccessDenied"),
        ("A" * 128, "A" * 128),
    ],
)
def test_result_is_ok_failed_or_an_error_code(given: str, read: str) -> None:
    query, _ = parse_audit_request({"table": "Music", "result": given}, None)
    assert query.result == read


@pytest.mark.parametrize(
    ("given", "read"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8::7", "2001:db8::7"),
        ("AWS Internal", "AWS Internal"),
        ("203.0.113.7/24", "203.0.113.0/24"),  # a range: its network
        ("10.0.0.0/255.0.0.0", "10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("192.0.2.10/32", "192.0.2.10/32"),
    ],
)
def test_source_ip_is_an_address_a_service_or_an_ipv4_range(given: str, read: str) -> None:
    query, _ = parse_audit_request({"table": "Music", "source_ip": given}, None)
    assert query.source_ip == read


_OCTET = st.integers(min_value=0, max_value=255)
_IPV4 = st.builds(lambda octets: ".".join(map(str, octets)), st.lists(_OCTET, min_size=4, max_size=4))


@settings(max_examples=200, deadline=None)
@given(
    network=st.builds(lambda address, length: f"{address}/{length}", _IPV4, st.integers(min_value=0, max_value=32)),
    addresses=st.lists(
        _IPV4 | st.sampled_from(["AWS Internal", "2001:db8::7", "::ffff:192.0.2.1", "dynamodb.amazonaws.com", ""]),
        min_size=1,
        max_size=20,
    ),
    inside=st.lists(st.integers(min_value=0, max_value=2**32 - 1), max_size=5),
)
def test_an_ipv4_range_matches_exactly_its_addresses_in_the_engines_sql(
    network: str, addresses: list[str], inside: list[int]
) -> None:
    query, _ = parse_audit_request({"table": "Music", "source_ip": network}, None)
    assert query.source_ip is not None
    parsed = ipaddress.IPv4Network(query.source_ip)
    # Addresses in the range too: the network's own bits, any host bits.
    addresses += [str(parsed.network_address + (offset % parsed.num_addresses)) for offset in inside]
    parameters: list[SqlValue] = []

    def bind(value: str) -> str:
        parameters.append(value)
        return "?"

    condition = source_ip_condition(query.source_ip, bind, parameters)
    assert "'" not in condition  # every value a parameter
    with duckdb.connect() as connection:
        connection.execute("CREATE TABLE calls (source_ip VARCHAR)")
        connection.executemany("INSERT INTO calls VALUES (?)", [[address] for address in addresses])
        rows = connection.execute(f"SELECT source_ip FROM calls WHERE {condition}", parameters).fetchall()
    found = sorted(row[0] for row in rows)
    expected = sorted(
        address for address in addresses if "." in address and ":" not in address and " " not in address
        and address.replace(".", "").isdigit() and ipaddress.IPv4Address(address) in parsed
    )  # fmt: skip
    assert found == expected


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
    relations = Relations('"db"."audit_compacted"', '"db"."audit_fresh"')
    sql, parameters = build_audit_sql(query, relations, after=("2024-05-02T00:00:00Z", hostile, 3), limit=11)
    assert hostile not in sql
    assert "'" not in sql
    assert sql.count("?") == len(parameters)
    rows = [hostile, "2024-05-01T00:00:00Z", *[hostile] * 4, "Put"]  # principal: its ARN, role, id or key
    assert parameters == [
        *["Music", "2024-05", "2024-05-01", *rows],
        FROM_TRAIL_PATH,
        *["Music", "2024-05-01", *rows, FROM_TRAIL_PATH],
        *rows,
        "2024-05-02T00:00:00Z",
        "2024-05-02T00:00:00Z",
        hostile,
        hostile,
        3,
        11,
    ]
    assert 'FROM "db"."audit_compacted" WHERE table_name = ? AND month >= ? AND dt >= ? AND item_key = ?' in sql
    assert 'FROM "db"."audit_fresh" WHERE table_name = ? AND dt >= ? AND (item_key = ? AND event_time >= ?' in sql
    assert 'OR "$path" LIKE ?))' in sql  # the trail's copies whatever they name, each filter again once de-duplicated
    assert "WHERE duplicate_rank = 1 AND item_key = ? AND event_time >= ?" in sql
    assert sql.endswith("ORDER BY event_time DESC, event_id DESC, item_index DESC LIMIT ?")


def test_page_token_round_trips_and_is_bound_to_its_query() -> None:
    query = AuditQuery(table="Music", key='{"id":"1"}')
    token = PageToken(query.fingerprint(), execution_id="q-1", athena_token="abc")
    assert decode_page_token(encode_page_token(token), query) == token
    within = PageToken(query.fingerprint(), execution_id="q-1", athena_token=None, skip=999)
    assert decode_page_token(encode_page_token(within), query) == within
    keyset = PageToken(query.fingerprint(), after=("2024-05-01T00:00:00Z", "e", 2))
    assert decode_page_token(encode_page_token(keyset), AuditQuery(table="Music", key='{"id":"1"}', limit=5)) == keyset
    with pytest.raises(InvalidRequestError, match="other parameters"):
        decode_page_token(encode_page_token(token), AuditQuery(table="Music", key='{"id":"2"}'))


def test_a_page_holds_the_entries_that_fit_in_an_answer_and_always_its_first() -> None:
    small = {"event_id": "e", "user_agent": "a" * 1000}
    assert entries_that_fit([small] * 1000) == 1000
    ascii_big = {"event_id": "e", "request_parameters": "x" * (MAX_PAGE_BYTES // 4)}
    assert entries_that_fit([ascii_big] * 10) == 3  # four would pass the bound by their quotes and names
    escaped = {"event_id": "e", "request_parameters": "\u00e9" * (MAX_PAGE_BYTES // 6 // 2)}  # é: six bytes written
    assert entries_that_fit([escaped] * 10) == 1
    huge = {"event_id": "e", "request_parameters": "x" * (MAX_PAGE_BYTES * 2)}
    assert entries_that_fit([huge, small]) == 1
    assert entries_that_fit([]) == 0


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
    sql, parameters = build_audit_sql(AuditQuery(table="Music", key=key), Relations("compacted", "fresh"))
    assert sql.count("item_key = concat(?, ?, ?)") == 3
    pieces = [index for index, parameter in enumerate(parameters) if str(parameter).startswith('{"pk"')]
    assert len(pieces) == 3
    assert all("".join(str(p) for p in parameters[start : start + 3]) == key for start in pieces)
    assert all(len(athena_literal(p)) <= 1024 for p in parameters)


def test_an_unknown_parameter_name_is_repeated_short() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_audit_request({"table": "Music", "x" * 60_000: "1"}, None)
    assert str(caught.value) == "x" * 40 + "…: is not a parameter of GET /audit"


def test_every_bad_key_message_is_short_and_says_what_is_wrong() -> None:
    for key, expected in [
        ('{"id": 1e999999}', "key: the value of id is not a DynamoDB number: at most 38 significant digits"),
        ('{"id": ' + "1" * 5000 + "}", "key: the value of id is not a DynamoDB number"),
        ('{"a": 1, "b": 2, "c": 3}', "key: names 3 attributes; a DynamoDB key has one or two"),
        ('{"id": [1]}', "key: the value of id must be a string or a number"),
    ]:
        with pytest.raises(InvalidRequestError) as caught:
            parse_audit_request({"table": "Music", "key": key}, None)
        assert str(caught.value).startswith(expected)
        assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("key", "canonical"),
    [
        ('{"id": {"N": "7.50"}}', '{"id":"7.5"}'),
        ('{"id": {"S": "7"}}', '{"id":"7"}'),
        ('{"id": 12345678901234567890123456789012345678}', '{"id":"12345678901234567890123456789012345678"}'),
        ('{"id": 1e125}', '{"id":"1' + "0" * 125 + '"}'),
        ('{"sk": 1, "pk": "a"}', '{"pk":"a","sk":"1"}'),
    ],
)
def test_keys_in_every_accepted_form_become_the_canonical_key(key: str, canonical: str) -> None:
    query, _ = parse_audit_request({"table": "Music", "key": key}, None)
    assert query.key == canonical


@pytest.mark.parametrize(
    "document",
    [
        '[{"v":1,"f":"FP"},["2024-05-01T00:00:00Z","e\\ud800",0]]',
        '[{"v":1,"f":"FP"},["2024-05-01T00:00:00Z","e",2147483648]]',
        '[{"v":1,"f":"FP"},["2024-05-01T00:00:00Z","e",true]]',
        '[{"v":1,"f":"FP"},["0999-05-01","e",0]]',
        '[{"v":1,"f":"FP"},["2024-05-01T00:00:00Z","\u0027; DROP",0]]',
        '[{"v":1,"f":"FP","q":"\\udfff","t":"x"},null]',
        '[{"v":1,"f":"FP","q":"q-1","s":-1},null]',
        '[{"v":1,"f":"FP","q":"q-1","s":1000},null]',
        '[{"v":1,"f":"FP","q":"q-1","s":"3"},null]',
        '[{"v":1,"f":"FP","q":"q-1","s":true},null]',
        "[" * 3000,
    ],
)
def test_forged_page_tokens_are_refused(document: str) -> None:
    import base64

    query = AuditQuery(table="Music")
    text = base64.urlsafe_b64encode(document.replace("FP", query.fingerprint()).encode()).decode()
    with pytest.raises(InvalidRequestError) as caught:
        decode_page_token(text, query)
    assert caught.value.parameter == "next_token"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 900_000), max_size=40))
def test_a_reader_stops_one_entry_past_a_full_page_and_the_page_is_the_same(sizes: list[int]) -> None:
    entries: list[dict[str, object]] = [
        {"event_id": str(n), "request_parameters": "p" * size} for n, size in enumerate(sizes)
    ]
    taken = until_page_is_full(iter(entries))
    assert taken == entries[: len(taken)]
    assert entries_that_fit(taken) == entries_that_fit(entries)  # the same page, and where the next one starts
    assert len(taken) == len(entries) or entries_that_fit(taken) == len(taken) - 1
