"""The Chalice app against moto's server on loopback: S3 for records, DuckDB reading them back over HTTP."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from chalice.test import Client

import app as deutzia_app
from tests.factories import kinesis_event, logs_payload

_bucket_numbers = itertools.count()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return boto3.client("s3")


@pytest.fixture
def audit_bucket(s3: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket per test, and the app configured for it, with its components rebuilt."""
    bucket = f"deutzia-audit-{next(_bucket_numbers)}"
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setenv("AUDIT_BUCKET", bucket)
    monkeypatch.setenv("AUDIT_PREFIX", "audit/")
    monkeypatch.setenv("AUDITED_TABLES", "Music,Books,Tä'ble")
    monkeypatch.setenv("QUERY_BACKEND", "duckdb")
    monkeypatch.setenv("REPORT_BATCH_ITEM_FAILURES", "true")
    deutzia_app.get_audit_store.cache_clear()
    deutzia_app.get_query_engine.cache_clear()
    deutzia_app.get_trail_check.cache_clear()
    deutzia_app.get_table_notes.cache_clear()
    return bucket


@pytest.fixture
def client(audit_bucket: str) -> Iterator[Client]:
    """The app under a stage config.json does not name, so only the test's environment applies."""
    with Client(deutzia_app.app, stage_name="functional-test") as test_client:
        yield test_client


@pytest.fixture
def ingest(client: Client) -> Callable[..., Any]:
    """Deliver CloudTrail events through `ingest_audit_events`, one Kinesis record per list of events."""

    def deliver(*batches: list[Any]) -> Any:
        event = kinesis_event([logs_payload(events) for events in batches])
        response = client.lambda_.invoke("ingest_audit_events", event)
        assert response.payload == {"batchItemFailures": []}
        return event

    return deliver
