"""`make bench`: how fast ingest, compaction and GET /audit are, each as a ratio to a baseline measured in the same
run (machines are shared and noisy: read the ratios; seconds are medians).

- ingest: `process_kinesis_batch` on 100 Kinesis records x 100 events over 4 tables and 3 days, with 25 ms per
  simulated S3 PUT, against the decode floor (gunzip + orjson parse of the same payloads); PUTs per 1,000 events;
  and the least any Python handler takes (the floor, the columns copied unchecked, gzip, one wave of PUTs).
- query: GET /audit for one item through the DuckDB engine over moto's S3 on loopback, after `ROWS` rows of one
  table over `DAYS` days went through ingest's layout and the real compaction; the bytes the engine fetched are
  counted at the S3 endpoint, as a fraction of the table's stored bytes; then again with 100,000 fresh rows. The
  baseline is reading the whole table (what every lookup cost before compaction).
- reconcile: one day of `RECONCILE_CALLS` calls (100,000) in 288 trail files (CloudTrail's five minutes), 1 % of
  them missing from the audit records, reconciled and backfilled by the DuckDB engine over moto's S3, then again
  (nothing missing); the baseline is reading and parsing the day's trail files alone.
- write-to-visible: bench/visible.py on the local stack (see there), run by `make bench` after these.
"""

from __future__ import annotations

import gzip
import os
import random
import statistics
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Dummy credentials and a dead default endpoint: the bench talks only to moto on loopback.
os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")  # noqa: S106
os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"

import orjson
from zlib_ng import zlib_ng

from chalicelib.cloudtrail import build_audit_records
from chalicelib.ingest import process_kinesis_batch
from chalicelib.records import build_object_key, encode_lines
from chalicelib.schema import COLUMN_NAMES
from tests.factories import cloudtrail_event, kinesis_event, logs_payload

REPEATS = 7
FULL_BATCH_EVENTS_PER_RECORD = 700  # 100 records of these fill Lambda's 6 MB payload
S3_LATENCY_SECONDS = 0.025
BUCKET = "bench-audit"
TABLE = "Orders"
LAST_CLOSED_DAY = date(2024, 5, 15)  # April and before are closed months; May is open (day files)
ROWS_PER_OBJECT = 5000
FRESH_ROWS = 100_000
LOOKUPS = 15
TAIL_ROWS_PER_OBJECT = 10
TAIL_LOOKUPS = 5


def _median_seconds(work: Callable[[], object], repeats: int = REPEATS) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


class _MemoryStore:
    """Keeps objects in memory; with `latency`, each PUT takes as long as one to S3 (about 25 ms)."""

    def __init__(self, latency: float = 0.0) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts = 0
        self._latency = latency
        self._lock = threading.Lock()

    def put_records(self, key: str, body: bytes) -> None:
        if self._latency:
            time.sleep(self._latency)
        with self._lock:
            self.puts += 1
            self.objects[key] = body

    def put_quarantine(self, key: str, body: bytes, reason: str) -> None:
        raise AssertionError(f"bench data was quarantined: {reason}")


def bench_ingest() -> None:
    tables = ["Orders", "Users", "Music", "Books"]
    days = ["2024-05-01", "2024-05-02", "2024-05-03"]
    records, events_per_record = 100, 100
    payloads = []
    for r in range(records):
        batch = []
        for n in range(events_per_record):
            table = tables[(r + n) % 4]
            key = {"id": f"k{r}-{n}"}
            when = f"{days[r % 3]}T12:{n % 60:02d}:00Z"  # a record holds calls of a few minutes, as CloudWatch Logs
            if n % 5 == 0:
                parameters: dict[str, Any] = {"requestItems": [{"operation": "Put", "tableName": table, "key": key}]}
                batch.append(cloudtrail_event("TransactWriteItems", parameters, table=table, event_time=when))
            else:
                parameters = {"tableName": table, "key": key, "item": ["id", "v"]}
                batch.append(cloudtrail_event("PutItem", parameters, table=table, event_time=when))
        payloads.append(logs_payload(batch))
    event = kinesis_event(payloads)
    events = records * events_per_record

    def floor() -> None:
        for payload in payloads:
            for log_event in orjson.loads(gzip.decompress(payload))["logEvents"]:
                orjson.loads(log_event["message"])

    def python_bound(latency: float) -> None:
        # The least any Python handler takes: the floor, copying 32 columns into each line unchecked, then one wave
        # of 12 objects (gzip as ingest writes it, and a PUT each) at once.
        lines = []
        for payload in payloads:
            for log_event in orjson.loads(gzip.decompress(payload))["logEvents"]:
                call = orjson.loads(log_event["message"])
                identity = call["userIdentity"]
                lines.append(
                    orjson.dumps({column: call.get(column) or identity.get(column) for column in COLUMN_NAMES})
                )

        def put(part: int) -> None:
            zlib_ng.compress(b"\n".join(lines[part::12]), 6, wbits=31)
            time.sleep(latency)

        with ThreadPoolExecutor(max_workers=12) as pool:
            list(pool.map(put, range(12)))

    baseline = _median_seconds(floor)
    bound = _median_seconds(lambda: python_bound(0.0))
    bound_slow = _median_seconds(lambda: python_bound(S3_LATENCY_SECONDS))
    stores: list[_MemoryStore] = []

    def ingest(latency: float) -> None:
        stores.append(_MemoryStore(latency))
        response = process_kinesis_batch(event, stores[-1], "audit/", True)
        assert response == {"batchItemFailures": []}, response

    fast = _median_seconds(lambda: ingest(0.0))
    slow = _median_seconds(lambda: ingest(S3_LATENCY_SECONDS))
    print(f"decode floor (gunzip + orjson parse): {events / baseline:,.0f} events/s")
    print(
        f"the least a Python handler takes (the floor, 32 columns copied unchecked, gzip, one wave of PUTs): "
        f"{events / bound:,.0f} events/s in memory ({bound / baseline:.2f}x the floor), "
        f"{events / bound_slow:,.0f} events/s with {S3_LATENCY_SECONDS * 1000:.0f} ms per PUT "
        f"({bound_slow / baseline:.2f}x the floor)"
    )
    print(
        f"ingest, {records} records x {events_per_record} events over 4 tables and 3 days: "
        f"{events / fast:,.0f} events/s in memory ({fast / baseline:.2f}x the floor); "
        f"with {S3_LATENCY_SECONDS * 1000:.0f} ms per S3 PUT {events / slow:,.0f} events/s "
        f"({slow / baseline:.2f}x the floor), {stores[-1].puts * 1000 / events:.2f} PUTs per 1,000 events"
    )


def bench_ingest_memory() -> None:
    """The most a batch can make ingest hold: Lambda caps a batch's payload at 6 MB."""
    tables = ["Orders", "Users", "Music", "Books"]
    payloads = []
    for r in range(100):
        calls = [
            cloudtrail_event("PutItem", {"tableName": tables[n % 4], "key": {"id": f"k{r}-{n}"}, "item": ["id", "v"]})
            for n in range(FULL_BATCH_EVENTS_PER_RECORD)
        ]
        payloads.append(logs_payload(calls))
    event = kinesis_event(payloads)
    size = len(orjson.dumps(event))
    tracemalloc.start()
    process_kinesis_batch(event, _MemoryStore(), "audit/", True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"a full batch ({size / 1e6:.1f} MB of payload, {100 * FULL_BATCH_EVENTS_PER_RECORD:,} events): ingest held "
        f"at most {peak / 2**20:.0f} MB beyond the batch itself (ingest_audit_events has 1,769 MB)"
    )


class _CountingEndpoint:
    """moto's server application, counting the bytes of every object it serves (GET, listings apart)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.bytes = 0
        self.gets = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = self._app(environ, start_response)
        query = environ.get("QUERY_STRING", "")
        if environ["REQUEST_METHOD"] != "GET" or "list-type" in query or "prefix" in query:
            return body  # type: ignore[no-any-return]
        chunks = list(body)
        with self._lock:
            self.bytes += sum(len(chunk) for chunk in chunks)
            self.gets += 1
        return chunks

    def reset(self) -> tuple[int, int]:
        with self._lock:
            counted = (self.bytes, self.gets)
            self.bytes = self.gets = 0
        return counted


def base_lines(table: str = TABLE) -> list[dict[str, Any]]:
    """Formatted records of varied calls (operations, callers, failures), as ingest writes their lines."""
    lines = []
    for n in range(400):
        user = ["alice", "bob", "carol", "deploy-bot"][n % 4]
        key = {"id": f"base-{n}"}
        if n % 7 == 0:
            event = cloudtrail_event(
                "UpdateItem",
                {
                    "tableName": table,
                    "key": key,
                    "updateExpression": "SET #s = :s, #u = :u",
                    "conditionExpression": "attribute_exists(id)",
                    "expressionAttributeNames": {"#s": "status", "#u": "updated_at"},
                },
                table=table,
                user=user,
            )
        elif n % 11 == 0:
            event = cloudtrail_event(
                "DeleteItem",
                {"tableName": table, "key": key},
                table=table,
                user=user,
                errorCode="ConditionalCheckFailedException",
                errorMessage="The conditional request failed",
            )
        elif n % 3 == 0:
            event = cloudtrail_event("GetItem", {"tableName": table, "key": key}, table=table, user=user)
        else:
            parameters = {"tableName": table, "key": key, "item": ["id", "status", "total", "items"]}
            event = cloudtrail_event("PutItem", parameters, table=table, user=user, sourceIPAddress=f"10.0.{n}.7")
        lines += [orjson.loads(record.to_line()) for record in build_audit_records(event)]
    return lines


def day_lines(day: date, rows: int, items: int, rng: random.Random, base: list[dict[str, Any]]) -> list[str]:
    """`rows` lines of calls on `day`, each a varied formatted record with its own ids, time and one of `items` keys."""
    lines = []
    for n in range(rows):
        line = dict(base[rng.randrange(len(base))])
        seconds = rng.randrange(86400)
        line["event_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        line["request_id"] = uuid.UUID(int=rng.getrandbits(128)).hex.upper()
        line["event_time"] = f"{day.isoformat()}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z"
        line["item_key"] = f'{{"id":"item-{rng.randrange(items)}"}}'
        lines.append(orjson.dumps(line).decode())
        del n
    return lines


def write_fresh(
    s3: Any,
    day: date,
    lines: list[str],
    shard: str,
    table: str = TABLE,
    bucket: str = BUCKET,
    rows_per_object: int = ROWS_PER_OBJECT,
) -> None:
    """Lines written as ingest writes them: gzip JSON Lines objects of one partition, named after a shard's range."""
    for start in range(0, len(lines), rows_per_object):
        chunk = lines[start : start + rows_per_object]
        first, last = str(start), str(start + len(chunk) - 1)
        key = build_object_key("audit/", table, day.isoformat(), shard, first, last)
        s3.put_object(Bucket=bucket, Key=key, Body=encode_lines(chunk))


def _stored_bytes(s3: Any) -> tuple[int, int]:
    total = files = 0
    for prefix in (f"audit/table_name={TABLE}/", f"compacted/table_name={TABLE}/"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for item in page.get("Contents", []):
                total += item["Size"]
                files += 1
    return total, files


def bench_query(rows: int, days: int) -> None:
    import boto3
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    from chalicelib.compactor import S3Compactor
    from chalicelib.duckdb_engine import AuditObjects, DuckDBQueryRunner, s3_filesystem
    from chalicelib.query import AuditQuery

    counter = _CountingEndpoint(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, counter, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket=BUCKET)
        rng = random.Random(8)  # noqa: S311 - bench data, not secrets
        base = base_lines()
        items = max(rows // 10, 1)
        started = time.perf_counter()
        first_day = LAST_CLOSED_DAY - timedelta(days=days - 1)
        for offset in range(days):
            day = first_day + timedelta(days=offset)
            share = rows // days + (1 if offset < rows % days else 0)
            write_fresh(s3, day, day_lines(day, share, items, rng, base), "shardId-000000000000")
        generated = time.perf_counter() - started
        # What lookups meet once the grace is over: the replaced fresh objects deleted (at the end of the run here).
        compactor = S3Compactor(s3, BUCKET, "audit/", "compacted/", grace_seconds=0)
        started = time.perf_counter()
        report = compactor.run(LAST_CLOSED_DAY.isoformat(), lambda: 900.0)
        compacted = time.perf_counter() - started
        stored, files = _stored_bytes(s3)
        print(
            f"query data: {rows:,} rows of one table over {days} days ({items:,} items), written as ingest does in "
            f"{generated:.0f} s, compacted in {compacted:.0f} s ({report.rows_out:,} rows in {files} files, "
            f"{stored / 1e6:.1f} MB stored)"
        )
        objects = AuditObjects(s3_filesystem(endpoint), BUCKET, "audit/", "compacted/")
        runner = DuckDBQueryRunner(objects)
        keys = [f'{{"id":"item-{rng.randrange(items)}"}}' for _ in range(LOOKUPS)]
        counter.reset()
        runner.fetch_page(AuditQuery(table=TABLE, key=keys[0], limit=1000), None)
        cold, _ = counter.reset()
        print(f"the first lookup also reads each file's footer: {cold / 1e3:,.0f} KB, {cold / stored:.2%} of the table")
        started = time.perf_counter()
        everything = objects.read(TABLE)
        baseline = time.perf_counter() - started
        scanned, _ = counter.reset()
        count = everything.compacted.num_rows + everything.fresh.num_rows
        print(f"baseline: reading the whole table ({count:,} rows) {baseline * 1000:.0f} ms, {scanned / 1e6:.1f} MB")
        _lookups(runner, counter, keys, stored, baseline, "after compaction", AuditQuery)
        _latest(runner, counter, stored, baseline, until=f"{LAST_CLOSED_DAY + timedelta(days=1)}T00:00:00Z")
        day = LAST_CLOSED_DAY + timedelta(days=1)
        write_fresh(s3, day, day_lines(day, FRESH_ROWS, items, rng, base), "shardId-000000000001")
        stored, _ = _stored_bytes(s3)
        _lookups(runner, counter, keys, stored, baseline, f"with {FRESH_ROWS:,} fresh rows", AuditQuery)
        # The fresh tier as ingest leaves it: one object a second from a shard (10 rows each at 10 calls/s), for the
        # most it holds (10 minutes: a compaction interval's, and those the last run replaced, in their grace), and for
        # an hour.
        for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"audit/table_name={TABLE}/dt={day}/").get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])
        written = 0
        for minutes in (10, 60):
            tail = day_lines(day, (minutes * 60 - written) * TAIL_ROWS_PER_OBJECT, items, rng, base)
            write_fresh(s3, day, tail, f"shardId-{minutes:012d}", rows_per_object=TAIL_ROWS_PER_OBJECT)
            written = minutes * 60
            stored, _ = _stored_bytes(s3)
            label = f"with the fresh tier of {minutes} minutes of one shard ({written:,} objects of 10 rows)"
            _lookups(runner, counter, keys[:TAIL_LOOKUPS], stored, baseline, label, AuditQuery)
    finally:
        server.shutdown()
        server.server_close()


def _lookups(
    runner: Any, counter: _CountingEndpoint, keys: list[str], stored: int, baseline: float, label: str, query: Any
) -> None:
    timings, fetched, requests, found = [], [], [], []
    for key in keys:
        counter.reset()
        started = time.perf_counter()
        page = runner.fetch_page(query(table=TABLE, key=key, limit=1000), None)
        timings.append(time.perf_counter() - started)
        read, gets = counter.reset()
        fetched.append(read)
        requests.append(gets)
        found.append(len(page.entries))
    median = statistics.median(timings)
    print(
        f"GET /audit one item, {label}: median {median * 1000:.0f} ms (p max {max(timings) * 1000:.0f} ms), "
        f"{statistics.median(found):.0f} entries; fetched median {statistics.median(fetched) / 1e3:,.0f} KB in "
        f"{statistics.median(requests):.0f} GETs = {statistics.median(fetched) / stored:.2%} of the table's "
        f"{stored / 1e6:.1f} MB (max {max(fetched) / stored:.2%}); ratio to reading the whole table "
        f"{median / baseline:.3f}x"
    )


def _latest(runner: Any, counter: _CountingEndpoint, stored: int, baseline: float, until: str) -> None:
    """GET /audit without a key: the table's latest entries, a page of 100 and the one after it."""
    from chalicelib.query import AuditQuery

    timings, fetched = [], []
    for _ in range(3):
        counter.reset()
        started = time.perf_counter()
        page = runner.fetch_page(AuditQuery(table=TABLE, until=until, limit=100), None)
        timings.append(time.perf_counter() - started)
        fetched.append(counter.reset()[0])
    median = statistics.median(timings)
    print(
        f"GET /audit the table's latest 100 entries (no key), after compaction: median {median * 1000:.0f} ms, "
        f"{len(page.entries)} entries; fetched {statistics.median(fetched) / 1e3:,.0f} KB = "
        f"{statistics.median(fetched) / stored:.2%} of the table's {stored / 1e6:.1f} MB; ratio to reading the whole "
        f"table {median / baseline:.3f}x"
    )


def bench_reconcile(calls: int) -> None:
    import boto3
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    from chalicelib.cloudtrail import stored_lines
    from chalicelib.duckdb_engine import AuditObjects, DuckDBTrailEngine, TrailFiles, s3_filesystem
    from chalicelib.reconciler import Reconciler

    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        for bucket in (BUCKET, "bench-trail"):
            s3.create_bucket(Bucket=bucket)
        day, files = LAST_CLOSED_DAY, 288
        prefix = "AWSLogs/123456789012/CloudTrail/"
        rng = random.Random(9)  # noqa: S311 - bench data, not secrets
        events = [
            cloudtrail_event(
                request_parameters={"tableName": TABLE, "key": {"id": f"item-{rng.randrange(10_000)}"}, "item": ["id"]},
                table=TABLE,
                event_time=f"{day.isoformat()}T{n * 86399 // calls // 3600:02d}:"
                f"{n * 86399 // calls % 3600 // 60:02d}:{n * 86399 // calls % 60:02d}Z",
            )
            for n in range(calls)
        ]
        per_file = -(-calls // files)
        paths = []
        for index in range(0, calls, per_file):
            name = f"123456789012_CloudTrail_us-east-1_{day.strftime('%Y%m%d')}T{index}_x.json.gz"
            key = f"{prefix}us-east-1/{day.strftime('%Y/%m/%d')}/{name}"
            body = gzip.compress(orjson.dumps({"Records": events[index : index + per_file]}))
            s3.put_object(Bucket="bench-trail", Key=key, Body=body)
            paths.append(f"s3://bench-trail/{key}")
        audited = [event for n, event in enumerate(events) if n % 100 != 7]
        lines = [line for event in audited for _, line in stored_lines(event) or []]
        for start in range(0, len(lines), ROWS_PER_OBJECT):
            write_fresh(s3, day, lines[start : start + ROWS_PER_OBJECT], f"shardId-{start:012d}")
        filesystem = s3_filesystem(endpoint)
        started = time.perf_counter()
        TrailFiles(filesystem).read(paths)
        baseline = time.perf_counter() - started
        engine = DuckDBTrailEngine(AuditObjects(filesystem, BUCKET, "audit/", "compacted/"), TrailFiles(filesystem))
        reconciler = Reconciler(engine, s3, BUCKET, "bench-trail", prefix)
        timings = []
        for run in ("first run (backfills)", "second run (nothing missing)"):
            started = time.perf_counter()
            report = reconciler.run(day.isoformat()).tables[TABLE]
            timings.append(time.perf_counter() - started)
            print(
                f"reconcile a day of {calls:,} calls in {len(paths)} trail files, {run}: {timings[-1]:.1f} s "
                f"({report.trail_events:,} in the trail, {report.backfilled_now:,} backfilled now, "
                f"{report.still_missing} missing); ratio to reading the trail files alone {timings[-1] / baseline:.1f}x"
            )
        print(f"baseline: reading and parsing the day's trail files alone {baseline:.1f} s")
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    rows = int(os.environ.get("ROWS") or 1_000_000)
    days = int(os.environ.get("DAYS") or (365 if rows >= 10_000_000 else 30))
    sections = (os.environ.get("BENCH") or "ingest,query,reconcile").split(",")
    if "ingest" in sections:
        bench_ingest()
        bench_ingest_memory()
    if "query" in sections:
        bench_query(rows, days)
    if "reconcile" in sections:
        bench_reconcile(int(os.environ.get("RECONCILE_CALLS") or 100_000))
