"""GET /audit fuzzed from its OpenAPI description (openapi.yaml) through chalice.test.Client: whatever the query
string holds, the answer is a documented status with a body of the documented shape, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import pytest
import yaml
from chalice.test import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import app as deutzia_app
from tests.factories import cloudtrail_event

SPEC: dict[str, Any] = yaml.safe_load((Path(__file__).resolve().parents[2] / "openapi.yaml").read_text())
AUDIT = SPEC["paths"]["/audit"]["get"]
PARAMETERS = {parameter["name"]: parameter["schema"] for parameter in AUDIT["parameters"]}


def json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: references resolved, `nullable` as a null type."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return json_schema(target)
    converted = {key: json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        converted["type"] = [node["type"], "null"]
    return converted


def _documented_answer(client: Client, path: str, pairs: list[tuple[str, str]]) -> tuple[str, Any]:
    """GET `path` with the query `pairs`; its status, once checked to be 200, 400 or 404 with the documented body."""
    query = "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in pairs)
    response = client.http.get(f"{path}?{query}")
    status = str(response.status_code)
    event(status)
    assert status in ("200", "400", "404"), (query, response.body)
    schema = json_schema(SPEC["paths"][path]["get"]["responses"][status])["content"]["application/json"]["schema"]
    jsonschema.validate(json.loads(response.body), schema)
    return status, response


def test_the_description_names_every_route_of_the_app_and_no_other() -> None:
    described = {(path, method.upper()) for path, methods in SPEC["paths"].items() for method in methods}
    served = {(path, method) for path, methods in deutzia_app.app.routes.items() for method in methods}
    assert described == served


hostile = st.text(max_size=30) | st.sampled_from(
    [
        "",
        " 5 ",
        "5.0",
        "1e999999",
        '{"id": 1e999999}',
        '{"a":' + "[" * 3000,
        '{"a":"\\ud800"}',
        '{"id": "x", "n": 1, "o": 2}',
        "' OR '1'='1",
        "2024-02-30",
        "0999-01-01",
        "W1siYSJd",
        "Music",
        "x" * 9000,
    ]
)


def _valid(name: str) -> st.SearchStrategy[str]:
    schema = PARAMETERS[name]
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | st.sampled_from(schema["enum"]).map(str.lower)
    if schema.get("type") == "integer":
        return st.integers(schema["minimum"], schema["maximum"]).map(str)
    if name == "table":
        return st.sampled_from(["Music", "Books", "Payroll"])
    if name in ("since", "until"):
        return st.sampled_from(["2024-05-01", "2024-05-02T00:00:00Z", "2030-01-01"])
    if name == "key":
        return st.sampled_from(['{"id": "item-1"}', '{"id": 7}', '{"id": {"N": "7.0"}}'])
    return st.text(min_size=1, max_size=20)


@st.composite
def query_strings(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Mostly well-formed queries with a few hostile values, unknown names and repeated names among them."""
    pairs: list[tuple[str, str]] = []
    for name in PARAMETERS:
        how = draw(st.sampled_from(["valid"] * 3 + ["absent"] * 6 + ["hostile"]))
        if name == "table" and how == "absent":
            how = "valid"
        if how != "absent":
            pairs.append((name, draw(_valid(name) if how == "valid" else hostile)))
    if draw(st.integers(0, 9)) == 0:
        pairs.append((draw(st.sampled_from(["keys", "x" * 300, "", "table"]) | st.text(max_size=10)), draw(hostile)))
    return list(draw(st.permutations(pairs)))


@pytest.fixture
def served(client: Client, ingest: Callable[..., Any]) -> Client:
    ingest([cloudtrail_event(), cloudtrail_event(table="Books", request_parameters={"tableName": "Books"})])
    return client


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query_strings())
def test_any_query_string_gets_a_documented_answer(served: Client, pairs: list[tuple[str, str]]) -> None:
    status, response = _documented_answer(served, "/audit", pairs)
    if status != "200":
        message = json.loads(response.body)["Message"]
        assert "Traceback" not in message
        assert "s3://" not in message


COVERAGE = SPEC["paths"]["/audit/coverage"]["get"]


@st.composite
def coverage_query_strings(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Coverage queries: valid days and ranges, hostile values, unknown and repeated names."""
    days = st.sampled_from(["2024-05-01", "2024-05-31", "2023-05-01", "2026-11-28", "2024-02-29"])
    pairs: list[tuple[str, str]] = []
    for parameter in COVERAGE["parameters"]:
        name = parameter["name"]
        how = draw(st.sampled_from(["valid"] * 3 + ["absent"] * 2 + ["hostile"]))
        if how == "valid":
            pairs.append((name, draw(st.sampled_from(["Music", "Books", "Payroll"]) if name == "table" else days)))
        elif how == "hostile":
            pairs.append((name, draw(hostile)))
    if draw(st.integers(0, 9)) == 0:
        pairs.append((draw(st.sampled_from(["key", "table", "since"]) | st.text(max_size=10)), draw(hostile)))
    return list(draw(st.permutations(pairs)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(coverage_query_strings())
def test_any_coverage_query_string_gets_a_documented_answer(client: Client, pairs: list[tuple[str, str]]) -> None:
    _documented_answer(client, "/audit/coverage", pairs)
