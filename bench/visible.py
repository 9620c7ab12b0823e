"""`make bench`, write-to-visible: how long after a DynamoDB call returns the local stack's GET /audit shows it.

Starts the local stack (`python -m deutzia_local up`, compaction every few seconds), puts `VISIBLE_ROWS` (1 M) rows
of history into one table's compacted tier, then:
- single calls: each PutItem, then GET /audit for its key until it shows; the baseline is one GET /audit round trip;
- sustained load: mixed calls (transactions of 3 puts, batches of 5, updates, puts) from 12 threads at a paced
  rate, each call's lag from its return to the first GET /audit page that lists it (a watcher pages the table's
  newest entries), for each rate in `RATES`, until p95 passes 5 s or the callers cannot go faster.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3

from bench.run import base_lines, day_lines, write_fresh
from deutzia_local.child import StackProcess, create_keyed_table, free_port

HISTORY_TABLE = "BenchHistory"
LOAD_TABLE = "BenchLoad"
THREADS = 12
LOAD_SECONDS = 20.0
LAG_GOAL_SECONDS = 5.0


class _Stack:
    def __init__(self) -> None:
        aws_port, api_port = free_port(), free_port()
        self.aws = f"http://127.0.0.1:{aws_port}"
        self.api = f"http://127.0.0.1:{api_port}"
        env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        env.update(
            DEUTZIA_AWS_PORT=str(aws_port),
            DEUTZIA_API_PORT=str(api_port),
            DEUTZIA_COMPACT_INTERVAL=os.environ.get("DEUTZIA_COMPACT_INTERVAL", "10"),
        )
        self.env = env
        separate = os.environ.get("POLLER_PROCESS", "") == "1"  # the poller (and ingest) in a process of its own
        self.process = StackProcess(["up", "--no-poller"] if separate else ["up"], env)
        self.process.wait_for_line("ready", timeout=120)
        self.poller = StackProcess(["poll"], env) if separate else None
        self._local = threading.local()

    def client(self, service: str) -> Any:
        clients = self._local.__dict__.setdefault("clients", {})
        if service not in clients:
            session = boto3.session.Session(
                aws_access_key_id="bench",
                aws_secret_access_key="bench",  # noqa: S106 - moto takes any secret
                region_name="us-east-1",
            )
            clients[service] = session.client(service, endpoint_url=self.aws)  # type: ignore[call-overload]
        return clients[service]

    def audit(self, **parameters: str) -> dict[str, Any]:
        url = f"{self.api}/audit?{urllib.parse.urlencode(parameters)}"
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - loopback URL we built
            return json.loads(response.read())  # type: ignore[no-any-return]

    def create_table(self, name: str) -> None:
        create_keyed_table(self.client("dynamodb"), name)


def _seed_history(stack: _Stack, rows: int) -> None:
    """`rows` rows of the history table over 30 days two months back, compacted as the stack compacts them."""
    rng = random.Random(3)  # noqa: S311 - bench data, not secrets
    base = base_lines(HISTORY_TABLE)
    last = datetime.now(UTC).date().replace(day=1) - timedelta(days=35)
    started = time.perf_counter()
    s3 = stack.client("s3")
    for offset in range(30):
        day = last - timedelta(days=offset)
        write_fresh(s3, day, day_lines(day, rows // 30, rows // 10, rng, base), "seed", HISTORY_TABLE, "deutzia-audit")
    compact = StackProcess(["compact"], stack.env)
    compact.wait_for_line("compacted", timeout=600)
    compact.stop()
    deadline = time.monotonic() + 600  # what `make compact` left to the stack's own runs
    while s3.list_objects_v2(Bucket="deutzia-audit", Prefix=f"audit/table_name={HISTORY_TABLE}/").get("KeyCount"):
        if time.monotonic() > deadline:
            raise RuntimeError("the seeded history was not compacted within 10 minutes")
        time.sleep(1)
    print(
        f"write-to-visible data: {rows:,} rows of {HISTORY_TABLE} seeded and compacted in "
        f"{time.perf_counter() - started:.0f} s"
    )


def _single_calls(stack: _Stack, count: int = 20) -> None:
    stack.create_table(HISTORY_TABLE)
    dynamodb = stack.client("dynamodb")
    round_trips = []
    for n in range(5):
        started = time.perf_counter()
        stack.audit(table=HISTORY_TABLE, key=json.dumps({"id": f"item-{n}"}))
        round_trips.append(time.perf_counter() - started)
    baseline = statistics.median(round_trips)
    lags = []
    for n in range(count):
        key = json.dumps({"id": f"visible-{n}"})
        dynamodb.put_item(TableName=HISTORY_TABLE, Item={"id": {"S": f"visible-{n}"}})
        returned = time.perf_counter()
        while not stack.audit(table=HISTORY_TABLE, key=key)["entries"]:
            time.sleep(0.05)
        lags.append(time.perf_counter() - returned)
    lags.sort()
    median = statistics.median(lags)
    print(
        f"write-to-visible, one call at a time, {HISTORY_TABLE} holding its history: median {median:.2f} s, "
        f"p95 {lags[int(len(lags) * 0.95) - 1]:.2f} s; baseline one GET /audit {baseline * 1000:.0f} ms; "
        f"ratio {median / baseline:.1f}x"
    )


def _mixed_call(dynamodb: Any, n: int, key: str) -> None:
    """One of four calls in turn: a transaction of 3 puts, a batch of 5 puts, an update, a put; `key` is its first
    item's."""
    item = {"id": {"S": key}, "n": {"N": str(n)}}
    if n % 4 == 0:
        puts = [{"Put": {"TableName": LOAD_TABLE, "Item": {**item, "id": {"S": f"{key}{i or ''}"}}}} for i in range(3)]
        dynamodb.transact_write_items(TransactItems=puts)
    elif n % 4 == 1:
        requests = [{"PutRequest": {"Item": {**item, "id": {"S": f"{key}{i or ''}"}}}} for i in range(5)]
        dynamodb.batch_write_item(RequestItems={LOAD_TABLE: requests})
    elif n % 4 == 2:
        dynamodb.update_item(
            TableName=LOAD_TABLE,
            Key={"id": {"S": key}},
            UpdateExpression="SET #n = :n",
            ExpressionAttributeNames={"#n": "n"},
            ExpressionAttributeValues={":n": {"N": str(n)}},
        )
    else:
        dynamodb.put_item(TableName=LOAD_TABLE, Item=item)


def _sustained(stack: _Stack, rate: float) -> tuple[float, float]:
    """Calls at `rate` per second for LOAD_SECONDS; the rate achieved and the p95 lag (s). Each call puts a key of
    its own."""
    dynamodb_tag = f"r{int(rate)}"
    prefix = f'{{"id":"{dynamodb_tag}-'
    total = int(rate * LOAD_SECONDS)
    returned: dict[str, float] = {}
    seen: dict[str, float] = {}
    since = (datetime.now(UTC) - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    done = threading.Event()
    start = time.perf_counter()

    def call(worker: int) -> None:
        dynamodb = stack.client("dynamodb")
        for n in range(worker, total, THREADS):
            due = start + n / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            key = f"{dynamodb_tag}-{n}"
            _mixed_call(dynamodb, n, key)
            returned[json.dumps({"id": key}, separators=(",", ":"))] = time.perf_counter()

    def watch() -> None:
        while not done.is_set() or any(key not in seen for key in list(returned)):
            token = None
            while True:
                parameters = {"table": LOAD_TABLE, "since": since, "limit": "1000"}
                if token:
                    parameters["next_token"] = token
                page = stack.audit(**parameters)
                now = time.perf_counter()
                keys = [entry["item_key"] for entry in page["entries"]]
                fresh = [key for key in keys if key not in seen and key.startswith(prefix)]
                for key in fresh:
                    seen[key] = now
                token = page["next_token"]
                if not token or not fresh:
                    break
            if done.is_set() and time.perf_counter() - finished[0] > 120:
                return
            time.sleep(0.1)

    finished = [float("inf")]
    watcher = threading.Thread(target=watch)
    watcher.start()
    workers = [threading.Thread(target=call, args=(worker,)) for worker in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    finished[0] = time.perf_counter()
    achieved = total / (finished[0] - start)
    done.set()
    watcher.join()
    lags = sorted(seen[key] - returned[key] for key in returned if key in seen)
    missing = total - len(lags)
    p95 = lags[max(int(len(lags) * 0.95) - 1, 0)] if lags else float("inf")
    median = statistics.median(lags) if lags else float("inf")
    print(
        f"sustained load, asked {rate:.0f} calls/s from {THREADS} threads for {LOAD_SECONDS:.0f} s: achieved "
        f"{achieved:.0f} calls/s; lag median {median:.2f} s, p95 {p95:.2f} s, "
        f"max {lags[-1] if lags else float('inf'):.2f} s; not seen within 2 minutes: {missing}"
    )
    return achieved, p95 if not missing else float("inf")


def main() -> None:
    rows = int(os.environ.get("VISIBLE_ROWS") or 1_000_000)
    rates = [float(rate) for rate in (os.environ.get("RATES") or "30,60,120,240").split(",")]
    stack = _Stack()
    try:
        _seed_history(stack, rows)
        _single_calls(stack)
        stack.create_table(LOAD_TABLE)
        sustained = 0.0
        for rate in rates:
            achieved, p95 = _sustained(stack, rate)
            if p95 > LAG_GOAL_SECONDS:
                break
            sustained = max(sustained, achieved)
            if achieved < rate * 0.9:  # the callers cannot go faster: the calls themselves are the limit
                break
        print(f"the local stack sustains {sustained:.0f} mixed calls/s with lag p95 under {LAG_GOAL_SECONDS:.0f} s")
    finally:
        if stack.poller is not None:
            stack.poller.stop()
        stack.process.stop()


if __name__ == "__main__":
    main()
