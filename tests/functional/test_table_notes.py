"""GET /audit/coverage says what DynamoDB (moto's, on loopback) says of the table that no call made: Time to Live, a
table created again or restored from a backup, a table deleted."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from chalice.test import Client

import app as deutzia_app
from chalicelib.table_notes import CREATED, EXPIRY, GONE

_numbers = itertools.count()


@pytest.fixture
def table(client: Client, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new table in moto, audited (moto's tables outlive a test)."""
    name = f"Notes-{next(_numbers)}-{datetime.now(UTC):%H%M%S%f}"
    _create(name)
    monkeypatch.setenv("AUDITED_TABLES", f"Music,{name}")
    return name


def _create(name: str) -> None:
    boto3.client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _notes(client: Client, table: str) -> list[dict[str, Any]]:
    deutzia_app.get_table_notes.cache_clear()  # the API reads again after a minute; here, at once
    response = client.http.get(f"/audit/coverage?table={table}")
    assert response.status_code == 200
    notes: list[dict[str, Any]] = json.loads(response.body)["table_notes"]
    return notes


def test_a_table_says_when_it_was_created_and_then_that_time_to_live_deletes_its_items(
    client: Client, table: str
) -> None:
    (created,) = _notes(client, table)
    assert created["kind"] == CREATED
    described = boto3.client("dynamodb").describe_table(TableName=table)["Table"]["CreationDateTime"]
    assert created["time"] == described.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    boto3.client("dynamodb").update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )

    expiry, created_again = _notes(client, table)
    assert expiry["kind"] == EXPIRY
    assert f"deletes items of {table} once the time in expires_at has passed, by itself" in expiry["text"]
    assert created_again == created


def test_a_table_restored_from_a_backup_under_its_own_name_names_the_backup(client: Client, table: str) -> None:
    dynamodb = boto3.client("dynamodb")
    backup = dynamodb.create_backup(TableName=table, BackupName="before")["BackupDetails"]["BackupArn"]
    dynamodb.delete_table(TableName=table)
    (gone,) = _notes(client, table)
    assert gone["kind"] == GONE
    assert f"AttributeKey=ResourceName,AttributeValue={table})" in gone["text"]

    dynamodb.restore_table_from_backup(TargetTableName=table, BackupArn=backup)

    (restored,) = _notes(client, table)
    assert restored["kind"] == CREATED
    assert f", restored from the backup {backup} as it was at " in restored["text"]
    assert restored["text"].endswith(f"entries before then are of an earlier table named {table}, deleted since")


def test_the_answer_is_kept_a_minute(client: Client, table: str) -> None:
    first = _notes(client, table)
    boto3.client("dynamodb").delete_table(TableName=table)
    # Within the minute, the same answer: DynamoDB is not asked for each request.
    assert json.loads(client.http.get(f"/audit/coverage?table={table}").body)["table_notes"] == first
    assert [note["kind"] for note in _notes(client, table)] == [GONE]
