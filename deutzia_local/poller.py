"""Plays the Lambda event source mapping: reads every shard of the stream and invokes the ingest handler in-process
with Lambda-shaped events, as the deployed mapping does.

Same settings as the template (batch size, batching window, TRIM_HORIZON, retries); honours `batchItemFailures`
(resumes at the lowest failed record); a raised error retries the whole batch; retries back off exponentially, as
Lambda's do, so they span minutes, not seconds; a batch that exhausts its retries goes to the failure queue as
Lambda's on-failure record (for replay_failed_batches) and is skipped. Checkpoints live in the local stack's own
S3 (as long as the stack), written after every batch, so a restarted poller neither loses nor repeats records.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chalicelib.ingest import BATCH_SIZE, MAXIMUM_BATCHING_WINDOW_SECONDS
from chalicelib.replay import lambda_kinesis_record
from deutzia_local.lambda_context import LambdaContext
from deutzia_local.periodic import Periodic

logger = logging.getLogger("deutzia.poller")

# As the template's mapping: MaximumRetryAttempts.
MAXIMUM_RETRY_ATTEMPTS = 10
# The wait before retry n is FIRST_RETRY_SECONDS * 2**(n-1), at most 60 times the first: ten retries span ~5 minutes.
FIRST_RETRY_SECONDS = 1.0
_MAX_RETRY_FACTOR = 60
_IDLE_SECONDS = 0.2

Handler = Callable[[dict[str, Any], Any], Any]


# The deployed function's context, as the template configures it.
_CONTEXT = LambdaContext("ingest_audit_events", timeout_millis=60_000)


class KinesisPoller:
    """Polls one stream's shards and feeds the handler, checkpointing per shard."""

    def __init__(
        self,
        kinesis: Any,
        s3: Any,
        sqs: Any,
        stream_name: str,
        state_bucket: str,
        failure_queue_url: str,
        handler: Handler,
        batching_window: float = MAXIMUM_BATCHING_WINDOW_SECONDS,
        first_retry_seconds: float = FIRST_RETRY_SECONDS,
    ) -> None:
        self._kinesis = kinesis
        self._s3 = s3
        self._sqs = sqs
        self._stream = stream_name
        self._state_bucket = state_bucket
        self._failure_queue_url = failure_queue_url
        self._handler = handler
        self._batching_window = batching_window
        self._first_retry = first_retry_seconds
        self._schedule = Periodic("kinesis-poller", _IDLE_SECONDS, self.poll_once, logger, again_when_busy=True)
        self._iterators: dict[str, str | None] = {}
        self._attempts: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        description = kinesis.describe_stream_summary(StreamName=stream_name)["StreamDescriptionSummary"]
        self._stream_arn = str(description["StreamARN"])
        self._region = self._stream_arn.split(":")[3]

    def start(self) -> None:
        self._schedule.start()

    def stop(self) -> None:
        self._schedule.stop()

    def run(self) -> None:
        """Poll until stopped, in this thread."""
        self._schedule.run()

    def poll_once(self) -> bool:
        """One batch from every shard that has one; True when any had records (the next poll goes at once)."""
        return any([self.poll_shard(shard) for shard in self._shards()])

    def _shards(self) -> list[str]:
        shards = self._kinesis.list_shards(StreamName=self._stream)["Shards"]
        return [str(shard["ShardId"]) for shard in shards]

    def poll_shard(self, shard_id: str) -> bool:
        """Read and process one batch of the shard; False when there was nothing to read, or its retry must wait."""
        if time.monotonic() < self._retry_at.get(shard_id, 0.0):
            return False
        records = self._read_batch(shard_id)
        if not records:
            return False
        event = {"Records": [lambda_kinesis_record(record, shard_id, self._stream_arn) for record in records]}
        failed_from = self._invoke(event, records)
        if failed_from is None:
            self._checkpoint(shard_id, str(records[-1]["SequenceNumber"]))
            self._attempts.pop(shard_id, None)
            return True
        attempts = self._attempts.get(shard_id, 0) + 1
        processed = records[:failed_from]
        if processed:
            self._checkpoint(shard_id, str(processed[-1]["SequenceNumber"]))
            attempts = 1  # progress was made: the retry is of a new, smaller batch
        if attempts > MAXIMUM_RETRY_ATTEMPTS:
            self._give_up(shard_id, records[failed_from:], attempts)
            self._checkpoint(shard_id, str(records[-1]["SequenceNumber"]))
            attempts = 0
        self._attempts[shard_id] = attempts
        self._iterators[shard_id] = None  # re-read from the checkpoint
        if attempts:
            self._retry_at[shard_id] = time.monotonic() + self.retry_delay(attempts)
        return True

    def retry_delay(self, attempt: int) -> float:
        """The wait before retry number `attempt` (from 1)."""
        return float(min(2 ** (attempt - 1), _MAX_RETRY_FACTOR) * self._first_retry)

    def _read_batch(self, shard_id: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        deadline = time.monotonic() + self._batching_window
        while len(records) < BATCH_SIZE:
            iterator = self._iterators.get(shard_id) or self._iterator_from_checkpoint(shard_id)
            response = self._kinesis.get_records(ShardIterator=iterator, Limit=BATCH_SIZE - len(records))
            self._iterators[shard_id] = response.get("NextShardIterator")
            records += response["Records"]
            if not records or time.monotonic() >= deadline or self._schedule.stopping.is_set():
                break
            if not response["Records"]:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        return records

    def _invoke(self, event: dict[str, Any], records: list[dict[str, Any]]) -> int | None:
        """Index of the first record to retry, or None when the whole batch succeeded."""
        try:
            response = self._handler(event, _CONTEXT)
        except Exception:
            logger.exception("ingest_audit_events raised; the batch will be retried")
            return 0
        failures = (response or {}).get("batchItemFailures") or []
        if not failures:
            return None
        failed = {str(failure.get("itemIdentifier")) for failure in failures}
        positions = [i for i, record in enumerate(records) if str(record["SequenceNumber"]) in failed]
        return min(positions) if positions else 0

    def _checkpoint_key(self, shard_id: str) -> str:
        return f"checkpoints/{self._stream}/{shard_id}"

    def _iterator_from_checkpoint(self, shard_id: str) -> str:
        try:
            body = self._s3.get_object(Bucket=self._state_bucket, Key=self._checkpoint_key(shard_id))["Body"].read()
        except self._s3.exceptions.NoSuchKey:
            body = b""
        arguments: dict[str, str] = {"StreamName": self._stream, "ShardId": shard_id}
        if body:
            arguments.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=body.decode())
        else:
            arguments["ShardIteratorType"] = "TRIM_HORIZON"
        return str(self._kinesis.get_shard_iterator(**arguments)["ShardIterator"])

    def _checkpoint(self, shard_id: str, sequence_number: str) -> None:
        self._s3.put_object(
            Bucket=self._state_bucket, Key=self._checkpoint_key(shard_id), Body=sequence_number.encode()
        )

    def _give_up(self, shard_id: str, records: list[dict[str, Any]], attempts: int) -> None:
        """Send the exhausted batch's metadata to the failure queue, as Lambda's on-failure destination does."""
        first, last = records[0], records[-1]
        message = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": _CONTEXT.invoked_function_arn,
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": attempts,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(),
            "KinesisBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": str(first["ApproximateArrivalTimestamp"]),
                "approximateArrivalOfLastRecord": str(last["ApproximateArrivalTimestamp"]),
                "batchSize": len(records),
                "streamArn": self._stream_arn,
            },
        }
        self._sqs.send_message(QueueUrl=self._failure_queue_url, MessageBody=json.dumps(message))
        logger.error("gave up on %d records of %s after %d attempts", len(records), shard_id, attempts)
