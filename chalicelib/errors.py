"""Every error Deutzia raises on purpose, in one hierarchy, so callers map them to HTTP codes or retries in one place.

Messages name the thing that is wrong (a parameter, a variable, a reason) and never carry item key values.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError


class DeutziaError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(DeutziaError):
    """A required environment variable is missing or malformed."""


class InvalidRequestError(DeutziaError):
    """A request parameter is missing or malformed (HTTP 400)."""

    def __init__(self, parameter: str, problem: str) -> None:
        super().__init__(f"{parameter}: {problem}")
        self.parameter = parameter


class UnknownTableError(DeutziaError):
    """The table is not among the audited tables (HTTP 404)."""


class QueryError(DeutziaError):
    """The query engine failed (HTTP 502)."""


class QueryUnavailableError(QueryError):
    """The query engine is unavailable or throttling; a later retry may succeed (HTTP 503)."""


class QueryTimeoutError(QueryError):
    """The query engine did not answer within the deadline (HTTP 504)."""


class QueryStillRunningError(QueryTimeoutError):
    """The query outlived the deadline and was left running: a later call can read its answer (`execution_id`)."""

    def __init__(self, message: str, execution_id: str) -> None:
        super().__init__(message)
        self.execution_id = execution_id


class QueryTooLargeError(QueryError):
    """Athena cancelled the query at its workgroup's scan limit (BytesScannedCutoffPerQuery): it must read less."""


class UndecodableRecordError(DeutziaError):
    """A Kinesis record's data can never be processed: it goes to quarantine, not back to the stream."""


class StoreError(DeutziaError):
    """Writing to the audit store failed; the Kinesis record is retried."""


class MalformedEventError(DeutziaError):
    """A DynamoDB data event lacks a field without which it cannot be recorded (its id or its time)."""


class InexactNumberError(DeutziaError):
    """An event holds a float where a record keeps the number as written: read it again with the exact parser."""


def aws_error_code(exc: ClientError | BotoCoreError) -> str:
    """An AWS error's code, or a client-side failure's kind (ReadTimeoutError); never its message, which may name
    internals."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "Unknown")[:100]
    return type(exc).__name__
