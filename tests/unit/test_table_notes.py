"""What DynamoDB says of a table that its items' histories cannot show, from DescribeTable and DescribeTimeToLive as
DynamoDB answers them (botocore's Stubber plays DynamoDB)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.stub import Stubber
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import table_notes
from chalicelib.table_notes import (
    CREATED,
    EXPIRY,
    GONE,
    MAX_NOTE_CHARS,
    MAX_REGIONS_NAMED,
    MAX_TABLES_KEPT,
    REPLICAS,
    UNREAD,
    RecentTableNotes,
    description_notes,
    expiry_note,
    read_table_notes,
)

REGION = "eu-west-1"
CREATED_AT = datetime(2026, 11, 2, 10, 0, 7, tzinfo=UTC)
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:123456789012:table/Orders"
TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def _table(**extra: Any) -> dict[str, Any]:
    """DescribeTable's `Table`, as the API reference shows it (the parts these notes read, and some they do not)."""
    return {
        "TableName": "Orders",
        "TableArn": TABLE_ARN,
        "TableStatus": "ACTIVE",
        "CreationDateTime": CREATED_AT,
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "ItemCount": 0,
        **extra,
    }


def test_time_to_live_names_the_attribute_and_says_no_trail_logs_its_deletions() -> None:
    note = expiry_note("Orders", {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"})
    assert note == {
        "kind": EXPIRY,
        "time": None,
        "text": "DynamoDB's Time to Live deletes items of Orders once the time in expires_at has passed, by itself: no"
        " call makes those deletions, so no trail logs them, and an item's history can end without its Delete",
    }


@pytest.mark.parametrize(
    ("status", "said"), [("ENABLING", True), ("ENABLED", True), ("DISABLING", True), ("DISABLED", False), (None, False)]
)
def test_time_to_live_is_named_while_it_may_delete(status: str | None, said: bool) -> None:
    note = expiry_note("Orders", {"TimeToLiveStatus": status, "AttributeName": "ttl"} if status else {})
    assert (note is not None) == said
    if status == "DISABLING":
        assert note is not None
        assert "(its Time to Live is being turned off)" in note["text"]


def test_an_attribute_name_that_could_read_as_part_of_the_sentence_is_quoted() -> None:
    note = expiry_note("Orders", {"TimeToLiveStatus": "ENABLED", "AttributeName": "x has passed, never"})
    assert note is not None
    assert 'the time in "x has passed, never" has passed' in note["text"]


def test_a_global_tables_other_regions_are_named_and_its_own_is_not() -> None:
    replicas = [
        {"RegionName": REGION, "ReplicaStatus": "ACTIVE"},
        {"RegionName": "us-east-1", "ReplicaStatus": "ACTIVE"},
        {"RegionName": "ap-south-1", "ReplicaStatus": "UPDATING"},
        {"RegionName": "sa-east-1", "ReplicaStatus": "DELETING"},  # on its way out: writes no more
    ]
    replicated, created = description_notes("Orders", REGION, _table(Replicas=replicas))
    assert replicated == {
        "kind": REPLICAS,
        "time": None,
        "text": "Orders is a global table with replicas in ap-south-1, us-east-1: what calls there write reaches it"
        " by replication, with no call here, and the stack's trail logs eu-west-1 only, so those writes are in no"
        " history here (each region's own trail logs its calls)",
    }
    assert created["kind"] == CREATED


def test_a_table_alone_in_its_region_has_no_replica_note() -> None:
    (created,) = description_notes("Orders", REGION, _table(Replicas=[{"RegionName": REGION}]))
    assert created["kind"] == CREATED


def test_many_regions_are_counted_past_the_first_named() -> None:
    regions = [{"RegionName": f"xx-region-{number:02d}"} for number in range(MAX_REGIONS_NAMED + 3)]
    replicated, _ = description_notes("Orders", REGION, _table(Replicas=regions))
    assert f"xx-region-{MAX_REGIONS_NAMED - 1:02d} and 3 more:" in replicated["text"]
    assert f"xx-region-{MAX_REGIONS_NAMED:02d}" not in replicated["text"]


def test_when_the_table_was_created_dates_every_earlier_entry_to_another_table() -> None:
    (created,) = description_notes("Orders", REGION, _table())
    assert created == {
        "kind": CREATED,
        "time": "2026-11-02T10:00:07Z",
        "text": "Orders as it is now was created at 2026-11-02T10:00:07Z (or imported); entries before then are of an"
        " earlier table named Orders, deleted since",
    }


def test_a_restored_table_names_its_backup_or_source_and_the_time_it_was_restored_to() -> None:
    backup = f"{TABLE_ARN}/backup/01700000000000-abcdef12"
    point = CREATED_AT - timedelta(days=3)
    summary = {"SourceBackupArn": backup, "SourceTableArn": TABLE_ARN, "RestoreDateTime": point}
    (from_backup,) = description_notes("Orders", REGION, _table(RestoreSummary={**summary, "RestoreInProgress": False}))
    assert from_backup["text"] == (
        f"Orders as it is now was created at 2026-11-02T10:00:07Z, restored from the backup {backup} as it was at"
        " 2026-10-30T10:00:07Z: each item it holds then is the restored copy, with no call; entries before then are"
        " of an earlier table named Orders, deleted since"
    )
    (to_a_point,) = description_notes("Orders", REGION, _table(RestoreSummary={"SourceTableArn": TABLE_ARN}))
    assert f"restored from {TABLE_ARN}: each item" in to_a_point["text"]


@settings(max_examples=300, deadline=None)
@given(
    description=st.dictionaries(
        st.sampled_from(["Replicas", "CreationDateTime", "RestoreSummary", "TableName"]),
        st.recursive(
            st.none() | st.booleans() | st.text(max_size=700) | st.datetimes(timezones=st.just(UTC)),
            lambda inner: st.lists(inner, max_size=15) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
            max_leaves=40,
        ),
    ),
    expiry=st.dictionaries(
        st.sampled_from(["TimeToLiveStatus", "AttributeName"]),
        st.sampled_from(["ENABLED", "DISABLING", "DISABLED", 7, None]) | st.text(max_size=700),
    ),
)
def test_any_answer_gives_bounded_notes_of_known_kinds(description: dict[str, Any], expiry: dict[str, Any]) -> None:
    notes = description_notes("Orders", REGION, description)
    found = expiry_note("Orders", expiry)
    for note in [*notes, *([found] if found else [])]:
        assert set(note) == {"kind", "time", "text"}
        assert note["kind"] in (EXPIRY, REPLICAS, CREATED)
        assert note["time"] is None or TIME.fullmatch(note["time"])
        assert 0 < len(note["text"]) <= MAX_NOTE_CHARS


def _stubbed() -> tuple[Any, Stubber]:
    client = boto3.client("dynamodb", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    return client, Stubber(client)


def test_both_answers_give_expiry_then_the_tables_own_notes() -> None:
    client, stubber = _stubbed()
    stubber.add_response("describe_table", {"Table": _table()}, {"TableName": "Orders"})
    stubber.add_response(
        "describe_time_to_live",
        {"TimeToLiveDescription": {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}},
        {"TableName": "Orders"},
    )
    with stubber:
        notes = read_table_notes(client, "Orders")
    assert [note["kind"] for note in notes] == [EXPIRY, CREATED]
    stubber.assert_no_pending_responses()


def test_a_table_that_does_not_exist_is_gone_and_who_deleted_it_is_one_command_away() -> None:
    client, stubber = _stubbed()
    stubber.add_client_error("describe_table", "ResourceNotFoundException", "Requested resource not found")
    with stubber:
        (note,) = read_table_notes(client, "Orders")
    assert note["kind"] == GONE
    assert note["text"].startswith("Orders does not exist now in eu-west-1: deleting a table takes its items")
    assert "--lookup-attributes AttributeKey=ResourceName,AttributeValue=Orders)" in note["text"]


def test_a_refused_description_says_what_could_not_be_read_without_the_services_message() -> None:
    client, stubber = _stubbed()
    stubber.add_client_error(
        "describe_table", "AccessDeniedException", "User arn:aws:sts::123456789012:assumed-role/internal is not..."
    )
    with stubber:
        (note,) = read_table_notes(client, "Orders")
    assert note == {
        "kind": UNREAD,
        "time": None,
        "text": "what DynamoDB says of Orders (its Time to Live, replicas, when it was created) could not be read"
        " (DescribeTable: AccessDeniedException), so changes no call makes are not named",
    }


def test_a_refused_time_to_live_keeps_what_the_description_said() -> None:
    client, stubber = _stubbed()
    stubber.add_response("describe_table", {"Table": _table()}, {"TableName": "Orders"})
    stubber.add_client_error("describe_time_to_live", "AccessDeniedException", "no")
    with stubber:
        unread, created = read_table_notes(client, "Orders")
    assert "(DescribeTimeToLive: AccessDeniedException)" in unread["text"]
    assert created["kind"] == CREATED


def test_a_dynamodb_that_does_not_answer_is_named_and_not_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = _stubbed()
    asked = []

    def silent(**parameters: Any) -> Any:
        asked.append(parameters)
        raise ReadTimeoutError(endpoint_url="https://dynamodb.eu-west-1.amazonaws.com/")

    monkeypatch.setattr(client, "describe_table", silent)
    monkeypatch.setattr(client, "describe_time_to_live", silent)
    (note,) = read_table_notes(client, "Orders")
    assert "(DescribeTable: ReadTimeoutError)" in note["text"]
    assert asked == [{"TableName": "Orders"}]


def test_answers_are_reused_for_a_while_per_table_and_bounded_in_number() -> None:
    now = [0.0]
    reads: list[str] = []

    def read(table: str) -> list[dict[str, Any]]:
        reads.append(table)
        return [{"kind": GONE, "time": None, "text": f"{table} {len(reads)}"}]

    recent = RecentTableNotes(read, reuse_seconds=60, clock=lambda: now[0])
    first = recent.notes("Orders")
    first[0]["text"] = "changed by a caller"  # a copy: what is kept stays as read
    now[0] = 59.0
    assert recent.notes("Orders") == [{"kind": GONE, "time": None, "text": "Orders 1"}]
    assert recent.notes("Books")[0]["text"] == "Books 2"
    now[0] = 60.0
    assert recent.notes("Orders")[0]["text"] == "Orders 3"
    assert reads == ["Orders", "Books", "Orders"]
    for number in range(MAX_TABLES_KEPT + 5):
        recent.notes(f"t{number}")
    assert len(recent._kept) == MAX_TABLES_KEPT


def test_the_environment_reads_through_the_short_client(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []
    real = boto3.client

    def client(service: str, **options: Any) -> Any:
        made.append((service, options["config"]))
        return real(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x", **options)

    monkeypatch.setattr(table_notes.boto3, "client", client)
    table_notes.table_notes_of_environment()
    ((service, config),) = made
    assert service == "dynamodb"
    assert (config.connect_timeout, config.read_timeout, config.retries["total_max_attempts"]) == (1, 2, 2)
