"""`make faults`: the local stack under load and faults, checked against a ground truth of every call.

It starts its own stack (`up --no-poller` and a separate `poll` process, on free loopback ports), then runs mixed
DynamoDB calls from many threads (puts, updates, failing conditional updates, deletes, batch writes, transactions,
cancelled transactions), each recording what it must leave in the trail. Meanwhile S3 refuses every audit write
for longer than the poller's retries last, the poller is killed mid-batch and restarted, and a poison record is put
on the stream. After recovery (the failure queue's replay included) it reads the whole table's history through
GET /audit and reports calls, items, found, lost, duplicated, wrong success flags, and the time to recover. Then it
forges copies of some of the calls in the trail's log group (another caller, the opposite result), as whoever may
write there could, reconciles, and checks the history again: every call as CloudTrail logged it, no forgery shown.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from deutzia_local.child import StackProcess, create_keyed_table, free_port

TABLE = "FaultSuite"
# Copies of real calls the suite puts in the trail's log group, each naming this caller and the opposite result.
FORGED_CALLS = 20
_FORGER = "arn:aws:iam::123456789012:user/forger"
_LOG_GROUP = "/deutzia/local/cloudtrail"
# The outage lasts until the poller's retries have run out, within this bound.
_MAX_OUTAGE_SECONDS = 180.0
_NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})
# (item key, operation, success) that GET /audit must show exactly once per item a call touched.
Expected = tuple[str, str, bool]


@dataclass
class SuiteReport:
    """The figures of one run."""

    calls: int = 0
    items: int = 0
    found: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong_success: int = 0
    unexpected: int = 0
    quarantined: int = 0
    replayed_batches: int = 0
    seconds_to_recover: float = 0.0
    forged: int = 0
    restored: int = 0
    forgeries_shown: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        wrong = self.lost or self.duplicated or self.wrong_success or self.unexpected or self.forgeries_shown
        return self.items == self.found and not wrong

    def lines(self) -> list[str]:
        return [
            f"calls {self.calls}  items {self.items}  found {self.found}  lost {self.lost}  "
            f"duplicated {self.duplicated}  wrong success flag {self.wrong_success}  unexpected {self.unexpected}",
            f"poison records quarantined {self.quarantined}  batches replayed from the failure queue "
            f"{self.replayed_batches}  recovered {self.seconds_to_recover:.1f} s after the last call",
            f"forged copies of calls put in the log group {self.forged}  restored from the trail's files "
            f"{self.restored}  forgeries shown after reconciliation {self.forgeries_shown}",
            *self.notes,
            "result: "
            + ("exact: every call is in GET /audit once, with the right result" if self.exact else "NOT EXACT"),
        ]


def _client(service: str, endpoint: str, config: Config | None = None) -> Any:
    """A client of the suite's own stack, with its dummy credentials whatever the environment holds."""
    session = boto3.session.Session(
        aws_access_key_id="fault-suite",
        aws_secret_access_key="fault-suite",  # noqa: S106 - moto accepts any secret
        region_name="us-east-1",
    )
    return session.client(service, endpoint_url=endpoint, config=config)  # type: ignore[call-overload]


class _Workload:
    """Mixed calls with their ground truth; thread-safe."""

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._lock = threading.Lock()
        self.expected: list[Expected] = []
        self.calls = 0
        self.errors: Counter[str] = Counter()
        self._local = threading.local()

    def _client(self) -> Any:
        if not hasattr(self._local, "client"):
            with self._lock:  # boto3 sessions are not thread-safe to build from
                self._local.client = _client("dynamodb", self._endpoint, _NO_RETRIES)
        return self._local.client

    def _record(self, *expected: Expected) -> None:
        with self._lock:
            self.expected.extend(expected)

    def call(self, n: int) -> None:
        client = self._client()
        with self._lock:
            self.calls += 1
        key = f"c{n}"
        kind = n % 7
        try:
            if kind == 0:
                client.put_item(TableName=TABLE, Item={"id": {"S": key}, "v": {"N": "1"}})
                self._record((key, "Put", True))
            elif kind == 1:
                client.put_item(TableName=TABLE, Item={"id": {"S": key}})
                client.update_item(
                    TableName=TABLE,
                    Key={"id": {"S": key}},
                    UpdateExpression="SET v = :v",
                    ExpressionAttributeValues={":v": {"N": "2"}},
                )
                self._record((key, "Put", True))
                self._record((key, "Update", True))
            elif kind == 2:
                with contextlib.suppress(client.exceptions.ConditionalCheckFailedException):
                    client.update_item(
                        TableName=TABLE,
                        Key={"id": {"S": key}},
                        UpdateExpression="SET v = :v",
                        ConditionExpression="attribute_exists(id)",
                        ExpressionAttributeValues={":v": {"N": "3"}},
                    )
                self._record((key, "Update", False))
            elif kind == 3:
                client.delete_item(TableName=TABLE, Key={"id": {"S": key}})
                self._record((key, "Delete", True))
            elif kind == 4:
                keys = [f"{key}-{i}" for i in range(5)]
                client.batch_write_item(
                    RequestItems={TABLE: [{"PutRequest": {"Item": {"id": {"S": k}}}} for k in keys]}
                )
                self._record(*[(k, "Put", True) for k in keys])
            elif kind == 5:
                keys = [f"{key}-{i}" for i in range(3)]
                client.transact_write_items(
                    TransactItems=[{"Put": {"TableName": TABLE, "Item": {"id": {"S": k}}}} for k in keys]
                )
                self._record(*[(k, "Put", True) for k in keys])
            else:
                keys = [f"{key}-{i}" for i in range(2)]
                check = {
                    "ConditionCheck": {
                        "TableName": TABLE,
                        "Key": {"id": {"S": f"{key}-never"}},
                        "ConditionExpression": "attribute_exists(id)",
                    }
                }
                items = [{"Put": {"TableName": TABLE, "Item": {"id": {"S": k}}}} for k in keys]
                with contextlib.suppress(client.exceptions.TransactionCanceledException):
                    client.transact_write_items(TransactItems=[*items, check])
                self._record(*[(k, "Put", False) for k in keys], (f"{key}-never", "ConditionCheck", False))
        except ClientError as exc:  # an unexpected answer: the call is left out of the ground truth, and named
            with self._lock:
                self.errors[exc.response.get("Error", {}).get("Code", "?")] += 1


def run_suite(calls: int = 3000, threads: int = 12, outage_seconds: float = 20.0, progress: Any = print) -> SuiteReport:
    """Run the suite on a stack of its own; the report says whether the trail was exact."""
    aws_port, api_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "DEUTZIA_"))}
    env.update(
        DEUTZIA_AWS_PORT=str(aws_port),
        DEUTZIA_API_PORT=str(api_port),
        DEUTZIA_FIRST_RETRY_SECONDS="0.02",  # the poller's ten retries span seconds, so the outage outlasts them
        # Reconciliation only when the suite runs it: the fast path alone must recover every call, and the forgeries
        # are then restored by the suite's own run.
        DEUTZIA_RECONCILE_INTERVAL="86400",
        AWS_ACCESS_KEY_ID="fault-suite",
        AWS_SECRET_ACCESS_KEY="fault-suite",  # noqa: S106 - moto accepts any secret
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
    )
    endpoint, api = f"http://127.0.0.1:{aws_port}", f"http://127.0.0.1:{api_port}"
    stack = StackProcess(["up", "--no-poller"], env)
    poller: StackProcess | None = None
    pollers: list[StackProcess] = []
    report = SuiteReport()
    try:
        stack.wait_for_line("ready")
        poller = StackProcess(["poll"], env)
        pollers.append(poller)
        poller.wait_for_line("polling")
        dynamodb = _client("dynamodb", endpoint)
        create_keyed_table(dynamodb, TABLE)
        workload = _Workload(endpoint)
        progress(f"faults: {calls} mixed calls from {threads} threads on {endpoint}")
        order = list(range(calls))
        random.Random(7).shuffle(order)  # noqa: S311 - a repeatable order, not a secret
        done = threading.Event()
        started = time.monotonic()

        def gave_up() -> bool:
            return any("gave up on" in line for child in pollers for line in child.lines)

        def faults() -> None:
            time.sleep(1.0)
            _s3_outage(endpoint, "deutzia-audit", _MAX_OUTAGE_SECONDS)
            began = time.monotonic()
            progress(f"faults: S3 refuses audit writes (at least {outage_seconds:g} s, until the retries run out)")
            kinesis = _client("kinesis", endpoint)
            kinesis.put_record(StreamName="deutzia-audit-events", Data=b"\x00poison, not gzip", PartitionKey="p")
            progress("faults: a poison record is on the stream")
            while time.monotonic() - began < _MAX_OUTAGE_SECONDS and (
                time.monotonic() - began < outage_seconds or not gave_up()
            ):
                time.sleep(0.2)
            _end_s3_outage(endpoint)
            progress(f"faults: S3 is back after {time.monotonic() - began:.0f} s")
            time.sleep(2.0)
            nonlocal poller
            assert poller is not None
            poller.stop(kill=True)
            progress("faults: the poller is killed (SIGKILL) mid-stream")
            time.sleep(1.0)
            poller = StackProcess(["poll"], env)
            pollers.append(poller)
            poller.wait_for_line("polling")
            progress("faults: the poller is restarted")
            done.set()

        fault_thread = threading.Thread(target=faults, daemon=True)
        fault_thread.start()
        # Calls are spread over the outage and the poller's restart, so that every fault meets calls in flight.
        pace = (outage_seconds + 8) / max(calls, 1)
        with _pool(threads) as pool:
            for index, n in enumerate(order):
                pool.submit(workload.call, n)
                time.sleep(max(0.0, started + index * pace - time.monotonic()))
                if index and index % 500 == 0:
                    progress(f"faults: {index}/{calls} calls sent")
        last_call = time.monotonic()
        progress(f"faults: {workload.calls} calls made in {last_call - started:.0f} s; waiting for the trail")
        done.wait(_MAX_OUTAGE_SECONDS + 60)
        recovered = _verify(api, workload, last_call, progress)
        forged = _forge(endpoint, FORGED_CALLS)
        progress(f"faults: {len(forged)} forged copies of the table's calls are put in the trail's log group")
        _wait_for_forgeries(api, len(forged))
        # A reconciliation of today checks up to DEUTZIA_RECONCILE_SETTLE_SECONDS (10) ago: past the forged calls.
        latest = max((_epoch(str(event["eventTime"])) for event in forged), default=0.0)
        time.sleep(max(0.0, latest + 12 - time.time()))
        reconciliation = StackProcess(["reconcile"], env)
        reconciliation.process.wait(timeout=300)
        reconciliation.stop()  # its output read to the end
        progress(f"faults: reconciliation exited {reconciliation.process.returncode} (1: records it does not confirm)")
        report = _verify(api, workload, last_call, progress)
        report.seconds_to_recover = recovered.seconds_to_recover
        first_day = min((str(event["eventTime"])[:10] for event in forged), default=None)
        report.forged, report.restored = len(forged), _restored_since(api, first_day) if first_day else 0
        report.forgeries_shown = sum(entry["principal_arn"] == _FORGER for entry in _history(api))
        report.quarantined = _count(endpoint, "quarantine/")
        report.replayed_batches = sum("gave up on" in line for child in pollers for line in child.lines)
        if workload.errors:
            report.notes.append(f"calls that got an unexpected error (left out): {dict(workload.errors)}")
    finally:
        if poller is not None:
            poller.stop()
        stack.stop()
    return report


@contextlib.contextmanager
def _pool(threads: int) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        yield pool


def _s3_outage(endpoint: str, bucket: str, seconds: float) -> None:
    body = json.dumps({"bucket": bucket, "seconds": seconds, "code": "AccessDenied"}).encode()
    request = urllib.request.Request(f"{endpoint}/_deutzia/faults/s3", data=body, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - the suite's own loopback endpoint
        pass


def _end_s3_outage(endpoint: str) -> None:
    request = urllib.request.Request(f"{endpoint}/_deutzia/faults/s3", method="DELETE")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - the suite's own loopback endpoint
        pass


def _forge(endpoint: str, count: int) -> list[dict[str, Any]]:
    """Put in the trail's log group copies of the table's first `count` single-item calls, from the trail's own
    files, each saying the forger made it with the opposite result; the copies put."""
    s3 = _client("s3", endpoint)
    calls = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="deutzia-trail", Prefix="AWSLogs/"):
        for entry in page.get("Contents", []):
            body = gzip.decompress(s3.get_object(Bucket="deutzia-trail", Key=entry["Key"])["Body"].read())
            calls += [
                event
                for event in json.loads(body)["Records"]
                if event.get("eventName") in ("PutItem", "UpdateItem", "DeleteItem")
                and any(resource["ARN"].endswith(f"table/{TABLE}") for resource in event.get("resources", []))
            ]
    forged = []
    for call in sorted(calls, key=lambda event: (str(event["eventTime"]), str(event["eventID"])))[:count]:
        copy = {**call, "userIdentity": {**call["userIdentity"], "arn": _FORGER}}
        if copy.pop("errorCode", None) is None:
            copy["errorCode"] = "AccessDeniedException"
        copy.pop("errorMessage", None)
        forged.append(copy)
    if forged:
        logs = _client("logs", endpoint)
        logs.create_log_stream(logGroupName=_LOG_GROUP, logStreamName="forger")
        now = int(time.time() * 1000)
        events = [{"timestamp": now, "message": json.dumps(event)} for event in forged]
        logs.put_log_events(logGroupName=_LOG_GROUP, logStreamName="forger", logEvents=events)
    return forged


def _epoch(event_time: str) -> float:
    return datetime.strptime(event_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _restored_since(api: str, day: str) -> int:
    """How many calls reconciliation restored from `day` to today, as GET /audit/coverage says."""
    query = urllib.parse.urlencode({"table": TABLE, "since": day})
    with urllib.request.urlopen(f"{api}/audit/coverage?{query}", timeout=60) as response:  # noqa: S310 - loopback
        days = json.loads(response.read())["days"]
    return sum(int(entry.get("restored", 0)) for entry in days)


def _wait_for_forgeries(api: str, forged: int, timeout: float = 60.0) -> None:
    """Until ingest has recorded every forged copy (GET /audit shows them by the caller they name)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        query = urllib.parse.urlencode({"table": TABLE, "principal": _FORGER, "limit": "1000"})
        with urllib.request.urlopen(f"{api}/audit?{query}", timeout=60) as response:  # noqa: S310 - loopback API
            if len(json.loads(response.read())["entries"]) >= forged:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the {forged} forged calls did not all reach GET /audit in {timeout:g} s")


def _count(endpoint: str, prefix: str) -> int:
    s3 = _client("s3", endpoint)
    return int(s3.list_objects_v2(Bucket="deutzia-audit", Prefix=prefix).get("KeyCount", 0))


def _history(api: str) -> list[dict[str, Any]]:
    """Every entry of the table, through GET /audit's pages."""
    entries: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        parameters = {"table": TABLE, "limit": "1000", **({"next_token": token} if token else {})}
        url = f"{api}/audit?{urllib.parse.urlencode(parameters)}"
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - the suite's own loopback API
            page = json.loads(response.read())
        entries += page["entries"]
        token = page["next_token"]
        if not token:
            return entries


def _verify(api: str, workload: _Workload, last_call: float, progress: Any, timeout: float = 300) -> SuiteReport:
    expected = Counter(workload.expected)
    deadline = time.monotonic() + timeout
    while True:
        entries = _history(api)
        found = Counter((json.loads(e["item_key"])["id"], e["operation"], e["success"]) for e in entries)
        if sum(found.values()) >= sum(expected.values()) or time.monotonic() > deadline:
            break
        progress(f"faults: {sum(found.values())}/{sum(expected.values())} items visible")
        time.sleep(3)
    recovered = time.monotonic() - last_call
    by_item = Counter((key, operation) for key, operation, _ in expected)
    seen_items = Counter((key, operation) for key, operation, _ in found.elements())
    report = SuiteReport(calls=workload.calls, items=sum(expected.values()), seconds_to_recover=recovered)
    report.found = sum(min(count, seen_items[item]) for item, count in by_item.items())
    report.lost = sum(max(0, count - seen_items[item]) for item, count in by_item.items())
    report.duplicated = sum(max(0, seen_items[item] - count) for item, count in by_item.items())
    report.unexpected = sum(count for item, count in seen_items.items() if item not in by_item)
    report.wrong_success = sum(max(0, count - found[entry]) for entry, count in expected.items()) - report.lost
    event_items = Counter((e["event_id"], e["item_index"]) for e in entries)
    report.duplicated += sum(count - 1 for count in event_items.values() if count > 1)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make faults", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=12)
    parser.add_argument(
        "--outage",
        type=float,
        default=20.0,
        help="least seconds S3 refuses audit writes (then until the retries run out)",
    )
    arguments = parser.parse_args(argv)
    report = run_suite(
        arguments.calls, arguments.threads, arguments.outage, progress=lambda line: print(line, flush=True)
    )
    print("\n".join(report.lines()))
    return 0 if report.exact else 1


if __name__ == "__main__":
    sys.exit(main())
