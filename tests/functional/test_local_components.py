"""The local stack's poller and crawler against moto's server: the Lambda mapping's semantics, the crawler's
partitions and columns."""

from __future__ import annotations

import gzip
import itertools
import json
from typing import Any

import boto3
import pytest

from chalicelib.schema import AUDIT_COLUMNS
from deutzia_local.crawler import LocalCrawler
from deutzia_local.poller import FIRST_RETRY_SECONDS, MAXIMUM_RETRY_ATTEMPTS, KinesisPoller

_names = itertools.count()


class ScriptedHandler:
    """Plays ingest_audit_events: fails the records whose data is in `failing` (`raise` fails the whole batch)."""

    def __init__(self, failing: set[bytes], mode: str = "report") -> None:
        self.failing = failing
        self.mode = mode
        self.seen: list[list[str]] = []

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        import base64

        records = event["Records"]
        self.seen.append([base64.b64decode(r["kinesis"]["data"]).decode() for r in records])
        failed = [r for r in records if base64.b64decode(r["kinesis"]["data"]) in self.failing]
        if failed and self.mode == "raise":
            raise RuntimeError("S3 unavailable")
        return {"batchItemFailures": [{"itemIdentifier": r["kinesis"]["sequenceNumber"]} for r in failed]}


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return {service: boto3.client(service) for service in ("kinesis", "s3", "sqs", "glue")}


def _poller(
    aws: dict[str, Any], handler: ScriptedHandler, records: list[bytes], first_retry_seconds: float = 0
) -> tuple[KinesisPoller, str]:
    name = f"poller-{next(_names)}"
    aws["kinesis"].create_stream(StreamName=name, ShardCount=1)
    for data in records:
        aws["kinesis"].put_record(StreamName=name, Data=data, PartitionKey="p")
    aws["s3"].create_bucket(Bucket=name)
    queue_url = aws["sqs"].create_queue(QueueName=name)["QueueUrl"]
    poller = KinesisPoller(
        aws["kinesis"],
        aws["s3"],
        aws["sqs"],
        name,
        name,
        queue_url,
        handler,
        batching_window=0,
        first_retry_seconds=first_retry_seconds,
    )
    return poller, queue_url


def _drain(poller: KinesisPoller, rounds: int = 40) -> None:
    for _ in range(rounds):
        if not poller.poll_shard("shardId-000000000000"):
            return


def test_a_reported_failure_is_retried_from_that_record_and_nothing_before_it_repeats(aws: dict[str, Any]) -> None:
    handler = ScriptedHandler(failing={b"r2"})
    poller, _ = _poller(aws, handler, [b"r0", b"r1", b"r2", b"r3"])
    assert poller.poll_shard("shardId-000000000000")
    handler.failing = set()
    _drain(poller)
    assert handler.seen == [["r0", "r1", "r2", "r3"], ["r2", "r3"]]


def test_a_raised_error_retries_the_whole_batch(aws: dict[str, Any]) -> None:
    handler = ScriptedHandler(failing={b"r1"}, mode="raise")
    poller, _ = _poller(aws, handler, [b"r0", b"r1"])
    poller.poll_shard("shardId-000000000000")
    handler.failing = set()
    _drain(poller)
    assert handler.seen == [["r0", "r1"], ["r0", "r1"]]


def test_an_exhausted_batch_goes_to_the_failure_queue_and_the_shard_moves_on(aws: dict[str, Any]) -> None:
    handler = ScriptedHandler(failing={b"poison"})
    poller, queue_url = _poller(aws, handler, [b"ok", b"poison", b"after"])
    _drain(poller)
    assert handler.seen[0] == ["ok", "poison", "after"]
    assert handler.seen[1:] == [["poison", "after"]] * MAXIMUM_RETRY_ATTEMPTS
    (message,) = aws["sqs"].receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    body = json.loads(message["Body"])
    assert body["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert body["KinesisBatchInfo"]["batchSize"] == 2
    assert body["KinesisBatchInfo"]["shardId"] == "shardId-000000000000"
    assert not poller.poll_shard("shardId-000000000000")


def test_retries_back_off_exponentially_over_minutes_like_lambdas(aws: dict[str, Any]) -> None:
    handler = ScriptedHandler(failing={b"r0"})
    poller, _ = _poller(aws, handler, [b"r0"], first_retry_seconds=FIRST_RETRY_SECONDS)
    assert poller.poll_shard("shardId-000000000000")
    assert not poller.poll_shard("shardId-000000000000")  # the retry is not due yet
    assert len(handler.seen) == 1
    delays = [poller.retry_delay(attempt) for attempt in range(1, MAXIMUM_RETRY_ATTEMPTS + 1)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == 60.0
    assert sum(delays) > 240  # an S3 outage of a few minutes does not exhaust them


def test_a_new_poller_resumes_after_the_checkpoint(aws: dict[str, Any]) -> None:
    handler = ScriptedHandler(failing=set())
    poller, queue_url = _poller(aws, handler, [b"a", b"b"])
    _drain(poller)
    stream = str(queue_url).rsplit("/", 1)[-1]  # the stream, bucket and queue share one name
    aws["kinesis"].put_record(StreamName=stream, Data=b"c", PartitionKey="p")
    second = ScriptedHandler(failing=set())
    restarted = KinesisPoller(
        aws["kinesis"], aws["s3"], aws["sqs"], stream, stream, queue_url, second, batching_window=0
    )
    _drain(restarted)
    assert handler.seen == [["a", "b"]]
    assert second.seen == [["c"]]


def test_crawler_registers_new_partitions_and_new_columns(aws: dict[str, Any]) -> None:
    name = f"crawl-{next(_names)}"
    aws["s3"].create_bucket(Bucket=name)
    aws["glue"].create_database(DatabaseInput={"Name": name})
    aws["glue"].create_table(
        DatabaseName=name,
        TableInput={
            "Name": "audit",
            "PartitionKeys": [{"Name": "table_name", "Type": "string"}, {"Name": "dt", "Type": "string"}],
            "StorageDescriptor": {"Columns": [{"Name": c.name, "Type": c.glue_type} for c in AUDIT_COLUMNS]},
        },
    )
    line = {column.name: None for column in AUDIT_COLUMNS} | {"added_later": "x"}
    body = gzip.compress(json.dumps(line).encode())
    for key in ("audit/table_name=Music/dt=2024-05-01/a.json.gz", "audit/table_name=Music/dt=2024-05-02/b.json.gz"):
        aws["s3"].put_object(Bucket=name, Key=key, Body=body)
    crawler = LocalCrawler(aws["glue"], aws["s3"], name, "audit/", name, "audit", interval=60)
    assert crawler.crawl() == [("Music", "2024-05-01"), ("Music", "2024-05-02")]
    assert crawler.crawl() == []
    partitions = aws["glue"].get_partitions(DatabaseName=name, TableName="audit")["Partitions"]
    assert sorted(tuple(p["Values"]) for p in partitions) == [("Music", "2024-05-01"), ("Music", "2024-05-02")]
    columns = aws["glue"].get_table(DatabaseName=name, Name="audit")["Table"]["StorageDescriptor"]["Columns"]
    assert columns[-1] == {"Name": "added_later", "Type": "string"}
    assert len(columns) == len(AUDIT_COLUMNS) + 1
