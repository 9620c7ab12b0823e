"""The contract both query engines keep, run against each: DuckDB itself, and Athena's runner on real SQL results.

Records arrive the real way (Kinesis event -> `ingest_audit_events` -> S3) and are read through GET /audit, with
the history all fresh, split between the tiers (a duplicate in each), or all compacted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from chalice.test import Client

import app as deutzia_app
import chalicelib.athena
from chalicelib.athena import AthenaQueryRunner
from chalicelib.cloudtrail import parse_event_message, stored_lines
from chalicelib.compactor import S3Compactor
from chalicelib.duckdb_engine import AuditObjects
from chalicelib.query import MAX_PAGE_BYTES, AuditQuery
from chalicelib.reconcile import backfill_object_key
from chalicelib.records import encode_lines
from tests.factories import ACCOUNT, cloudtrail_event
from tests.functional.athena_fake import DATABASE, WORKGROUP, DuckDBAthenaClient

ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:iam::{ACCOUNT}:user/bob"
CI_ROLE = f"arn:aws:iam::{ACCOUNT}:role/ci"
SONG_1 = {"id": "song-1"}


def get_audit(client: Client, **parameters: str) -> tuple[int, dict[str, Any]]:
    response = client.http.get(f"/audit?{urlencode(parameters)}")
    return response.status_code, json.loads(response.body)


def _ci_session() -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "principalId": "AROACI:deploy",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/ci/deploy",
        "accountId": ACCOUNT,
        "sessionContext": {"sessionIssuer": {"type": "Role", "arn": CI_ROLE}},
    }


@pytest.fixture(params=["duckdb", "athena"])
def engine(
    request: pytest.FixtureRequest, audit_bucket: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    if request.param == "athena":
        runner = AthenaQueryRunner(DuckDBAthenaClient(audit_bucket, moto_endpoint), WORKGROUP, DATABASE)
        monkeypatch.setattr(deutzia_app, "get_query_engine", lambda: runner)
    return str(request.param)


@pytest.fixture(params=["fresh", "split", "compacted"])
def layout(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def history(
    engine: str, layout: str, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> dict[str, dict[str, Any]]:
    """song-1's life (put, failed update, get, delete, transaction), its neighbours, and one duplicate delivery."""
    events = {
        "put": cloudtrail_event(
            "PutItem", {"tableName": "Music", "key": SONG_1, "item": ["id", "title"]}, event_time="2024-05-01T10:00:00Z"
        ),
        "update": cloudtrail_event(
            "UpdateItem",
            {
                "tableName": "Music",
                "key": SONG_1,
                "updateExpression": "SET #t = :t",
                "expressionAttributeNames": {"#t": "title"},
            },
            event_time="2024-05-01T11:00:00Z",
            user="bob",
            errorCode="ConditionalCheckFailedException",
            errorMessage="The conditional request failed",
        ),
        "other": cloudtrail_event(
            "PutItem",
            {"tableName": "Music", "key": {"id": "song-2"}, "item": ["id"]},
            event_time="2024-05-01T12:00:00Z",
            sourceIPAddress="192.0.2.200",
        ),
        "get": cloudtrail_event(
            "GetItem",
            {"tableName": "Music", "key": SONG_1},
            event_time="2024-05-02T09:00:00Z",
            sourceIPAddress="AWS Internal",
        ),
        "delete": cloudtrail_event(
            "DeleteItem",
            {"tableName": "Music", "key": SONG_1},
            event_time="2024-05-03T00:00:00Z",
            userIdentity=_ci_session(),
            sourceIPAddress="2001:db8::7",
        ),
        "transaction": cloudtrail_event(
            "TransactWriteItems",
            {
                "requestItems": [
                    {"operation": "Put", "tableName": "Music", "key": SONG_1, "items": ["id"]},
                    {"operation": "Delete", "tableName": "Music", "key": {"id": "song-2"}},
                ]
            },
            event_time="2024-05-03T12:00:00Z",
            user="bob",
        ),
        "book": cloudtrail_event(
            "PutItem",
            {"tableName": "Books", "key": {"isbn": 7}, "item": ["isbn"]},
            table="Books",
            event_time="2024-05-01T10:00:00Z",
        ),
        "quoted": cloudtrail_event(
            "PutItem", {"tableName": "Music", "key": {"id": 'O\'Brien ☃ "x"'}}, event_time="2024-05-01T13:00:00Z"
        ),
    }
    days = sorted({event["eventTime"][:10] for event in events.values()})  # a record holds calls minutes apart
    ingest(*([event for event in events.values() if event["eventTime"].startswith(day)] for day in days))
    compactor = S3Compactor(s3, audit_bucket, "audit/", "compacted/")
    if layout == "split":  # May 1 compacted, the rest fresh; the duplicate below is fresh, its original compacted
        compactor.run("2024-05-01", lambda: 900.0)
    ingest([events["put"]])  # Kinesis delivers at least once: the same event in another record
    if layout == "compacted":
        compactor.run("2024-05-31", lambda: 900.0)
    return events


def _ids(body: dict[str, Any]) -> list[tuple[str, int]]:
    return [(entry["event_id"], entry["item_index"]) for entry in body["entries"]]


def test_item_history_is_newest_first_and_each_call_once(client: Client, history: dict[str, Any]) -> None:
    status, body = get_audit(client, table="Music", key=json.dumps(SONG_1))
    assert status == 200
    assert (body["table"], body["key"], body["next_token"]) == ("Music", {"id": "song-1"}, None)
    assert _ids(body) == [
        (history["transaction"]["eventID"], 0),
        (history["delete"]["eventID"], 0),
        (history["get"]["eventID"], 0),
        (history["update"]["eventID"], 0),
        (history["put"]["eventID"], 0),
    ]
    assert [e["operation"] for e in body["entries"]] == ["Put", "Delete", "Get", "Update", "Put"]
    assert [e["principal_arn"] for e in body["entries"]][1] == f"arn:aws:sts::{ACCOUNT}:assumed-role/ci/deploy"
    failed = body["entries"][3]
    assert (failed["success"], failed["error_code"], failed["principal_name"]) == (
        False,
        "ConditionalCheckFailedException",
        "bob",
    )
    assert failed["attribute_names"] == ["title"]
    put = body["entries"][4]
    assert (put["success"], put["error_code"], put["attribute_names"], put["read_only"]) == (
        True,
        None,
        ["id", "title"],
        False,
    )
    assert put["table_name"] == "Music"
    assert put["event_time"] == "2024-05-01T10:00:00Z"
    assert put["item_key"] == '{"id":"song-1"}'
    assert set(put) == set(json.loads(json.dumps(put)))  # every value is JSON
    assert len(put) == 33


def test_table_history_without_key_lists_every_item(client: Client, history: dict[str, Any]) -> None:
    status, body = get_audit(client, table="Music")
    assert status == 200
    assert body["key"] is None
    assert len(body["entries"]) == 8
    times = [entry["event_time"] for entry in body["entries"]]
    assert times == sorted(times, reverse=True)
    assert (history["transaction"]["eventID"], 1) in _ids(body)
    assert all(entry["table_name"] == "Music" for entry in body["entries"])


def test_since_is_inclusive_and_until_exclusive(client: Client, history: dict[str, Any]) -> None:
    _, body = get_audit(client, table="Music", key=json.dumps(SONG_1), since="2024-05-01T11:00:00Z", until="2024-05-03")
    assert _ids(body) == [(history["get"]["eventID"], 0), (history["update"]["eventID"], 0)]
    _, body = get_audit(client, table="Music", key=json.dumps(SONG_1), since="2024-05-03")
    assert [e["operation"] for e in body["entries"]] == ["Put", "Delete"]


def test_principal_matches_the_caller_its_key_or_id_or_the_role_behind_a_session(
    client: Client, history: dict[str, Any]
) -> None:
    _, body = get_audit(client, table="Music", principal=BOB)
    assert _ids(body) == [
        (history["transaction"]["eventID"], 1),
        (history["transaction"]["eventID"], 0),
        (history["update"]["eventID"], 0),
    ]
    _, body = get_audit(client, table="Music", principal=CI_ROLE)
    assert _ids(body) == [(history["delete"]["eventID"], 0)]
    # Or by what CloudTrail logs of it beside the ARN: the access key it signed with, or its principal id.
    _, by_key = get_audit(client, table="Music", principal="AKIABOB")
    _, by_id = get_audit(client, table="Music", principal="AIDABOB")
    assert _ids(by_key) == _ids(by_id) == _ids(get_audit(client, table="Music", principal=BOB)[1])
    _, body = get_audit(client, table="Music", principal="AROACI:deploy")
    assert _ids(body) == [(history["delete"]["eventID"], 0)]
    assert get_audit(client, table="Music", principal="AKIA")[1]["entries"] == []  # whole values only


def test_denied_calls_are_those_refused_their_permission_whichever_code_names_it(
    client: Client, ingest: Callable[..., Any], engine: str
) -> None:
    def refused(code: str, second: int) -> dict[str, Any]:
        parameters = {"tableName": "Books", "key": {"id": code}}
        at = f"2024-06-01T10:00:0{second}Z"
        return cloudtrail_event("GetItem", parameters, table="Books", event_time=at, errorCode=code, errorMessage="no")

    codes = ["AccessDenied", "AccessDeniedException", "Client.UnauthorizedOperation", "ValidationException"]
    ingest([refused(code, second) for second, code in enumerate(codes)])
    _, body = get_audit(client, table="Books", since="2024-06-01", result="denied")
    assert [entry["error_code"] for entry in body["entries"]] == codes[2::-1]  # newest first; not a bad request


def test_result_filters_the_calls_that_worked_failed_or_failed_with_one_code(
    client: Client, history: dict[str, Any]
) -> None:
    everything = _ids(get_audit(client, table="Music", key=json.dumps(SONG_1))[1])
    _, failed = get_audit(client, table="Music", key=json.dumps(SONG_1), result="failed")
    assert _ids(failed) == [(history["update"]["eventID"], 0)]
    _, worked = get_audit(client, table="Music", key=json.dumps(SONG_1), result="OK")
    assert _ids(worked) == [entry for entry in everything if entry not in _ids(failed)]
    _, coded = get_audit(client, table="Music", result="ConditionalCheckFailedException")
    assert _ids(coded) == _ids(failed)
    assert get_audit(client, table="Music", result="AccessDenied")[1]["entries"] == []
    assert get_audit(client, table="Music", result="denied")[1]["entries"] == []
    status, body = get_audit(client, table="Music", result="' OR 1=1 --")
    assert (status, body["Message"].split(":")[0]) == (400, "result")


def test_source_ip_filters_where_calls_came_from_whole_an_address_or_a_service(
    client: Client, history: dict[str, Any]
) -> None:
    _, body = get_audit(client, table="Music", source_ip="2001:db8::7")
    assert _ids(body) == [(history["delete"]["eventID"], 0)]
    _, body = get_audit(client, table="Music", key=json.dumps(SONG_1), source_ip="AWS Internal")
    assert _ids(body) == [(history["get"]["eventID"], 0)]
    _, body = get_audit(client, table="Music", key=json.dumps(SONG_1), source_ip="192.0.2.10")
    assert (history["get"]["eventID"], 0) not in _ids(body)
    assert {entry["source_ip"] for entry in body["entries"]} == {"192.0.2.10"}
    assert get_audit(client, table="Music", source_ip="2001:db8::")[1]["entries"] == []  # whole values only
    for bad in ("' OR 1=1 --", "", " 192.0.2.10", "a" * 254, "192.0.2.10\n"):
        status, answer = get_audit(client, table="Music", source_ip=bad)
        assert (status, answer["Message"].split(":")[0]) == (400, "source_ip"), bad
    # An IPv4 range: every address in it, whatever the tier (192.0.2.10 and .200 in the history, and two others).
    everything = _ids(get_audit(client, table="Music")[1])
    whole = {ip: _ids(get_audit(client, table="Music", source_ip=ip)[1]) for ip in ("192.0.2.10", "192.0.2.200")}
    for network, addresses in (
        ("192.0.2.0/24", ["192.0.2.10", "192.0.2.200"]),
        ("192.0.2.10/24", ["192.0.2.10", "192.0.2.200"]),  # its network
        ("192.0.2.0/25", ["192.0.2.10"]),
        ("192.0.2.128/25", ["192.0.2.200"]),
        ("192.0.2.8/30", ["192.0.2.10"]),  # .8 to .11
        ("192.0.2.0/29", []),  # .0 to .7
        ("192.0.2.12/30", []),  # .12 to .15
        ("192.0.2.10/32", ["192.0.2.10"]),
        ("192.0.0.0/16", ["192.0.2.10", "192.0.2.200"]),
        ("192.0.3.0/24", []),
        ("0.0.0.0/0", ["192.0.2.10", "192.0.2.200"]),  # every IPv4 address: not IPv6, not a service
    ):
        _, body = get_audit(client, table="Music", source_ip=network)
        assert sorted(_ids(body)) == sorted(entry for ip in addresses for entry in whole[ip]), network
    assert all(whole.values())
    assert len(everything) > sum(map(len, whole.values()))  # the others, from IPv6 and AWS Internal, left out
    for bad in ("2001:db8::/32", "192.0.2.0/33", "AWS Internal/8"):
        status, answer = get_audit(client, table="Music", source_ip=bad)
        assert (status, answer["Message"].split(":")[0]) == (400, "source_ip"), bad
    # A page token holds to the query it was given for: another address cannot resume it.
    _, first = get_audit(client, table="Music", source_ip="192.0.2.10", limit="1")
    status, answer = get_audit(
        client, table="Music", source_ip="2001:db8::7", limit="1", next_token=first["next_token"]
    )
    assert status == 400


def test_operation_filters_entries(client: Client, history: dict[str, Any]) -> None:
    _, body = get_audit(client, table="Music", key=json.dumps(SONG_1), operation="put")
    assert _ids(body) == [(history["transaction"]["eventID"], 0), (history["put"]["eventID"], 0)]


def test_a_copy_the_trails_own_record_outranks_shows_under_no_filter(
    client: Client, history: dict[str, Any], ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    """A forged copy of bob's update (another caller, item, operation and time) beside the trail's own record of it,
    as reconciliation restores it: every question GET /audit answers, the forgery's own included, gets what it got
    before the forgery, whatever tier the real record is in."""
    mallory = f"arn:aws:iam::{ACCOUNT}:user/mallory"
    questions: list[dict[str, str]] = [
        {"table": "Music", "key": json.dumps(SONG_1)},
        {"table": "Music", "key": json.dumps({"id": "song-9"})},
        {"table": "Music", "principal": mallory},
        {"table": "Music", "principal": BOB},
        {"table": "Music", "operation": "Delete"},
        {"table": "Music", "since": "2024-05-01T10:30:00Z", "until": "2024-05-01T10:31:00Z"},
        {"table": "Music"},
    ]
    before = [_ids(get_audit(client, **question)[1]) for question in questions]
    real = history["update"]
    forged = cloudtrail_event(
        "DeleteItem",
        {"tableName": "Music", "key": {"id": "song-9"}},
        event_time="2024-05-01T10:30:00Z",
        user="mallory",
        eventID=real["eventID"],
    )
    ingest([forged])
    lines = stored_lines(parse_event_message(json.dumps(real))) or []
    trail_file = "AWSLogs/x/CloudTrail/us-east-1/2024/05/01/f.json.gz"
    restored = backfill_object_key("audit/", "Music", "2024-05-01", trail_file)  # as reconciliation restores the call
    s3.put_object(Bucket=audit_bucket, Key=restored, Body=encode_lines(line for _, line in lines))

    assert [_ids(get_audit(client, **question)[1]) for question in questions] == before
    assert before[1] == before[2] == before[5] == []


def test_pages_cover_the_history_once_in_order(client: Client, history: dict[str, Any]) -> None:
    _, whole = get_audit(client, table="Music")
    seen: list[tuple[str, int]] = []
    parameters = {"table": "Music", "limit": "3"}
    pages = 0
    while True:
        status, body = get_audit(client, **parameters)
        assert status == 200
        assert len(body["entries"]) <= 3
        seen += _ids(body)
        pages += 1
        if body["next_token"] is None:
            break
        parameters["next_token"] = body["next_token"]
    assert seen == _ids(whole)
    assert pages == 3


def test_number_keys_match_however_they_are_written(client: Client, history: dict[str, Any]) -> None:
    for key in ('{"isbn": 7}', '{"isbn": "7"}', '{"isbn": 7.0}'):
        _, body = get_audit(client, table="Books", key=key)
        assert _ids(body) == [(history["book"]["eventID"], 0)], key


def test_quotes_and_unicode_in_keys_stay_data(client: Client, history: dict[str, Any]) -> None:
    _, body = get_audit(client, table="Music", key=json.dumps({"id": 'O\'Brien ☃ "x"'}))
    assert _ids(body) == [(history["quoted"]["eventID"], 0)]
    _, body = get_audit(client, table="Music", key=json.dumps({"id": "x' OR '1'='1"}))
    assert body["entries"] == []


def test_a_table_with_no_records_has_an_empty_history(client: Client, engine: str) -> None:
    status, body = get_audit(client, table="Books")
    assert (status, body["entries"], body["next_token"]) == (200, [], None)


def test_the_largest_page_holds_exactly_the_limit(client: Client, engine: str, ingest: Callable[..., Any]) -> None:
    events = [
        cloudtrail_event(request_parameters={"tableName": "Music", "key": {"id": f"bulk-{n}"}, "item": ["id"]})
        for n in range(1001)
    ]
    ingest(events)
    status, first = get_audit(client, table="Music", limit="1000")
    assert (status, len(first["entries"])) == (200, 1000)
    _, rest = get_audit(client, table="Music", limit="1000", next_token=first["next_token"])
    assert (len(rest["entries"]), rest["next_token"]) == (1, None)
    seen = {entry["item_key"] for entry in first["entries"] + rest["entries"]}
    assert len(seen) == 1001


def test_a_page_stops_before_an_entry_that_would_not_fit_in_the_answer_and_the_next_resumes_there(
    client: Client, engine: str, ingest: Callable[..., Any]
) -> None:
    # A caller can make each call on an item hundreds of KB (its attribute names, parameters): a page of them must
    # still fit in Lambda's answer, and paging must still give every call once.
    calls = [_big_call(n, "x") for n in range(30)] + [_big_call(n, "é") for n in range(30, 33)]  # é is \u00e9
    for start in range(0, len(calls), 6):
        ingest(calls[start : start + 6])

    sizes, seen = _every_page(client, {"table": "Music", "key": json.dumps(SONG_1), "limit": "1000"})

    assert max(sizes) <= MAX_PAGE_BYTES + 1024
    assert len(sizes) >= 4  # 30 entries of about 130 KB, then three of about 770 KB
    expected = sorted(((event["eventTime"], event["eventID"]) for event in calls), reverse=True)
    assert seen == [(event_id, 0) for _, event_id in expected]


@pytest.mark.parametrize("keyed", [True, False])
def test_athena_is_asked_for_no_more_rows_at_once_than_its_budget_holds_nor_past_a_full_page(
    client: Client,
    ingest: Callable[..., Any],
    audit_bucket: str,
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    keyed: bool,
) -> None:
    # 1,000 rows of such calls in one GetQueryResults answer would take most of the API function's memory.
    athena = DuckDBAthenaClient(audit_bucket, moto_endpoint)
    answers: list[tuple[int, int, int]] = []  # rows asked for, rows given (not the header), their bytes
    read = athena.get_query_results

    def recorded(**arguments: Any) -> Any:
        response = read(**arguments)
        rows = [row["Data"] for row in response["ResultSet"]["Rows"]][0 if "NextToken" in arguments else 1 :]
        size = sum(len(cell.get("VarCharValue", "")) for row in rows for cell in row)
        answers.append((arguments["MaxResults"], len(rows), size))
        return response

    athena.get_query_results = recorded  # type: ignore[method-assign]
    runner = AthenaQueryRunner(athena, WORKGROUP, DATABASE)
    monkeypatch.setattr(deutzia_app, "get_query_engine", lambda: runner)
    monkeypatch.setattr(chalicelib.athena, "_FIRST_RESULTS", 4)
    monkeypatch.setattr(chalicelib.athena, "_RESULTS_BUDGET_BYTES", 400_000)  # three of these rows, 130 KB each
    calls = [_big_call(n, "x") for n in range(40)]
    for start in range(0, len(calls), 8):
        ingest(calls[start : start + 8])
    parameters = {"table": "Music", "limit": "1000", **({"key": json.dumps(SONG_1)} if keyed else {})}

    sizes, seen = _every_page(client, parameters)

    assert sorted(seen) == sorted((event["eventID"], 0) for event in calls)
    # A request's first answer holds a few rows; the next, what the budget holds of the largest row seen.
    assert all(asked <= 4 or size <= 400_000 for asked, _, size in answers)
    # A page reads its entries, the one that does not fit and the rest of its answer (at most 3 rows), and, resuming
    # inside an answer, the rows of it given before (at most 4): never the table's every row, page after page.
    assert sum(rows for _, rows, _ in answers) <= len(calls) + 7 * len(sizes)


def _big_call(n: int, letter: str) -> dict[str, Any]:
    """A PutItem on SONG_1 naming 256 attributes of 253 characters: its record is about 130 KB."""
    names = [f"{letter * 250}{i:03d}" for i in range(256)]
    parameters = {"tableName": "Music", "key": SONG_1, "item": names}
    return cloudtrail_event("PutItem", parameters, event_time=f"2024-05-01T10:{n // 60:02d}:{n % 60:02d}Z")


def _every_page(client: Client, parameters: dict[str, str]) -> tuple[list[int], list[tuple[str, int]]]:
    """Each page's size in bytes, and every entry's id, paging GET /audit to its end."""
    sizes: list[int] = []
    seen: list[tuple[str, int]] = []
    while True:
        response = client.http.get(f"/audit?{urlencode(parameters)}")
        assert response.status_code == 200, response.body
        sizes.append(len(response.body))
        body = json.loads(response.body)
        assert body["entries"]
        seen += _ids(body)
        if body["next_token"] is None:
            return sizes, seen
        parameters = {**parameters, "next_token": body["next_token"]}


def test_a_key_longer_than_an_athena_parameter_is_found(
    client: Client, engine: str, ingest: Callable[..., Any]
) -> None:
    long_key = {"pk": "p" * 1500, "sk": "'" * 700}
    event = cloudtrail_event(request_parameters={"tableName": "Music", "key": long_key, "item": ["pk", "sk"]})
    ingest([event, cloudtrail_event()])
    status, body = get_audit(client, table="Music", key=json.dumps(long_key))
    assert status == 200
    assert _ids(body) == [(event["eventID"], 0)]


def test_a_tables_latest_entries_read_back_only_as_far_as_the_page_needs(
    client: Client, engine: str, ingest: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    recent = [
        cloudtrail_event(
            request_parameters={"tableName": "Music", "key": {"id": f"new-{n}"}}, event_time=f"2024-05-03T10:0{n}:00Z"
        )
        for n in range(3)
    ]
    old = cloudtrail_event(
        request_parameters={"tableName": "Music", "key": {"id": "old"}}, event_time="2024-01-10T08:00:00Z"
    )
    ingest(recent, [old])
    earliest_days: list[str] = []  # per query, the earliest day it reads (its partitions' lower bound)
    read = AuditObjects.read
    athena_sql = chalicelib.athena.build_audit_sql

    def reading(objects: AuditObjects, table: str | None = None, dt_from: str | None = None, **rest: Any) -> Any:
        if table is not None:  # GET /audit's reads on DuckDB (the Athena stand-in reads all, as Athena's catalog)
            earliest_days.append(dt_from or "0000-00-00")
        return read(objects, table, dt_from, **rest)

    def athena_query(query: AuditQuery, *arguments: Any, **keywords: Any) -> Any:
        earliest_days.append(query.since[:10] if query.since else "0000-00-00")  # its `dt >= ?` on both tiers
        return athena_sql(query, *arguments, **keywords)

    monkeypatch.setattr(AuditObjects, "read", reading)
    monkeypatch.setattr(chalicelib.athena, "build_audit_sql", athena_query)
    _, first = get_audit(client, table="Music", until="2024-05-04", limit="2")
    assert [entry["item_key"] for entry in first["entries"]] == ['{"id":"new-2"}', '{"id":"new-1"}']
    assert earliest_days == ["2024-05-03"]  # the last day only: the page was full
    earliest_days.clear()
    _, rest = get_audit(client, table="Music", until="2024-05-04", limit="2", next_token=first["next_token"])
    assert [entry["item_key"] for entry in rest["entries"]] == ['{"id":"new-0"}', '{"id":"old"}']
    # Back a day, then 8, 64 and 512 days from the last entry given; then the rest, to know no entry is left.
    assert earliest_days == ["2024-05-02", "2024-04-25", "2024-02-29", "2022-12-08", "0000-00-00"]
    assert rest["next_token"] is None
