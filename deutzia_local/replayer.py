"""Plays the SQS event source mapping of `replay_failed_batches`: takes each message of the local failure queue,
invokes the deployed handler in-process with a Lambda-shaped SQS event, and deletes the message only when the
handler returns. A failed replay makes the message visible again at once, for the next drain.

The stack drains the queue every few seconds (as the mapping would poll it); `make replay` drains it once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deutzia_local.lambda_context import LambdaContext
from deutzia_local.periodic import Periodic

logger = logging.getLogger("deutzia.replayer")

Handler = Callable[[dict[str, Any], Any], Any]
# One drain takes at most this many messages, so a stop is never kept waiting long.
_MAX_MESSAGES_PER_DRAIN = 1000


@dataclass(frozen=True)
class DrainResult:
    """Messages replayed (and deleted) and messages whose replay failed (left in the queue)."""

    replayed: int
    failed: int


# The deployed function's context, as the template configures it (a 15-minute timeout).
_CONTEXT = LambdaContext("replay_failed_batches", timeout_millis=900_000)


class FailureQueueReplayer:
    """Replays the failure queue's messages through `handler`, one message per invocation (batch size 1)."""

    def __init__(self, sqs: Any, queue_url: str, handler: Handler, interval: float = 5.0) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._handler = handler
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
        self._queue_arn = str(attributes["QueueArn"])
        self._schedule = Periodic("failure-replayer", interval, self.drain, logger)

    def start(self) -> None:
        self._schedule.start()

    def stop(self) -> None:
        self._schedule.stop()

    def drain(self) -> DrainResult:
        """Replay every message now in the queue once; what fails stays queued."""
        replayed = failed = 0
        seen: set[str] = set()
        while replayed + failed < _MAX_MESSAGES_PER_DRAIN and not self._schedule.stopping.is_set():
            messages = self._sqs.receive_message(
                QueueUrl=self._queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60, AttributeNames=["All"]
            ).get("Messages", [])
            fresh = [message for message in messages if message["MessageId"] not in seen]
            if not fresh:
                for message in messages:  # seen in this drain already: leave them for the next one
                    self._release(message)
                break
            for message in messages:
                if message["MessageId"] in seen:
                    self._release(message)
                    continue
                seen.add(message["MessageId"])
                if self._replay(message):
                    self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"])
                    replayed += 1
                else:
                    self._release(message)
                    failed += 1
        return DrainResult(replayed, failed)

    def _replay(self, message: dict[str, Any]) -> bool:
        event = {
            "Records": [
                {
                    "messageId": message["MessageId"],
                    "receiptHandle": message["ReceiptHandle"],
                    "body": message["Body"],
                    "attributes": message.get("Attributes", {}),
                    "messageAttributes": {},
                    "md5OfBody": message.get("MD5OfBody", ""),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self._queue_arn,
                    "awsRegion": self._queue_arn.split(":")[3],
                }
            ]
        }
        try:
            self._handler(event, _CONTEXT)
        except Exception:
            logger.exception("replay_failed_batches raised; the message stays in the failure queue")
            return False
        return True

    def _release(self, message: dict[str, Any]) -> None:
        self._sqs.change_message_visibility(
            QueueUrl=self._queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
