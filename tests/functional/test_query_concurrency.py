"""The DuckDB engine under concurrent requests, a stuck read, and the longest line ingest can write."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from chalice.test import Client

import app as deutzia_app
from chalicelib.bounds import MAX_LINE_BYTES
from chalicelib.cloudtrail import build_audit_records
from chalicelib.duckdb_engine import AuditObjects, DuckDBQueryRunner
from chalicelib.errors import QueryTimeoutError
from chalicelib.ingest import process_kinesis_batch
from chalicelib.query import AuditQuery
from chalicelib.records import build_object_key, encode_lines
from chalicelib.store import S3AuditStore
from tests.factories import cloudtrail_event, kinesis_event, logs_payload

CONCURRENT_REQUESTS = 32


def test_32_concurrent_requests_are_all_answered_correctly(client: Client, ingest: Callable[..., Any]) -> None:
    events = [
        cloudtrail_event(request_parameters={"tableName": "Music", "key": {"id": f"k{n % 4}"}}) for n in range(40)
    ]
    ingest(*[[event] for event in events])  # one object per event: 40 objects
    engine = deutzia_app.get_query_engine()

    def history(n: int) -> list[str]:
        page = engine.fetch_page(
            AuditQuery(table="Music", key=json.dumps({"id": f"k{n % 4}"}, separators=(",", ":"))), None
        )
        return sorted(str(entry["event_id"]) for entry in page.entries)

    def write_more() -> None:  # ingest goes on while the queries run
        store = S3AuditStore.from_environment()
        for n in range(20):
            event = cloudtrail_event(request_parameters={"tableName": "Music", "key": {"id": f"w{n}"}})
            process_kinesis_batch(kinesis_event([logs_payload([event])]), store, "audit/", report_item_failures=True)

    writer = threading.Thread(target=write_more)
    writer.start()
    with ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
        answers = list(pool.map(history, range(CONCURRENT_REQUESTS * 3), timeout=120))
    writer.join()
    for n, answer in enumerate(answers):
        assert answer == sorted(e["eventID"] for i, e in enumerate(events) if i % 4 == n % 4)


class _StuckObjects(AuditObjects):
    """Audit objects whose reads hang until released, as a wedged S3 connection would."""

    def __init__(self, inner: AuditObjects, release: threading.Event) -> None:
        self._inner = inner
        self._release = release

    def read(self, *arguments: Any, **keywords: Any) -> Any:
        self._release.wait(30)
        return self._inner.read(*arguments, **keywords)


def test_a_stuck_read_answers_504_in_time_and_does_not_wedge_later_requests(
    client: Client, ingest: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest([cloudtrail_event()])
    monkeypatch.setenv("QUERY_TIMEOUT_SECONDS", "1")
    healthy = DuckDBQueryRunner.from_environment()
    release = threading.Event()
    stuck = DuckDBQueryRunner(_StuckObjects(healthy._objects, release), timeout_seconds=1)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: _outcome(stuck), range(8)))
    assert outcomes == ["504"] * 8
    assert time.monotonic() - started < 10  # each waited its own deadline, none hung
    release.set()
    assert len(stuck.fetch_page(AuditQuery(table="Music"), None).entries) == 1


def _outcome(engine: DuckDBQueryRunner) -> str:
    try:
        engine.fetch_page(AuditQuery(table="Music"), None)
    except QueryTimeoutError:
        return "504"
    return "200"


def test_the_longest_line_ingest_may_write_reads_back(client: Client, ingest: Callable[..., Any], s3: Any) -> None:
    event = cloudtrail_event(request_parameters={"tableName": "Music", "key": {"id": "big"}})
    (record,) = build_audit_records(event)
    line = record.to_line()
    control = "\\u0001" * ((MAX_LINE_BYTES - len(line)) // 6)
    padded = line.replace('"user_agent":"aws-cli/2.15.0"', f'"user_agent":"{control}"')
    assert MAX_LINE_BYTES - 100 < len(padded) <= MAX_LINE_BYTES  # past pyarrow's default 1 MiB block
    key = build_object_key("audit/", "Music", record.dt, "shardId-000000000000", "1", "1")
    s3.put_object(Bucket=os.environ["AUDIT_BUCKET"], Key=key, Body=encode_lines([padded]))
    response = client.http.get("/audit?table=Music&key=%7B%22id%22%3A%22big%22%7D")
    assert response.status_code == 200, response.body
    (entry,) = json.loads(response.body)["entries"]
    assert entry["user_agent"] == "\u0001" * (len(control) // 6)
