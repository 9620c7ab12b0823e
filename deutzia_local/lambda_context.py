"""The parts of Lambda's context object a handler may read, for the local stack's in-process invocations (the
Kinesis poller's and the failure-queue replayer's)."""

from __future__ import annotations

from dataclasses import dataclass

from deutzia_local.settings import ACCOUNT_ID


@dataclass(frozen=True)
class LambdaContext:
    """One function's context: its name and how long an invocation may run, as the template configures it."""

    function_name: str
    timeout_millis: int
    memory_limit_in_mb: int = 128
    aws_request_id: str = ""

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_millis
