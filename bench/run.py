"""`make bench`: how fast ingest and GET /audit are, each as a ratio to a baseline measured in the same run.

- ingest: `process_kinesis_batch` (decode, parse, build records, encode objects) into an in-memory store, against
  the floor of only gunzipping and JSON-parsing the same payloads;
- query: an item's history through the DuckDB engine over moto's S3 on loopback, against reading every object
  into Arrow (the I/O alone).
Numbers are medians of repeated runs; machines are shared and noisy, so read the ratios, not the seconds.
"""

from __future__ import annotations

import gzip
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Dummy credentials and a dead default endpoint: the bench talks only to moto on loopback.
os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")  # noqa: S106
os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"

from chalicelib.ingest import process_kinesis_batch
from tests.factories import cloudtrail_event, kinesis_event, logs_payload

RECORDS = 50
EVENTS_PER_RECORD = 40
REPEATS = 7
S3_LATENCY_SECONDS = 0.025


class _MemoryStore:
    """Keeps objects in memory; with `latency`, each PUT takes as long as one to S3 (about 25 ms)."""

    def __init__(self, latency: float = 0.0) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts = 0
        self._latency = latency

    def put_records(self, key: str, body: bytes) -> None:
        if self._latency:
            time.sleep(self._latency)
        self.puts += 1
        self.objects[key] = body

    def put_quarantine(self, key: str, body: bytes, reason: str) -> None:
        self.objects[key] = body


def _median_seconds(work: Callable[[], object]) -> float:
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def bench_ingest() -> None:
    tables = ["Orders", "Users", "Music"]
    payloads = [
        logs_payload(
            [
                cloudtrail_event(
                    "TransactWriteItems" if n % 5 == 0 else "PutItem",
                    {"requestItems": [{"operation": "Put", "tableName": tables[n % 3], "key": {"id": f"k{n}"}}]}
                    if n % 5 == 0
                    else {"tableName": tables[n % 3], "key": {"id": f"k{n}"}, "item": ["id", "v"]},
                    table=tables[n % 3],
                )
                for n in range(EVENTS_PER_RECORD)
            ]
        )
        for _ in range(RECORDS)
    ]
    event = kinesis_event(payloads)
    events = RECORDS * EVENTS_PER_RECORD

    def floor() -> None:
        for payload in payloads:
            for log_event in json.loads(gzip.decompress(payload))["logEvents"]:
                json.loads(log_event["message"])

    baseline = _median_seconds(floor)
    ingest = _median_seconds(lambda: process_kinesis_batch(event, _MemoryStore(), "audit/", True))
    print(
        f"ingest: {events / ingest:,.0f} events/s ({ingest * 1000:.1f} ms for {events} events in {RECORDS} records); "
        f"baseline gunzip+parse {baseline * 1000:.1f} ms; ratio {ingest / baseline:.2f}x"
    )
    stores: list[_MemoryStore] = []

    def with_latency() -> None:
        stores.append(_MemoryStore(latency=S3_LATENCY_SECONDS))
        process_kinesis_batch(event, stores[-1], "audit/", True)

    slow = _median_seconds(with_latency)
    print(
        f"ingest with {S3_LATENCY_SECONDS * 1000:.0f} ms per S3 PUT: {events / slow:,.0f} events/s, "
        f"{stores[-1].puts * 1000 / events:.1f} PUTs per 1,000 events; ratio to the decode floor {slow / baseline:.2f}x"
    )


def bench_query() -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    from chalicelib.duckdb_engine import AuditObjects, DuckDBQueryRunner, s3_filesystem
    from chalicelib.query import AuditQuery

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="bench-audit")
        store = _S3Store(s3)
        payloads = [
            logs_payload(
                [
                    cloudtrail_event(
                        request_parameters={"tableName": "Orders", "key": {"id": f"k{n % 200}"}, "item": ["id"]},
                        table="Orders",
                        event_time=f"2024-05-{1 + n % 5:02d}T12:00:00Z",
                    )
                    for n in range(EVENTS_PER_RECORD)
                ]
            )
            for _ in range(RECORDS)
        ]
        process_kinesis_batch(kinesis_event(payloads), store, "audit/", True)
        rows = RECORDS * EVENTS_PER_RECORD
        objects = AuditObjects(s3_filesystem(endpoint), "bench-audit", "audit/")
        runner = DuckDBQueryRunner(objects)
        query = AuditQuery(table="Orders", key='{"id":"k7"}', limit=100)
        baseline = _median_seconds(objects.read)
        history = _median_seconds(lambda: runner.fetch_page(query, None))
        entries = len(runner.fetch_page(query, None).entries)
        print(
            f"query: item history ({entries} entries of {rows} rows in {len(store.keys)} objects) "
            f"{history * 1000:.0f} ms; "
            f"baseline reading every object {baseline * 1000:.0f} ms; ratio {history / baseline:.2f}x"
        )
    finally:
        server.stop()


class _S3Store:
    def __init__(self, s3: object) -> None:
        self._s3 = s3
        self.keys: list[str] = []

    def put_records(self, key: str, body: bytes) -> None:
        self._s3.put_object(Bucket="bench-audit", Key=key, Body=body)  # type: ignore[attr-defined]
        self.keys.append(key)

    def put_quarantine(self, key: str, body: bytes, reason: str) -> None:
        raise AssertionError(f"bench data was quarantined: {reason}")


if __name__ == "__main__":
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    bench_ingest()
    bench_query()
