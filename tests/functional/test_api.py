"""GET /audit and GET /health through chalice.test.Client: the HTTP contract, bad input, and hostile input."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from chalice.app import IAMAuthorizer
from chalice.test import Client

import app as deutzia_app
from tests.factories import cloudtrail_event


def _get(client: Client, path: str) -> tuple[int, dict[str, Any]]:
    response = client.http.get(path)
    return response.status_code, json.loads(response.body)


def test_health_answers_ok(client: Client) -> None:
    assert _get(client, "/health") == (200, {"status": "ok"})


def test_the_page_runs_only_its_own_script_and_style() -> None:
    with Client(deutzia_app.app) as client:
        response = client.http.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    policy = dict(part.strip().split(" ", 1) for part in response.headers["Content-Security-Policy"].split(";"))
    page = response.body if isinstance(response.body, bytes) else response.body.encode()
    for kind in ("script", "style"):
        (inline,) = re.findall(rb"<" + kind.encode() + rb">(.*?)</" + kind.encode() + rb">", page, re.DOTALL)
        digest = base64.b64encode(hashlib.sha256(inline).digest()).decode()
        assert policy[f"{kind}-src"] == f"'sha256-{digest}'"
    assert "unsafe" not in response.headers["Content-Security-Policy"]
    assert (policy["default-src"], policy["connect-src"], policy["frame-ancestors"]) == ("'none'", "'self'", "'none'")
    assert policy["img-src"] == "'self' data:"  # the page's own icon, inline: no request for /favicon.ico


def test_audit_route_requires_iam_authorization() -> None:
    route = deutzia_app.app.routes["/audit"]["GET"]
    assert isinstance(route.authorizer, IAMAuthorizer)
    assert deutzia_app.app.routes["/health"]["GET"].authorizer is None


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("", "table"),
        ("table=Music&key=%7Bnot-json", "key"),
        ("table=Music&key=%5B1%5D", "key"),
        ("table=Music&since=2024-13-01", "since"),
        ("table=Music&until=noon", "until"),
        ("table=Music&limit=0", "limit"),
        ("table=Music&limit=1001", "limit"),
        ("table=Music&operation=Truncate", "operation"),
        ("table=Music&next_token=%27%3B--", "next_token"),
        ("table=x%27%3B%20DROP%20TABLE%20audit%3B--", "table"),
    ],
)
def test_malformed_parameters_answer_400_naming_the_parameter(client: Client, query: str, parameter: str) -> None:
    status, body = _get(client, f"/audit?{query}")
    assert status == 400
    assert body["Code"] == "BadRequestError"
    assert body["Message"].startswith(f"{parameter}: ")


def test_table_outside_audited_tables_answers_404(client: Client) -> None:
    status, body = _get(client, "/audit?table=Payroll")
    assert (status, body["Code"]) == (404, "NotFoundError")
    assert "Payroll" in body["Message"]


def test_every_table_is_served_under_star_but_names_are_still_checked(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDITED_TABLES", "*")
    assert _get(client, "/audit?table=Payroll")[0] == 200
    assert _get(client, "/audit?table=Pay%2Froll")[0] == 400


@pytest.mark.parametrize(
    "hostile",
    ["' OR '1'='1", "x'); DROP TABLE audit; --", "\\' OR 1=1 --", "Music\u0000", "☃' UNION SELECT 1 --"],
)
def test_sql_injection_attempts_stay_data(client: Client, ingest: Callable[..., Any], hostile: str) -> None:
    ingest([cloudtrail_event(), cloudtrail_event(request_parameters={"tableName": "Music", "key": {"id": hostile}})])
    parameters = {"table": "Music", "key": json.dumps({"id": hostile}), "principal": hostile}
    status, body = _get(client, f"/audit?{urlencode(parameters)}")
    assert (status, body["entries"]) == (200, [])
    parameters = {"table": "Music", "key": json.dumps({"id": hostile})}
    status, body = _get(client, f"/audit?{urlencode(parameters)}")
    assert status == 200
    assert [json.loads(entry["item_key"])["id"] for entry in body["entries"]] == [hostile]
    status, body = _get(client, f"/audit?{urlencode({'table': 'Music', 'operation': hostile})}")
    assert status == 400
    status, body = _get(client, f"/audit?{urlencode({'table': 'Music', 'since': hostile})}")
    assert status == 400


def test_unreachable_store_answers_503(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("QUERY_TIMEOUT_SECONDS", "5")
    deutzia_app.get_query_engine.cache_clear()
    status, body = _get(client, "/audit?table=Music")
    assert status in (503, 504)
    assert body["Code"] in ("ServiceUnavailableError", "GatewayTimeoutError")


def test_missing_configuration_is_named(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDITED_TABLES")
    status, body = _get(client, "/audit?table=Music")
    assert status == 500
    assert "AUDITED_TABLES" in body["Message"]


def test_missing_bucket_answers_502(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_BUCKET", "deutzia-no-such-bucket")
    deutzia_app.get_query_engine.cache_clear()
    status, body = _get(client, "/audit?table=Music")
    assert (status, body["Code"]) == (502, "BadGatewayError")
    assert body["Message"] == "the audit records' bucket does not exist"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("table=abc&table=Music", "table: must be given once"),
        ("table=Music&limit=5&limit=6", "limit: must be given once"),
        ("table=Music&limit=5.0", "limit: must be a whole number from 1 to 1000"),
        ("table=Music&limit=%205%20", "limit: must be a whole number from 1 to 1000"),
        ("table=Music&key=%7B%22a%22%3A" + "%5B" * 3000, 'key: must be a JSON object, such as {"id": "42"}'),
        ("table=Music&key=%7B%22a%22%3A%22%5Cud800%22%7D", "key: the value of a holds a lone surrogate"),
        ("table=Music&key=%7B%22id%22%3A1e999999%7D", "key: the value of id is not a DynamoDB number"),
        ("table=Music&key=%7B%22id%22%3A" + "1" * 5000 + "%7D", "key: the value of id is not a DynamoDB number"),
        ("table=Music&" + "p" * 60_000 + "=1", "p" * 40 + "…: is not a parameter of GET /audit"),
    ],
)
def test_hostile_query_strings_answer_400_with_a_short_message(client: Client, query: str, message: str) -> None:
    status, body = _get(client, f"/audit?{query}")
    assert (status, body["Code"]) == (400, "BadRequestError")
    assert body["Message"].startswith(message)
    assert len(body["Message"]) < 300


def test_forged_tokens_answer_400_not_500_or_502(client: Client, ingest: Callable[..., Any]) -> None:
    import base64

    from chalicelib.query import AuditQuery

    ingest([cloudtrail_event() for _ in range(3)])
    fingerprint = AuditQuery(table="Music").fingerprint()
    for document in (
        "[" * 3000,
        '[{"v":1,"f":"FP"},["2024-05-01T00:00:00Z","\\ud800",0]]'.replace("FP", fingerprint),
        '[{"v":1,"f":"FP"},["2024-05-01T00:00:00Z","e",99999999999999999999]]'.replace("FP", fingerprint),
    ):
        token = base64.urlsafe_b64encode(document.encode()).decode().rstrip("=")
        status, body = _get(client, f"/audit?{urlencode({'table': 'Music', 'next_token': token})}")
        assert (status, body["Message"]) == (400, "next_token: is not a token this API returned")


def test_tables_lists_the_audited_tables_or_under_any_those_with_records(
    client: Client, ingest: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    response = client.http.get("/tables")
    assert (response.status_code, json.loads(response.body)) == (200, {"tables": ["Books", "Music", "Tä'ble"]})
    monkeypatch.setenv("AUDITED_TABLES", "*")
    assert json.loads(client.http.get("/tables").body) == {"tables": []}
    ingest([cloudtrail_event(), cloudtrail_event(table="Tä.ble", request_parameters={"tableName": "Tä.ble"})])
    assert json.loads(client.http.get("/tables").body) == {"tables": ["Music"]}
    assert client.http.get("/tables?x=1").status_code == 400
