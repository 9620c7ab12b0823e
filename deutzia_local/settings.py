"""The local stack's names, ports and environment: one place, so the stack, the poller process, the demo and the
tests agree. The local stack only ever talks to its own endpoint on 127.0.0.1, with dummy credentials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from chalicelib.config import number
from chalicelib.errors import ConfigError

HOST = "127.0.0.1"
ACCOUNT_ID = "123456789012"
DEFAULT_AWS_PORT = 4566
DEFAULT_API_PORT = 8000


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(f"environment variable {name} must be a port number, not {raw!r}")
    return int(raw)


def _rate(name: str) -> float:
    """A fraction from 0 to 1 (unset: 0)."""
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a fraction from 0 to 1, not {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"environment variable {name} must be a fraction from 0 to 1, not {raw!r}")
    return value


@dataclass(frozen=True)
class LocalSettings:
    """Where the local stack listens and what it names its resources."""

    aws_port: int
    api_port: int
    region: str = "us-east-1"
    audit_bucket: str = "deutzia-audit"
    trail_bucket: str = "deutzia-trail"
    state_bucket: str = "deutzia-local-state"
    stream: str = "deutzia-audit-events"
    log_group: str = "/deutzia/local/cloudtrail"
    subscription_filter: str = "deutzia-to-kinesis"
    failure_queue: str = "deutzia-ingest-failures"
    glue_database: str = "deutzia"
    glue_table: str = "audit_fresh"
    trail: str = "deutzia-local"
    crawler_interval: float = 5.0
    replay_interval: float = 5.0
    first_retry_seconds: float = 1.0
    compact_interval: float = 10.0
    compact_grace: float = 5.0
    reconcile_interval: float = 30.0
    reconcile_settle_seconds: float = 10.0
    log_drop_rate: float = 0.0

    @classmethod
    def from_environment(cls) -> LocalSettings:
        """Ports from DEUTZIA_AWS_PORT (default 4566) and DEUTZIA_API_PORT (default 8000)."""
        from chalicelib.superseded import MAX_GRACE_SECONDS, grace_seconds_setting

        compact_interval = number("DEUTZIA_COMPACT_INTERVAL", 10.0)
        return cls(
            aws_port=_port("DEUTZIA_AWS_PORT", DEFAULT_AWS_PORT),
            api_port=_port("DEUTZIA_API_PORT", DEFAULT_API_PORT),
            first_retry_seconds=number("DEUTZIA_FIRST_RETRY_SECONDS", 1.0),
            compact_interval=compact_interval,
            # Half the interval: each run deletes what the one before replaced, so the fresh tier holds two intervals.
            compact_grace=grace_seconds_setting(min(compact_interval / 2, MAX_GRACE_SECONDS)),
            reconcile_interval=number("DEUTZIA_RECONCILE_INTERVAL", 30.0),
            reconcile_settle_seconds=number("DEUTZIA_RECONCILE_SETTLE_SECONDS", 10.0),
            log_drop_rate=_rate("DEUTZIA_LOCAL_LOG_DROP_RATE"),
        )

    @property
    def aws_endpoint(self) -> str:
        return f"http://{HOST}:{self.aws_port}"

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    def apply_to_environment(self) -> None:
        """The environment the app and every client in this process use: the local endpoint, never AWS."""
        for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN"):
            os.environ.pop(variable, None)
        os.environ.update(
            AWS_ENDPOINT_URL=self.aws_endpoint,
            AWS_ACCESS_KEY_ID="deutzia-local",
            AWS_SECRET_ACCESS_KEY="deutzia-local",  # noqa: S106 - moto accepts any secret
            AWS_DEFAULT_REGION=self.region,
            AWS_EC2_METADATA_DISABLED="true",
            AUDIT_BUCKET=self.audit_bucket,
            AUDIT_PREFIX="audit/",
            COMPACTED_PREFIX="compacted/",
            TRAIL_BUCKET=self.trail_bucket,
            TRAIL_PREFIX=f"AWSLogs/{ACCOUNT_ID}/CloudTrail/",
            TRAIL_ARN=self.trail,
            TRAIL_LOG_GROUP=self.log_group,
            AUDIT_STREAM=self.stream,
            INGEST_FAILURE_QUEUE=self.failure_queue,
            AUDITED_TABLES="*",
            AUDIT_READS="true",
            QUERY_BACKEND="duckdb",
            REPORT_BATCH_ITEM_FAILURES="true",
            POWERTOOLS_SERVICE_NAME="deutzia",
        )
        quiet_ingest_logs()


def quiet_ingest_logs() -> None:
    """Hide the ingest function's per-batch count lines, which would drown the demo, unless POWERTOOLS_LOG_LEVEL is
    set (INFO shows them). Powertools reads the level when the logger is made, at import: call this first."""
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
